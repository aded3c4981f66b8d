//! The `command` kind: runs an external program once per tick, so existing
//! scripts can move under the scheduler unchanged.
//!
//! The program runs in its own process group. Exit status 0 is success. On
//! timeout or shutdown the whole group gets SIGTERM, then SIGKILL after
//! `kill_grace_seconds`, so no grandchild is left behind. Its output goes to
//! the service's log, tagged with the process id and bounded per run. A line
//! `SCRIPT_MANAGER_API_CALLS=<n>` on stdout reports `n` exchange API calls.
//! `TRACEPARENT` carries the run's trace so the program's spans join it.

mod child;
mod output;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use figment::value::{Dict, Value};
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::process::{ErrorKind, Process, ProcessError, RunContext, RunReport};
use crate::telemetry::otel;

/// Settings of a `command` process (beside the common ones).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSettings {
    /// Program to run: a path, or a name looked up in `PATH`.
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables for the program.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<PathBuf>,
    /// Time between SIGTERM and SIGKILL when a run is stopped.
    #[serde(default = "default_kill_grace")]
    pub kill_grace_seconds: f64,
    /// Output lines logged per stream and run; the rest are counted, not logged.
    #[serde(default = "default_max_log_lines")]
    pub max_log_lines: usize,
    /// Longest line logged; longer lines are cut.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

fn default_kill_grace() -> f64 {
    2.0
}
fn default_max_log_lines() -> usize {
    200
}
fn default_max_line_bytes() -> usize {
    2048
}

impl CommandSettings {
    /// Parses and checks the settings; problems come as (key, message).
    pub fn parse(settings: &BTreeMap<String, Value>) -> Result<Self, Vec<(String, String)>> {
        let dict: Dict = settings.clone();
        let parsed: Self = Value::from(dict).deserialize().map_err(|e| {
            e.into_iter()
                .map(|e| {
                    let mut path = e.path.clone();
                    match &e.kind {
                        figment::error::Kind::UnknownField(field, _) if path.last() != Some(field) => {
                            path.push(field.clone())
                        }
                        figment::error::Kind::MissingField(field) if path.last().map(|l| l.as_str()) != Some(field) => {
                            path.push(field.to_string())
                        }
                        _ => {}
                    }
                    let key = if path.is_empty() {
                        "command".to_string()
                    } else {
                        path.join(".")
                    };
                    (key, e.kind.to_string())
                })
                .collect::<Vec<_>>()
        })?;
        let mut problems = Vec::new();
        if parsed.command.trim().is_empty() {
            problems.push(("command".into(), "must name a program to run".into()));
        }
        if !(0.0..=60.0).contains(&parsed.kill_grace_seconds) {
            problems.push(("kill_grace_seconds".into(), "must be between 0 and 60".into()));
        }
        if let Some(dir) = &parsed.working_dir
            && !dir.is_dir()
        {
            problems.push(("working_dir".into(), format!("{} is not a directory", dir.display())));
        }
        if parsed.max_line_bytes < 16 {
            problems.push(("max_line_bytes".into(), "must be at least 16".into()));
        }
        if problems.is_empty() { Ok(parsed) } else { Err(problems) }
    }
}

pub struct CommandProcess {
    id: Arc<str>,
    settings: Arc<CommandSettings>,
}

impl CommandProcess {
    pub fn new(id: &str, settings: CommandSettings) -> Self {
        CommandProcess {
            id: Arc::from(id),
            settings: Arc::new(settings),
        }
    }

    async fn run_once(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let s = &self.settings;
        let mut env = vec![
            ("SCRIPT_MANAGER_PROCESS".to_string(), self.id.to_string()),
            ("SCRIPT_MANAGER_ATTEMPT".to_string(), ctx.attempt.to_string()),
        ];
        if let Some(tp) = otel::traceparent(&tracing::Span::current()) {
            env.push(("TRACEPARENT".to_string(), tp));
        }
        let mut child = child::Child::spawn(s, &env)
            .map_err(|e| ProcessError::permanent(ErrorKind::Spawn, format!("cannot start `{}`: {e}", s.command)))?;
        let limits = output::Limits {
            max_lines: s.max_log_lines,
            max_line_bytes: s.max_line_bytes,
        };
        let api_ctx = ctx.clone();
        let stdout = output::forward(child.stdout.take(), "stdout", limits, move |n| {
            api_ctx.track_api_calls(n)
        });
        let stderr = output::forward(child.stderr.take(), "stderr", limits, |_| {});

        let exit = tokio::select! {
            exit = child.wait() => exit,
            _ = ctx.cancel.cancelled() => {
                child.stop(Duration::from_secs_f64(s.kill_grace_seconds)).await;
                return Err(ProcessError::permanent(ErrorKind::Cancelled, "stopped: the run was cancelled"));
            }
        };
        let exit = exit.map_err(|e| {
            ProcessError::retriable(ErrorKind::Internal, format!("waiting for `{}` failed: {e}", s.command))
        })?;
        ctx.usage.record_child(exit.usage);
        let _ = stdout.finish().await;
        let last_stderr = stderr.finish().await;
        let detail = last_stderr.map(|l| format!(": {l}")).unwrap_or_default();
        match exit.status {
            child::Status::Exited(0) => Ok(RunReport::default()),
            child::Status::Exited(code) => Err(ProcessError::retriable(
                ErrorKind::ExitStatus,
                format!("exited with status {code}{detail}"),
            )),
            child::Status::Signaled(signal) => Err(ProcessError::retriable(
                ErrorKind::Signal,
                format!("killed by signal {signal}{detail}"),
            )),
        }
    }
}

impl Process for CommandProcess {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
