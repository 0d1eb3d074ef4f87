//! Planning a rollback: the next step from the current phase towards a lower target.
//!
//! A rollback walks down one safe move at a time. From phase 4 or 5 it jumps straight
//! into phase 2 or 3 (see [`phase_record::rollback_jump`]), where writes reach both stores
//! again; reads may only return to the old store (phase 1) once the reverse sync has
//! copied back what phases 4 and 5 wrote to the new store alone.

use serde::Serialize;

use crate::migration::state::phase_record::{self, GateFacts, PhaseState, UnmetGate};
use crate::phase::{Move, Phase};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The target phase is reached.
    Done,
    /// Move to this phase now.
    Move { to: u8 },
    /// Drain the repair journal: reads may not change stores while keys are out of sync.
    Repair,
    /// Advance the reverse sync: the old store lacks writes made since phase 4.
    Sync,
    /// Wait until isolates have all seen the last phase change.
    Wait { ms: u64 },
    /// Something only an operator can resolve.
    Blocked { gates: Vec<UnmetGate> },
}

pub fn next_step(state: &PhaseState, current: Phase, target: Phase, facts: &GateFacts) -> Step {
    if !Move::new(current, target).goes_back() {
        return Step::Done;
    }
    if let Some(to) = Move::rollback_jump_towards(current, target) {
        return Step::Move { to: to.number() };
    }
    let Some(to) = current.previous() else {
        return Step::Done;
    };
    let gates = phase_record::unmet_gates(state, current, to, facts);
    if gates.is_empty() {
        return Step::Move { to: to.number() };
    }
    if gates.iter().any(|g| g.gate == "settled") {
        return Step::Wait {
            ms: facts.unsettled_ms,
        };
    }
    if gates.iter().all(|g| g.gate == "repair_journal_empty") {
        return Step::Repair;
    }
    let syncable =
        |g: &UnmetGate| g.gate == "old_store_in_sync" || g.gate == "repair_journal_empty";
    if current.reverse_sync_allowed() && gates.iter().all(syncable) {
        return Step::Sync;
    }
    Step::Blocked { gates }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(diverged: bool) -> PhaseState {
        PhaseState {
            phase: 0,
            changed_at: 0,
            changed_by: String::new(),
            new_store_diverged: false,
            old_store_diverged: diverged,
            left_old_store_at: 10,
        }
    }

    #[test]
    fn from_phase_5_jumps_into_the_dual_write_phases() {
        let facts = GateFacts::default();
        let s = state(true);
        assert_eq!(
            next_step(&s, Phase::Complete, Phase::Legacy, &facts),
            Step::Move { to: 2 }
        );
        assert_eq!(
            next_step(&s, Phase::Complete, Phase::Backfill, &facts),
            Step::Move { to: 3 }
        );
        assert_eq!(
            next_step(&s, Phase::Complete, Phase::NewPrimary, &facts),
            Step::Move { to: 4 }
        );
        assert_eq!(
            next_step(&s, Phase::NewPrimary, Phase::DualWrite, &facts),
            Step::Move { to: 2 }
        );
    }

    #[test]
    fn reads_return_to_the_old_store_only_after_the_reverse_sync() {
        let mut facts = GateFacts::default();
        let s = state(true);
        assert_eq!(
            next_step(&s, Phase::ReadNew, Phase::Legacy, &facts),
            Step::Sync
        );
        facts.repair_journal_size = 3;
        assert_eq!(
            next_step(&s, Phase::ReadNew, Phase::Legacy, &facts),
            Step::Sync
        );
        facts.reverse_sync_complete = true;
        assert_eq!(
            next_step(&s, Phase::ReadNew, Phase::Legacy, &facts),
            Step::Repair
        );
        facts.repair_journal_size = 0;
        assert_eq!(
            next_step(&s, Phase::ReadNew, Phase::Legacy, &facts),
            Step::Move { to: 1 }
        );
        assert_eq!(
            next_step(&state(false), Phase::DualWrite, Phase::Legacy, &facts),
            Step::Move { to: 0 }
        );
    }

    #[test]
    fn waits_for_isolates_to_settle_between_moves() {
        let facts = GateFacts {
            unsettled_ms: 1_500,
            ..GateFacts::default()
        };
        assert_eq!(
            next_step(&state(false), Phase::Backfill, Phase::DualWrite, &facts),
            Step::Wait { ms: 1_500 }
        );
    }

    #[test]
    fn a_target_at_or_above_the_phase_is_done() {
        let facts = GateFacts::default();
        assert_eq!(
            next_step(&state(false), Phase::DualWrite, Phase::DualWrite, &facts),
            Step::Done
        );
    }
}
