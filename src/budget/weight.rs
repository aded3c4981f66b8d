//! The venue's weight budget, shared by every process: weight per fixed
//! (calendar) minute, capped at the venue's limit × a safety margin.
//!
//! - Priority: when weight is scarce, a waiting caller with a better
//!   priority (1 = highest) goes first.
//! - Reserve: callers not in `reserved_for` may use only `1 − reserved_share`
//!   of the budget, so level_monitor always finds room.
//! - Correction: the venue's own count (`X-MBX-USED-WEIGHT-1M`) raises ours,
//!   so another client on the same IP shrinks our share. A count belongs to
//!   the minute its request was sent in (venue time): an answer that arrives
//!   after the minute turned carries the old minute's count and is ignored,
//!   never poured into the new minute.
//! - Prediction: what other clients spent in the minute just over (the
//!   venue's count above ours) is expected again in the next one, for callers
//!   outside the reserve. A client that spends at each minute's turn would
//!   otherwise meet our first calls of the minute, before any answer told us
//!   of it, and the venue would answer 429. The reserve is not held back by a
//!   prediction: a client that stopped costs the reserved processes nothing.
//! - 429/418: every caller waits until `Retry-After` has passed.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

/// Why admission failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightRefusal {
    /// The budget would not have room before the caller's deadline.
    WouldMissDeadline { wait: Duration },
    /// The request can never fit (weight above the share this caller may use).
    TooHeavy { weight: u32, cap: u32 },
}

pub struct VenueWeight {
    state: Mutex<State>,
    changed: Notify,
    margin: f64,
    reserved_share: f64,
    reserved_for: HashSet<String>,
    clock: Clock,
}

/// Where the budget reads the time: the venue's minutes are the wall clock's
/// plus the measured offset. Anchored (tests): a wall time pinned to a tokio
/// instant, so tokio's clock (paused or not) moves the minutes.
#[derive(Debug, Clone, Copy)]
enum Clock {
    Wall,
    Anchored { wall_ms: i64, at: Instant },
}

impl Clock {
    fn now_ms(self) -> i64 {
        match self {
            Clock::Wall => crate::clock::now_ms(),
            Clock::Anchored { wall_ms, at } => wall_ms + at.elapsed().as_millis() as i64,
        }
    }
}

struct State {
    venue_limit: u32,
    /// Index of the current fixed minute (venue time).
    minute: i64,
    used: u32,
    venue_used: u32,
    /// What we admitted this minute.
    own: u32,
    /// The most the venue counted above `own` this minute: other clients' spend.
    others: u32,
    /// `others` of the minute just over, expected again in this one.
    others_expected: u32,
    paused_until: Option<Instant>,
    clock_offset_ms: i64,
    waiters: BTreeSet<(u8, u64)>,
    next_ticket: u64,
}

impl State {
    /// What we know was spent, or more while other clients' spend of the
    /// last minute is expected again.
    fn expected(&self) -> u32 {
        self.used.max(self.own + self.others_expected)
    }
}

/// A read-only view for metrics and the status API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub used: u32,
    /// `used`, or more while other clients' spend of the last minute is
    /// expected again (what callers outside the reserve are admitted against).
    pub expected: u32,
    pub limit: u32,
    pub venue_used: u32,
    pub venue_limit: u32,
    pub paused: bool,
}

impl VenueWeight {
    /// `venue_limit` is the venue's weight per minute until `exchangeInfo` says otherwise.
    pub fn new(
        venue_limit: u32,
        margin: f64,
        reserved_share: f64,
        reserved_for: impl IntoIterator<Item = String>,
    ) -> Self {
        VenueWeight {
            state: Mutex::new(State {
                venue_limit,
                minute: 0,
                used: 0,
                venue_used: 0,
                own: 0,
                others: 0,
                others_expected: 0,
                paused_until: None,
                clock_offset_ms: 0,
                waiters: BTreeSet::new(),
                next_ticket: 0,
            }),
            changed: Notify::new(),
            margin,
            reserved_share,
            reserved_for: reserved_for.into_iter().collect(),
            clock: Clock::Wall,
        }
    }

    /// Reads the time as tokio's clock moves on from `wall_ms` now, instead of
    /// the wall clock: minute boundaries on a paused clock (tests).
    pub fn anchored_at(mut self, wall_ms: i64) -> Self {
        self.clock = Clock::Anchored {
            wall_ms,
            at: Instant::now(),
        };
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Our limit: the venue's times the safety margin.
    pub fn limit(&self) -> u32 {
        self.our_limit(&self.lock())
    }

    fn our_limit(&self, s: &State) -> u32 {
        (s.venue_limit as f64 * self.margin).floor() as u32
    }

    pub fn set_venue_limit(&self, venue_limit: u32) {
        self.lock().venue_limit = venue_limit;
        self.changed.notify_waiters();
    }

    /// Venue time minus local time, from the venue's clock.
    pub fn set_clock_offset_ms(&self, offset: i64) {
        self.lock().clock_offset_ms = offset;
    }

    pub fn usage(&self) -> Usage {
        let mut s = self.lock();
        let limit = self.our_limit(&s);
        roll(&mut s, self.clock);
        Usage {
            used: s.used,
            expected: s.expected(),
            limit,
            venue_used: s.venue_used,
            venue_limit: s.venue_limit,
            paused: s.paused_until.is_some_and(|u| u > Instant::now()),
        }
    }

    fn cap_for(&self, process: &str, limit: u32) -> u32 {
        if self.reserved_for.contains(process) {
            limit
        } else {
            (limit as f64 * (1.0 - self.reserved_share)).floor() as u32
        }
    }

    /// The minute's spend as `process` sees it: the reserve counts what is
    /// known; others also count the other clients' expected spend.
    fn spent_for(&self, process: &str, s: &State) -> u32 {
        if self.reserved_for.contains(process) {
            s.used
        } else {
            s.expected()
        }
    }

    /// Waits until `weight` fits (or fails when it cannot before `deadline`).
    /// Returns how long the caller waited. A waiter's place in line is held
    /// by a [`Ticket`]: dropping this future (a timeout, a shutdown) gives it
    /// up, so a caller that left never blocks lower priorities.
    pub async fn acquire(
        &self,
        process: &str,
        priority: u8,
        weight: u32,
        deadline: Instant,
    ) -> Result<Duration, WeightRefusal> {
        let started = Instant::now();
        let mut ticket = Ticket {
            budget: self,
            place: None,
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake_at = {
                let mut s = self.lock();
                roll(&mut s, self.clock);
                let now = Instant::now();
                let cap = self.cap_for(process, self.our_limit(&s));
                if weight > cap {
                    return Err(WeightRefusal::TooHeavy { weight, cap });
                }
                match s.paused_until.filter(|&until| until > now) {
                    Some(until) => until,
                    None => {
                        let better_waiting = s.waiters.range(..(priority, 0)).next().is_some();
                        if self.spent_for(process, &s) + weight <= cap && !better_waiting {
                            s.used += weight;
                            s.own += weight;
                            if let Some(place) = ticket.place.take() {
                                s.waiters.remove(&place);
                            }
                            drop(s);
                            self.changed.notify_waiters();
                            return Ok(started.elapsed());
                        }
                        if ticket.place.is_none() {
                            let place = (priority, s.next_ticket);
                            s.next_ticket += 1;
                            s.waiters.insert(place);
                            ticket.place = Some(place);
                        }
                        now + until_next_minute(self.clock, s.clock_offset_ms)
                    }
                }
            };
            if wake_at > deadline {
                return Err(WeightRefusal::WouldMissDeadline {
                    wait: wake_at - Instant::now(),
                });
            }
            tokio::select! {
                _ = sleep_until(wake_at) => {}
                _ = notified => {}
            }
        }
    }

    /// Takes the venue's count into account: `venue_used` as counted in venue
    /// minute `minute`, the one the request was sent in ([`Self::venue_minute`]
    /// just before sending). A count from a minute that is over by now says
    /// nothing about the current one and is ignored.
    pub fn observe_used_weight(&self, venue_used: u32, minute: i64) {
        let mut s = self.lock();
        roll(&mut s, self.clock);
        if minute != s.minute {
            return;
        }
        s.venue_used = venue_used;
        s.others = s.others.max(venue_used.saturating_sub(s.own));
        if venue_used > s.used {
            s.used = venue_used;
        }
    }

    /// After a 429 or 418: nobody sends until `retry_after` has passed.
    pub fn pause_for(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut s = self.lock();
        if s.paused_until.is_none_or(|u| u < until) {
            s.paused_until = Some(until);
        }
    }

    /// The venue's current minute (unix minutes, venue clock).
    pub fn venue_minute(&self) -> i64 {
        venue_now_ms(self.clock, self.lock().clock_offset_ms).div_euclid(60_000)
    }

    /// How long until the venue's next minute starts.
    pub fn until_next_minute(&self) -> Duration {
        until_next_minute(self.clock, self.lock().clock_offset_ms)
    }

    /// The share of the budget `process` may use.
    pub fn cap(&self, process: &str) -> u32 {
        let limit = self.limit();
        self.cap_for(process, limit)
    }

    /// Whether callers are held back by a 429/418 right now.
    pub fn paused(&self) -> bool {
        self.lock().paused_until.is_some_and(|u| u > Instant::now())
    }
}

/// A waiter's place in line; leaving (admitted, refused or dropped) gives it up.
struct Ticket<'a> {
    budget: &'a VenueWeight,
    place: Option<(u8, u64)>,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(place) = self.place.take() {
            self.budget.lock().waiters.remove(&place);
            self.budget.changed.notify_waiters();
        }
    }
}

fn venue_now_ms(clock: Clock, offset: i64) -> i64 {
    clock.now_ms() + offset
}

fn until_next_minute(clock: Clock, offset: i64) -> Duration {
    let now = venue_now_ms(clock, offset);
    Duration::from_millis((60_000 - now.rem_euclid(60_000)) as u64 + 5)
}

/// Starts a new window when the venue's minute has changed.
fn roll(s: &mut State, clock: Clock) {
    let minute = venue_now_ms(clock, s.clock_offset_ms).div_euclid(60_000);
    if minute != s.minute {
        // Only the minute just over says what comes next.
        s.others_expected = if minute == s.minute + 1 { s.others } else { 0 };
        s.minute = minute;
        s.used = 0;
        s.venue_used = 0;
        s.own = 0;
        s.others = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn admits_up_to_limit_times_margin() {
        let b = VenueWeight::new(100, 0.8, 0.0, []);
        assert_eq!(b.limit(), 80);
        // Avoid straddling a minute boundary in this test.
        if until_next_minute(Clock::Wall, 0) < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        for _ in 0..40 {
            b.acquire("p", 1, 2, far()).await.unwrap();
        }
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(matches!(
            b.acquire("p", 1, 1, soon).await,
            Err(WeightRefusal::WouldMissDeadline { .. })
        ));
        assert_eq!(b.usage().used, 80);
    }

    #[tokio::test]
    async fn the_reserve_is_kept_for_reserved_processes() {
        if until_next_minute(Clock::Wall, 0) < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let b = VenueWeight::new(100, 1.0, 0.2, ["level_monitor".to_string()]);
        let soon = || Instant::now() + Duration::from_millis(10);
        for _ in 0..80 {
            b.acquire("trade_sync", 1, 1, soon()).await.unwrap();
        }
        assert!(
            b.acquire("trade_sync", 1, 1, soon()).await.is_err(),
            "others stop at 80 %"
        );
        for _ in 0..20 {
            b.acquire("level_monitor", 1, 1, soon()).await.unwrap();
        }
        assert!(b.acquire("level_monitor", 1, 1, soon()).await.is_err());
        assert!(matches!(
            b.acquire("x", 1, 90, soon()).await,
            Err(WeightRefusal::TooHeavy { .. })
        ));
    }

    #[tokio::test]
    async fn a_dropped_waiter_gives_its_place_up() {
        if until_next_minute(Clock::Wall, 0) < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let b = std::sync::Arc::new(VenueWeight::new(10, 1.0, 0.0, []));
        b.acquire("p", 1, 10, far()).await.unwrap();
        // A priority-1 caller waits for the next minute; its caller gives up (a timeout drops it).
        let waiting = tokio::time::timeout(Duration::from_millis(50), b.acquire("urgent", 1, 1, far())).await;
        assert!(waiting.is_err(), "it was still waiting when dropped");
        assert!(b.lock().waiters.is_empty(), "the dropped waiter left the line");
        // A lower priority is not held behind a caller that has gone.
        b.observe_used_weight(0, b.venue_minute());
        {
            let mut s = b.lock();
            (s.used, s.own) = (0, 0);
        }
        let soon = Instant::now() + Duration::from_millis(50);
        b.acquire("later", 5, 1, soon).await.expect("priority 5 proceeds");
    }

    #[tokio::test]
    async fn the_venue_count_shrinks_our_share_and_a_pause_holds_everyone() {
        if until_next_minute(Clock::Wall, 0) < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let b = VenueWeight::new(100, 0.5, 0.0, []);
        b.observe_used_weight(45, b.venue_minute());
        let soon = Instant::now() + Duration::from_millis(10);
        b.acquire("p", 1, 5, soon).await.unwrap();
        assert!(
            b.acquire("p", 1, 1, soon).await.is_err(),
            "45 used by someone else + 5 = our 50"
        );
        b.pause_for(Duration::from_secs(30));
        assert!(b.paused());
        let r = b.acquire("p", 1, 0, Instant::now() + Duration::from_secs(1)).await;
        assert!(matches!(r, Err(WeightRefusal::WouldMissDeadline { .. })), "{r:?}");
    }

    /// 12:00:59.900 (venue time) on a paused clock.
    fn just_before_a_minute_turns() -> VenueWeight {
        let minute_start = 29_000_000 * 60_000;
        VenueWeight::new(2400, 1.0, 0.0, []).anchored_at(minute_start + 59_900)
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_from_the_old_minute_never_fills_the_new_one() {
        let b = just_before_a_minute_turns();
        let sent_in = b.venue_minute();
        // The answer arrives 200 ms later, in the next minute, with the old minute's count.
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(b.venue_minute(), sent_in + 1);
        b.observe_used_weight(2300, sent_in);
        assert_eq!(b.usage().used, 0, "the new minute starts empty");
        let soon = Instant::now() + Duration::from_millis(10);
        b.acquire("level_monitor", 1, 200, soon)
            .await
            .expect("the new minute has room for priority 1");
    }

    #[tokio::test(start_paused = true)]
    async fn another_clients_spend_is_expected_again_at_the_next_minutes_turn() {
        let minute_start = 29_000_000 * 60_000;
        let b = VenueWeight::new(1000, 1.0, 0.2, ["level_monitor".to_string()]).anchored_at(minute_start + 30_000);
        let soon = || Instant::now() + Duration::from_millis(10);
        b.acquire("trade_sync", 1, 10, soon()).await.unwrap();
        // The venue counts 710: another client spent 700 this minute.
        b.observe_used_weight(710, b.venue_minute());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(b.usage().used, 0, "a new minute");
        // Before any answer of the new minute, its 700 is expected again: 800 - 700 left.
        b.acquire("trade_sync", 1, 100, soon()).await.unwrap();
        assert!(
            b.acquire("trade_sync", 1, 1, soon()).await.is_err(),
            "the prediction holds the rest"
        );
        b.acquire("level_monitor", 1, 500, soon())
            .await
            .expect("the reserve is not held back by a prediction");
        // This minute the venue counts only ours: the next minute expects nobody.
        b.observe_used_weight(600, b.venue_minute());
        tokio::time::advance(Duration::from_secs(60)).await;
        b.acquire("trade_sync", 1, 800, soon())
            .await
            .expect("nobody else expected");
        // A minute without any answer (two minutes on) expects nobody either.
        b.observe_used_weight(900, b.venue_minute());
        tokio::time::advance(Duration::from_secs(120)).await;
        b.acquire("trade_sync", 1, 800, soon()).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_from_the_current_minute_raises_our_count() {
        let b = just_before_a_minute_turns();
        tokio::time::advance(Duration::from_millis(150)).await;
        let sent_in = b.venue_minute();
        tokio::time::advance(Duration::from_millis(50)).await;
        b.observe_used_weight(2300, sent_in);
        assert_eq!((b.usage().used, b.usage().venue_used), (2300, 2300));
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(b.acquire("p", 1, 200, soon).await.is_err(), "only 100 left");
        // The next minute starts empty again.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(b.usage().used, 0);
    }
}
