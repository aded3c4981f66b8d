//! `user_stream` (continuous): each account's own events by WebSocket. Per
//! account: a listen key (created, extended every
//! `exchange.listen_key_renew_seconds`, created again when the venue says it
//! expired or an extension fails), a connection on `/private`, and after every
//! connect a REST reconciliation (positions, fills since the cursor) before
//! its events are trusted. Fills are stored as they arrive (same table and
//! de-duplication as trade_sync, cursor untouched) and nudge the close they
//! belong to; position changes are written at once. While an account's stream
//! is healthy, trade_sync and position_sync poll it only to reconcile.
//! Whatever ends an account's connection (the venue, a store error on an
//! event, a failed reconciliation) ends only that connection: the account
//! reconnects with backoff, counted by reason; only a fenced write ends the run.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::{Instant, sleep, sleep_until};

use super::platform::{Platform, StreamSettings};
use super::reconcile;
use crate::backoff::Backoff;
use crate::clock::now_ms;
use crate::exchange::binance::ws::{Socket, StreamEvent};
use crate::process::{ErrorKind, Process, ProcessError, RunContext, RunReport};

/// The venue pings every 3 minutes; a user stream can be quiet far longer
/// than a market one, so we ping it ourselves this often and count the pong.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Waits between two attempts on one account: 250 ms doubling to 30 s.
const RECONNECT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));

pub struct UserStream {
    platform: Arc<Platform>,
}

/// Why an account's connection ended.
struct Ended {
    reason: &'static str,
    why: String,
}

impl UserStream {
    pub fn new(platform: Arc<Platform>) -> Self {
        UserStream { platform }
    }

    async fn run_stream(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let p = &self.platform;
        let Some(settings) = p.streaming.clone() else {
            return Err(ProcessError::permanent(
                ErrorKind::Internal,
                "exchange.streams is off: user_stream has nothing to do",
            ));
        };
        let names = p.accounts.mine();
        for account in &names {
            p.stream_metrics.init("user", account);
        }
        let accounts = names.iter().map(|account| self.account(&ctx, &settings, account));
        let results = futures::future::join_all(accounts).await;
        for account in &names {
            p.stream_health.set(account, false);
        }
        match results.into_iter().find_map(Result::err) {
            Some(e) => Err(e),
            None => Ok(RunReport::default()),
        }
    }

    /// One account's stream, reconnecting with backoff until the run is
    /// cancelled, whatever ended a connection (the venue, the store, a failed
    /// reconciliation): one account's trouble never stops it for good, nor the
    /// others. Only a fenced write ends it (and the run): the lease is gone.
    async fn account(&self, ctx: &RunContext, settings: &StreamSettings, account: &str) -> Result<(), ProcessError> {
        let p = &self.platform;
        let mut failures: u32 = 0;
        while !ctx.cancel.is_cancelled() {
            let started = Instant::now();
            let ended = self.connection(ctx, settings, account).await;
            p.stream_health.set(account, false);
            p.stream_metrics.up("user", account, false);
            let ended = match ended {
                Ok(Some(ended)) => ended,
                Ok(None) => return Ok(()), // cancelled
                Err(e) => failed(e)?,
            };
            if ctx.cancel.is_cancelled() {
                return Ok(());
            }
            p.stream_metrics.reconnect("user", account, ended.reason);
            tracing::warn!(account, reason = ended.reason, why = %ended.why, "user stream ended; reconnecting");
            failures = if started.elapsed() > Duration::from_secs(60) {
                0
            } else {
                failures + 1
            };
            let wait = RECONNECT_BACKOFF.wait(failures + 1);
            tokio::select! {
                _ = sleep(wait) => {}
                _ = ctx.cancel.cancelled() => return Ok(()),
            }
        }
        Ok(())
    }

    /// One connection: key, connect, reconcile, then events until it ends.
    /// `Ok(None)`: cancelled. `Err`: the run must stop (a fenced write: its lease is gone).
    async fn connection(
        &self,
        ctx: &RunContext,
        settings: &StreamSettings,
        account: &str,
    ) -> Result<Option<Ended>, ProcessError> {
        let p = &self.platform;
        let caller = ctx.caller(None);
        let key = match p.venue.listen_key(&caller, account).await {
            Ok(key) => {
                p.stream_metrics.listen_key(account, true);
                key
            }
            Err(e) => {
                p.stream_metrics.listen_key(account, false);
                return Ok(Some(Ended {
                    reason: "listen_key",
                    why: e.to_string(),
                }));
            }
        };
        let mut socket = match Socket::user(&settings.base_url, &key).await {
            Ok(socket) => socket,
            Err(e) => {
                return Ok(Some(Ended {
                    reason: "error",
                    why: e.to_string(),
                }));
            }
        };
        // Whatever happened while no stream was up is read over REST before events are trusted.
        if let Err(e) = reconcile::account(p, ctx, account).await {
            socket.close().await;
            let mut ended = failed(e)?;
            ended.why = format!("reconciliation: {}", ended.why);
            return Ok(Some(ended));
        }
        p.stream_health.set(account, true);
        p.stream_metrics.up("user", account, true);
        tracing::info!(account, "user stream up and reconciled");
        // What the venue did with our backstops while no events came is read again.
        p.backstops
            .resync
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account.to_string());
        let renew_at = socket.opened + settings.planned_reconnect();
        let mut extend =
            tokio::time::interval_at(Instant::now() + settings.listen_key_renew, settings.listen_key_renew);
        let mut ping = tokio::time::interval(PING_EVERY.min(settings.silence.max(Duration::from_secs(1)) / 2));
        loop {
            let silent_at = socket.last_message + settings.silence.max(PING_EVERY * 2);
            tokio::select! {
                _ = ctx.cancel.cancelled() => {
                    socket.close().await;
                    return Ok(None);
                }
                _ = sleep_until(renew_at) => {
                    socket.close().await;
                    return Ok(Some(Ended { reason: "planned", why: "ahead of the venue's 24-hour close".into() }));
                }
                _ = sleep_until(silent_at) => {
                    return Ok(Some(Ended { reason: "silent", why: "nothing received, not even a pong".into() }));
                }
                _ = ping.tick() => {
                    if let Err(e) = socket.ping().await {
                        return Ok(Some(Ended { reason: "closed", why: e.to_string() }));
                    }
                }
                _ = extend.tick() => {
                    match p.venue.keep_alive(&caller, account, &key).await {
                        Ok(()) => p.stream_metrics.listen_key(account, true),
                        Err(e) => {
                            p.stream_metrics.listen_key(account, false);
                            socket.close().await;
                            return Ok(Some(Ended { reason: "listen_key", why: format!("cannot extend the listen key: {e}") }));
                        }
                    }
                }
                message = socket.next() => match message {
                    Ok(Some(event)) => {
                        ctx.usage.event();
                        p.stream_metrics.message("user", account, now_ms());
                        let ended = match self.on_event(ctx, account, event).await {
                            Ok(ended) => ended,
                            Err(e) => Some(failed(e)?),
                        };
                        if let Some(ended) = ended {
                            socket.close().await;
                            return Ok(Some(ended));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return Ok(Some(Ended { reason: "closed", why: e.to_string() })),
                },
            }
        }
    }

    /// Applies one event. `Some`: the connection must be replaced.
    async fn on_event(
        &self,
        ctx: &RunContext,
        account: &str,
        event: StreamEvent,
    ) -> Result<Option<Ended>, ProcessError> {
        let p = &self.platform;
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
                super::backstop::on_update(p, ctx, &order).await?;
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
}

/// A failure inside one account's stream ends that connection and no more:
/// the account reconnects (and reconciles) with backoff. Only a fenced write
/// ends the run, since the lease is gone.
fn failed(e: ProcessError) -> Result<Ended, ProcessError> {
    let reason = match e.kind {
        ErrorKind::Fenced => return Err(e),
        ErrorKind::Store => "store",
        _ => "error",
    };
    Ok(Ended { reason, why: e.message })
}

impl Process for UserStream {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_stream(ctx))
    }
}
