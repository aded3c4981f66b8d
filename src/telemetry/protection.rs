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
pub const RETIRE_REASONS: [&str; 4] = ["position_closed", "position_flipped", "flattened", "account_removed"];
/// How the backstops armed levels want stand.
pub const BACKSTOP_STATES: [&str; 4] = ["live", "placing", "missing", "failed"];
/// What was done to backstops on the venue, and how it went.
const BACKSTOP_CHANGES: [(&str, &[&str]); 2] = [
    ("place", &["ok", "refused", "error", "unknown"]),
    ("cancel", &["ok", "not_open", "error"]),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    action: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Default)]
pub struct ProtectionEvents {
    closes_retrying: Gauge,
    close_refusals: Family<StepLabels, Counter>,
    levels_retired: Family<ReasonLabels, Counter>,
    backstops: Family<StateLabels, Gauge>,
    backstop_changes: Family<ChangeLabels, Counter>,
    flattened: Family<OutcomeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// What the kill switch did per position.
pub const FLATTEN_OUTCOMES: [&str; 3] = ["closing", "flat", "failed"];

impl ProtectionEvents {
    pub fn new() -> Self {
        let m = ProtectionEvents::default();
        for step in CLOSE_STEPS {
            let _ = m.close_refusals.get_or_create(&StepLabels { step });
        }
        for reason in RETIRE_REASONS {
            let _ = m.levels_retired.get_or_create(&ReasonLabels { reason });
        }
        for state in BACKSTOP_STATES {
            let _ = m.backstops.get_or_create(&StateLabels { state });
        }
        for (action, outcomes) in BACKSTOP_CHANGES {
            for &outcome in outcomes {
                let _ = m.backstop_changes.get_or_create(&ChangeLabels { action, outcome });
            }
        }
        for outcome in FLATTEN_OUTCOMES {
            let _ = m.flattened.get_or_create(&OutcomeLabels { outcome });
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
            "backstop_orders",
            "Backstops armed levels want on the venue, by state (live, placing, missing, failed)",
            self.backstops.clone(),
        );
        r.register(
            "backstop_changes",
            "Backstop placements and cancels sent to the venue, by action and outcome",
            self.backstop_changes.clone(),
        );
        r.register(
            "positions_flattened",
            "Positions the kill switch (POST /api/flatten) acted on, by outcome",
            self.flattened.clone(),
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

    /// How the wanted backstops stand now (states not given are 0).
    pub fn backstop_states(&self, counts: &std::collections::HashMap<&'static str, usize>) {
        for state in BACKSTOP_STATES {
            let n = counts.get(state).copied().unwrap_or(0);
            self.backstops.get_or_create(&StateLabels { state }).set(n as i64);
        }
    }

    /// A placement or cancel on the venue (`action` and `outcome` from the closed set above).
    pub fn backstop_change(&self, action: &'static str, outcome: &'static str) {
        self.backstop_changes
            .get_or_create(&ChangeLabels { action, outcome })
            .inc();
    }

    /// The kill switch acted on one position (`outcome` one of [`FLATTEN_OUTCOMES`]).
    pub fn flattened(&self, outcome: &'static str) {
        self.flattened.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Levels retired, `reason` one of [`RETIRE_REASONS`].
    pub fn levels_retired(&self, reason: &'static str, count: usize) {
        self.levels_retired
            .get_or_create(&ReasonLabels { reason })
            .inc_by(count as u64);
    }
}
