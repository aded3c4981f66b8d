//! Events across replicas (HA on PostgreSQL): each replica `pg_notify`s its
//! local events on one channel and `LISTEN`s to it, republishing the other
//! replicas' events to its own clients with its own ids. So any replica's
//! stream is complete, whichever replica a fill, a level change or a run
//! happened on.
//!
//! - A payload carries its origin (the sender's stream epoch, unique per
//!   start), so a replica skips its own events.
//! - PostgreSQL caps a payload at 8000 bytes; an event larger than
//!   [`MAX_PAYLOAD`] stays local (logged). Events are rows, far smaller.
//! - NOTIFY is not durable: while the listening connection is down, events
//!   are missed. When it comes back, every client of this replica gets
//!   `reset` and its stream ends; ids from before cannot be resumed here,
//!   so each reconnects to a fresh snapshot. No client is left believing it
//!   saw everything.
//! - Sending retries with the shared backoff, in order; the queue to the
//!   sender is bounded, and what does not fit stays local (logged).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::hub::{Hub, Kind, Relayed};
use crate::backoff::Backoff;

/// The channel every replica notifies and listens on.
pub const CHANNEL: &str = "script_manager_events";

/// Largest payload sent (PostgreSQL's limit is 8000 bytes).
pub const MAX_PAYLOAD: usize = 7900;

/// Events waiting to be sent to the other replicas.
const QUEUE: usize = 8192;

/// A NOTIFY payload, as sent.
#[derive(Serialize)]
struct Payload<'a> {
    /// The origin's stream epoch.
    o: &'a str,
    /// The event type.
    k: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    a: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'a str>,
    /// The event's data, as JSON text.
    d: &'a str,
}

/// A NOTIFY payload, as received (owned: the data is an escaped string).
#[derive(Deserialize)]
struct Received {
    o: String,
    k: String,
    a: Option<String>,
    s: Option<String>,
    d: String,
}

/// Starts relaying `hub`'s events through the PostgreSQL at `url` until `stop`.
pub async fn start(hub: Arc<Hub>, url: &str, stop: CancellationToken) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await?;
    let (tx, rx) = mpsc::channel(QUEUE);
    hub.relay_to(tx);
    tokio::spawn(send(hub.clone(), pool.clone(), rx, stop.clone()));
    let listener = listen(&pool).await?;
    tokio::spawn(receive(hub, pool, listener, stop));
    Ok(())
}

async fn listen(pool: &sqlx::PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn send(hub: Arc<Hub>, pool: sqlx::PgPool, mut rx: mpsc::Receiver<Relayed>, stop: CancellationToken) {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.recv() => match r { Some(r) => r, None => return },
        };
        let payload = Payload {
            o: hub.epoch(),
            k: r.kind.as_str(),
            a: r.account.as_deref(),
            s: r.symbol.as_deref(),
            d: &r.data,
        };
        let text = serde_json::to_string(&payload).unwrap_or_default();
        if text.len() > MAX_PAYLOAD {
            tracing::warn!(
                kind = r.kind.as_str(),
                bytes = text.len(),
                "an event is too large for NOTIFY: only this replica's clients get it"
            );
            continue;
        }
        let mut failures: u32 = 0;
        loop {
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&text)
                .execute(&pool)
                .await;
            match sent {
                Ok(_) => break,
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(error = %e, "cannot relay events to the other replicas; retrying");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff.wait(failures)) => {}
                    }
                    failures += 1;
                }
            }
        }
    }
}

async fn receive(hub: Arc<Hub>, pool: sqlx::PgPool, mut listener: PgListener, stop: CancellationToken) {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures: u32 = 0;
    loop {
        let got = tokio::select! {
            _ = stop.cancelled() => return,
            got = listener.try_recv() => got,
        };
        match got {
            Ok(Some(n)) => {
                failures = 0;
                let p = match serde_json::from_str::<Received>(n.payload()) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "an event relayed by another replica cannot be read; skipped");
                        continue;
                    }
                };
                if p.o == hub.epoch() {
                    continue;
                }
                if let Some(kind) = Kind::parse(&p.k) {
                    hub.publish_remote(kind, p.a.as_deref(), p.s.as_deref(), &p.d);
                }
            }
            // The connection dropped (sqlx reconnects on the next call):
            // whatever was notified meanwhile is gone.
            Ok(None) => {
                tracing::warn!("the event relay's connection dropped: this replica's clients start over");
                hub.resync_all();
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(error = %e, "the event relay cannot listen; retrying");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff.wait(failures)) => {}
                }
                failures += 1;
                if let Ok(fresh) = listen(&pool).await {
                    listener = fresh;
                    hub.resync_all();
                }
            }
        }
    }
}
