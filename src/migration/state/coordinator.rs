//! The serialization point of the phase record (docs/design.md §11). Every write of the
//! record is a [`RecordOp`] applied by [`apply`] under one lock: in production the
//! coordinator Durable Object (one instance, `src/platform/coordinator.rs`), natively
//! [`LocalRegister`]. An op carries the record its request was judged against; if the
//! record moved meanwhile, the op is refused with the move that won, so two concurrent
//! moves never both succeed.

use std::cell::RefCell;

use futures::lock::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::migration::checking::comparisons::{self, CompareAnswer, CompareOp};
use crate::migration::checking::emails_fanout::{self, AuditAnswer, AuditOp};
use crate::migration::checking::fanned_out;
use crate::migration::copying::fanout::tally::{self, MemoryTally, TallyAnswer, TallyOp};
use crate::migration::state::gates::GateFacts;
use crate::migration::state::phase_record::{
    self, CohortOutcome, CohortRequest, CurrentPhase, PhaseChangeOutcome, PhaseChangeRequest,
    PhaseState,
};
use crate::phase::Phase;
use crate::store::{KvStore, StoreResult};

/// One write of the phase record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RecordOp {
    /// The record as the coordinator holds it: fresher than any KV read elsewhere.
    Read,
    /// A move through the gates, judged on `facts` gathered while the record was
    /// `expected`.
    Change {
        expected: PhaseState,
        request: PhaseChangeRequest,
        who: String,
        facts: GateFacts,
        now_ms: u64,
    },
    /// Clears `new_store_diverged` after a clean full verification judged against
    /// `judged`.
    ClearNewStoreDivergence {
        judged: PhaseState,
        who: String,
        now_ms: u64,
    },
    /// A cohort opened, widened or cancelled, judged as `Change` is.
    Cohort {
        expected: PhaseState,
        request: CohortRequest,
        who: String,
        facts: GateFacts,
        now_ms: u64,
    },
    /// Finalizes the migration in phase 5, judged against `judged`.
    Finalize {
        judged: PhaseState,
        who: String,
        now_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordOutcome {
    Read {
        record: Option<PhaseState>,
    },
    /// The move, and the record after it.
    Changed {
        outcome: PhaseChangeOutcome,
        record: Option<PhaseState>,
    },
    Cleared,
    /// The cohort step, and the record after it.
    CohortStepped {
        outcome: CohortOutcome,
        record: Option<PhaseState>,
    },
    /// The record, finalized.
    Finalized {
        record: PhaseState,
    },
}

/// Whoever applies record ops one at a time.
#[allow(async_fn_in_trait)]
pub trait PhaseRegister {
    async fn apply(&self, op: RecordOp) -> Result<RecordOutcome, Error>;
    /// An op on the tally of a fanned-out pass, which the coordinator keeps too
    /// (docs/design.md §13).
    async fn tally(&self, op: TallyOp) -> StoreResult<TallyAnswer>;
    /// An op on a verification fanned out on the queue (docs/design.md §13).
    async fn compare(&self, op: CompareOp) -> StoreResult<CompareAnswer>;
    /// An op on an email audit fanned out on the queue, a dry run's or a real one's.
    async fn audit(&self, dry_run: bool, op: AuditOp) -> StoreResult<AuditAnswer>;
}

/// What [`apply`] did, and the record as it stands after it.
pub struct Applied {
    pub outcome: RecordOutcome,
    pub record: Option<PhaseState>,
}

/// Applies `op` to the record. The caller holds the lock: this reads, decides and
/// writes. `kept` is the record the coordinator last wrote (kept in its own strongly
/// consistent storage): it wins over what KV shows unless KV shows a newer one, so a
/// stale KV read never decides.
pub async fn apply<S: KvStore>(
    new_store: &S,
    default_phase: Phase,
    kept: Option<PhaseState>,
    op: RecordOp,
) -> Result<Applied, Error> {
    let seen = phase_record::load_state(new_store).await?;
    let record = newest(kept, seen);
    let fresh = CurrentPhase::of(record.clone(), default_phase)?;
    match op {
        RecordOp::Read => Ok(Applied {
            outcome: RecordOutcome::Read {
                record: record.clone(),
            },
            record,
        }),
        RecordOp::Change {
            expected,
            request,
            who,
            facts,
            now_ms,
        } => {
            // The `mutant-no-coordinator` build applies a move judged on a record another
            // move has replaced, as KV writes without a coordinator would.
            let fresh = if cfg!(feature = "mutant-no-coordinator") {
                CurrentPhase::of(Some(expected), default_phase)?
            } else if fresh.state != expected {
                return Err(Error::PhaseMoved(moved_meanwhile(&fresh)));
            } else {
                fresh
            };
            let (outcome, written) =
                phase_record::change(new_store, &fresh, request, &who, &facts, now_ms).await?;
            let record = written.or(record);
            Ok(Applied {
                outcome: RecordOutcome::Changed {
                    outcome,
                    record: record.clone(),
                },
                record,
            })
        }
        RecordOp::Cohort {
            expected,
            request,
            who,
            facts,
            now_ms,
        } => {
            if fresh.state != expected {
                return Err(Error::PhaseMoved(moved_meanwhile(&fresh)));
            }
            let (outcome, written) =
                phase_record::step_cohort(new_store, &fresh, request, &who, &facts, now_ms).await?;
            let record = written.or(record);
            Ok(Applied {
                outcome: RecordOutcome::CohortStepped {
                    outcome,
                    record: record.clone(),
                },
                record,
            })
        }
        RecordOp::ClearNewStoreDivergence {
            judged,
            who,
            now_ms,
        } => {
            let written = phase_record::clear_new_store_divergence(
                new_store,
                record.as_ref(),
                &judged,
                &who,
                now_ms,
            )
            .await?;
            Ok(Applied {
                outcome: RecordOutcome::Cleared,
                record: written.or(record),
            })
        }
        RecordOp::Finalize {
            judged,
            who,
            now_ms,
        } => {
            let written =
                phase_record::finalize(new_store, record.as_ref(), &judged, &who, now_ms).await?;
            Ok(Applied {
                outcome: RecordOutcome::Finalized {
                    record: written.clone(),
                },
                record: Some(written),
            })
        }
    }
}

/// Names the move that won, for the request that lost.
fn moved_meanwhile(fresh: &CurrentPhase) -> String {
    format!(
        "the phase moved while this request was decided: it is now {} ({}), set by {} at {}; look at the status and try again",
        fresh.phase.number(),
        fresh.phase.name(),
        if fresh.state.changed_by.is_empty() { "nobody" } else { &fresh.state.changed_by },
        crate::time::rfc3339(fresh.state.changed_at),
    )
}

/// The newer of the record the coordinator last wrote (`kept`) and the one KV shows
/// (`seen`): by revision when both have one, else (a record written by a worker from
/// before the coordinator has none) by when it last changed the routing, then by
/// revision; on a tie, the coordinator's own.
/// Only the coordinator writes the record, so a KV view older than `kept`, or without a
/// record at all, has not caught up with its own write yet.
pub fn newest(kept: Option<PhaseState>, seen: Option<PhaseState>) -> Option<PhaseState> {
    let seen_is_newer = |kept: &PhaseState, seen: &PhaseState| {
        if kept.revision > 0 && seen.revision > 0 {
            seen.revision > kept.revision
        } else {
            // A cohort step changes the routing, not `changedAt`; on a tie the record a
            // coordinator wrote (a revision) is the later one.
            let order = |r: &PhaseState| (r.routing_changed_at(), r.revision);
            order(seen) > order(kept)
        }
    };
    match (kept, seen) {
        (Some(kept), Some(seen)) if seen_is_newer(&kept, &seen) => Some(seen),
        (Some(kept), _) => Some(kept),
        (None, seen) => seen,
    }
}

/// The register of a single process: one lock around [`apply`]. Native tests and the
/// simulation use it; it serializes exactly as the Durable Object does.
pub struct LocalRegister<'a, S> {
    pub new_store: &'a S,
    pub default_phase: Phase,
    pub cell: &'a RegisterCell,
}

/// What a process's register keeps between ops: its lock, the record it last wrote, and
/// the moves it applied (for the simulation's check that they form one chain).
#[derive(Default)]
pub struct RegisterCell {
    lock: Mutex<()>,
    kept: RefCell<Option<PhaseState>>,
    applied: RefCell<Vec<AppliedMove>>,
    tally: MemoryTally,
}

/// A move as the register saw it end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedMove {
    pub from: u8,
    pub to: u8,
    /// False when a store failed during the move: its write may or may not have landed.
    pub certain: bool,
}

impl RegisterCell {
    /// Every move applied or attempted, in order.
    pub fn applied_moves(&self) -> Vec<AppliedMove> {
        self.applied.borrow().clone()
    }
}

impl<S: KvStore> PhaseRegister for LocalRegister<'_, S> {
    async fn tally(&self, op: TallyOp) -> StoreResult<TallyAnswer> {
        let _held = self.cell.lock.lock().await;
        tally::apply(&self.cell.tally, op).await
    }

    async fn compare(&self, op: CompareOp) -> StoreResult<CompareAnswer> {
        let _held = self.cell.lock.lock().await;
        comparisons::apply(&self.cell.tally, op).await
    }

    async fn audit(&self, dry_run: bool, op: AuditOp) -> StoreResult<AuditAnswer> {
        let _held = self.cell.lock.lock().await;
        fanned_out::apply(&self.cell.tally, emails_fanout::space(dry_run), op).await
    }

    async fn apply(&self, op: RecordOp) -> Result<RecordOutcome, Error> {
        let _held = self.cell.lock.lock().await;
        let kept = self.cell.kept.borrow().clone();
        let attempted = match &op {
            RecordOp::Change {
                expected, request, ..
            } => Some((expected.phase, request.to.number())),
            _ => None,
        };
        let applied = match apply(self.new_store, self.default_phase, kept, op).await {
            Ok(applied) => applied,
            Err(err) => {
                if let (Some((from, to)), Error::Store(_)) = (attempted, &err) {
                    let maybe = AppliedMove {
                        from,
                        to,
                        certain: false,
                    };
                    self.cell.applied.borrow_mut().push(maybe);
                }
                return Err(err);
            }
        };
        *self.cell.kept.borrow_mut() = applied.record;
        if let RecordOutcome::Changed { outcome, .. } = &applied.outcome {
            if outcome.from != outcome.to {
                self.cell.applied.borrow_mut().push(AppliedMove {
                    from: outcome.from.number(),
                    to: outcome.to.number(),
                    certain: true,
                });
            }
        }
        Ok(applied.outcome)
    }
}

/// Why the coordinator refused an op, as it crosses from the Durable Object to the
/// worker: the core errors an op can end in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "refusal", content = "message", rename_all = "snake_case")]
pub enum Refusal {
    PhaseChangeRefused(String),
    ReasonRequired,
    PhaseMoved(String),
    CorruptPhaseState,
    CohortRefused(String),
    /// A store failed (or anything else went wrong): the op may or may not have applied.
    Unavailable(String),
}

/// The coordinator's answer to one op.
pub type Reply = Result<RecordOutcome, Refusal>;

impl From<Error> for Refusal {
    fn from(err: Error) -> Self {
        match err {
            Error::PhaseChangeRefused(message) => Refusal::PhaseChangeRefused(message),
            Error::ReasonRequired => Refusal::ReasonRequired,
            Error::PhaseMoved(message) => Refusal::PhaseMoved(message),
            Error::CorruptPhaseState => Refusal::CorruptPhaseState,
            Error::CohortRefused(message) => Refusal::CohortRefused(message),
            Error::Store(err) => Refusal::Unavailable(err.to_string()),
            other => Refusal::Unavailable(format!("{other:?}")),
        }
    }
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::PhaseChangeRefused(message) => Error::PhaseChangeRefused(message),
            Refusal::ReasonRequired => Error::ReasonRequired,
            Refusal::PhaseMoved(message) => Error::PhaseMoved(message),
            Refusal::CorruptPhaseState => Error::CorruptPhaseState,
            Refusal::CohortRefused(message) => Error::CohortRefused(message),
            Refusal::Unavailable(message) => unavailable(message),
        }
    }
}

/// The coordinator could not be reached or failed: the op may or may not have applied.
pub fn unavailable(message: impl Into<String>) -> Error {
    Error::Store(crate::store::StoreError::new("coordinator", message.into()))
}

/// The phase as the coordinator holds it now.
pub async fn read<R: PhaseRegister>(
    register: &R,
    default_phase: Phase,
) -> Result<CurrentPhase, Error> {
    match register.apply(RecordOp::Read).await? {
        RecordOutcome::Read { record } => CurrentPhase::of(record, default_phase),
        other => Err(unexpected(&other)),
    }
}

/// A move through `register`, judged on `facts` gathered for `current`; the move's
/// outcome and the phase after it.
pub async fn change<R: PhaseRegister>(
    register: &R,
    current: &CurrentPhase,
    request: PhaseChangeRequest,
    who: &str,
    facts: &GateFacts,
    now_ms: u64,
) -> Result<(PhaseChangeOutcome, CurrentPhase), Error> {
    let default_phase = current.phase;
    let op = RecordOp::Change {
        expected: current.state.clone(),
        request,
        who: who.to_owned(),
        facts: facts.clone(),
        now_ms,
    };
    match register.apply(op).await? {
        RecordOutcome::Changed { outcome, record } => {
            // Without a record the phase is still the default one `current` was in.
            let after = CurrentPhase::of(record, default_phase)?;
            Ok((outcome, after))
        }
        other => Err(unexpected(&other)),
    }
}

/// A cohort step through `register`, judged on `facts` gathered for `current`; what it
/// did and the phase record after it.
pub async fn step_cohort<R: PhaseRegister>(
    register: &R,
    current: &CurrentPhase,
    request: CohortRequest,
    who: &str,
    facts: &GateFacts,
    now_ms: u64,
) -> Result<(CohortOutcome, CurrentPhase), Error> {
    let op = RecordOp::Cohort {
        expected: current.state.clone(),
        request,
        who: who.to_owned(),
        facts: facts.clone(),
        now_ms,
    };
    match register.apply(op).await? {
        RecordOutcome::CohortStepped { outcome, record } => {
            Ok((outcome, CurrentPhase::of(record, current.phase)?))
        }
        other => Err(unexpected(&other)),
    }
}

fn unexpected(outcome: &RecordOutcome) -> Error {
    // The kind only: a record may name customers (a cohort's).
    let kind = match outcome {
        RecordOutcome::Read { .. } => "read",
        RecordOutcome::Changed { .. } => "changed",
        RecordOutcome::Cleared => "cleared",
        RecordOutcome::CohortStepped { .. } => "cohort_stepped",
        RecordOutcome::Finalized { .. } => "finalized",
    };
    unavailable(format!("the coordinator answered another op ({kind})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(phase: u8, changed_at: u64) -> PhaseState {
        PhaseState {
            phase,
            changed_at,
            changed_by: "ops".into(),
            new_store_diverged: false,
            old_store_diverged: false,
            left_old_store_at: 0,
            revision: 0,
            finalized_at: None,
            cohort: None,
            routed_at: 0,
        }
    }

    #[test]
    fn the_coordinators_own_write_wins_over_a_kv_view_that_has_not_caught_up() {
        let newest = |kept: Option<PhaseState>, seen| newest(kept, seen).map(|s| s.phase);
        assert_eq!(newest(Some(state(2, 20)), Some(state(1, 10))), Some(2));
        assert_eq!(newest(Some(state(2, 20)), None), Some(2));
        assert_eq!(newest(Some(state(1, 10)), Some(state(2, 20))), Some(2));
        assert_eq!(newest(None, Some(state(1, 10))), Some(1));
        assert_eq!(newest(None, None), None);
        let mut cleared = state(2, 20);
        cleared.new_store_diverged = false;
        let mut diverged = state(2, 20);
        diverged.new_store_diverged = true;
        let tie = super::newest(Some(cleared.clone()), Some(diverged));
        assert_eq!(tie, Some(cleared));
        // Revisions order records whatever their clocks said.
        let mut later = state(3, 5);
        later.revision = 2;
        let mut earlier = state(4, 50);
        earlier.revision = 1;
        assert_eq!(
            super::newest(Some(earlier), Some(later.clone())),
            Some(later)
        );
        // A cohort step over a record from before the coordinator keeps `changedAt`: the
        // routing it changed orders it.
        let legacy = state(3, 50);
        let mut stepped = legacy.clone();
        stepped.revision = 1;
        stepped.routed_at = 60;
        assert_eq!(
            super::newest(Some(legacy), Some(stepped.clone())),
            Some(stepped)
        );
    }
}
