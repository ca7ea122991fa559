//! The `.jsonl` loader behind `events load`: one user event per line (as the seed's
//! `assignment_data.jsonl`), stored in batches through the same path as `POST /user/batches`,
//! with a progress bar and a summary of accepted, duplicate and rejected lines.
//!
//! Reading and parsing run on a blocking thread one batch ahead of the store, so the two
//! overlap.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::Events;
use crate::user::{self, UserEvent};

/// Rejected lines the summary quotes (all of them are counted).
const QUOTED_REJECTIONS: usize = 10;

#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadSummary {
    /// Non-blank lines read.
    pub lines: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// The first rejected lines: `(line number, why)`.
    pub first_rejections: Vec<(u64, String)>,
    pub seconds: f64,
}

impl LoadSummary {
    pub fn lines_per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.lines as f64 / self.seconds } else { 0.0 }
    }
}

impl std::fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} lines in {:.1} s ({:.0} lines/s): {} accepted, {} duplicate, {} rejected",
            self.lines,
            self.seconds,
            self.lines_per_second(),
            self.accepted,
            self.duplicates,
            self.rejected
        )?;
        for (line, reason) in &self.first_rejections {
            writeln!(f, "  line {line}: {reason}")?;
        }
        if self.rejected as usize > self.first_rejections.len() {
            writeln!(f, "  ... and {} more rejected lines", self.rejected as usize - self.first_rejections.len())?;
        }
        Ok(())
    }
}

struct Parsed {
    events: Vec<UserEvent>,
    lines: u64,
    rejected: Vec<(u64, String)>,
    bytes: u64,
}

/// Loads `path` in batches of `batch_size` lines; `progress` draws a bar on stderr.
pub async fn load_file(state: &Events, path: &Path, batch_size: usize, progress: bool) -> anyhow::Result<LoadSummary> {
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = if progress { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}",
        )
        .map_err(|e| anyhow::anyhow!("progress template: {e}"))?
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));

    let (batches, mut parsed) = mpsc::channel::<std::io::Result<Parsed>>(2);
    let batch_size = batch_size.max(1);
    let reader = tokio::task::spawn_blocking(move || read_batches(file, batch_size, &batches));

    let started = Instant::now();
    let mut summary = LoadSummary::default();
    while let Some(batch) = parsed.recv().await {
        let batch = batch?;
        let counts = user::ingest(state, &batch.events, state.clock.now_millis()).await?;
        summary.lines += batch.lines;
        summary.accepted += counts.accepted;
        summary.duplicates += counts.duplicates;
        summary.rejected += batch.rejected.len() as u64;
        let room = QUOTED_REJECTIONS.saturating_sub(summary.first_rejections.len());
        summary.first_rejections.extend(batch.rejected.into_iter().take(room));
        bar.inc(batch.bytes);
        bar.set_message(format!(
            "{} accepted, {} duplicate, {} rejected",
            summary.accepted, summary.duplicates, summary.rejected
        ));
    }
    reader.await?;
    summary.seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(summary)
}

/// Reads, parses and checks lines, sending a batch every `batch_size` non-blank lines.
fn read_batches(file: impl Read, batch_size: usize, batches: &mpsc::Sender<std::io::Result<Parsed>>) {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut number = 0u64;
    let mut batch = Parsed { events: Vec::with_capacity(batch_size), lines: 0, rejected: Vec::new(), bytes: 0 };
    loop {
        line.clear();
        let read = match reader.read_line(&mut line) {
            Ok(read) => read,
            Err(error) => {
                let _ = batches.blocking_send(Err(error));
                return;
            }
        };
        if read == 0 {
            break;
        }
        number += 1;
        batch.bytes += read as u64;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        batch.lines += 1;
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => match user::parse(&value) {
                Ok(event) => batch.events.push(event),
                Err(reasons) => {
                    let why =
                        reasons.iter().map(|r| format!("{} {}", r.pointer, r.message)).collect::<Vec<_>>().join("; ");
                    batch.rejected.push((number, why));
                }
            },
            Err(error) => batch.rejected.push((number, format!("not JSON: {error}"))),
        }
        if batch.lines as usize >= batch_size {
            let full = std::mem::replace(
                &mut batch,
                Parsed { events: Vec::with_capacity(batch_size), lines: 0, rejected: Vec::new(), bytes: 0 },
            );
            if batches.blocking_send(Ok(full)).is_err() {
                return;
            }
        }
    }
    if batch.lines > 0 || batch.bytes > 0 {
        let _ = batches.blocking_send(Ok(batch));
    }
}
