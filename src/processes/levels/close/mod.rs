//! Closes as a reconciler: a keyed work queue with one worker per intent.
//!
//! Evaluating a price only commits intents; this drives each one to its end,
//! on its own task, so a close waiting on the venue never delays another
//! symbol's trigger (from the stream or the tick). A worker:
//!
//! 1. claims the intent in the store (owner, lease, token): exactly one
//!    sender across the stream's fire, the tick and every replica;
//! 2. runs one attempt under a deadline, with a permit of a bounded pool;
//! 3. on "not now", waits the shared backoff (or a nudge from the user
//!    stream) and goes back to 1; on progress, goes back at once.
//!
//! The claim is renewed at every step and every write is conditional on it;
//! an order leaves only while the claim has `send_margin` left on this
//! process's monotonic clock, so a replica frozen past its lease sends
//! nothing for an intent it no longer holds. Nothing here holds a lock
//! across an await.

mod attempt;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use attempt::{Attempt, Progress, Step};

use crate::backoff::Backoff;
use crate::budget::Caller;
use crate::domain::Catalog;
use crate::exchange::Venue;
use crate::exchange::refusals::CloseStep;
use crate::processes::platform::StreamHealth;
use crate::store::{Claim, Intent, Store};
use crate::telemetry::domain::DomainEvents;

/// The process closes are admitted (and counted) as: priority 1, inside the reserve.
pub const CLOSE_CALLER: &str = "level_monitor";

/// Waits between attempts of one close that could not go on: 1 s doubling to 60 s.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// What closes need, handed in explicitly.
pub struct CloseDeps {
    pub store: Arc<Store>,
    pub venue: Arc<dyn Venue>,
    pub catalog: Arc<Catalog>,
    pub events: DomainEvents,
    /// A fresh trigger is sized from the stored position only while the account's user stream is healthy.
    pub stream_health: Arc<StreamHealth>,
    pub webhook_url: Option<String>,
}

/// `[levels]` settings of the close.
#[derive(Debug, Clone, Copy)]
pub struct CloseSettings {
    /// Deadline of one attempt.
    pub attempt: Duration,
    /// How long a claim lasts from its last renewal.
    pub lease: Duration,
    /// No order leaves with less than this left on the claim.
    pub send_margin: Duration,
    /// Attempts in flight at once.
    pub concurrency: usize,
}

/// What settling an intent came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// The position is flat; the level is executed.
    Executed,
    /// The position could not be taken flat and nothing more can be done (why).
    Failed(String),
    /// Nothing was held any more: the level is cancelled (reason).
    Cancelled(&'static str),
    /// The level's backstop on the venue closed the position first; the level says so.
    ClosedByVenue,
    /// Another owner finished it, or holds it now; nothing to record here.
    Elsewhere,
}

/// When the price that fired a close reached us, for the trigger latency.
#[derive(Debug, Clone, Copy)]
pub struct Fired {
    pub received: Instant,
    /// The venue's time of the price (ms; 0 when not given).
    pub venue_ms: i64,
}

struct Worker {
    nudge: Arc<Notify>,
}

pub struct Closer {
    deps: CloseDeps,
    settings: CloseSettings,
    /// This process's name on claims: unique per start, so a restarted service never mistakes an old claim for its own.
    owner: String,
    workers: Mutex<HashMap<String, Worker>>,
    retrying: Mutex<HashSet<String>>,
    permits: Semaphore,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Closer {
    pub fn new(deps: CloseDeps, settings: CloseSettings, replica: &str) -> Arc<Self> {
        let suffix: u32 = rand::random();
        Arc::new(Closer {
            deps,
            settings,
            owner: format!("{replica}/{suffix:08x}"),
            workers: Mutex::default(),
            retrying: Mutex::default(),
            permits: Semaphore::new(settings.concurrency.max(1)),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    /// The name this process's claims carry.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn lease_ms(&self) -> i64 {
        self.settings.lease.as_millis() as i64
    }

    /// Starts driving a freshly triggered intent, claimed by the trigger's
    /// transaction, which was sent at `claimed_at` (our monotonic clock).
    pub fn start_fired(self: &Arc<Self>, intent: Intent, claim: Claim, claimed_at: Instant, fired: Fired) {
        let id = intent.client_order_id.clone();
        self.spawn(id, Some((intent, claim, claimed_at)), Some(fired));
    }

    /// Takes up pending intents nobody works on (after a restart, another
    /// replica's death, or a lapsed claim). Those worked on here already are
    /// left to their own backoff. Returns how many were taken up.
    pub async fn adopt(self: &Arc<Self>) -> anyhow::Result<usize> {
        let unclaimed = self.deps.store.unclaimed_intents().await?;
        let mut adopted = 0;
        for intent in unclaimed {
            if !self.working_on(&intent.client_order_id) {
                tracing::info!(client_order_id = %intent.client_order_id, attempt = intent.attempt, "taking up a close nobody works on");
                self.spawn(intent.client_order_id, None, None);
                adopted += 1;
            }
        }
        Ok(adopted)
    }

    /// An order of some close changed at the venue (user stream): its worker
    /// goes on now rather than at the end of its backoff.
    pub fn nudge(&self, client_order_id: &str) {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let matching = workers.iter().find(|(base, _)| {
            client_order_id == base.as_str()
                || client_order_id
                    .strip_prefix(base.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
        });
        if let Some((_, worker)) = matching {
            worker.nudge.notify_one();
        }
    }

    /// Closes being worked on here right now.
    pub fn in_flight(&self) -> usize {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Stops every worker (their intents stay pending for whoever comes
    /// next), waits up to `grace`, and gives up this process's claims so
    /// another replica takes the closes over at once, not after their lease.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
        match self.deps.store.release_claims_owned_by(&self.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "closes in flight handed back for another replica"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot hand back the claims of closes in flight"),
        }
    }

    fn working_on(&self, id: &str) -> bool {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).contains_key(id)
    }

    /// One worker per intent: a second start for the same id only nudges the first.
    fn spawn(self: &Arc<Self>, id: String, claimed: Option<(Intent, Claim, Instant)>, fired: Option<Fired>) {
        let nudge = Arc::new(Notify::new());
        {
            let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(worker) = workers.get(&id) {
                worker.nudge.notify_one();
                return;
            }
            workers.insert(id.clone(), Worker { nudge: nudge.clone() });
        }
        let closer = self.clone();
        self.tasks.spawn(async move {
            closer.work(&id, claimed, fired, &nudge).await;
            closer.workers.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            closer.set_retrying(&id, false);
        });
    }

    /// Drives one intent until it ends, another owner holds it, or the service stops.
    async fn work(
        &self,
        id: &str,
        mut claimed: Option<(Intent, Claim, Instant)>,
        fired: Option<Fired>,
        nudge: &Notify,
    ) {
        let mut progress = Progress {
            unsent: claimed.is_some(),
            ..Progress::default()
        };
        let mut failures: u32 = 0;
        loop {
            let (mut intent, claim, claimed_at) = match claimed.take() {
                Some(fresh) => fresh,
                None => {
                    // Taken before the request: our view of the lease never outlasts the database's.
                    let asked_at = Instant::now();
                    match self.deps.store.claim_intent(id, &self.owner, self.lease_ms()).await {
                        Ok(Some((intent, claim))) => (intent, claim, asked_at),
                        // Finished, or another owner holds a live claim: not ours to work on.
                        Ok(None) => return,
                        Err(e) => {
                            failures += 1;
                            let why = format!("cannot claim the intent: {e:#}");
                            if !self.wait(id, &why, failures, nudge).await {
                                return;
                            }
                            continue;
                        }
                    }
                }
            };
            let step = tokio::select! {
                _ = self.stop.cancelled() => return,
                step = self.attempt(&mut intent, &claim, claimed_at, &mut progress) => step,
            };
            if let (Some(fired), Some((acked, venue_ms))) = (fired, progress.first_ack.take()) {
                self.report_latency(fired, acked, venue_ms);
            }
            match step {
                Step::Done(settled) => return self.record(&intent, settled),
                Step::Again => {
                    failures = 0;
                    self.set_retrying(id, false);
                }
                Step::Retry(why, step) => {
                    failures += 1;
                    if failures == 1 {
                        self.deps.events.level_triggered(kind_of(&intent), "unknown");
                    }
                    // Refused, or still unknown after a few looks: say so at once.
                    if matches!(step, CloseStep::RetryLater | CloseStep::Reread) || failures >= 3 {
                        self.set_retrying(id, true);
                    }
                    if !self.wait(id, &why, failures, nudge).await {
                        return;
                    }
                }
            }
        }
    }

    /// One attempt under a permit and a deadline.
    async fn attempt(&self, intent: &mut Intent, claim: &Claim, claimed_at: Instant, progress: &mut Progress) -> Step {
        let Ok(_permit) = self.permits.acquire().await else {
            return Step::Retry("closing down".into(), CloseStep::RetryLater);
        };
        let deadline = Instant::now() + self.settings.attempt;
        let attempt = Attempt {
            deps: &self.deps,
            claim,
            send_until: claimed_at + self.settings.lease.saturating_sub(self.settings.send_margin),
            caller: Caller::new(CLOSE_CALLER, 1, deadline),
        };
        let run = attempt.run(intent, progress);
        match tokio::time::timeout_at(deadline + Duration::from_millis(500), run).await {
            Ok(step) => step,
            Err(_) => {
                progress.unsent = false; // an order may have left: look it up first
                Step::Retry("the attempt ran past its deadline".into(), CloseStep::LookUp)
            }
        }
    }

    /// Waits the backoff after `failures` (or less, when nudged). `false`: the service is stopping.
    async fn wait(&self, id: &str, why: &str, failures: u32, nudge: &Notify) -> bool {
        let wait = RETRY.wait(failures);
        tracing::warn!(client_order_id = %id, reason = %why, failures, retry_in_s = wait.as_secs_f64(), "close not done yet; retrying");
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
            _ = nudge.notified() => true,
        }
    }

    /// Counts and logs how a close ended.
    fn record(&self, intent: &Intent, settled: Settled) {
        let id = &intent.client_order_id;
        let kind = kind_of(intent);
        let events = &self.deps.events;
        match settled {
            Settled::Executed => {
                events.level_triggered(kind, "executed");
                tracing::info!(client_order_id = %id, "close executed: the position is flat");
            }
            Settled::Failed(why) => {
                events.level_triggered(kind, "failed");
                tracing::error!(client_order_id = %id, reason = %why, "close failed: nothing more can be done");
            }
            Settled::Cancelled(reason) => {
                events.level_triggered(kind, "cancelled");
                tracing::info!(client_order_id = %id, reason, "nothing held any more: level cancelled, no order sent");
            }
            Settled::ClosedByVenue => {
                events.level_triggered(kind, "executed");
                tracing::warn!(client_order_id = %id, "the venue's backstop took the position flat first; level executed by the venue");
            }
            Settled::Elsewhere => {}
        }
    }

    fn report_latency(&self, fired: Fired, acked: Instant, venue_ms: i64) {
        let trace = crate::telemetry::otel::trace_id(&tracing::Span::current());
        let events = &self.deps.events;
        events.trigger_latency(acked.duration_since(fired.received).as_secs_f64(), trace);
        if venue_ms > 0 && fired.venue_ms > 0 {
            events.trigger_venue_latency((venue_ms - fired.venue_ms).max(0) as f64 / 1000.0);
        }
    }

    /// Keeps `script_manager_level_close_retrying` at the number of closes retrying now.
    fn set_retrying(&self, id: &str, retrying: bool) {
        let mut set = self.retrying.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match retrying {
            true => set.insert(id.to_string()),
            false => set.remove(id),
        };
        if changed {
            self.deps.events.protection().closes_retrying(set.len());
        }
    }
}

fn kind_of(intent: &Intent) -> &'static str {
    match intent.kind.as_str() {
        "take_profit" => "take_profit",
        "flatten" => "flatten",
        _ => "stop_loss",
    }
}
