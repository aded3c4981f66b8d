//! The timetable: when each process is next due and what happens at a due
//! tick. One loop owns a min-heap of next ticks (earliest first, then by
//! priority) and never waits for a run: each run is launched as its own
//! tracked task, so a slow process cannot delay another's tick. Alone, a
//! process ticks at a fixed rate from its start (missed ticks are counted,
//! not caught up); under HA, on the grid all replicas share, recomputed from
//! the database's clock at each tick; a chained process on its deadline.
//! Kept apart from the operator actions (`control.rs`) because this is the
//! only code on the hot path of thousands of ticks a second.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, sleep_until};

use super::state::ProcessHandle;
use super::{Coordinator, Scheduler};
use crate::process::Trigger;
use crate::telemetry::process::SkipReason;

impl Scheduler {
    /// The interval `p` is on right now: its own, stretched while the budget
    /// is tight. Under HA the factor is rounded up to a whole number, so the
    /// stretched ticks are points of the grid the replicas share (every k-th).
    pub(super) fn effective_interval(&self, p: &ProcessHandle, config: &crate::config::ProcessConfig) -> Duration {
        let factor = match self.adaptive.get() {
            Some(a) if !config.chained() => a.factor(&config.kind, config.priority),
            _ => 1.0,
        };
        let factor = if self.ha.get().is_some() { factor.ceil() } else { factor };
        let interval = Duration::from_secs_f64(config.interval_seconds).mul_f64(factor);
        p.series().effective_interval(interval.as_secs_f64());
        interval
    }

    /// Starts ticking, and every continuous process (when enabled). Returns at once.
    pub fn start(self: &Arc<Self>) {
        if self.enabled {
            let added = self.added_rx.lock().unwrap_or_else(|e| e.into_inner()).take();
            tokio::spawn(self.clone().tick_loop(added));
            for p in self
                .processes()
                .iter()
                .filter(|p| p.process.is_some() && p.continuous())
            {
                self.tracker.spawn(self.clone().supervise(p.clone()));
            }
        }
    }

    /// When `p` first falls due after `start` (a chained process: its first deadline).
    fn first_tick(&self, p: &ProcessHandle, start: Instant) -> Instant {
        let config = p.config();
        let offset = Duration::from_secs_f64(config.start_offset_seconds);
        let first = match (self.ha.get(), config.chained()) {
            (_, true) => {
                // The first deadline counts from the first tick it would have had.
                p.chain.lock().unwrap_or_else(|e| e.into_inner()).since = Some(start + offset);
                start + offset + p.interval()
            }
            (Some(ha), false) => start + ha.until_next_tick(p.interval(), offset, Duration::ZERO),
            (None, false) => start + offset,
        };
        self.note_next_run(p, first);
        first
    }

    async fn tick_loop(self: Arc<Self>, mut added: Option<tokio::sync::mpsc::UnboundedReceiver<Arc<ProcessHandle>>>) {
        let start = Instant::now();
        // (next tick, priority, slot): the earliest tick first; at the same instant, priority 1 first.
        let mut timetable: BinaryHeap<Reverse<(Instant, u8, usize)>> = BinaryHeap::new();
        let mut slots: Vec<Option<Arc<ProcessHandle>>> = Vec::new();
        let take_in = |p: Arc<ProcessHandle>, at: Instant, timetable: &mut BinaryHeap<_>, slots: &mut Vec<_>| {
            let first = self.first_tick(&p, at);
            timetable.push(Reverse((first, p.config().priority, slots.len())));
            slots.push(Some(p));
        };
        for p in self
            .processes()
            .iter()
            .filter(|p| p.process.is_some() && !p.continuous())
        {
            take_in(p.clone(), start, &mut timetable, &mut slots);
        }
        loop {
            let due = timetable.peek().map(|&Reverse((due, _, _))| due);
            tokio::select! {
                biased;
                _ = self.stop_ticking.cancelled() => return,
                Some(p) = async { match added.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                    if p.process.is_some() && !p.continuous() {
                        take_in(p, Instant::now(), &mut timetable, &mut slots);
                    }
                    continue;
                }
                _ = async { match due { Some(due) => sleep_until(due).await, None => std::future::pending().await } } => {}
            }
            let now = Instant::now();
            let mut due_now = Vec::new();
            while let Some(&Reverse((due, priority, slot))) = timetable.peek() {
                if due > now {
                    break;
                }
                timetable.pop();
                due_now.push((priority, due, slot));
            }
            due_now.sort_unstable();
            for (_, due, slot) in due_now {
                let Some(p) = slots[slot].clone() else { continue };
                if p.is_removed() {
                    slots[slot] = None;
                    continue;
                }
                let next = self.tick(&p, due, now);
                timetable.push(Reverse((next, p.config().priority, slot)));
            }
        }
    }

    /// Handles one due tick of `p`; returns its next tick.
    fn tick(self: &Arc<Self>, p: &Arc<ProcessHandle>, due: Instant, now: Instant) -> Instant {
        let config = p.config();
        if config.chained() {
            return self.deadline_tick(p, now);
        }
        if let Some(ha) = self.ha.get() {
            return self.tick_shared(ha, p, due, now);
        }
        let interval = Duration::from_secs_f64(config.interval_seconds);
        let missed = (now.duration_since(due).as_nanos() / interval.as_nanos().max(1)) as u32;
        let scheduled = due + interval * missed;
        let next = scheduled + self.effective_interval(p, &config);
        self.note_next_run(p, next);
        if !config.enabled {
            return next;
        }
        if missed > 0 {
            self.skipped(p, SkipReason::missed, missed as u64);
        }
        self.start_run(p, Trigger::Schedule, scheduled, next);
        next
    }

    /// A tick on the grid all replicas share: the next one is computed from
    /// the database's clock each time, so replicas stay aligned; whether
    /// this replica runs it is decided by the claim at the start of the run.
    fn tick_shared(
        self: &Arc<Self>,
        ha: &Arc<dyn Coordinator>,
        p: &Arc<ProcessHandle>,
        due: Instant,
        now: Instant,
    ) -> Instant {
        let config = p.config();
        let offset = Duration::from_secs_f64(config.start_offset_seconds);
        // Stretched by a whole factor k: every k-th point of the shared grid
        // (claims still number slots on the configured grid, so they only grow).
        let stretched = self.effective_interval(p, &config);
        let next = now + ha.until_next_tick(stretched, offset, p.interval() / 4);
        self.note_next_run(p, next);
        if config.enabled {
            self.start_run(p, Trigger::Schedule, due, next);
        }
        next
    }

    pub(super) fn skipped(&self, p: &ProcessHandle, reason: SkipReason, count: u64) {
        self.metrics.process.skipped(&p.id, reason, count);
        p.stats().skipped_count += count;
        tracing::debug!(process = %p.id, ?reason, count, "tick skipped");
    }

    pub(super) fn note_next_run(&self, p: &ProcessHandle, next: Instant) {
        let wall = SystemTime::now() + next.saturating_duration_since(Instant::now());
        p.stats().next_run = Some(wall);
    }

    pub(super) fn launch(
        self: &Arc<Self>,
        p: Arc<ProcessHandle>,
        trigger: Trigger,
        scheduled: Instant,
        next_tick: Instant,
    ) {
        let me = self.clone();
        // The task holds only its arguments; the run's (large) future is
        // built and boxed when the task first runs, on a worker, so launching
        // thousands of runs at one instant stays cheap for the tick loop.
        self.tracker.spawn(async move {
            Box::pin(me.execute(p, trigger, scheduled, next_tick)).await;
        });
    }
}
