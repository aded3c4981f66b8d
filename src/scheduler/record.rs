//! What a finished run leaves behind: its metrics, the process's counters
//! and recent history (status API), and its record for the store.

use std::time::{Duration, SystemTime};

use super::Scheduler;
use super::execute::Finished;
use super::state::ProcessHandle;
use crate::process::{RunLease, RunRecord, Trigger};
use crate::telemetry::process::{FinishedRun, Outcome};

impl Scheduler {
    /// Records a finished run everywhere it goes.
    pub(super) fn record(
        &self,
        p: &ProcessHandle,
        lease: Option<RunLease>,
        trigger: Trigger,
        finished: Finished,
        (started_at, duration, lag, outcome): (SystemTime, Duration, Duration, Outcome),
        trace_id: Option<String>,
    ) {
        let child = finished.usage.child();
        let error = finished.result.as_ref().err();
        self.metrics.process.finished(
            p.series(),
            FinishedRun {
                outcome,
                duration_seconds: duration.as_secs_f64(),
                lag_seconds: (finished.attempts > 0).then_some(lag.as_secs_f64()),
                trace_id: trace_id.clone(),
                error_kind: error.map(|e| e.kind.as_str()),
                child: child.map(|c| (c.cpu_seconds, c.peak_rss_bytes)),
                process: &p.id,
            },
        );
        self.emit(
            &p.id,
            "finished",
            serde_json::json!({
                "trigger": trigger.as_str(), "outcome": outcome.as_str(), "duration_seconds": duration.as_secs_f64(),
                "attempts": finished.attempts, "error_kind": error.map(|e| e.kind.as_str()),
                "error": error.map(|e| e.message.as_str()),
            }),
        );
        let record = RunRecord {
            process: p.id.clone(),
            trigger,
            started_at,
            finished_at: SystemTime::now(),
            duration_seconds: duration.as_secs_f64(),
            lag_seconds: lag.as_secs_f64(),
            attempts: finished.attempts,
            outcome: outcome.as_str(),
            error_kind: error.map(|e| e.kind),
            error_message: error.map(|e| e.message.clone()),
            api_calls: finished.usage.api_calls(),
            child_cpu_seconds: child.map(|c| c.cpu_seconds),
            child_peak_rss_bytes: child.map(|c| c.peak_rss_bytes),
            trace_id,
            lease,
        };
        if let Some(sink) = self.run_sink.get()
            && let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) = sink.try_send(record.clone())
        {
            self.metrics.run_record_dropped();
            tracing::warn!(process = %p.id, "run history queue full: a run record was dropped");
        }
        self.record_stats(p, record);
    }

    fn record_stats(&self, p: &ProcessHandle, record: RunRecord) {
        let mut s = p.stats();
        s.total_runs += 1;
        s.total_duration += record.duration_seconds;
        s.last_duration = Some(record.duration_seconds);
        s.last_run = Some(record.finished_at);
        match record.outcome {
            "success" => {
                s.success_count += 1;
                s.consecutive_failures = 0;
                s.last_success = Some(record.finished_at);
            }
            outcome => {
                s.error_count += 1;
                if outcome == "timeout" {
                    s.timeout_count += 1;
                }
                s.consecutive_failures += 1;
                s.last_error = Some(record.finished_at);
                s.last_error_message = record.error_message.clone();
                s.last_error_kind = record.error_kind;
            }
        }
        if s.history.len() >= self.history_len {
            s.history.pop_front();
        }
        s.history.push_back(record);
    }
}
