//! `notification_check`: price alerts and position events go through an
//! outbox and are delivered by webhook (JSON POST) with retries and a dedupe
//! key (`Idempotency-Key` header): at least once, nothing dropped.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::platform::{Platform, distinct};
use crate::backoff::Backoff;
use crate::clock::now_ms;
use crate::config::webhook_allowed;
use crate::process::{Process, ProcessError, RunContext, RunReport};
use crate::store::Notification;

/// Attempts before a notification is given up (and counted as failed).
const MAX_ATTEMPTS: i64 = 12;
/// Waits between deliveries of one notification: 1 s doubling to 256 s (stored, so exact).
const DELIVERY_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(256)).exact();
/// Deliveries per tick, so a backlog cannot hold a run past its timeout.
const BATCH: i64 = 50;
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(3);

pub struct NotificationCheck {
    platform: Arc<Platform>,
    max_age: Duration,
}

impl NotificationCheck {
    pub fn new(platform: Arc<Platform>, interval: Duration) -> Self {
        NotificationCheck {
            platform,
            max_age: interval,
        }
    }

    async fn run_once(&self, ctx: RunContext) -> Result<RunReport, ProcessError> {
        let triggered = self.check_alerts(&ctx).await?;
        let (delivered, waiting) = self.deliver(&ctx).await?;
        let pending = self
            .platform
            .store
            .pending_notifications()
            .await
            .map_err(|e| self.platform.store_error(e))?;
        self.platform.events.outbox_pending(pending);
        Ok(RunReport {
            summary: Some(format!(
                "{triggered} alerts triggered, {delivered} delivered, {waiting} to retry"
            )),
        })
    }

    async fn check_alerts(&self, ctx: &RunContext) -> Result<usize, ProcessError> {
        let p = &self.platform;
        let alerts = p.store.alerts(true).await.map_err(|e| self.platform.store_error(e))?;
        if alerts.is_empty() {
            return Ok(0);
        }
        let symbols = p.listed("notification_check", distinct(alerts.iter().map(|a| a.symbol.clone())));
        if symbols.is_empty() {
            return Ok(0);
        }
        let prices = p.current_prices(ctx, &symbols, self.max_age).await?;
        let mut triggered = 0;
        for alert in &alerts {
            let Some(price) = prices.iter().find(|pr| pr.symbol == alert.symbol) else {
                continue;
            };
            let crossed = match alert.condition.as_str() {
                "above" => price.price >= alert.price,
                _ => price.price <= alert.price,
            };
            if crossed
                && p.store
                    .trigger_alert(&ctx.fence, alert, price.price, p.webhook_url.as_deref())
                    .await
                    .map_err(|e| self.platform.store_error(e))?
            {
                triggered += 1;
            }
        }
        Ok(triggered)
    }

    async fn deliver(&self, ctx: &RunContext) -> Result<(usize, usize), ProcessError> {
        let p = &self.platform;
        let due = p
            .store
            .due_notifications(now_ms(), BATCH)
            .await
            .map_err(|e| self.platform.store_error(e))?;
        let (mut delivered, mut waiting) = (0, 0);
        for n in due {
            if ctx.cancel.is_cancelled() {
                break;
            }
            let attempts = n.attempts + 1;
            let (status, next_at, error, outcome) = match &n.webhook_url {
                None => (
                    "skipped",
                    0,
                    Some("no webhook_url for this notification".to_string()),
                    "skipped",
                ),
                Some(url) if !webhook_allowed(url, &p.webhook_hosts) => (
                    "failed",
                    0,
                    Some("the webhook's host is not in notifications.allowed_webhook_hosts".to_string()),
                    "failed",
                ),
                Some(url) => match self.post(url, &n).await {
                    Ok(()) => {
                        delivered += 1;
                        ("delivered", 0, None, "delivered")
                    }
                    Err(e) if attempts >= MAX_ATTEMPTS => ("failed", 0, Some(e), "failed"),
                    Err(e) => {
                        waiting += 1;
                        let backoff = DELIVERY_BACKOFF.wait(attempts.max(0) as u32).as_millis() as i64;
                        ("pending", now_ms() + backoff, Some(e), "retried")
                    }
                },
            };
            p.store
                .record_delivery(&ctx.fence, n.id, status, attempts, next_at, error.as_deref())
                .await
                .map_err(|e| self.platform.store_error(e))?;
            p.events.notification(outcome);
        }
        Ok((delivered, waiting))
    }

    async fn post(&self, url: &str, n: &Notification) -> Result<(), String> {
        let response = self
            .platform
            .http
            .post(url)
            .timeout(WEBHOOK_TIMEOUT)
            .header("Idempotency-Key", &n.dedupe_key)
            .json(&serde_json::json!({"dedupe_key": n.dedupe_key, "kind": n.kind, "data": n.payload}))
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("receiver answered HTTP {}", response.status().as_u16()))
        }
    }
}

impl Process for NotificationCheck {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
