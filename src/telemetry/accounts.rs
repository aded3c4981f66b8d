//! Per-account series that stay bounded however many accounts there are.
//!
//! Why: at 1 000 accounts the per-account families (account errors, each
//! user stream's up, messages, reconnects by reason, last event, listen-key
//! renewals) were 14 000 series and 1.1 MB per scrape, and they grow with
//! every account. Up to `telemetry.per_account_series_limit` accounts (100
//! by default) every account's series are exposed as they always were. Above
//! it, only accounts with a problem keep their series — at most the limit of
//! them, the worst first — and aggregates without the account label carry
//! the rest:
//!
//! - **failing**: an account process's last attempt at it failed, or it (or
//!   its listen key) failed within the last [`RECENT`];
//! - **stream_down**: its user stream has not been up for [`STREAM_GRACE`];
//! - **stale**: an account process whose staleness bound is set has not
//!   synced it within that bound (counted from when the account appeared).
//!
//! `script_manager_accounts{state}` counts every account in its worst state
//! (`ok` otherwise), `script_manager_account_series_limited` says which mode
//! is on, and the totals (`account_failures_total{process}`,
//! `stream_user_*_total`) sum every account, so rates and alerts on them
//! work in both modes. Values are kept per account here whether shown or not,
//! so a series that comes back carries its whole count (no reset).
//!
//! Owns: the state behind those series and which accounts are shown.
//! Written with the small text writer (`exposition.rs`) like the
//! per-process rows; the aggregates are ordinary registry families.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::exposition::{Desc, Kind, Value, Writer, label};

/// A failure this recent makes an account `failing`.
pub const RECENT: Duration = Duration::from_secs(600);
/// A user stream not up this long makes its account `stream_down` (connects and planned reconnects take a moment).
pub const STREAM_GRACE: Duration = Duration::from_secs(30);
/// The default of `telemetry.per_account_series_limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// The states of `script_manager_accounts{state}`, worst first after `ok`.
pub const STATES: [&str; 4] = ["ok", "failing", "stream_down", "stale"];

/// Why a user stream's connection was replaced (`stream.rs` lists them; the order here is the row's).
pub const USER_REASONS: [&str; 6] = ["silent", "closed", "error", "planned", "listen_key", "store"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    process: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// One user stream's values.
#[derive(Debug, Default, Clone)]
pub(super) struct UserRow {
    pub up: bool,
    /// When it last went down (or was created down), ms.
    pub down_since_ms: i64,
    pub messages: u64,
    pub reconnects: [u64; USER_REASONS.len()],
    /// `ok`, `failed`.
    pub renewals: [u64; 2],
    pub last_event_ms: i64,
}

#[derive(Debug, Default)]
struct Row {
    added_ms: i64,
    /// By process index: failures, last failure, last success (ms; 0 = never).
    errors: Vec<u64>,
    failed_ms: Vec<i64>,
    synced_ms: Vec<i64>,
    listen_key_failed_ms: i64,
    user: Option<UserRow>,
}

impl Row {
    fn grow(&mut self, n: usize) {
        if self.errors.len() < n {
            self.errors.resize(n, 0);
            self.failed_ms.resize(n, 0);
            self.synced_ms.resize(n, 0);
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Account processes in the order they were named, with their staleness bound (ms).
    processes: Vec<(&'static str, Option<i64>)>,
    rows: BTreeMap<String, Row>,
}

impl Inner {
    fn process(&mut self, process: &'static str) -> usize {
        match self.processes.iter().position(|(p, _)| *p == process) {
            Some(i) => i,
            None => {
                self.processes.push((process, None));
                self.processes.len() - 1
            }
        }
    }

    fn row(&mut self, account: &str, now_ms: i64) -> &mut Row {
        let n = self.processes.len();
        let row = self.rows.entry(account.to_string()).or_insert_with(|| Row {
            added_ms: now_ms,
            ..Row::default()
        });
        row.grow(n);
        row
    }

    /// The account's state (index into [`STATES`]).
    fn state(&self, row: &Row, now_ms: i64) -> usize {
        let recent = RECENT.as_millis() as i64;
        let failing = (0..row.errors.len()).any(|i| {
            let failed = row.failed_ms[i];
            failed > 0 && (failed > row.synced_ms[i] || now_ms - failed < recent)
        }) || (row.listen_key_failed_ms > 0 && now_ms - row.listen_key_failed_ms < recent);
        if failing {
            return 1;
        }
        if row
            .user
            .as_ref()
            .is_some_and(|u| !u.up && now_ms - u.down_since_ms >= STREAM_GRACE.as_millis() as i64)
        {
            return 2;
        }
        let stale = self.processes.iter().enumerate().any(|(i, (_, bound))| {
            bound.is_some_and(|bound| {
                let since = row.synced_ms.get(i).copied().unwrap_or(0).max(row.added_ms);
                now_ms - since > bound
            })
        });
        if stale { 3 } else { 0 }
    }
}

/// Which accounts a scrape shows, and whether the limit is in force.
pub struct Shown {
    pub limited: bool,
    names: Vec<String>,
}

/// The per-account state and the aggregates.
pub struct AccountMetrics {
    limit: AtomicUsize,
    inner: Mutex<Inner>,
    states: Family<StateLabels, Gauge>,
    limited: Gauge,
    failures: Family<ProcessLabels, Counter>,
    user_messages: Counter,
    user_reconnects: Family<ReasonLabels, Counter>,
    user_renewals: Family<ResultLabels, Counter>,
}

const ACCOUNT_ERRORS: Desc = Desc {
    name: "script_manager_account_errors",
    help: "Failures of one account within a run (the other accounts are still served)",
    kind: Kind::Counter,
    unit: None,
};

impl AccountMetrics {
    pub fn new() -> Self {
        let m = AccountMetrics {
            limit: AtomicUsize::new(DEFAULT_LIMIT),
            inner: Mutex::default(),
            states: Family::default(),
            limited: Gauge::default(),
            failures: Family::default(),
            user_messages: Counter::default(),
            user_reconnects: Family::default(),
            user_renewals: Family::default(),
        };
        for state in STATES {
            let _ = m.states.get_or_create(&StateLabels { state });
        }
        for reason in USER_REASONS {
            let _ = m.user_reconnects.get_or_create(&ReasonLabels { reason });
        }
        for result in ["ok", "failed"] {
            let _ = m.user_renewals.get_or_create(&ResultLabels { result });
        }
        m
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the aggregates under `script_manager_`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "accounts",
            "Accounts by their worst state: ok, failing (an account process failed it lately), stream_down (its user stream is not up), stale (not synced within its bound)",
            self.states.clone(),
        );
        r.register(
            "account_series_limited",
            "1 while there are more accounts than telemetry.per_account_series_limit: per-account series then show only accounts with a problem",
            self.limited.clone(),
        );
        r.register(
            "account_failures",
            "Failures of one account within a run, summed over every account",
            self.failures.clone(),
        );
        r.register(
            "stream_user_messages",
            "Messages received by the user streams of every account",
            self.user_messages.clone(),
        );
        r.register(
            "stream_user_reconnects",
            "User-stream connections replaced, every account, by reason",
            self.user_reconnects.clone(),
        );
        r.register(
            "stream_user_listen_key_renewals",
            "Listen-key creations and extensions of every account, by result",
            self.user_renewals.clone(),
        );
    }

    /// `telemetry.per_account_series_limit`.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Names the account processes (their series exist from start-up) and
    /// `accounts`, each with zeros.
    pub fn init(&self, processes: &[&'static str], accounts: &[String]) {
        let now = crate::clock::now_ms();
        let mut inner = self.lock();
        for &p in processes {
            let _ = self.failures.get_or_create(&ProcessLabels { process: p });
            inner.process(p);
        }
        for account in accounts {
            inner.row(account, now);
        }
    }

    /// `process` counts an account as stale when it has not synced it for `after`.
    pub fn stale_after(&self, process: &'static str, after: Duration) {
        let mut inner = self.lock();
        let i = inner.process(process);
        inner.processes[i].1 = Some(after.as_millis() as i64);
    }

    /// Keeps only these accounts (the registry's); new ones start with zeros.
    pub fn retain(&self, accounts: &[String]) {
        let now = crate::clock::now_ms();
        let keep: std::collections::HashSet<&str> = accounts.iter().map(|a| a.as_str()).collect();
        let mut inner = self.lock();
        inner.rows.retain(|name, _| keep.contains(name.as_str()));
        for account in accounts {
            inner.row(account, now);
        }
    }

    pub fn failed(&self, process: &'static str, account: &str) {
        self.failures.get_or_create(&ProcessLabels { process }).inc();
        let now = crate::clock::now_ms();
        let mut inner = self.lock();
        let i = inner.process(process);
        let row = inner.row(account, now);
        row.errors[i] += 1;
        row.failed_ms[i] = now;
    }

    pub fn synced(&self, process: &'static str, account: &str) {
        let now = crate::clock::now_ms();
        let mut inner = self.lock();
        let i = inner.process(process);
        inner.row(account, now).synced_ms[i] = now;
    }

    /// The user stream of `account` exists (its series read 0 from now).
    pub(super) fn user_init(&self, account: &str) {
        let now = crate::clock::now_ms();
        let mut inner = self.lock();
        let row = inner.row(account, now);
        row.user.get_or_insert_with(|| UserRow {
            down_since_ms: now,
            ..UserRow::default()
        });
    }

    /// Changes the user stream's row of `account` (created when missing).
    pub(super) fn user(&self, account: &str, change: impl FnOnce(&mut UserRow, i64)) {
        let now = crate::clock::now_ms();
        let mut inner = self.lock();
        let row = inner.row(account, now);
        let user = row.user.get_or_insert_with(|| UserRow {
            down_since_ms: now,
            ..UserRow::default()
        });
        change(user, now);
    }

    pub(super) fn user_up(&self, account: &str, up: bool) {
        self.user(account, |u, now| {
            if u.up && !up {
                u.down_since_ms = now;
            }
            u.up = up;
        });
    }

    pub(super) fn user_message(&self, account: &str, now_ms: i64) {
        self.user_messages.inc();
        self.user(account, |u, _| {
            u.messages += 1;
            u.last_event_ms = now_ms;
        });
    }

    pub(super) fn user_reconnect(&self, account: &str, reason: &'static str) {
        let Some(i) = USER_REASONS.iter().position(|r| *r == reason) else {
            return;
        };
        self.user_reconnects.get_or_create(&ReasonLabels { reason }).inc();
        self.user(account, |u, _| u.reconnects[i] += 1);
    }

    pub(super) fn listen_key(&self, account: &str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.user_renewals.get_or_create(&ResultLabels { result }).inc();
        self.user(account, |u, _| u.renewals[usize::from(!ok)] += 1);
        if !ok {
            let now = crate::clock::now_ms();
            self.lock().row(account, now).listen_key_failed_ms = now;
        }
    }

    /// Sets the state gauges and picks the accounts this scrape shows.
    pub fn select(&self, now_ms: i64) -> Shown {
        let limit = self.limit.load(Ordering::Relaxed);
        let inner = self.lock();
        let mut counts = [0i64; STATES.len()];
        let limited = inner.rows.len() > limit;
        let mut problems: Vec<(usize, &String)> = Vec::new();
        for (name, row) in &inner.rows {
            let state = inner.state(row, now_ms);
            counts[state] += 1;
            if limited && state != 0 {
                problems.push((state, name));
            }
        }
        for (state, n) in STATES.iter().zip(counts) {
            self.states.get_or_create(&StateLabels { state }).set(n);
        }
        self.limited.set(limited as i64);
        let names = match limited {
            false => inner.rows.keys().cloned().collect(),
            true => {
                // Worst first (failing, then stream down, then stale), by name within a state.
                problems.sort();
                let mut names: Vec<String> = problems.into_iter().take(limit).map(|(_, n)| n.clone()).collect();
                names.sort();
                names
            }
        };
        Shown { limited, names }
    }

    /// `account_errors_total{process,account}` of the shown accounts.
    pub fn encode(&self, w: &mut Writer<'_>, shown: &Shown) {
        let inner = self.lock();
        w.family(&ACCOUNT_ERRORS);
        let processes: Vec<String> = inner.processes.iter().map(|(p, _)| label("process", p)).collect();
        for name in &shown.names {
            let Some(row) = inner.rows.get(name) else { continue };
            let account = label("account", name);
            for (i, process) in processes.iter().enumerate() {
                let labels = format!("{process},{account}");
                w.sample(
                    &ACCOUNT_ERRORS,
                    &labels,
                    None,
                    Value::Uint(row.errors.get(i).copied().unwrap_or(0)),
                );
            }
        }
    }

    /// The user-stream rows of the shown accounts, for `stream.rs` to print.
    pub(super) fn user_rows(&self, shown: &Shown) -> Vec<(String, UserRow)> {
        let inner = self.lock();
        shown
            .names
            .iter()
            .filter_map(|name| Some((name.clone(), inner.rows.get(name)?.user.clone()?)))
            .collect()
    }

    /// How many accounts are tracked.
    pub fn len(&self) -> usize {
        self.lock().rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The per-process counts of account failures, for tests: (process, failures summed).
    pub fn failures_by_process(&self) -> HashMap<&'static str, u64> {
        let inner = self.lock();
        inner
            .processes
            .iter()
            .enumerate()
            .map(|(i, (p, _))| {
                (
                    *p,
                    inner.rows.values().map(|r| r.errors.get(i).copied().unwrap_or(0)).sum(),
                )
            })
            .collect()
    }
}

impl Default for AccountMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_limit_every_account_is_shown_above_it_only_problems() {
        let m = AccountMetrics::new();
        m.set_limit(3);
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        m.init(&["trade_sync"], &names);
        let now = crate::clock::now_ms();
        let shown = m.select(now);
        assert!(!shown.limited);
        assert_eq!(shown.names, names);
        m.retain(&["a", "b", "c", "d"].map(String::from));
        m.failed("trade_sync", "c");
        m.user_init("b");
        let shown = m.select(now + STREAM_GRACE.as_millis() as i64 + 1);
        assert!(shown.limited);
        assert_eq!(
            shown.names,
            ["b", "c"],
            "the failing one and the one whose stream is down"
        );
        m.synced("trade_sync", "c");
        m.user_up("b", true);
        // A success after the failure: still failing for RECENT, then ok.
        let later = now + RECENT.as_millis() as i64 + 1000;
        assert_eq!(m.select(now + 1).names, ["c"]);
        assert!(m.select(later).names.is_empty());
        m.stale_after("trade_sync", Duration::from_secs(60));
        assert_eq!(
            m.select(now + 1).names,
            ["c"],
            "nobody is stale within 60 s of appearing"
        );
        let stale = m.select(later);
        assert_eq!(
            stale.names,
            ["a", "b", "c"],
            "all four stale: the limit (3) of them shown"
        );
        assert_eq!(m.failures_by_process()["trade_sync"], 1);
    }

    #[test]
    fn at_most_the_limit_of_problem_accounts_worst_first() {
        let m = AccountMetrics::new();
        m.set_limit(2);
        let names: Vec<String> = (0..5).map(|i| format!("a{i}")).collect();
        m.init(&["position_sync"], &names);
        for name in &names {
            m.user_init(name);
        }
        m.failed("position_sync", "a4");
        let shown = m.select(crate::clock::now_ms() + STREAM_GRACE.as_millis() as i64 + 1);
        assert_eq!(shown.names, ["a0", "a4"], "the failing one first, then by name");
    }
}
