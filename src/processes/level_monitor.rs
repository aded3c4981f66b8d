//! `level_monitor`: the periodic safety net of take-profit / stop-loss
//! execution. Each tick first evaluates every symbol with armed levels: with
//! its streamed price when `market_stream` has a fresh one, with REST prices
//! for the others. Then it hands the close workers any pending close nobody
//! works on (a crash, another replica's death, a lapsed claim); settling
//! runs on those workers, never in the tick, so a slow venue cannot stop
//! evaluation. The levels, their index and the closes are the level
//! engine's (`levels/`), shared with `market_stream`, which evaluates each
//! streamed price the moment it arrives.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::levels::Tally;
use super::platform::Platform;
use crate::domain::PriceSource;
use crate::process::{Process, ProcessError, RunContext, RunReport};

/// `[processes.level_monitor]` settings of its own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LevelMonitorSettings {
    /// Which streamed price levels trigger on: `book` (best bid/ask, the
    /// default) or `mark`.
    pub price_source: PriceSource,
}

impl LevelMonitorSettings {
    pub fn parse(
        settings: &std::collections::BTreeMap<String, figment::value::Value>,
    ) -> Result<Self, Vec<(String, String)>> {
        let value = figment::value::Value::serialize(settings).map_err(|e| vec![("settings".into(), e.to_string())])?;
        value.deserialize().map_err(|e: figment::Error| {
            e.into_iter()
                .map(|e| {
                    (
                        e.path.last().cloned().unwrap_or_else(|| "price_source".into()),
                        e.kind.to_string(),
                    )
                })
                .collect()
        })
    }
}

pub struct LevelMonitor {
    platform: Arc<Platform>,
    max_age: Duration,
}

impl LevelMonitor {
    pub fn new(platform: Arc<Platform>, interval: Duration, settings: LevelMonitorSettings) -> Self {
        platform.levels.trigger_on(settings.price_source);
        LevelMonitor {
            platform,
            max_age: interval / 2,
        }
    }

    async fn run_once(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let p = &self.platform;
        let engine = &p.levels;
        let mut tally = Tally::default();
        let symbols = p.listed("level_monitor", engine.symbols().await?);
        if !symbols.is_empty() {
            for quote in p.current_quotes(&ctx, &symbols, self.max_age).await? {
                engine.evaluate(&ctx.fence, &quote, &mut tally).await?;
            }
        }
        let adopted = engine.closer().adopt().await.map_err(|e| p.store_error(e))?;
        let summary = format!(
            "{} levels fired; {} closes taken up; {} in flight",
            tally.fired,
            adopted,
            engine.closer().in_flight()
        );
        match tally.failures.len() {
            0 => Ok(RunReport { summary: Some(summary) }),
            n => {
                let first = tally.failures.swap_remove(0);
                Err(ProcessError::new(
                    first.kind,
                    format!("{summary}; {n} failed, first: {}", first.message),
                    first.retriable,
                ))
            }
        }
    }
}

impl Process for LevelMonitor {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
