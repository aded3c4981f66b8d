//! One account's user stream, for as long as the account is this replica's:
//! a listen key (created, extended every `exchange.listen_key_renew_seconds`,
//! created again when the venue says it expired, a `SUBSCRIBE` of it is
//! refused, or it may have lapsed while no stream was up), its key carried
//! by a connection the hub chose, a REST reconciliation once it is
//! subscribed, then its events. `StreamHealth` is set only between the
//! reconciliation and the end of the session. Whatever ends a session (the
//! connection, its key, the store, a failed reconciliation) ends only that
//! session: the account tries again with backoff (at once after a planned
//! reconnect); only a fenced write ends the run.

use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use super::hub::{Delivery, EVENTS_WAITING, Inbox, Lost, Request};
use crate::backoff::Backoff;
use crate::clock::now_ms;
use crate::exchange::binance::ws::StreamEvent;
use crate::process::{ErrorKind, ProcessError, RunContext};
use crate::processes::platform::{Platform, StreamSettings};
use crate::processes::reconcile;

/// Waits between two sessions of one account: 250 ms doubling to 30 s, with jitter.
const RECONNECT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));

/// What every account's session shares.
pub struct Shared<'a> {
    pub platform: &'a Platform,
    pub ctx: &'a RunContext,
    pub settings: &'a StreamSettings,
    pub hub: mpsc::UnboundedSender<Request>,
    /// Accounts setting up at once (key, subscription, reconciliation): a
    /// few at a time, so each one finishes instead of all of them starting
    /// together and none coming up while the budget is shared among them.
    pub setups: &'a Semaphore,
}

/// Why a session ended.
pub struct Ended {
    pub reason: &'static str,
    pub why: String,
}

impl From<Lost> for Ended {
    fn from(lost: Lost) -> Self {
        Ended {
            reason: lost.reason,
            why: lost.why,
        }
    }
}

/// The account's listen key and when the venue last extended it.
struct Key {
    key: String,
    fresh_at: Instant,
}

/// Sessions of `account` until `stop` fires (removed, moved, or the run ends).
pub async fn run(s: &Shared<'_>, account: &str, stop: &CancellationToken) -> Result<(), ProcessError> {
    let p = s.platform;
    let mut key: Option<Key> = None;
    let mut failures: u32 = 0;
    let result = loop {
        if stop.is_cancelled() {
            break Ok(());
        }
        let started = Instant::now();
        let ended = match session(s, account, stop, &mut key).await {
            Ok(Some(ended)) => ended,
            Ok(None) => break Ok(()),
            Err(e) => match failed(e) {
                Ok(ended) => ended,
                Err(fenced) => break Err(fenced),
            },
        };
        leave(s, account);
        if stop.is_cancelled() {
            break Ok(());
        }
        if ended.reason == "listen_key" {
            key = None;
        }
        p.stream_metrics.reconnect("user", account, ended.reason);
        tracing::warn!(account, reason = ended.reason, why = %ended.why, "user stream ended; reconnecting");
        failures = if started.elapsed() > Duration::from_secs(60) {
            0
        } else {
            failures + 1
        };
        let wait = match ended.reason {
            // The venue's close is ahead: straight on (the connection pace still applies).
            "planned" => Duration::ZERO,
            _ => RECONNECT_BACKOFF.wait(failures + 1),
        };
        tokio::select! {
            _ = sleep(wait) => {}
            _ = stop.cancelled() => break Ok(()),
        }
    };
    leave(s, account);
    result
}

/// Not streaming: unhealthy (polled normally), and its key off its connection.
fn leave(s: &Shared<'_>, account: &str) {
    s.platform.stream_health.set(account, false);
    s.platform.stream_metrics.up("user", account, false);
    let _ = s.hub.send(Request::Detach {
        account: account.to_string(),
    });
}

/// One session: key, subscription, reconciliation, events until it ends.
/// `Ok(None)`: stopped. `Err`: a failure (the run stops only if fenced).
async fn session(
    s: &Shared<'_>,
    account: &str,
    stop: &CancellationToken,
    key: &mut Option<Key>,
) -> Result<Option<Ended>, ProcessError> {
    let p = s.platform;
    let caller = s.ctx.caller(None);
    let permit = tokio::select! {
        permit = s.setups.acquire() => permit.ok(),
        _ = stop.cancelled() => return Ok(None),
    };
    // A key not extended for a renewal period may have lapsed while no stream was up: ask again (weight 1).
    if key
        .as_ref()
        .is_some_and(|k| k.fresh_at.elapsed() >= s.settings.listen_key_renew)
    {
        *key = None;
    }
    let listen_key = match key {
        Some(k) => k.key.clone(),
        None => match p.venue.listen_key(&caller, account).await {
            Ok(new) => {
                p.stream_metrics.listen_key(account, true);
                *key = Some(Key {
                    key: new.clone(),
                    fresh_at: Instant::now(),
                });
                new
            }
            Err(e) => {
                p.stream_metrics.listen_key(account, false);
                return Ok(Some(Ended {
                    reason: "listen_key",
                    why: e.to_string(),
                }));
            }
        },
    };
    let (events_tx, mut events) = mpsc::channel(EVENTS_WAITING);
    let (lost_tx, mut lost) = mpsc::unbounded_channel();
    let inbox = Inbox {
        events: events_tx,
        lost: lost_tx,
    };
    let attach = Request::Attach {
        account: account.to_string(),
        key: listen_key.clone(),
        inbox,
    };
    if s.hub.send(attach).is_err() {
        return Ok(None);
    }
    // Subscribed first; what arrives before it is applied after the reconciliation.
    let mut early = Vec::new();
    let subscribed = loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            l = lost.recv() => return Ok(l.map(Ended::from)),
            d = events.recv() => match d {
                Some(Delivery::Subscribed) => break Instant::now(),
                Some(Delivery::Event(e)) => early.push(e),
                None => return Ok(None),
            },
        }
    };
    // Whatever happened while no stream was up is read over REST before events are trusted.
    let reconciled = tokio::select! {
        r = reconcile::account(p, s.ctx, account, subscribed) => r,
        _ = stop.cancelled() => return Ok(None),
    };
    if let Err(e) = reconciled {
        let mut ended = failed(e)?;
        ended.why = format!("reconciliation: {}", ended.why);
        return Ok(Some(ended));
    }
    if let Ok(l) = lost.try_recv() {
        return Ok(Some(l.into()));
    }
    drop(permit);
    p.stream_health.set(account, true);
    p.stream_metrics.up("user", account, true);
    tracing::info!(account, "user stream up and reconciled");
    // What the venue did with our backstops while no events came is read again.
    p.backstops
        .resync
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(account.to_string());
    for event in early {
        if let Some(ended) = apply(s, account, event).await? {
            return Ok(Some(ended));
        }
    }
    let renew = s.settings.listen_key_renew;
    let mut extend = tokio::time::interval_at(Instant::now() + renew, renew);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(None),
            l = lost.recv() => return Ok(l.map(Ended::from)),
            _ = extend.tick() => match p.venue.keep_alive(&caller, account, &listen_key).await {
                Ok(()) => {
                    p.stream_metrics.listen_key(account, true);
                    if let Some(k) = key.as_mut() {
                        k.fresh_at = Instant::now();
                    }
                }
                Err(e) => {
                    p.stream_metrics.listen_key(account, false);
                    return Ok(Some(Ended { reason: "listen_key", why: format!("cannot extend the listen key: {e}") }));
                }
            },
            d = events.recv() => match d {
                Some(Delivery::Event(event)) => {
                    if let Some(ended) = apply(s, account, event).await? {
                        return Ok(Some(ended));
                    }
                }
                Some(Delivery::Subscribed) => {}
                None => return Ok(None),
            },
        }
    }
}

/// Counts and applies one event. `Some`: the session must end.
async fn apply(s: &Shared<'_>, account: &str, event: StreamEvent) -> Result<Option<Ended>, ProcessError> {
    s.ctx.usage.event();
    s.platform.stream_metrics.message("user", account, now_ms());
    match on_event(s.platform, s.ctx, account, event).await {
        Ok(ended) => Ok(ended),
        Err(e) => failed(e).map(Some),
    }
}

/// Applies one event. `Some`: the session must end.
async fn on_event(
    p: &Platform,
    ctx: &RunContext,
    account: &str,
    event: StreamEvent,
) -> Result<Option<Ended>, ProcessError> {
    match event {
        StreamEvent::Fill { fill, client_order_id } => {
            let inserted = p
                .store
                .insert_streamed_fills(&ctx.fence, account, std::slice::from_ref(&fill))
                .await
                .map_err(|e| p.store_error(e))?;
            p.events.trades_synced(inserted);
            if client_order_id.starts_with("sm-") {
                p.levels.closer().nudge(&client_order_id);
            }
        }
        StreamEvent::Order { client_order_id, .. } if client_order_id.starts_with("sm-") => {
            p.levels.closer().nudge(&client_order_id);
        }
        StreamEvent::Algo { order, reject_reason } => {
            if let Some(why) = reject_reason {
                tracing::warn!(account, client_algo_id = %order.client_algo_id, reason = %why, "the venue rejected a conditional order");
            }
            crate::processes::backstop::on_update(p, ctx, &order).await?;
        }
        StreamEvent::Positions(changed) => {
            let changes = p
                .store
                .update_positions(&ctx.fence, account, &changed, now_ms())
                .await
                .map_err(|e| p.store_error(e))?;
            p.count_retired(&changes);
        }
        StreamEvent::ListenKeyExpired => {
            p.stream_metrics.listen_key(account, false);
            return Ok(Some(Ended {
                reason: "listen_key",
                why: "the venue says the listen key expired".into(),
            }));
        }
        _ => {}
    }
    Ok(None)
}

/// A failure inside one account's session ends that session and no more:
/// the account tries again (and reconciles) with backoff. Only a fenced
/// write ends the run, since the lease is gone.
fn failed(e: ProcessError) -> Result<Ended, ProcessError> {
    let reason = match e.kind {
        ErrorKind::Fenced => return Err(e),
        ErrorKind::Store => "store",
        _ => "error",
    };
    Ok(Ended { reason, why: e.message })
}
