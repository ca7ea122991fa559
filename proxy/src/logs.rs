//! The gateway's log output: stdout, written in batches instead of one `write` per line.
//!
//! Every log line (the access line of each request included) is appended to an in-memory
//! buffer; a background thread writes the buffer out every [`FLUSH_EVERY`], and a line that
//! fills it past [`FLUSH_BYTES`] writes it out at once. [`flush`] writes what is pending; the
//! gateway calls it on every way out (the end of `main`, the drained exit after SIGTERM, a
//! panic), so no line is lost unless the process is killed with SIGKILL (then at most the last
//! [`FLUSH_EVERY`] of lines).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, Once, PoisonError};
use std::time::Duration;

/// Longest time a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// A buffer this full is written out by the line that filled it.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// Lines not written yet.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Set when no flush thread could be started: every line is then written at once.
static WRITE_THROUGH: AtomicBool = AtomicBool::new(false);
/// Held while writing to stdout, so batches come out in the order they were taken.
static OUTPUT: Mutex<()> = Mutex::new(());

/// The `MakeWriter` for tracing-subscriber: each event's formatted line is one `write_all`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BufferedStdout;

impl Write for BufferedStdout {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.capacity() == 0 {
                pending.reserve(FLUSH_BYTES * 2);
            }
            pending.extend_from_slice(line);
            pending.len() >= FLUSH_BYTES
        };
        if full || WRITE_THROUGH.load(Relaxed) {
            flush();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferedStdout {
    type Writer = BufferedStdout;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Writes every pending line to stdout now.
pub fn flush() {
    let _output = OUTPUT.lock().unwrap_or_else(PoisonError::into_inner);
    let batch = {
        let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.is_empty() {
            return;
        }
        std::mem::replace(&mut *pending, Vec::with_capacity(FLUSH_BYTES * 2))
    };
    let mut stdout = std::io::stdout().lock();
    // Nowhere to report a failed write of the log itself.
    let _ = stdout.write_all(&batch);
    let _ = stdout.flush();
}

/// Starts the thread that flushes every [`FLUSH_EVERY`] and a panic hook that flushes before
/// the default report. Idempotent.
pub fn start_flushing() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new().name("log-flush".to_owned()).spawn(|| {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                flush();
            }
        });
        if let Err(error) = spawned {
            WRITE_THROUGH.store(true, Relaxed);
            eprintln!("gateway: no log flush thread ({error}); writing each log line at once");
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flush();
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_until_flushed() {
        let mut writer = BufferedStdout;
        writer.write_all(b"logs::tests line\n").unwrap();
        assert!(PENDING.lock().unwrap().ends_with(b"logs::tests line\n"));
        flush();
        assert!(PENDING.lock().unwrap().is_empty());
    }
}
