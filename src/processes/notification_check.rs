//! `notification_check`: price alerts and position events go through an
//! outbox and are delivered by webhook (JSON POST) with retries and a dedupe
//! key (`Idempotency-Key` header): at least once, nothing dropped.
//!
//! Where a webhook may go is checked on every attempt (the host against
//! `notifications.allowed_webhook_hosts`, then each address it connects to,
//! in `net::webhook`); a refusal fails the delivery at once, is counted by
//! reason and logged with the URL's scheme and host only.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::platform::{Platform, distinct};
use crate::backoff::Backoff;
use crate::clock::now_ms;
use crate::config::{NotificationsConfig, webhook_address_listed, webhook_allowed};
use crate::net::webhook::{DeliveryError, WebhookClient, classify, origin};
use crate::process::{Process, ProcessError, RunContext, RunReport};
use crate::store::Notification;

/// Attempts before a notification is given up (and counted as failed).
const MAX_ATTEMPTS: i64 = 12;
/// Waits between deliveries of one notification: 1 s doubling to 256 s (stored, so exact).
const DELIVERY_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(256)).exact();
/// Deliveries per tick, so a backlog cannot hold a run past its timeout.
const BATCH: i64 = 50;
/// A receiver gets this long to accept the connection, and this long for the whole request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(3);

/// The client webhooks are posted with: addresses checked against
/// `allowed_webhook_hosts` (an address or CIDR listed there lets a special
/// address through), bodies signed with `signing_secret` when it is set.
pub fn webhook_client(n: &NotificationsConfig) -> anyhow::Result<WebhookClient> {
    let allowed = n.allowed_webhook_hosts.clone();
    let check = Arc::new(move |ip| match webhook_address_listed(ip, &allowed) {
        true => None,
        false => classify(ip),
    });
    let key = n.signing_secret.as_ref().map(|s| s.expose().as_bytes().to_vec());
    WebhookClient::new(check, key, CONNECT_TIMEOUT, WEBHOOK_TIMEOUT)
}

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
                Some(url) => match self.post(url, &n).await {
                    Ok(()) => {
                        delivered += 1;
                        ("delivered", 0, None, "delivered")
                    }
                    Err(DeliveryError::Refused(reason)) => {
                        p.events.webhook_refused(reason);
                        ("failed", 0, Some(refusal_message(reason)), "failed")
                    }
                    Err(DeliveryError::Failed(e)) if attempts >= MAX_ATTEMPTS => ("failed", 0, Some(e), "failed"),
                    Err(DeliveryError::Failed(e)) => {
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

    async fn post(&self, url: &str, n: &Notification) -> Result<(), DeliveryError> {
        let p = &self.platform;
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()) => u,
            _ => {
                tracing::warn!(notification = n.id, reason = "bad_url", "webhook refused");
                return Err(DeliveryError::Refused("bad_url"));
            }
        };
        let result = match webhook_allowed(url, &p.webhook_hosts) {
            false => Err(DeliveryError::Refused("not_allowed")),
            true => {
                let body = serde_json::to_vec(
                    &serde_json::json!({"dedupe_key": n.dedupe_key, "kind": n.kind, "data": n.payload}),
                )
                .map_err(|e| DeliveryError::Failed(e.to_string()))?;
                p.webhooks
                    .post(&parsed, &[("Idempotency-Key", n.dedupe_key.as_str())], body)
                    .await
            }
        };
        if let Err(DeliveryError::Refused(reason)) = &result {
            // The path and query are the receiver's credential: scheme and host only.
            tracing::warn!(notification = n.id, receiver = %origin(&parsed), reason, "webhook refused");
        }
        result
    }
}

/// What a refused delivery's row says (no URL in it).
fn refusal_message(reason: &str) -> String {
    match reason {
        "not_allowed" => "refused: the webhook's host is not in notifications.allowed_webhook_hosts".into(),
        "bad_url" => "refused: the webhook_url is not an http(s) URL".into(),
        "redirect" => "refused: the receiver answered with a redirect (never followed)".into(),
        other => format!(
            "refused: the webhook's host has a {other} address (list it in notifications.allowed_webhook_hosts to allow it)"
        ),
    }
}

impl Process for NotificationCheck {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_once(ctx))
    }
}
