//! Intervals that adapt to the API budget: while the venue weight used (or
//! expected, see `budget::weight`) this minute is above a share of our budget, or while the venue has us paused
//! after a 429/418, processes of lower priority wait longer between ticks
//! (up to a maximum factor), and return to their intervals as usage falls.
//! Priority-1 processes and level_monitor never stretch: they are what the
//! budget is kept for.

use std::sync::Arc;

use crate::budget::VenueWeight;

/// The settings (`[scheduler] adaptive_*`) and the budget they read.
pub struct Adaptive {
    weight: Arc<VenueWeight>,
    /// Share of our weight budget above which intervals stretch.
    above_share: f64,
    /// The longest an interval gets, as a multiple of the configured one.
    max_factor: f64,
    /// Processes with this priority number or higher (less urgent) stretch.
    from_priority: u8,
}

/// Kinds that never stretch, whatever their priority.
const NEVER: [&str; 2] = ["level_monitor", "market_stream"];

impl Adaptive {
    pub fn new(weight: Arc<VenueWeight>, above_share: f64, max_factor: f64, from_priority: u8) -> Self {
        Adaptive {
            weight,
            above_share: above_share.clamp(0.0, 0.999),
            max_factor: max_factor.max(1.0),
            from_priority: from_priority.max(2),
        }
    }

    /// How many times its configured interval a process of `kind` and `priority` waits now.
    pub fn factor(&self, kind: &str, priority: u8) -> f64 {
        if priority < self.from_priority || NEVER.contains(&kind) {
            return 1.0;
        }
        let usage = self.weight.usage();
        if usage.paused {
            return self.max_factor;
        }
        if usage.limit == 0 {
            return 1.0;
        }
        // Other clients' expected spend counts: it is what the budget admits against.
        let share = usage.expected as f64 / usage.limit as f64;
        if share <= self.above_share {
            return 1.0;
        }
        // Linear from 1 at the threshold to the maximum at a full budget.
        let over = ((share - self.above_share) / (1.0 - self.above_share)).min(1.0);
        1.0 + over * (self.max_factor - 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretches_with_usage_and_never_for_the_urgent() {
        let weight = Arc::new(VenueWeight::new(1000, 1.0, 0.0, []));
        let a = Adaptive::new(weight.clone(), 0.8, 4.0, 2);
        assert_eq!(a.factor("price_update", 2), 1.0, "idle budget");
        weight.observe_used_weight(900, weight.venue_minute());
        assert!(
            (a.factor("price_update", 2) - 2.5).abs() < 1e-9,
            "{}",
            a.factor("price_update", 2)
        );
        assert_eq!(a.factor("trade_sync", 1), 1.0, "priority 1 never stretches");
        assert_eq!(a.factor("level_monitor", 5), 1.0, "level_monitor never stretches");
        weight.observe_used_weight(1000, weight.venue_minute());
        assert_eq!(a.factor("dashboard_sync", 4), 4.0, "a spent budget: the maximum");
    }
}
