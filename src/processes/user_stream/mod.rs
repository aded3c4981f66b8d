//! `user_stream` (continuous): each account's own events by WebSocket, for
//! the accounts this replica works for, following the live registry: an
//! account added (or moved here) starts streaming within seconds; one
//! removed (or moved away) has its key taken off its connection and its
//! health dropped, so the REST processes poll it normally again. A changed
//! credential restarts the account's stream.
//!
//! Per account ([`account`]): a listen key, carried by a connection the hub
//! chose ([`hub`]: several accounts' keys on one combined connection,
//! `exchange.user_streams_per_connection`), a REST reconciliation (positions,
//! fills since the cursor) once it is subscribed and before its events are
//! trusted, then events: fills stored as they arrive (same table and
//! de-duplication as trade_sync, cursor untouched) nudging the close they
//! belong to, position changes written at once. While an account's stream
//! is healthy, trade_sync and position_sync poll it only to reconcile.
//!
//! At scale: every new connection takes its turn from the service's one
//! connection pacer, and only a few accounts set up at once (key,
//! subscription, reconciliation), so each finishes in turn instead of all
//! of them sharing the REST budget and none coming up. One account's trouble
//! ends only its own session; only a fenced write ends the run.

mod account;
mod hub;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::platform::Platform;
use crate::accounts::Account;
use crate::process::{ErrorKind, Process, ProcessError, RunContext, RunReport};

/// Accounts setting up (key, subscription, reconciliation) at the same time.
const SETUPS_AT_ONCE: usize = 16;

pub struct UserStream {
    platform: Arc<Platform>,
}

/// An account whose stream runs (or is stopping).
struct Running {
    stop: CancellationToken,
    /// The credentials it runs with: a rotation restarts it.
    account: Arc<Account>,
    stopping: bool,
}

/// What to change so the running streams match the accounts that are ours.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    start: Vec<String>,
    stop: Vec<String>,
}

/// Stops streams of accounts no longer ours (or whose credentials changed);
/// starts those of ours not running. A stream still stopping is let finish
/// first: it is started again on a later look.
fn plan(running: &HashMap<String, Running>, mine: &[Arc<Account>]) -> Plan {
    let wanted: HashMap<&str, &Arc<Account>> = mine.iter().map(|a| (a.name.as_str(), a)).collect();
    let mut plan = Plan::default();
    for (name, r) in running.iter().filter(|(_, r)| !r.stopping) {
        if wanted.get(name.as_str()).is_none_or(|a| !Arc::ptr_eq(a, &r.account)) {
            plan.stop.push(name.clone());
        }
    }
    for account in mine {
        if !running.contains_key(&account.name) {
            plan.start.push(account.name.clone());
        }
    }
    plan.stop.sort();
    plan
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
        let (requests_tx, mut requests) = mpsc::unbounded_channel();
        let (downs_tx, mut downs) = mpsc::unbounded_channel();
        let mut hub = hub::Hub::new(settings.clone(), downs_tx);
        let setups = Semaphore::new(SETUPS_AT_ONCE);
        let shared = account::Shared {
            platform: p,
            ctx: &ctx,
            settings: &settings,
            hub: requests_tx,
            setups: &setups,
        };
        let mut changes = p.accounts.changes();
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut tasks: FuturesUnordered<BoxFuture<'_, (String, Result<(), ProcessError>)>> = FuturesUnordered::new();
        let mut look = true;
        let result = loop {
            if look {
                look = false;
                changes.mark_unchanged();
                let mine: Vec<Arc<Account>> = p.accounts.mine().iter().filter_map(|n| p.accounts.get(n)).collect();
                let plan = plan(&running, &mine);
                for name in &plan.stop {
                    if let Some(r) = running.get_mut(name) {
                        tracing::info!(account = %name, "user stream stopping: the account is no longer this replica's, or its credentials changed");
                        r.stop.cancel();
                        r.stopping = true;
                    }
                }
                for name in plan.start {
                    let Some(account) = mine.iter().find(|a| a.name == name).cloned() else {
                        continue;
                    };
                    p.stream_metrics.init("user", &name);
                    let stop = ctx.cancel.child_token();
                    running.insert(
                        name.clone(),
                        Running {
                            stop: stop.clone(),
                            account,
                            stopping: false,
                        },
                    );
                    let shared = &shared;
                    tasks.push(Box::pin(async move {
                        let result = account::run(shared, &name, &stop).await;
                        (name, result)
                    }));
                }
            }
            tokio::select! {
                _ = ctx.cancel.cancelled() => break Ok(()),
                changed = changes.changed() => match changed {
                    Ok(()) => look = true,
                    // The registry is gone: the service is stopping.
                    Err(_) => break Ok(()),
                },
                Some(request) = requests.recv() => hub.handle(request),
                Some(down) = downs.recv() => hub.down(down),
                Some((name, result)) = tasks.next(), if !tasks.is_empty() => {
                    running.remove(&name);
                    // A stopped stream may be wanted again (re-added, credentials rotated).
                    look = true;
                    if let Err(e) = result {
                        break Err(e);
                    }
                }
            }
        };
        for r in running.values() {
            r.stop.cancel();
        }
        // Each stops at once (its key detached); the hub's connections close when it is dropped.
        while tasks.next().await.is_some() {}
        drop(hub);
        for name in running.keys() {
            p.stream_health.set(name, false);
        }
        result.map(|()| RunReport::default())
    }
}

impl Process for UserStream {
    fn run(&self, ctx: RunContext) -> BoxFuture<'_, Result<RunReport, ProcessError>> {
        Box::pin(self.run_stream(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn account(name: &str, key: &str) -> Arc<Account> {
        Arc::new(Account {
            name: name.into(),
            api_key: Secret::new(key.to_string()),
            api_secret: Secret::new("s".to_string()),
        })
    }

    fn running(account: &Arc<Account>, stopping: bool) -> Running {
        Running {
            stop: CancellationToken::new(),
            account: account.clone(),
            stopping,
        }
    }

    #[test]
    fn the_plan_follows_the_registry() {
        let (a, b, c) = (account("a", "ka"), account("b", "kb"), account("c", "kc"));
        let mut now = HashMap::new();
        assert_eq!(
            plan(&now, &[a.clone(), b.clone()]),
            Plan {
                start: vec!["a".into(), "b".into()],
                stop: vec![]
            },
            "every account of ours starts"
        );
        now.insert("a".to_string(), running(&a, false));
        now.insert("b".to_string(), running(&b, false));
        assert_eq!(plan(&now, &[a.clone(), b.clone()]), Plan::default(), "nothing to do");
        assert_eq!(
            plan(&now, &[b.clone(), c.clone()]),
            Plan {
                start: vec!["c".into()],
                stop: vec!["a".into()]
            },
            "removed (or moved away) stops, added starts"
        );
        let rotated = account("b", "kb2");
        assert_eq!(
            plan(&now, &[a.clone(), rotated.clone()]),
            Plan {
                start: vec![],
                stop: vec!["b".into()]
            },
            "new credentials: the stream stops, to start again with them"
        );
        now.insert("b".to_string(), running(&b, true));
        assert_eq!(
            plan(&now, &[a.clone(), rotated]),
            Plan::default(),
            "a stream still stopping is let finish before it starts again"
        );
        now.remove("b");
        assert_eq!(plan(&now, &[a, account("b", "kb2")]).start, vec!["b".to_string()]);
    }
}
