//! Reading an account's truth over REST: its fills since the stored cursor,
//! symbol by symbol, and its open positions. trade_sync and position_sync do
//! it on their intervals; user_stream does it after every (re)connect, before
//! trusting events, so nothing that happened while a stream was away is lost.
//! Each read is made once: what the two processes read after a stream
//! subscribed, its reconciliation skips, and its reconciliation counts as
//! their poll (`StreamHealth`).

use std::time::Duration;

use super::platform::{Platform, distinct, venue_error};
use crate::clock::now_ms;
use crate::exchange::VenueError;
use crate::process::{ErrorKind, ProcessError, RunContext};

/// Binance returns at most 1000 fills per call.
const PAGE: u32 = 1000;
/// Symbols traded this recently stay covered.
const RECENT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The symbols an account's fills are read for: open positions, levels,
/// active alerts, symbols traded within the recent window, `exchange.symbols`.
pub async fn covered_symbols(p: &Platform, account: &str) -> anyhow::Result<Vec<String>> {
    let open = p.store.account_symbols(account).await?;
    let traded = p
        .store
        .traded_symbols(account, now_ms() - RECENT_WINDOW.as_millis() as i64)
        .await?;
    Ok(distinct(
        open.into_iter().chain(traded).chain(p.symbols.iter().cloned()),
    ))
}

/// Stores the symbol's fills since its cursor, a page and its cursor per
/// transaction. `None` when the venue does not list the symbol (-1121).
pub async fn fills(p: &Platform, ctx: &RunContext, account: &str, symbol: &str) -> Result<Option<u64>, ProcessError> {
    let mut new = 0;
    loop {
        let from = p
            .store
            .cursor(account, symbol)
            .await
            .map_err(|e| p.store_error(e))?
            .unwrap_or(0);
        let fills = match p
            .venue
            .fills_since(&ctx.caller(None), account, symbol, Some(from), PAGE)
            .await
        {
            Ok(fills) => fills,
            Err(VenueError::Rejected { code: -1121, .. }) => return Ok(None),
            Err(e) => return Err(venue_error(e)),
        };
        let inserted = p
            .store
            .store_fills(&ctx.fence, account, symbol, &fills)
            .await
            .map_err(|e| p.store_error(e))?;
        p.events.trades_synced(inserted);
        new += inserted;
        if fills.len() < PAGE as usize {
            return Ok(Some(new));
        }
    }
}

/// Applies the venue's positions of the account (rows it has newer stay);
/// returns how many the venue has open.
pub async fn positions(p: &Platform, ctx: &RunContext, account: &str) -> Result<usize, ProcessError> {
    let rows = p
        .venue
        .position_rows(&ctx.caller(None), account)
        .await
        .map_err(venue_error)?;
    let changes = p
        .store
        .replace_positions(&ctx.fence, account, &rows, now_ms())
        .await
        .map_err(|e| p.store_error(e))?;
    p.count_retired(&changes);
    Ok(rows.iter().filter(|r| !r.amount.is_zero()).count())
}

/// The whole account for a stream subscribed at `subscribed`: positions,
/// then fills since the cursor of every covered symbol, each skipped when
/// position_sync or trade_sync read it after the subscription (what
/// happened since arrives on the stream). Returns the new fills.
pub async fn account(
    p: &Platform,
    ctx: &RunContext,
    account: &str,
    subscribed: tokio::time::Instant,
) -> Result<u64, ProcessError> {
    let to_read = p.stream_health.to_read(account, subscribed);
    if to_read.positions {
        positions(p, ctx, account).await?;
    }
    if !to_read.fills {
        return Ok(0);
    }
    let covered = covered_symbols(p, account).await.map_err(|e| p.store_error(e))?;
    let mut new = 0;
    for symbol in p.listed("user_stream", covered) {
        match fills(p, ctx, account, &symbol).await {
            Ok(n) => new += n.unwrap_or(0),
            Err(e) if e.kind == ErrorKind::Fenced => return Err(e),
            Err(e) => {
                return Err(ProcessError::new(
                    e.kind,
                    format!("{symbol}: {}", e.message),
                    e.retriable,
                ));
            }
        }
    }
    Ok(new)
}
