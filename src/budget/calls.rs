//! Each process's calls per sliding minute: the seed's `track_api_call` /
//! `can_make_api_calls`, and the first step of admission (`try_take`).
//!
//! Caps that scale: for the processes that work per account (trade_sync,
//! position_sync, user_stream) the configured `max_api_calls_per_minute` is
//! per account, and the cap in force is that times this replica's accounts,
//! at most the venue weight budget per minute (every call weighs at least
//! 1, so more could never be sent). A fixed cap either starved those
//! processes at a thousand accounts (60 calls/min for 1 000 accounts) or,
//! set for the largest case, meant nothing at two.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct ProcessCalls {
    /// Changed by live overrides and reloads.
    limits: std::sync::RwLock<HashMap<String, u32>>,
    /// Processes whose limit is per account.
    per_account: std::sync::RwLock<std::collections::HashSet<String>>,
    /// The accounts this replica works for (at least 1 counts).
    accounts: AtomicU32,
    /// No scaled cap goes above this (the venue weight budget per minute).
    ceiling: AtomicU32,
    calls: Mutex<HashMap<String, VecDeque<(Instant, u32)>>>,
}

impl Default for ProcessCalls {
    fn default() -> Self {
        ProcessCalls {
            limits: Default::default(),
            per_account: Default::default(),
            accounts: AtomicU32::new(1),
            ceiling: AtomicU32::new(u32::MAX),
            calls: Mutex::default(),
        }
    }
}

impl ProcessCalls {
    /// A budget with a calls-per-minute limit for each process id.
    pub fn new(limits: impl IntoIterator<Item = (String, u32)>) -> Self {
        ProcessCalls {
            limits: std::sync::RwLock::new(limits.into_iter().collect()),
            ..Self::default()
        }
    }

    /// Records `count` calls made now by `process`.
    pub fn track_api_call(&self, process: &str, count: u32) {
        if count == 0 {
            return;
        }
        let now = Instant::now();
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let window = calls.entry(process.to_string()).or_default();
        prune(window, now);
        window.push_back((now, count));
    }

    /// Whether `count` more calls keep `process` within its limit for the last minute.
    pub fn can_make_api_calls(&self, process: &str, count: u32) -> bool {
        self.calls_last_minute(process).saturating_add(count) <= self.limit(process)
    }

    /// Calls `process` made in the sliding minute ending now.
    pub fn calls_last_minute(&self, process: &str) -> u32 {
        let now = Instant::now();
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.get_mut(process).map_or(0, |window| {
            prune(window, now);
            window.iter().map(|&(_, n)| n).sum()
        })
    }

    /// Takes `count` calls now if they fit (`Ok`), or says how long until they
    /// would (`Err(Some(wait))`), or that they never will (`Err(None)`).
    /// Check and record happen under one lock, so concurrent callers cannot both pass.
    pub fn try_take(&self, process: &str, count: u32) -> Result<(), Option<Duration>> {
        let limit = self.limit(process);
        if count > limit {
            return Err(None);
        }
        let now = Instant::now();
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let window = calls.entry(process.to_string()).or_default();
        prune(window, now);
        let mut used: u32 = window.iter().map(|&(_, n)| n).sum();
        if used + count <= limit {
            window.push_back((now, count));
            return Ok(());
        }
        for &(at, n) in window.iter() {
            used -= n;
            if used + count <= limit {
                return Err(Some((at + WINDOW).saturating_duration_since(now)));
            }
        }
        Err(Some(WINDOW))
    }

    /// Gives back calls taken with [`try_take`](Self::try_take) that were never sent.
    pub fn refund(&self, process: &str, count: u32) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(window) = calls.get_mut(process)
            && let Some(pos) = window.iter().rposition(|&(_, n)| n == count)
        {
            window.remove(pos);
        }
    }

    /// The limit in force: the configured one, or for a per-account process
    /// the configured one × accounts, at most the ceiling; 0 for an unknown process.
    pub fn limit(&self, process: &str) -> u32 {
        let configured = self.configured(process);
        let scaled = self
            .per_account
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(process);
        match scaled {
            false => configured,
            true => {
                let accounts = self.accounts.load(Ordering::Relaxed).max(1);
                let ceiling = self.ceiling.load(Ordering::Relaxed);
                configured.saturating_mul(accounts).min(ceiling.max(configured))
            }
        }
    }

    /// The configured limit (`max_api_calls_per_minute`); 0 for an unknown process.
    pub fn configured(&self, process: &str) -> u32 {
        let limits = self.limits.read().unwrap_or_else(|e| e.into_inner());
        limits.get(process).copied().unwrap_or(0)
    }

    /// Which processes' limits are per account (replaces the previous set).
    pub fn set_per_account(&self, processes: impl IntoIterator<Item = String>) {
        *self.per_account.write().unwrap_or_else(|e| e.into_inner()) = processes.into_iter().collect();
    }

    /// How many accounts this replica works for now.
    pub fn set_accounts(&self, accounts: usize) {
        self.accounts
            .store(u32::try_from(accounts).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    /// The most a scaled cap may reach: the venue weight budget per minute.
    pub fn set_ceiling(&self, ceiling: u32) {
        self.ceiling.store(ceiling, Ordering::Relaxed);
    }

    /// Sets `process`'s limit (`None`: the process is gone, and so is its budget).
    pub fn set_limit(&self, process: &str, limit: Option<u32>) {
        let mut limits = self.limits.write().unwrap_or_else(|e| e.into_inner());
        match limit {
            Some(limit) => limits.insert(process.to_string(), limit),
            None => limits.remove(process),
        };
    }
}

fn prune(window: &mut VecDeque<(Instant, u32)>, now: Instant) {
    while window.front().is_some_and(|&(at, _)| now.duration_since(at) >= WINDOW) {
        window.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_account_caps_scale_with_accounts_up_to_the_ceiling() {
        let budget = ProcessCalls::new([("trade_sync".to_string(), 30), ("price_update".to_string(), 30)]);
        budget.set_per_account(["trade_sync".to_string()]);
        assert_eq!(budget.limit("trade_sync"), 30, "one account (or none) counts as one");
        budget.set_accounts(1000);
        budget.set_ceiling(1920);
        assert_eq!(budget.limit("trade_sync"), 1920, "30 × 1000, at most the venue budget");
        assert_eq!(budget.limit("price_update"), 30, "not per account");
        budget.set_accounts(10);
        assert_eq!(budget.limit("trade_sync"), 300);
        assert_eq!(budget.configured("trade_sync"), 30);
        budget.set_ceiling(10);
        assert_eq!(budget.limit("trade_sync"), 30, "never below the configured cap");
    }

    #[tokio::test(start_paused = true)]
    async fn sliding_minute_forgets_old_calls() {
        let budget = ProcessCalls::new([("a".to_string(), 10)]);
        budget.track_api_call("a", 6);
        assert!(budget.can_make_api_calls("a", 4));
        assert!(!budget.can_make_api_calls("a", 5));
        tokio::time::advance(Duration::from_secs(30)).await;
        budget.track_api_call("a", 4);
        assert_eq!(budget.calls_last_minute("a"), 10);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(budget.calls_last_minute("a"), 4);
        assert!(budget.can_make_api_calls("a", 6));
        assert!(!budget.can_make_api_calls("b", 1), "unknown processes have no budget");
        assert_eq!(budget.try_take("a", 6), Ok(()));
        assert_eq!(budget.try_take("a", 11), Err(None), "never fits");
        // 10 used: 4 (expire in 29 s) + 6 (expire in 60 s); one more needs the first group gone.
        assert_eq!(budget.try_take("a", 1), Err(Some(Duration::from_secs(29))));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(budget.try_take("a", 5), Err(Some(Duration::from_secs(50))));
        assert_eq!(budget.try_take("a", 11), Err(None));
        tokio::time::advance(Duration::from_secs(19)).await;
        assert_eq!(budget.try_take("a", 4), Ok(()));
        assert_eq!(budget.calls_last_minute("a"), 10);
        budget.refund("a", 4);
        assert_eq!(budget.calls_last_minute("a"), 6);
    }
}
