//! The gateway's log output: stdout, written by tracing-appender's non-blocking writer, so no
//! request waits on a write to stdout.
//!
//! Every log line (the access line of each request included) is handed to a background thread
//! through a bounded channel. The thread writes into a [`BUFFER_BYTES`] buffer and writes that
//! out whenever it has caught up with the channel (or the buffer is full): one `write` for
//! every line that arrived meanwhile under load, a line at once when idle. The channel blocks
//! rather than drops when full, so no line is lost. [`flush`] writes what is pending and stops
//! the thread; the gateway calls it on every way out (the end of `main`, the drained exit after
//! SIGTERM).

use std::io::{BufWriter, Write};
use std::sync::{Mutex, OnceLock, PoisonError};

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

/// The writing thread's buffer.
pub const BUFFER_BYTES: usize = 64 * 1024;

/// Stops the writing thread, after it wrote everything, when dropped.
static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// The `MakeWriter` for tracing-subscriber, writing to stdout; the first call starts the thread.
pub fn stdout() -> NonBlocking {
    static STDOUT: OnceLock<NonBlocking> = OnceLock::new();
    STDOUT
        .get_or_init(|| {
            let (writer, guard) = start(std::io::stdout());
            *GUARD.lock().unwrap_or_else(PoisonError::into_inner) = Some(guard);
            writer
        })
        .clone()
}

/// A non-blocking, lossless, buffered writer to `sink`, and the guard that stops it.
fn start<W: Write + Send + 'static>(sink: W) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(BufWriter::with_capacity(BUFFER_BYTES, sink))
}

/// Writes every pending line to stdout and stops the writing thread: for the way out.
pub fn flush() {
    drop(GUARD.lock().unwrap_or_else(PoisonError::into_inner).take());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_is_dropped() {
        let sink = Sink::default();
        let (mut writer, guard) = start(sink.clone());
        for line in 0..10_000 {
            writer.write_all(format!("line {line}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 10_000);
        assert!(lines.iter().enumerate().all(|(n, line)| *line == format!("line {n}")));
    }
}
