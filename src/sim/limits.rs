//! The simulator's rate limiter, as Binance behaves: weight per fixed
//! minute per IP, 429 with `Retry-After` over the limit, and a 418 ban for a
//! client that keeps sending after a 429.

use std::collections::BTreeMap;

/// Ban length after repeated violations (Binance starts at 2 minutes).
const BAN_MS: i64 = 120_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed {
        used: u32,
    },
    /// 429: over the limit; retry after this many seconds.
    TooMany {
        used: u32,
        retry_after_s: u64,
    },
    /// 418: banned; retry after this many seconds.
    Banned {
        used: u32,
        retry_after_s: u64,
    },
}

#[derive(Debug)]
pub struct Limiter {
    pub limit: u32,
    pub ban_after_violations: u32,
    minute: i64,
    used: u32,
    /// A 429 was answered in this window: requests before it ends are violations.
    backoff_until_ms: i64,
    violations: u32,
    total_violations: u32,
    banned_until_ms: i64,
    /// Weight admitted per minute index, for tests and benchmarks.
    pub weight_by_minute: BTreeMap<i64, u32>,
}

impl Limiter {
    pub fn new(limit: u32, ban_after_violations: u32) -> Self {
        Limiter {
            limit,
            ban_after_violations,
            minute: 0,
            used: 0,
            backoff_until_ms: 0,
            violations: 0,
            total_violations: 0,
            banned_until_ms: 0,
            weight_by_minute: BTreeMap::new(),
        }
    }

    fn roll(&mut self, now_ms: i64) {
        let minute = now_ms.div_euclid(60_000);
        if minute != self.minute {
            self.minute = minute;
            self.used = 0;
        }
    }

    pub fn used(&mut self, now_ms: i64) -> u32 {
        self.roll(now_ms);
        self.used
    }

    /// Answers 429 now and asks for `retry_after_s` of quiet (fault injection).
    pub fn force_429(&mut self, now_ms: i64, retry_after_s: u64) -> Verdict {
        self.roll(now_ms);
        self.backoff_until_ms = now_ms + retry_after_s as i64 * 1000;
        Verdict::TooMany {
            used: self.used,
            retry_after_s,
        }
    }

    /// Requests sent while told to wait (each one a step towards a ban).
    pub fn total_violations(&self) -> u32 {
        self.total_violations
    }

    /// Weight used by some other client on the same IP.
    pub fn consume(&mut self, now_ms: i64, weight: u32) {
        self.roll(now_ms);
        self.used += weight;
        *self.weight_by_minute.entry(self.minute).or_default() += weight;
    }

    pub fn check(&mut self, now_ms: i64, weight: u32) -> Verdict {
        self.roll(now_ms);
        if now_ms < self.banned_until_ms {
            return Verdict::Banned {
                used: self.used,
                retry_after_s: secs_until(now_ms, self.banned_until_ms),
            };
        }
        if now_ms < self.backoff_until_ms {
            // Sending while told to wait: Binance escalates this to a ban.
            self.violations += 1;
            self.total_violations += 1;
            if self.violations >= self.ban_after_violations {
                self.banned_until_ms = now_ms + BAN_MS;
                self.violations = 0;
                return Verdict::Banned {
                    used: self.used,
                    retry_after_s: secs_until(now_ms, self.banned_until_ms),
                };
            }
            return Verdict::TooMany {
                used: self.used,
                retry_after_s: secs_until(now_ms, self.backoff_until_ms),
            };
        }
        if self.used + weight > self.limit {
            let next_minute = (self.minute + 1) * 60_000;
            self.backoff_until_ms = next_minute;
            return Verdict::TooMany {
                used: self.used,
                retry_after_s: secs_until(now_ms, next_minute),
            };
        }
        self.used += weight;
        *self.weight_by_minute.entry(self.minute).or_default() += weight;
        Verdict::Allowed { used: self.used }
    }
}

fn secs_until(now_ms: i64, until_ms: i64) -> u64 {
    ((until_ms - now_ms).max(0) as u64).div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_minutes_429_then_ban_for_a_client_that_ignores_it() {
        let mut l = Limiter::new(10, 2);
        let t = 60_000 * 1000 + 30_000; // half-way through a minute
        assert_eq!(l.check(t, 10), Verdict::Allowed { used: 10 });
        assert_eq!(
            l.check(t + 1, 1),
            Verdict::TooMany {
                used: 10,
                retry_after_s: 30
            }
        );
        assert!(matches!(l.check(t + 2, 1), Verdict::TooMany { .. }), "first violation");
        assert!(
            matches!(l.check(t + 3, 1), Verdict::Banned { retry_after_s: 120, .. }),
            "second violation bans"
        );
        assert!(
            matches!(l.check(t + 60_000, 1), Verdict::Banned { .. }),
            "still banned next minute"
        );
        assert_eq!(l.check(t + 121_000, 1), Verdict::Allowed { used: 1 });
        assert_eq!(l.weight_by_minute.values().copied().collect::<Vec<_>>(), vec![10, 1]);
    }

    #[test]
    fn a_client_that_waits_is_never_banned() {
        let mut l = Limiter::new(5, 2);
        let t = 60_000 * 7;
        assert_eq!(l.check(t, 5), Verdict::Allowed { used: 5 });
        assert!(matches!(l.check(t + 10, 1), Verdict::TooMany { retry_after_s: 60, .. }));
        assert_eq!(
            l.check(t + 60_000, 5),
            Verdict::Allowed { used: 5 },
            "new minute, fresh budget"
        );
    }
}
