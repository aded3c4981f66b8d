//! A child's output into the service's log, with bounds: at most
//! `max_lines` lines per stream and run are logged, each cut at
//! `max_line_bytes`, so a chatty script cannot flood logs or memory.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_lines: usize,
    pub max_line_bytes: usize,
}

const API_CALLS_PREFIX: &str = "SCRIPT_MANAGER_API_CALLS=";

/// Reads one stream in the background.
pub struct Forwarder {
    task: Option<JoinHandle<Option<String>>>,
}

impl Forwarder {
    /// Waits briefly for the stream to end (a grandchild may hold it open)
    /// and returns its last line.
    pub async fn finish(self) -> Option<String> {
        let task = self.task?;
        tokio::time::timeout(Duration::from_secs(1), task).await.ok()?.ok()?
    }
}

/// Logs the lines of `pipe` as `stream` within the current span; calls
/// `on_api_calls(n)` for each `SCRIPT_MANAGER_API_CALLS=<n>` line.
pub fn forward(
    pipe: Option<File>,
    stream: &'static str,
    limits: Limits,
    on_api_calls: impl Fn(u32) + Send + 'static,
) -> Forwarder {
    let Some(pipe) = pipe else {
        return Forwarder { task: None };
    };
    let span = tracing::Span::current();
    let task = tokio::task::spawn_blocking(move || {
        let _enter = span.enter();
        let mut reader = BufReader::new(pipe);
        let mut logged = 0usize;
        let mut dropped = 0usize;
        let mut last = None;
        while let Some(line) = read_bounded_line(&mut reader, limits.max_line_bytes) {
            if let Some(n) = line
                .strip_prefix(API_CALLS_PREFIX)
                .and_then(|n| n.trim().parse::<u32>().ok())
            {
                on_api_calls(n);
                continue;
            }
            if logged < limits.max_lines {
                logged += 1;
                tracing::info!(stream, "{line}");
            } else {
                dropped += 1;
            }
            last = Some(line);
        }
        if dropped > 0 {
            tracing::warn!(stream, dropped, "output lines over the per-run limit were not logged");
        }
        last
    });
    Forwarder { task: Some(task) }
}

/// The next line, without its newline and cut at `max` bytes; `None` at end of stream.
fn read_bounded_line(reader: &mut impl BufRead, max: usize) -> Option<String> {
    let mut line = Vec::new();
    let mut saw_any = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if buf.is_empty() {
            break;
        }
        saw_any = true;
        let (chunk, used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(pos) => (&buf[..pos], pos + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if done {
            break;
        }
    }
    saw_any.then(|| String::from_utf8_lossy(&line).trim_end_matches('\r').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_not_buffered_whole() {
        let long = "x".repeat(100_000);
        let input = format!("short\n{long}\nlast");
        let mut r = BufReader::with_capacity(64, input.as_bytes());
        assert_eq!(read_bounded_line(&mut r, 10).as_deref(), Some("short"));
        assert_eq!(read_bounded_line(&mut r, 10).map(|l| l.len()), Some(10));
        assert_eq!(read_bounded_line(&mut r, 10).as_deref(), Some("last"));
        assert_eq!(read_bounded_line(&mut r, 10), None);
    }
}
