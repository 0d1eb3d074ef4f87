//! The phase record (docs/design.md §3): where the phase is kept, and the one module that
//! writes it — a move through the gates, audited first, and the clearing of a
//! divergence flag. Every write starts from a fresh read of the record.

use serde::{Deserialize, Serialize};

use crate::domain::{customer_key, CustomerId};
use crate::error::Error;
use crate::migration::keys;
use crate::migration::state::audit::{self, AuditEntry};
use crate::migration::state::cohort::{self, Cohort};
use crate::migration::state::coordinator::{self, PhaseRegister};
use crate::migration::state::gates::{
    self, unmet_gates, without_settled, GateFacts, GateSettings, UnmetGate,
};
use crate::migration::stored::{self, Listing};
use crate::phase::{Move, Phase};
use crate::store::{KvStore, StoreName, Stores};

/// The stored phase record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseState {
    pub phase: u8,
    #[serde(default)]
    pub changed_at: u64,
    #[serde(default)]
    pub changed_by: String,
    /// Set when writes stopped reaching the new store (a move to phase 0): values it
    /// still holds may be older than the old store's, so reads must not go to it first
    /// until a clean verification says otherwise.
    #[serde(default)]
    pub new_store_diverged: bool,
    /// Set when writes stopped reaching the old store (a move to phase 4 or 5): reads
    /// must not go back to it first until a reverse sync has caught it up.
    #[serde(default)]
    pub old_store_diverged: bool,
    /// When the phase last moved from 3 or below to 4 or above: the reverse sync must
    /// have started after this to vouch for the old store.
    #[serde(default)]
    pub left_old_store_at: u64,
    /// How many times the coordinator has written the record: orders two records
    /// whatever the clocks of the requests that made them (`coordinator::newest`).
    #[serde(default)]
    pub revision: u64,
    /// When the migration was finalized in phase 5 (`state::finalize`): from then on
    /// nothing reads or writes the old store, and no move is possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized_at: Option<u64>,
    /// Customers served by the phase one step away, ahead of everyone (§17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<Cohort>,
    /// When a cohort last moved customers without a move of the phase (opened, widened
    /// or cancelled): isolates may act on the previous routing for the settle time
    /// after it too.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub routed_at: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseSource {
    Stored,
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentPhase {
    pub phase: Phase,
    pub state: PhaseState,
    pub source: PhaseSource,
}

impl CurrentPhase {
    fn default_for(phase: Phase) -> Self {
        Self {
            phase,
            state: PhaseState {
                phase: phase.number(),
                changed_at: 0,
                changed_by: String::new(),
                new_store_diverged: false,
                old_store_diverged: false,
                left_old_store_at: 0,
                revision: 0,
                finalized_at: None,
                cohort: None,
                routed_at: 0,
            },
            source: PhaseSource::Default,
        }
    }
}

/// Reads the phase record from the new store; without one, the configured default.
pub async fn load<S: KvStore>(new_store: &S, default: Phase) -> Result<CurrentPhase, Error> {
    CurrentPhase::of(load_state(new_store).await?, default)
}

impl CurrentPhase {
    /// The phase a record says, or the default without one.
    pub fn of(record: Option<PhaseState>, default: Phase) -> Result<Self, Error> {
        let Some(state) = record else {
            return Ok(CurrentPhase::default_for(default));
        };
        let phase = Phase::from_number(state.phase.into()).ok_or_else(corrupt_record)?;
        // A cohort only ever spans two adjacent phases (§17).
        if let Some(cohort) = &state.cohort {
            let to = cohort.phase().ok_or_else(corrupt_record)?;
            if Move::new(phase, to).skips_phases() || to == phase {
                return Err(corrupt_record());
            }
        }
        Ok(CurrentPhase {
            phase,
            state,
            source: PhaseSource::Stored,
        })
    }

    /// The phase customer `id`'s record is served by: the cohort's, if it includes them.
    pub fn phase_of(&self, id: &CustomerId) -> Phase {
        self.state.phase_of_key(self.phase, &customer_key(id))
    }

    /// Whether `allowed` holds for every phase in use: the record's, and the cohort's
    /// while one is open. Background work that assumes every writer acts alike asks this.
    pub fn every_phase(&self, allowed: impl Fn(Phase) -> bool) -> bool {
        allowed(self.phase) && self.cohort_phase().is_none_or(allowed)
    }

    /// The cohort's phase, while one is open.
    pub fn cohort_phase(&self) -> Option<Phase> {
        self.state.cohort.as_ref().and_then(Cohort::phase)
    }

    /// The stored record, `None` for the default phase.
    pub fn record(&self) -> Option<&PhaseState> {
        (self.source == PhaseSource::Stored).then_some(&self.state)
    }
}

/// The stored record, if any; an unreadable one is an error, never a default (it would
/// route writes by a guess).
pub async fn load_state<S: KvStore>(new_store: &S) -> Result<Option<PhaseState>, Error> {
    let Some(stored) = new_store.get(keys::PHASE).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&stored.bytes)
        .map(Some)
        .map_err(|_| corrupt_record())
}

impl PhaseState {
    /// When any customer last changed phase: a move, or a cohort's change.
    pub fn routing_changed_at(&self) -> u64 {
        self.changed_at.max(self.routed_at)
    }

    /// The phase `key` is served by when the record's phase is `base` (§17).
    pub fn phase_of_key(&self, base: Phase, key: &str) -> Phase {
        cohort::phase_of_key(base, self.cohort.as_ref(), key)
    }
}

fn corrupt_record() -> Error {
    Error::CorruptPhaseState
}

/// An admin's request to change the phase, parsed from the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseChangeRequest {
    pub to: Phase,
    pub force: bool,
    pub reason: Option<String>,
    /// A step of a rollback (audited as one; see [`Move::is_rollback_jump`]).
    pub rollback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseChangeOutcome {
    pub from: Phase,
    pub to: Phase,
    pub forced_gates: Vec<UnmetGate>,
}

/// What a move does to the record of which store lags behind the other.
fn apply_store_divergence(
    next: &mut PhaseState,
    from: Phase,
    to: Phase,
    facts: &GateFacts,
    now_ms: u64,
) {
    let change = Move::new(from, to);
    if change.stops_writing_new() {
        next.new_store_diverged = true;
    }
    if change.stops_writing_old() {
        next.old_store_diverged = true;
        next.left_old_store_at = now_ms;
    }
    // Reads return to the old store: it has caught up if the reverse sync vouches for
    // it; a forced move without one leaves the old store marked as behind.
    if to.primary_read_store() == StoreName::Old && facts.reverse_sync_complete {
        next.old_store_diverged = false;
    }
}

/// Clears `new_store_diverged` once a clean full verification showed the new store
/// caught up, with an audit entry. `judged` is the record the verification was judged
/// against: the flag is cleared from a fresh read, and only if no move came since (a
/// move to phase 0 meanwhile diverges the store again). This module is the only writer
/// of the record.
///
/// `record` is the record as the coordinator holds it; returns the record written, if
/// any.
pub async fn clear_new_store_divergence<S: KvStore>(
    new_store: &S,
    record: Option<&PhaseState>,
    judged: &PhaseState,
    who: &str,
    now_ms: u64,
) -> Result<Option<PhaseState>, Error> {
    let Some(mut state) = record.cloned() else {
        return Ok(None);
    };
    // Any write of the record since (a move, a cohort step) may have sent writes past
    // the new store after the verification read it: the revision tells.
    let moved_since = state.phase != judged.phase
        || state.changed_at != judged.changed_at
        || state.revision != judged.revision;
    if !state.new_store_diverged || moved_since {
        return Ok(None);
    }
    let detail = "a clean full verification cleared new_store_diverged".to_owned();
    let entry = AuditEntry::action(who, "verification_clean", now_ms, Some(detail));
    audit::append(new_store, &entry).await?;
    state.new_store_diverged = false;
    state.revision += 1;
    stored::put(new_store, keys::PHASE, &state, Listing::ValueOnly).await?;
    Ok(Some(state))
}

/// Why nothing that touches the old store runs once the migration is finalized.
pub const FINALIZED: &str =
    "the migration is finalized: OTP_AUTH_KV is no longer read or written, and no phase move is possible";

/// Marks the migration finalized (docs/design.md §9, "Finalizing"), with an audit entry
/// first. `judged` is the record the finalize's checks were judged against: refused if a
/// move came since. Finalizing a finalized record changes nothing.
pub async fn finalize<S: KvStore>(
    new_store: &S,
    record: Option<&PhaseState>,
    judged: &PhaseState,
    who: &str,
    now_ms: u64,
) -> Result<PhaseState, Error> {
    let Some(mut state) = record.cloned() else {
        return Err(Error::PhaseMoved("no phase record is stored".to_owned()));
    };
    if state.finalized_at.is_some() {
        return Ok(state);
    }
    if state.phase != judged.phase || state.revision != judged.revision {
        return Err(Error::PhaseMoved(format!(
            "the phase record changed while the finalize was judged: phase {} now",
            state.phase
        )));
    }
    let detail = "OTP_AUTH_KV is no longer read or written; no phase move is possible".to_owned();
    let entry = AuditEntry::action(who, "finalized", now_ms, Some(detail));
    audit::append(new_store, &entry).await?;
    state.finalized_at = Some(now_ms);
    state.revision += 1;
    stored::put(new_store, keys::PHASE, &state, Listing::ValueOnly).await?;
    Ok(state)
}

/// Applies a phase change through the gates: refused (409) when a gate is unmet unless
/// forced with a reason; audited before the phase record is written, so no change can
/// happen without its audit entry. Returns the record written, if the phase moved.
pub async fn change<S: KvStore>(
    new_store: &S,
    current: &CurrentPhase,
    request: PhaseChangeRequest,
    who: &str,
    facts: &GateFacts,
    now_ms: u64,
) -> Result<(PhaseChangeOutcome, Option<PhaseState>), Error> {
    let (from, to) = (current.phase, request.to);
    if from == to {
        let outcome = PhaseChangeOutcome {
            from,
            to,
            forced_gates: Vec::new(),
        };
        return Ok((outcome, None));
    }
    // Not even forced: once finalized, OTP_AUTH_KV may be unbound, and every phase but 5
    // writes or reads it.
    if current.state.finalized_at.is_some() {
        return Err(Error::PhaseChangeRefused(FINALIZED.to_owned()));
    }
    // With a cohort open, the one move is to the cohort's phase: everyone joins it
    // (docs/design.md §17). Any other would put customers two phases apart.
    let completes_cohort = match current.cohort_phase() {
        Some(cohort) if cohort == to => true,
        Some(cohort) => return Err(Error::CohortRefused(cohort_open(from, cohort))),
        None => false,
    };
    let gates = if request.rollback && Move::new(from, to).is_rollback_jump() {
        Vec::new()
    } else if completes_cohort {
        // The span stays the two phases the cohort already runs side by side.
        without_settled(unmet_gates(&current.state, from, to, facts))
    } else {
        unmet_gates(&current.state, from, to, facts)
    };
    let what = format!("phase {} to {}", from.number(), to.number());
    require_gates_or_force(&what, &gates, request.force, request.reason.as_deref())?;

    let mut next = current.state.clone();
    next.phase = to.number();
    next.changed_at = now_ms;
    next.revision = current.state.revision + 1;
    next.changed_by = who.to_owned();
    next.cohort = None;
    if !completes_cohort {
        // A cohort's opening already marked what its phase stops writing.
        apply_store_divergence(&mut next, from, to, facts, now_ms);
    }

    let entry = AuditEntry {
        at: now_ms,
        who: who.to_owned(),
        action: if request.rollback {
            "rollback".into()
        } else {
            "phase_change".into()
        },
        from: Some(from.number()),
        to: Some(to.number()),
        reason: request.reason.clone(),
        forced: !gates.is_empty(),
        unmet_gates: gates.iter().map(|g| g.gate.name().to_owned()).collect(),
    };
    audit::append(new_store, &entry).await?;
    stored::put(new_store, keys::PHASE, &next, Listing::ValueOnly).await?;
    let outcome = PhaseChangeOutcome {
        from,
        to,
        forced_gates: gates,
    };
    Ok((outcome, Some(next)))
}

/// Refuses `gates` unless forced with a reason (docs/design.md §7, "Forcing").
fn require_gates_or_force(
    what: &str,
    gates: &[UnmetGate],
    force: bool,
    reason: Option<&str>,
) -> Result<(), Error> {
    if !gates.is_empty() && !force {
        let reasons: Vec<String> = gates
            .iter()
            .map(|g| format!("{}: {}", g.gate.name(), g.reason))
            .collect();
        return Err(Error::PhaseChangeRefused(format!(
            "{what} refused: {}. Pass force with a reason to override.",
            reasons.join("; ")
        )));
    }
    if !gates.is_empty() && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(Error::ReasonRequired);
    }
    Ok(())
}

fn cohort_open(from: Phase, cohort: Phase) -> String {
    format!(
        "a cohort of customers is in phase {} while the phase is {}: move to phase {} to complete it, or cancel it, first",
        cohort.number(),
        from.number(),
        cohort.number()
    )
}

/// What a cohort step does (docs/design.md §17).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum CohortStep {
    /// Opens a cohort in `to`, one phase from the record's, or widens the open one:
    /// customers already in it stay.
    Widen {
        to: Phase,
        share: u16,
        customers: Vec<String>,
    },
    /// Every customer of the cohort goes back to the record's phase.
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CohortRequest {
    pub step: CohortStep,
    pub force: bool,
    pub reason: Option<String>,
}

/// What a cohort step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CohortOutcome {
    /// `opened`, `widened`, `unchanged` or `cancelled`.
    pub done: String,
    pub forced_gates: Vec<UnmetGate>,
}

/// Applies a cohort step through the gates of the move it makes for the customers it
/// moves: audited before the record is written. Returns the record written, if any.
pub async fn step_cohort<S: KvStore>(
    new_store: &S,
    current: &CurrentPhase,
    request: CohortRequest,
    who: &str,
    facts: &GateFacts,
    now_ms: u64,
) -> Result<(CohortOutcome, Option<PhaseState>), Error> {
    if current.state.finalized_at.is_some() {
        return Err(Error::CohortRefused(FINALIZED.to_owned()));
    }
    let base = current.phase;
    let open = current.state.cohort.clone();
    let mut next = current.state.clone();
    let (done, from, to, gates) = match (request.step, open) {
        (CohortStep::Cancel, None) => {
            return Err(Error::CohortRefused("no cohort is open".to_owned()));
        }
        (CohortStep::Cancel, Some(open)) => {
            let to = open.phase().ok_or(Error::CorruptPhaseState)?;
            next.cohort = None;
            let gates = without_settled(unmet_gates(&current.state, to, base, facts));
            ("cancelled", to, base, gates)
        }
        (
            CohortStep::Widen {
                to,
                share,
                customers,
            },
            open,
        ) => {
            let widened = cohort::widened(base, open.as_ref(), to, (share, customers), now_ms)?;
            if open.as_ref() == Some(&widened) {
                let outcome = CohortOutcome {
                    done: "unchanged".to_owned(),
                    forced_gates: Vec::new(),
                };
                return Ok((outcome, None));
            }
            next.cohort = Some(widened);
            let gates = unmet_gates(&current.state, base, to, facts);
            match open {
                None => ("opened", base, to, gates),
                Some(_) => ("widened", base, to, without_settled(gates)),
            }
        }
    };
    let what = format!(
        "a cohort {done} in phase {} to {}",
        from.number(),
        to.number()
    );
    require_gates_or_force(&what, &gates, request.force, request.reason.as_deref())?;
    if done != "widened" {
        // Opening starts writes the cohort's phase skips; a cancel, the record's.
        apply_store_divergence(&mut next, from, to, facts, now_ms);
    }
    next.routed_at = now_ms;
    next.revision = current.state.revision + 1;
    let reach = next
        .cohort
        .as_ref()
        .or(current.state.cohort.as_ref())
        .map(Cohort::describe)
        .unwrap_or_default();
    let entry = AuditEntry {
        at: now_ms,
        who: who.to_owned(),
        action: format!("cohort_{done}"),
        from: Some(from.number()),
        to: Some(to.number()),
        reason: Some(match request.reason.as_deref().map(str::trim) {
            Some(reason) if !reason.is_empty() => format!("{reach}; {reason}"),
            _ => reach,
        }),
        forced: !gates.is_empty(),
        unmet_gates: gates.iter().map(|g| g.gate.name().to_owned()).collect(),
    };
    audit::append(new_store, &entry).await?;
    stored::put(new_store, keys::PHASE, &next, Listing::ValueOnly).await?;
    let outcome = CohortOutcome {
        done: done.to_owned(),
        forced_gates: gates,
    };
    Ok((outcome, Some(next)))
}

/// An admin's cohort step, gathered and applied as [`move_phase`] applies a move.
pub async fn cohort_step<S: KvStore, R: PhaseRegister>(
    stores: &Stores<S>,
    register: &R,
    default_phase: Phase,
    request: CohortRequest,
    who: &str,
    settings: GateSettings,
    now_ms: u64,
) -> Result<(CohortOutcome, CurrentPhase), Error> {
    let current = coordinator::read(register, default_phase).await?;
    let facts = gates::gather(stores, &current, settings, now_ms).await?;
    coordinator::step_cohort(register, &current, request, who, &facts.gates, now_ms).await
}

/// An admin's move: the record read afresh, the gates judged on facts gathered now, and
/// the change applied through the coordinator, which refuses it if the record moved
/// meanwhile (docs/design.md §11).
pub async fn move_phase<S: KvStore, R: PhaseRegister>(
    stores: &Stores<S>,
    register: &R,
    default_phase: Phase,
    request: PhaseChangeRequest,
    who: &str,
    settings: GateSettings,
    now_ms: u64,
) -> Result<(PhaseChangeOutcome, CurrentPhase), Error> {
    let current = coordinator::read(register, default_phase).await?;
    let facts = gates::gather(stores, &current, settings, now_ms).await?;
    coordinator::change(register, &current, request, who, &facts.gates, now_ms).await
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn a_verification_judged_before_a_cohort_step_clears_nothing() {
        let store = MemoryStore::new();
        let judged = PhaseState {
            phase: 1,
            changed_at: 10,
            new_store_diverged: true,
            revision: 5,
            ..CurrentPhase::default_for(Phase::DualWrite).state
        };
        // A cohort in phase 0 opened since: its customers write the old store alone.
        let mut now = judged.clone();
        now.revision = 6;
        now.routed_at = 20;
        now.cohort = Some(Cohort {
            to: 0,
            share: 10,
            customers: Vec::new(),
            started_at: 20,
            widened_at: 20,
        });
        let cleared = clear_new_store_divergence(&store, Some(&now), &judged, "ops", 30);
        assert_eq!(block_on(cleared), Ok(None));
        let cleared = clear_new_store_divergence(&store, Some(&judged), &judged, "ops", 30);
        assert!(block_on(cleared)
            .unwrap()
            .is_some_and(|s| !s.new_store_diverged));
    }
}
