//! A rollback (docs/design.md §9): the next step from the current phase towards a lower
//! target ([`next_step`], pure), and [`advance`], which takes as many steps as one call
//! may and says where it stands.
//!
//! A rollback walks down one safe move at a time. From phase 4 or 5 it jumps straight
//! into phase 2 or 3 (see [`Move::is_rollback_jump`]), where writes reach both stores
//! again; reads may only return to the old store (phase 1) once the reverse sync has
//! copied back what phases 4 and 5 wrote to the new store alone.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::migration::copying::backfill::RunReport;
use crate::migration::copying::fanout::{ChunkQueue, Fanout};
use crate::migration::copying::reverse;
use crate::migration::healing::repair::{self, RepairReport};
use crate::migration::state::coordinator::{self, PhaseRegister};
use crate::migration::state::gates::{self, Facts, Gate, GateFacts, GateSettings, UnmetGate};
use crate::migration::state::phase_record::{self, CurrentPhase, PhaseChangeRequest, PhaseState};
use crate::phase::{Move, Phase};
use crate::store::budget::{metered, Budget};
use crate::store::{KvStore, Stores};
use crate::writes::repairs::ThroughObjects;
use crate::writes::Writers;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The target phase is reached.
    Done,
    /// Move to this phase now.
    Move { to: Phase },
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
        return Step::Move { to };
    }
    let Some(to) = current.previous() else {
        return Step::Done;
    };
    let gates = gates::unmet_gates(state, current, to, facts);
    if gates.is_empty() {
        return Step::Move { to };
    }
    if gates.iter().any(|g| g.gate == Gate::Settled) {
        return Step::Wait {
            ms: facts.unsettled_ms,
        };
    }
    if gates.iter().all(|g| g.gate == Gate::RepairJournalEmpty) {
        return Step::Repair;
    }
    let syncable =
        |g: &UnmetGate| g.gate == Gate::OldStoreInSync || g.gate == Gate::RepairJournalEmpty;
    if current.reverse_sync_allowed() && gates.iter().all(syncable) {
        return Step::Sync;
    }
    Step::Blocked { gates }
}

/// Steps one call may take; a walk from 5 to 0 needs at most five moves and a sync.
const MAX_STEPS_PER_CALL: usize = 8;
/// KV operations the request spends outside the sync batch (phase, gates, moves).
const REQUEST_OVERHEAD_OPS: u32 = 150;

/// What a rollback call needs besides the stores.
pub struct Context<'a, S, R, W> {
    pub stores: &'a Stores<S>,
    /// Where the phase record is written (docs/design.md §11).
    pub register: &'a R,
    /// Where journaled customer records are repaired (docs/design.md §12).
    pub writers: &'a W,
    /// The queue the reverse sync fans out on, if any (docs/design.md §13).
    pub queue: Option<&'a dyn ChunkQueue>,
    pub default_phase: Phase,
    pub settings: GateSettings,
    pub who: &'a str,
    pub now_ms: u64,
}

/// A step one call took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Taken {
    Move {
        from: Phase,
        to: Phase,
        #[serde(
            rename = "forcedGates",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        forced_gates: Option<Vec<UnmetGate>>,
    },
    Repair {
        report: RepairReport,
    },
    Sync {
        report: Option<RunReport>,
    },
}

/// Where a rollback stands after a call.
pub struct Progress {
    /// The phase the call ended in.
    pub current: CurrentPhase,
    pub target: Phase,
    pub steps: Vec<Taken>,
    /// `None` once the target is reached; else the step the rollback waits to take.
    pub next: Option<Step>,
    /// Why it stopped short of the target, for the operator.
    pub waiting_for: &'static str,
    /// The gates' facts at the end (`None` after a forced rollback).
    pub facts: Option<Facts>,
}

impl Progress {
    pub fn done(&self) -> bool {
        self.next.is_none()
    }

    /// Whether the call moved the phase (an isolate's cached copy is then stale).
    pub fn moved(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Taken::Move { .. }))
    }
}

/// A rollback walks every customer down together: a cohort is cancelled first, which
/// takes its customers back through the gates of that one step (docs/design.md §17).
fn refuse_with_cohort_open(current: &CurrentPhase) -> Result<(), Error> {
    match current.cohort_phase() {
        Some(cohort) => Err(Error::CohortRefused(format!(
            "a cohort of customers is in phase {}: cancel it (POST /admin/migrate/cohort/cancel) before rolling back",
            cohort.number()
        ))),
        None => Ok(()),
    }
}

/// Walks the phase down towards `request.to` as far as is safe right now: the moves,
/// one reverse-sync batch and one repair pass one call affords. `force` (with a reason)
/// moves straight to the target, past every gate, audited as forced.
pub async fn advance<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Context<'_, S, R, W>,
    mut request: PhaseChangeRequest,
) -> Result<Progress, Error> {
    // The coordinator's record, fresher than this isolate's cached phase.
    let current = coordinator::read(ctx.register, ctx.default_phase).await?;
    request.rollback = true;
    let target = request.to;
    if Move::new(current.phase, target).goes_forward() {
        return Err(going_forward(current.phase));
    }
    refuse_with_cohort_open(&current)?;
    if request.force {
        let facts = gates::gather(ctx.stores, &current, ctx.settings, ctx.now_ms).await?;
        let (outcome, after) = coordinator::change(
            ctx.register,
            &current,
            request,
            ctx.who,
            &facts.gates,
            ctx.now_ms,
        )
        .await?;
        return Ok(Progress {
            current: after,
            target,
            steps: vec![Taken::Move {
                from: outcome.from,
                to: outcome.to,
                forced_gates: Some(outcome.forced_gates),
            }],
            next: None,
            waiting_for: "",
            facts: None,
        });
    }
    let mut current = current;
    let mut steps = Vec::new();
    for _ in 0..MAX_STEPS_PER_CALL {
        let facts = gates::gather(ctx.stores, &current, ctx.settings, ctx.now_ms).await?;
        let step = next_step(&current.state, current.phase, target, &facts.gates);
        let at = (&current, target);
        match step {
            Step::Done => {
                return Ok(Progress {
                    next: None,
                    ..stopped(at, steps, Step::Done, facts, "")
                });
            }
            Step::Move { to } => {
                let move_request = PhaseChangeRequest {
                    to,
                    force: false,
                    reason: request.reason.clone(),
                    rollback: true,
                };
                let (outcome, after) = coordinator::change(
                    ctx.register,
                    &current,
                    move_request,
                    ctx.who,
                    &facts.gates,
                    ctx.now_ms,
                )
                .await?;
                steps.push(Taken::Move {
                    from: outcome.from,
                    to: outcome.to,
                    forced_gates: None,
                });
                // The coordinator's record, not a KV read that may not show it yet.
                current = after;
            }
            Step::Repair => {
                let repairs = ThroughObjects {
                    stores: ctx.stores,
                    writers: ctx.writers,
                    current: &current,
                    now_ms: ctx.now_ms,
                };
                let report = repair::drain(
                    ctx.stores,
                    &repairs,
                    ctx.settings.pass_delay_ms,
                    ctx.now_ms,
                    repair::ENTRIES_PER_RUN,
                )
                .await?;
                let progressed = report.repaired > 0;
                let wait_ms = report.wait_ms;
                steps.push(Taken::Repair { report });
                if let Some(ms) = wait_ms.filter(|_| !progressed) {
                    return Ok(stopped(at, steps, Step::Wait { ms }, facts, "repaired keys stay in the journal until a check once KV has spread the repair to every location; call again then"));
                }
                if !progressed {
                    return Ok(stopped(
                        at,
                        steps,
                        step,
                        facts,
                        "the repair journal could not be drained; see the repair report",
                    ));
                }
            }
            Step::Sync => {
                let budget = Budget::per_invocation(REQUEST_OVERHEAD_OPS);
                let fanout = ctx.queue.map(|queue| Fanout {
                    register: ctx.register,
                    queue,
                });
                let report = reverse::advance(
                    &metered(ctx.stores, &budget),
                    fanout,
                    &budget,
                    &current.state,
                    ctx.settings.pass_delay_ms,
                    ctx.now_ms,
                )
                .await?;
                let synced = report.as_ref().is_some_and(|r| r.complete);
                let wait_ms = report.as_ref().and_then(|r| r.wait_ms);
                steps.push(Taken::Sync { report });
                if synced {
                    continue;
                }
                let facts = gates::gather(ctx.stores, &current, ctx.settings, ctx.now_ms).await?;
                let at = (&current, target);
                return Ok(match wait_ms {
                    Some(ms) => stopped(at, steps, Step::Wait { ms }, facts, "the reverse sync's next pass re-reads what the last one copied once KV has spread those copies to every location; call again then"),
                    None => stopped(at, steps, step, facts, "the reverse sync is copying writes made since phase 4 back to the old store; call again (the cron also advances it every minute)"),
                });
            }
            Step::Wait { .. } => {
                return Ok(stopped(
                    at,
                    steps,
                    step,
                    facts,
                    "isolates may still run the previous phase; call again once it has settled",
                ));
            }
            Step::Blocked { .. } => {
                return Ok(stopped(
                    at,
                    steps,
                    step,
                    facts,
                    "a gate blocks the next move; resolve it, or force the rollback with a reason",
                ));
            }
        }
    }
    let facts = gates::gather(ctx.stores, &current, ctx.settings, ctx.now_ms).await?;
    Ok(Progress {
        current,
        target,
        steps,
        next: Some(Step::Wait { ms: 0 }),
        waiting_for: "call again to continue",
        facts: Some(facts),
    })
}

/// More steps than any walk from 5 to 0 takes; a guard against a rule that loops.
const MAX_PLANNED_STEPS: usize = 16;

/// The steps a rollback from `from` to `to` would take, [`next_step`] applied to the
/// facts as each step would leave them, and the gates that would stop it, if any. Each
/// move is followed by its wait for isolates to settle, told with the move.
pub fn plan(
    state: &PhaseState,
    from: Phase,
    to: Phase,
    facts: &GateFacts,
) -> (Vec<Step>, Option<Vec<UnmetGate>>) {
    let mut state = state.clone();
    let mut facts = facts.clone();
    let mut at = from;
    let mut steps = Vec::new();
    for _ in 0..MAX_PLANNED_STEPS {
        let step = next_step(&state, at, to, &facts);
        match &step {
            Step::Done => return (steps, None),
            Step::Blocked { gates } => return (steps, Some(gates.clone())),
            Step::Move { to } => {
                at = *to;
                state.phase = to.number();
                facts.unsettled_ms = 0;
            }
            Step::Wait { .. } => facts.unsettled_ms = 0,
            Step::Repair => facts.repair_journal_size = 0,
            Step::Sync => facts.reverse_sync_complete = true,
        }
        steps.push(step);
    }
    (steps, None)
}

/// What a rollback would do now, acting on nothing (`dryRun`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub from: Phase,
    pub to: Phase,
    /// Whether it would reach `to` (forced, always).
    pub allowed: bool,
    pub forced: bool,
    pub steps: Vec<Step>,
    /// The gates that would stop the walk, or that a forced rollback moves past.
    pub unmet: Vec<UnmetGate>,
}

/// [`advance`]'s plan from where the coordinator's record stands, without acting.
pub async fn preview<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Context<'_, S, R, W>,
    request: &PhaseChangeRequest,
) -> Result<Preview, Error> {
    let current = coordinator::read(ctx.register, ctx.default_phase).await?;
    let (from, to) = (current.phase, request.to);
    if Move::new(from, to).goes_forward() {
        return Err(going_forward(from));
    }
    refuse_with_cohort_open(&current)?;
    if current.state.finalized_at.is_some() && from != to {
        return Err(Error::PhaseChangeRefused(
            phase_record::FINALIZED.to_owned(),
        ));
    }
    let facts = gates::gather(ctx.stores, &current, ctx.settings, ctx.now_ms).await?;
    if request.force && from != to {
        let unmet = gates::unmet_gates(&current.state, from, to, &facts.gates);
        return Ok(Preview {
            from,
            to,
            allowed: true,
            forced: true,
            steps: vec![Step::Move { to }],
            unmet,
        });
    }
    let (steps, blocked) = plan(&current.state, from, to, &facts.gates);
    Ok(Preview {
        from,
        to,
        allowed: blocked.is_none(),
        forced: false,
        steps,
        unmet: blocked.unwrap_or_default(),
    })
}

fn going_forward(phase: Phase) -> Error {
    Error::InvalidRollback(format!(
        "a rollback goes to a lower phase; the phase is {} (use /admin/migrate/phase to move forward)",
        phase.number()
    ))
}

/// The progress of a call that stops at `at` (phase, target) before `next`.
fn stopped(
    (current, target): (&CurrentPhase, Phase),
    steps: Vec<Taken>,
    next: Step,
    facts: Facts,
    why: &'static str,
) -> Progress {
    Progress {
        current: current.clone(),
        target,
        steps,
        next: Some(next),
        waiting_for: why,
        facts: Some(facts),
    }
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
            revision: 0,
            finalized_at: None,
            cohort: None,
            routed_at: 0,
        }
    }

    #[test]
    fn from_phase_5_jumps_into_the_dual_write_phases() {
        let facts = GateFacts::default();
        let s = state(true);
        assert_eq!(
            next_step(&s, Phase::Complete, Phase::Legacy, &facts),
            Step::Move { to: Phase::ReadNew }
        );
        assert_eq!(
            next_step(&s, Phase::Complete, Phase::Backfill, &facts),
            Step::Move {
                to: Phase::Backfill
            }
        );
        assert_eq!(
            next_step(&s, Phase::Complete, Phase::NewPrimary, &facts),
            Step::Move {
                to: Phase::NewPrimary
            }
        );
        assert_eq!(
            next_step(&s, Phase::NewPrimary, Phase::DualWrite, &facts),
            Step::Move { to: Phase::ReadNew }
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
            Step::Move {
                to: Phase::DualWrite
            }
        );
        assert_eq!(
            next_step(&state(false), Phase::DualWrite, Phase::Legacy, &facts),
            Step::Move { to: Phase::Legacy }
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
