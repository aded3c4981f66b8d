//! The database's clock and the grid every replica ticks on: local time plus
//! a measured offset, re-measured by the heartbeat, so replicas name the
//! same tick whatever their own clocks say.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::coordinator::Coordinator;
use crate::clock::now_ms;

impl Coordinator {
    pub(super) async fn measure_clock(&self) -> anyhow::Result<()> {
        let before = now_ms();
        let db = self.leases.now_ms().await?;
        let after = now_ms();
        self.db_offset_ms.store(db - (before + after) / 2, Ordering::Relaxed);
        Ok(())
    }

    fn db_now_ms(&self) -> i64 {
        now_ms() + self.db_offset_ms.load(Ordering::Relaxed)
    }

    /// How long until the next point of the shared grid (`interval`, shifted
    /// by `offset`) in database time, at least `guard` from now.
    pub fn until_next_tick(&self, interval: Duration, offset: Duration, guard: Duration) -> Duration {
        let interval_ms = (interval.as_millis() as i64).max(1);
        let offset_ms = offset.as_millis() as i64;
        let earliest = self.db_now_ms() + guard.as_millis() as i64;
        let k = (earliest - offset_ms).div_euclid(interval_ms) + 1;
        let next = k * interval_ms + offset_ms;
        Duration::from_millis((next - self.db_now_ms()).max(0) as u64)
    }
}
