//! Metrics of protection beyond the trigger itself: closes that cannot go
//! on yet, the venue's refusals by what the refusal table makes of them,
//! and levels retired because their position went away. Reported through
//! [`ProtectionEvents`] (reached from `DomainEvents::protection`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The refusal table's steps (`exchange::refusals::CloseStep::as_str`).
pub const CLOSE_STEPS: [&str; 5] = ["retry_later", "look_up", "split", "reread", "final"];
/// Why a level was retired without a close.
pub const RETIRE_REASONS: [&str; 2] = ["position_closed", "position_flipped"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Default)]
pub struct ProtectionEvents {
    closes_retrying: Gauge,
    close_refusals: Family<StepLabels, Counter>,
    levels_retired: Family<ReasonLabels, Counter>,
}

impl ProtectionEvents {
    pub fn new() -> Self {
        let m = ProtectionEvents::default();
        for step in CLOSE_STEPS {
            let _ = m.close_refusals.get_or_create(&StepLabels { step });
        }
        for reason in RETIRE_REASONS {
            let _ = m.levels_retired.get_or_create(&ReasonLabels { reason });
        }
        m
    }

    /// Registers under `script_manager_`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "level_close_retrying",
            "Closes of crossed levels that could not go on and are being retried (the position is still open)",
            self.closes_retrying.clone(),
        );
        r.register(
            "level_close_refusals",
            "Close orders the venue refused or could not answer, by the refusal table's next step",
            self.close_refusals.clone(),
        );
        r.register(
            "levels_retired",
            "Armed levels cancelled without a close because their position went flat or changed side",
            self.levels_retired.clone(),
        );
    }

    /// Closes retrying right now.
    pub fn closes_retrying(&self, count: usize) {
        self.closes_retrying.set(count as i64);
    }

    /// A close order was refused (or went unanswered); `step` is one of [`CLOSE_STEPS`].
    pub fn close_refused(&self, step: &'static str) {
        self.close_refusals.get_or_create(&StepLabels { step }).inc();
    }

    /// Levels retired, `reason` one of [`RETIRE_REASONS`].
    pub fn levels_retired(&self, reason: &'static str, count: usize) {
        self.levels_retired
            .get_or_create(&ReasonLabels { reason })
            .inc_by(count as u64);
    }
}
