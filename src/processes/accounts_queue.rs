//! An account is a unit of work: the queue trade_sync, position_sync and
//! dashboard_sync work their accounts from.
//!
//! Why: one run used to cover every account in turn under one deadline, so
//! the number of accounts decided whether a run could finish at all (at 1 000
//! accounts position_sync timed out every run and synced nothing). Here each
//! account has its own next due time, its own backoff after a failure (the
//! one policy, `backoff.rs`), its last success and last error; a run takes
//! the due accounts (new ones at once, soonest due first), works them a few
//! at a time, each under a deadline of its own, and stops *starting* accounts
//! when what is left of the run could not hold one more. What it did not
//! reach stays due for the next run, so a run's length is bounded by its
//! timeout whatever the number of accounts.
//!
//! Cadence: an account synced in a run is due again half an interval after
//! that run started (so the next regular tick takes it, and a run triggered
//! in between for a new account does not redo it); a failed account waits
//! `interval · 2^(failures − 1)`, at most [`MAX_BACKOFF`]; an account whose
//! credentials were rotated is due at once. Accounts removed from the
//! registry (or moved to another replica) are forgotten at the next run.
//!
//! A fenced write or a spent budget still ends the run at once: every other
//! account would meet the same.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::platform::Platform;
use crate::accounts::Account;
use crate::backoff::Backoff;
use crate::clock::{now_ms, rfc3339_ms};
use crate::process::{ErrorKind, ProcessError, RunContext};

/// The longest a failing account waits before it is tried again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Accounts worked at once unless `account_concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// The longest an account's own deadline is by default (it is also at most half the run's).
pub const DEFAULT_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many accounts are named in a run's error; the rest are counted.
const NAMED_IN_ERROR: usize = 5;

/// `[processes.<id>]` settings of the account processes (trade_sync,
/// position_sync, dashboard_sync).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountWorkSettings {
    /// Accounts worked at the same time within one run.
    pub account_concurrency: usize,
    /// One account's deadline; unset: min(timeout_seconds / 2, 10 s).
    pub account_timeout_seconds: Option<f64>,
}

impl Default for AccountWorkSettings {
    fn default() -> Self {
        AccountWorkSettings {
            account_concurrency: DEFAULT_CONCURRENCY,
            account_timeout_seconds: None,
        }
    }
}

impl AccountWorkSettings {
    /// Parses and checks the settings; problems as (key, message).
    pub fn parse(
        settings: &std::collections::BTreeMap<String, figment::value::Value>,
    ) -> Result<Self, Vec<(String, String)>> {
        let value = figment::value::Value::serialize(settings).map_err(|e| vec![("settings".into(), e.to_string())])?;
        let parsed: Self = value.deserialize().map_err(|e: figment::Error| {
            e.into_iter()
                .map(|e| {
                    let key = e.path.last().cloned().unwrap_or_else(|| "settings".into());
                    let key = match e.kind {
                        figment::error::Kind::UnknownField(ref field, _) => field.clone(),
                        _ => key,
                    };
                    (key, e.kind.to_string())
                })
                .collect::<Vec<_>>()
        })?;
        let mut problems = Vec::new();
        if !(1..=1024).contains(&parsed.account_concurrency) {
            problems.push((
                "account_concurrency".to_string(),
                format!("must be between 1 and 1024 (got {})", parsed.account_concurrency),
            ));
        }
        if let Some(t) = parsed.account_timeout_seconds
            && !(t > 0.0 && t <= 3600.0)
        {
            problems.push((
                "account_timeout_seconds".to_string(),
                format!("must be greater than 0 and at most 3600 (got {t})"),
            ));
        }
        match problems.is_empty() {
            true => Ok(parsed),
            false => Err(problems),
        }
    }
}

/// One account's last failure, secrets-free (messages never carry credentials).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastError {
    /// A run error kind (`upstream`, `store`, `timeout`, …).
    pub kind: &'static str,
    pub message: String,
    /// RFC 3339.
    pub at: String,
}

/// One process's view of one account, for `GET /api/accounts/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountSync {
    /// The process id (its kind for the built-in ones).
    pub process: String,
    /// RFC 3339 of the last successful sync; `None`: never since start.
    pub last_success: Option<String>,
    pub last_error: Option<LastError>,
    /// RFC 3339 of when the account is next due (at the first run from then on).
    pub next_due: String,
    pub consecutive_failures: u32,
}

#[derive(Debug)]
struct Slot {
    next_due: Instant,
    next_due_ms: i64,
    last_success_ms: Option<i64>,
    last_error: Option<LastError>,
    failures: u32,
    /// The credentials the account was last worked with: a rotation makes it due at once.
    credentials: Option<Arc<Account>>,
}

impl Slot {
    fn new(now: Instant) -> Self {
        Slot {
            next_due: now,
            next_due_ms: now_ms(),
            last_success_ms: None,
            last_error: None,
            failures: 0,
            credentials: None,
        }
    }
}

/// What a run did with its accounts.
#[derive(Debug)]
pub struct Worked<T> {
    /// Each account worked successfully in this run, with its result.
    pub results: Vec<(String, T)>,
    /// This replica's accounts.
    pub total: usize,
    /// Due accounts the run did not reach (its time was up): first in the next run.
    pub still_due: usize,
    /// Accounts failing now: (name, kind, message), whether tried in this run or waiting out their backoff.
    pub failing: Vec<(String, ErrorKind, String)>,
}

impl<T> Worked<T> {
    /// "synced N of M accounts, K still due".
    pub fn progress(&self) -> String {
        format!(
            "synced {} of {} accounts, {} still due",
            self.results.len(),
            self.total,
            self.still_due
        )
    }

    /// The run's report: `summary` (after the progress), or, while accounts
    /// fail, an error naming at most five of them. Not retriable: each
    /// failing account is retried on its own backoff, not by re-running the others.
    pub fn finish(self, summary: String) -> Result<crate::process::RunReport, ProcessError> {
        let summary = format!("{}; {summary}", self.progress());
        if self.failing.is_empty() {
            return Ok(crate::process::RunReport { summary: Some(summary) });
        }
        let named: Vec<String> = self
            .failing
            .iter()
            .take(NAMED_IN_ERROR)
            .map(|(account, _, message)| format!("account `{account}`: {message}"))
            .collect();
        let more = match self.failing.len().saturating_sub(NAMED_IN_ERROR) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        // An account's own deadline is not the run's timeout: the run reports it as the venue's (or store's) slowness.
        let kind = match self.failing[0].1 {
            ErrorKind::Timeout => ErrorKind::Upstream,
            kind => kind,
        };
        Err(ProcessError::permanent(
            kind,
            format!(
                "{} of {} accounts failing ({}{more}); {summary}",
                self.failing.len(),
                self.total,
                named.join("; ")
            ),
        ))
    }
}

/// The per-account state of one process, and how its runs work through it.
pub struct AccountsQueue {
    process: &'static str,
    interval: Duration,
    settings: AccountWorkSettings,
    slots: Mutex<HashMap<String, Slot>>,
}

impl AccountsQueue {
    pub fn new(process: &'static str, interval: Duration, settings: AccountWorkSettings) -> Self {
        AccountsQueue {
            process,
            interval,
            settings,
            slots: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(
            self.interval.max(Duration::from_secs(1)),
            MAX_BACKOFF.max(self.interval),
        )
    }

    /// One account's deadline in a run ending at `deadline`: the setting, or
    /// min(half the run, 10 s).
    pub fn account_timeout(&self, deadline: Instant) -> Duration {
        match self.settings.account_timeout_seconds {
            Some(s) => Duration::from_secs_f64(s),
            None => (deadline.saturating_duration_since(Instant::now()) / 2).min(DEFAULT_ACCOUNT_TIMEOUT),
        }
    }

    /// Takes the registry's current accounts in: new ones due now, removed
    /// ones forgotten, rotated ones due now. Returns the due accounts, soonest first.
    fn due(&self, p: &Platform, mine: &[String], now: Instant) -> Vec<String> {
        let mut slots = self.lock();
        let wanted: std::collections::HashSet<&str> = mine.iter().map(|s| s.as_str()).collect();
        slots.retain(|name, _| wanted.contains(name.as_str()));
        let mut due: Vec<(Instant, &String)> = Vec::new();
        for name in mine {
            let slot = slots.entry(name.clone()).or_insert_with(|| Slot::new(now));
            let current = p.accounts.get(name);
            let rotated = match (&slot.credentials, &current) {
                (Some(was), Some(is)) => !Arc::ptr_eq(was, is),
                _ => false,
            };
            if rotated {
                slot.next_due = now;
                slot.next_due_ms = now_ms();
            }
            slot.credentials = current;
            if slot.next_due <= now {
                due.push((slot.next_due, name));
            }
        }
        due.sort();
        due.into_iter().map(|(_, name)| name.clone()).collect()
    }

    fn succeeded(&self, account: &str, run_started: Instant) {
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(account) {
            let next = run_started + self.interval / 2;
            slot.next_due = next;
            slot.next_due_ms = now_ms() + next.saturating_duration_since(Instant::now()).as_millis() as i64;
            slot.last_success_ms = Some(now_ms());
            slot.failures = 0;
        }
    }

    fn failed(&self, account: &str, e: &ProcessError) {
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(account) {
            slot.failures = slot.failures.saturating_add(1);
            let wait = self.backoff().wait(slot.failures);
            slot.next_due = Instant::now() + wait;
            slot.next_due_ms = now_ms() + wait.as_millis() as i64;
            slot.last_error = Some(LastError {
                kind: e.kind.as_str(),
                message: e.message.clone(),
                at: rfc3339_ms(now_ms()),
            });
        }
    }

    /// The account's state in this process, if the process has seen it.
    pub fn snapshot(&self, process: &str, account: &str) -> Option<AccountSync> {
        let slots = self.lock();
        let slot = slots.get(account)?;
        Some(AccountSync {
            process: process.to_string(),
            last_success: slot.last_success_ms.map(rfc3339_ms),
            last_error: slot.last_error.clone(),
            next_due: rfc3339_ms(slot.next_due_ms),
            consecutive_failures: slot.failures,
        })
    }

    fn failing(&self, mine: &[String]) -> Vec<(String, ErrorKind, String)> {
        let slots = self.lock();
        mine.iter()
            .filter_map(|name| {
                let slot = slots.get(name).filter(|s| s.failures > 0)?;
                let e = slot.last_error.as_ref()?;
                let kind = ErrorKind::ALL
                    .into_iter()
                    .find(|k| k.as_str() == e.kind)
                    .unwrap_or(ErrorKind::Internal);
                Some((name.clone(), kind, e.message.clone()))
            })
            .collect()
    }

    /// One run: the due accounts among this replica's that `eligible` lets
    /// through (a healthy user stream stretches polling), worked by `work`
    /// at most `account_concurrency` at a time, each with its own
    /// [`RunContext`] whose deadline is the account's. A fenced write or a
    /// spent budget ends the run with that error (what was done is in the
    /// message); any other failure is the account's.
    pub async fn run<T, F, Fut>(
        &self,
        p: &Platform,
        ctx: &RunContext,
        eligible: impl Fn(&str) -> bool,
        work: F,
    ) -> Result<Worked<T>, ProcessError>
    where
        F: Fn(RunContext, String) -> Fut,
        Fut: Future<Output = Result<T, ProcessError>>,
    {
        let started = Instant::now();
        let mine = p.accounts.mine();
        let due = self.due(p, &mine, started);
        let mut pending = due.into_iter().filter(|a| eligible(a));
        let per_account = self.account_timeout(ctx.deadline);
        // Room kept after the last account's deadline, for the run's own closing work.
        let needed = per_account + per_account / 4;
        let concurrency = self.settings.account_concurrency.max(1);
        let mut running = FuturesUnordered::new();
        let mut results = Vec::new();
        loop {
            while running.len() < concurrency
                && !ctx.cancel.is_cancelled()
                && ctx.deadline.saturating_duration_since(Instant::now()) >= needed
                && let Some(account) = pending.next()
            {
                let mut own = ctx.clone();
                own.deadline = Instant::now() + per_account;
                own.cancel = ctx.cancel.child_token();
                let deadline = own.deadline;
                let fut = work(own, account.clone());
                running.push(async move { (account, tokio::time::timeout_at(deadline, fut).await) });
            }
            let Some((account, result)) = running.next().await else {
                break;
            };
            let result = result.unwrap_or_else(|_| {
                Err(ProcessError::retriable(
                    ErrorKind::Timeout,
                    format!(
                        "timed out after {:.1}s (the account's deadline)",
                        per_account.as_secs_f64()
                    ),
                ))
            });
            match result {
                Ok(value) => {
                    self.succeeded(&account, started);
                    p.events.account_synced(self.process, &account);
                    results.push((account, value));
                }
                Err(e) if matches!(e.kind, ErrorKind::Fenced | ErrorKind::BudgetExhausted) => {
                    let left = pending.count() + running.len() + 1;
                    return Err(ProcessError::new(
                        e.kind,
                        format!(
                            "{}; synced {} of {} accounts, {left} still due",
                            e.message,
                            results.len(),
                            mine.len()
                        ),
                        e.retriable,
                    ));
                }
                Err(e) => {
                    self.failed(&account, &e);
                    p.events.account_failed(self.process, &account);
                    tracing::warn!(process = self.process, account, kind = e.kind.as_str(), error = %e.message, "account failed; the others are still served");
                }
            }
        }
        Ok(Worked {
            results,
            total: mine.len(),
            still_due: pending.count(),
            failing: self.failing(&mine),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, figment::value::Value)]) -> std::collections::BTreeMap<String, figment::value::Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn settings_are_checked_and_name_their_key() {
        let ok = AccountWorkSettings::parse(&settings(&[("account_concurrency", 4.into())])).unwrap();
        assert_eq!(ok.account_concurrency, 4);
        assert_eq!(ok.account_timeout_seconds, None);
        let bad = AccountWorkSettings::parse(&settings(&[
            ("account_concurrency", 0.into()),
            ("account_timeout_seconds", (-1.0).into()),
        ]))
        .unwrap_err();
        let keys: Vec<&str> = bad.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["account_concurrency", "account_timeout_seconds"]);
        let unknown = AccountWorkSettings::parse(&settings(&[("acount_concurrency", 4.into())])).unwrap_err();
        assert_eq!(unknown[0].0, "acount_concurrency", "{unknown:?}");
    }

    #[test]
    fn errors_name_at_most_five_accounts() {
        let worked: Worked<()> = Worked {
            results: vec![],
            total: 9,
            still_due: 2,
            failing: (0..7)
                .map(|i| (format!("a{i}"), ErrorKind::Timeout, "timed out".to_string()))
                .collect(),
        };
        let e = worked.finish("x".into()).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Upstream,
            "an account's deadline is not the run's timeout"
        );
        assert!(!e.retriable);
        assert!(
            e.message.starts_with("7 of 9 accounts failing (account `a0`"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("account `a4`") && !e.message.contains("a5"),
            "{}",
            e.message
        );
        assert!(
            e.message
                .contains("and 2 more); synced 0 of 9 accounts, 2 still due; x"),
            "{}",
            e.message
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_success_is_due_at_the_next_regular_run() {
        let q = AccountsQueue::new("trade_sync", Duration::from_secs(30), AccountWorkSettings::default());
        let t0 = Instant::now();
        {
            let mut slots = q.lock();
            slots.insert("a".into(), Slot::new(t0));
            slots.insert("b".into(), Slot::new(t0));
        }
        q.succeeded("a", t0);
        let e = ProcessError::retriable(ErrorKind::Upstream, "refused");
        q.failed("b", &e);
        q.failed("b", &e);
        let slots = q.lock();
        assert_eq!(slots["a"].next_due, t0 + Duration::from_secs(15));
        let b = &slots["b"];
        assert_eq!(b.failures, 2);
        // Two failures: 60 s, up to 50 % jitter.
        assert!(b.next_due >= t0 + Duration::from_secs(60) && b.next_due <= t0 + Duration::from_secs(90));
        assert_eq!(b.last_error.as_ref().unwrap().kind, "upstream");
    }
}
