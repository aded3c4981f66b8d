//! The budget every replica shares (HA). The trait is here, beside the other
//! steps of admission; its PostgreSQL implementation is `ha::budget`.

use futures::future::BoxFuture;

/// One count for the whole cluster, per venue minute.
pub trait ClusterBudget: Send + Sync + 'static {
    /// Takes one call of `process` (up to `calls_limit` in the minute) and
    /// `weight` (up to `weight_cap`) in venue minute `minute`, both or
    /// neither. `Ok(false)`: the minute is spent for this caller. `Err`: the
    /// count cannot be reached, and admission falls back to this replica's
    /// local share (`budget::local`).
    fn try_take<'a>(
        &'a self,
        process: &'a str,
        calls_limit: u32,
        weight: u32,
        weight_cap: u32,
        minute: i64,
    ) -> BoxFuture<'a, anyhow::Result<bool>>;

    /// The venue says `used` weight is spent in `minute`: the cluster's count is at least that.
    fn observe_used(&self, minute: i64, used: u32) -> BoxFuture<'_, anyhow::Result<()>>;

    /// Whether the count can be reached again (taking nothing).
    fn ping(&self) -> BoxFuture<'_, anyhow::Result<()>>;

    /// Replicas sharing the venue's budget, as last seen alive (0: not known
    /// yet); a replica cut off from the count takes this fraction of it.
    fn replicas(&self) -> u32;
}
