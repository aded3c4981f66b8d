//! One pace for every new WebSocket connection to the venue. Binance limits
//! new connections per IP (300 per 5 minutes, documented for spot; nautilus
//! paces futures connects at one a second for that reason), so every
//! connection the service opens — a market stream's, a user stream's, a
//! reconnect after an outage that dropped them all — first takes a token
//! from this one bucket: `exchange.stream_connects_per_second` refilled,
//! at most `exchange.stream_connect_burst` saved up. A burst lets a start or
//! a short blip reconnect at once; a storm is spread at the refill rate.
//!
//! A token is reserved when asked for (the bucket may go below zero: the
//! askers queue in order of asking) and is not given back when the asker
//! gives up while it waits: the pace is only ever slower than configured.
//! No lock is held across the wait.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket for new connections (tokio's clock, so tests can pause it).
#[derive(Debug)]
pub struct ConnectPacer {
    per_second: f64,
    burst: f64,
    state: Mutex<Bucket>,
    /// Connections that had to wait for a token.
    paced: AtomicU64,
    /// Connections let through (at once or after their wait).
    granted: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    /// May be negative: tokens already promised to waiters.
    tokens: f64,
    at: Instant,
}

impl ConnectPacer {
    /// `per_second` tokens a second (above 0), at most `burst` (at least 1) saved; starts full.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        ConnectPacer {
            per_second: if per_second > 0.0 { per_second } else { 1.0 },
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
            }),
            paced: AtomicU64::new(0),
            granted: AtomicU64::new(0),
        }
    }

    /// Takes the next token: how long to wait for it (zero when one is there).
    fn reserve(&self) -> Duration {
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.at).as_secs_f64() * self.per_second;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.per_second)
        }
    }

    /// Waits for this connection's turn; returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let wait = self.reserve();
        if !wait.is_zero() {
            self.paced.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
        self.granted.fetch_add(1, Ordering::Relaxed);
        wait
    }

    /// Connections that waited for their turn so far.
    pub fn paced(&self) -> u64 {
        self.paced.load(Ordering::Relaxed)
    }

    /// Connections let through so far.
    pub fn granted(&self) -> u64 {
        self.granted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_one_per_refill() {
        let pacer = ConnectPacer::new(2.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(pacer.acquire().await, Duration::ZERO);
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        let mut at = Vec::new();
        for _ in 0..4 {
            pacer.acquire().await;
            at.push(start.elapsed().as_millis());
        }
        assert_eq!(at, [500, 1000, 1500, 2000], "then one every 1/rate");
        assert_eq!((pacer.granted(), pacer.paced()), (7, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_of_waiters_is_spread_at_the_rate_in_order() {
        let pacer = Arc::new(ConnectPacer::new(1.0, 1));
        let start = Instant::now();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let pacer = pacer.clone();
                tokio::spawn(async move {
                    pacer.acquire().await;
                    start.elapsed()
                })
            })
            .collect();
        let mut done = Vec::new();
        for t in tasks {
            done.push(t.await.unwrap().as_secs());
        }
        done.sort_unstable();
        assert_eq!(done, (0..10).collect::<Vec<u64>>(), "one a second, none together");
        // Over any window, at most burst + rate × window were let through.
        assert_eq!(pacer.granted(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_refills_only_up_to_its_burst() {
        let pacer = ConnectPacer::new(10.0, 2);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let start = Instant::now();
        for _ in 0..4 {
            pacer.acquire().await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(200),
            "two saved up, then 100 ms each"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_keeps_the_pace_slower_never_faster() {
        let pacer = ConnectPacer::new(1.0, 1);
        pacer.acquire().await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), pacer.acquire()).await;
        assert!(gave_up.is_err());
        let start = Instant::now();
        pacer.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_millis(1990), "its token is not reused");
    }
}
