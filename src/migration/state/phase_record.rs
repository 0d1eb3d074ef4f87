//! The current phase: where it is kept, how long an isolate may trust its copy, and the
//! gates a change must pass.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::migration::keys;
use crate::migration::state::audit::{self, AuditEntry};
use crate::migration::stored::{self, Listing};
use crate::phase::{Move, Phase};
use crate::store::{KvStore, StoreName};

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
            },
            source: PhaseSource::Default,
        }
    }
}

/// Reads the phase record from the new store; without one, the configured default.
pub async fn load<S: KvStore>(new_store: &S, default: Phase) -> Result<CurrentPhase, Error> {
    let Some(state) = load_state(new_store).await? else {
        return Ok(CurrentPhase::default_for(default));
    };
    let phase = Phase::from_number(state.phase.into()).ok_or_else(corrupt_record)?;
    Ok(CurrentPhase {
        phase,
        state,
        source: PhaseSource::Stored,
    })
}

/// The stored record, if any; an unreadable one is an error, never a default (it would
/// route writes by a guess).
async fn load_state<S: KvStore>(new_store: &S) -> Result<Option<PhaseState>, Error> {
    let Some(stored) = new_store.get(keys::PHASE).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&stored.bytes)
        .map(Some)
        .map_err(|_| corrupt_record())
}

fn corrupt_record() -> Error {
    Error::CorruptPhaseState
}

/// The isolate's copy of the phase. A request within `ttl_ms` of the last read pays no
/// KV operation for it; this is why a phase change takes up to that long to reach every
/// isolate, and why any two adjacent phases must be safe side by side.
#[derive(Default)]
pub struct PhaseCache {
    entry: RefCell<Option<(CurrentPhase, u64)>>,
}

impl PhaseCache {
    pub fn fresh(&self, now_ms: u64, ttl_ms: u64) -> Option<CurrentPhase> {
        let entry = self.entry.borrow();
        let (current, fetched_at) = entry.as_ref()?;
        // The `mutant-stale-phase` build never re-reads the phase, to show the
        // simulation notices isolates more than one phase apart.
        let fresh =
            cfg!(feature = "mutant-stale-phase") || now_ms.saturating_sub(*fetched_at) < ttl_ms;
        fresh.then(|| current.clone())
    }

    pub fn stale(&self) -> Option<CurrentPhase> {
        self.entry.borrow().as_ref().map(|(c, _)| c.clone())
    }

    pub fn put(&self, current: CurrentPhase, now_ms: u64) {
        *self.entry.borrow_mut() = Some((current, now_ms));
    }

    pub fn invalidate(&self) {
        *self.entry.borrow_mut() = None;
    }
}

/// The phase to serve a request in: the cached copy while fresh, else the stored one.
/// If the store cannot be read, a stale copy is better than a guess; with none, the
/// request fails rather than route writes by a default that may be wrong.
pub async fn current<S: KvStore>(
    cache: &PhaseCache,
    new_store: &S,
    default: Phase,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<CurrentPhase, Error> {
    if let Some(current) = cache.fresh(now_ms, ttl_ms) {
        return Ok(current);
    }
    match load(new_store, default).await {
        Ok(current) => {
            cache.put(current.clone(), now_ms);
            Ok(current)
        }
        Err(err) => cache.stale().ok_or(err),
    }
}

/// The timings the gates are judged by, from the worker's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateSettings {
    /// How long after a phase change isolates may still act on the previous phase.
    pub settle_ms: u64,
    /// How long phase 4 must run without fallback hits before phase 5.
    pub verification_period_ms: u64,
    /// How long after a backfill or sync pass last wrote the next pass may start.
    pub pass_delay_ms: u64,
}

/// What the gates need to know about the stores.
#[derive(Debug, Clone, Default)]
pub struct GateFacts {
    /// How much longer isolates may still be running the previous phase (0: settled).
    pub unsettled_ms: u64,
    pub repair_journal_size: usize,
    /// Read-repair copies not yet checked after the consistency window.
    pub unsettled_read_repairs: usize,
    /// Whether the backfill has finished, and if not, how far it is.
    pub backfill_complete: bool,
    pub backfill_progress: String,
    /// Whether backfill copies await the pass that re-reads them.
    pub backfill_unsettled: bool,
    /// The last full verification: `None` if none has run.
    pub last_full_verification: Option<VerificationFacts>,
    /// Whether a reverse sync finished that started after the old store last diverged.
    pub reverse_sync_complete: bool,
    pub reverse_sync_progress: String,
    /// How much of the verification period in phase 4 is left (0: served).
    pub verification_period_left_ms: u64,
    /// Reads that fell back to the old store since phase 4 began.
    pub fallback_hits_in_phase_4: usize,
    pub fallback_keys_in_phase_4: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct VerificationFacts {
    pub missing: u64,
    pub mismatched: u64,
    pub extra: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnmetGate {
    pub gate: &'static str,
    pub reason: String,
}

fn unmet(gate: &'static str, reason: impl Into<String>) -> UnmetGate {
    UnmetGate {
        gate,
        reason: reason.into(),
    }
}

/// Every gate the move `from → to` fails, in the order an operator should fix them.
pub fn unmet_gates(
    state: &PhaseState,
    from: Phase,
    to: Phase,
    facts: &GateFacts,
) -> Vec<UnmetGate> {
    let mut gates = Vec::new();
    if facts.unsettled_ms > 0 {
        gates.push(unmet(
            "settled",
            format!(
                "isolates may run the previous phase for {} ms more; two moves inside that time would put isolates two phases apart",
                facts.unsettled_ms
            ),
        ));
    }
    let change = Move::new(from, to);
    if change.skips_phases() {
        gates.push(unmet(
            "adjacent",
            format!(
                "phase {} to {} skips phases; only adjacent moves are safe while isolates disagree",
                from.number(),
                to.number()
            ),
        ));
    }
    let reads_move = change.moves_reads();
    if reads_move && facts.repair_journal_size > 0 {
        gates.push(unmet(
            "repair_journal_empty",
            format!(
                "{} keys are out of sync between the stores (repair journal)",
                facts.repair_journal_size
            ),
        ));
    }
    if change.sends_reads_to_new() && facts.backfill_unsettled {
        gates.push(unmet(
            "backfill_settled",
            format!(
                "backfill batches copied keys that no later pass has re-read; a copy decided on a stale KV read would show an older value once reads go to the new store: finish the backfill first ({})",
                facts.backfill_progress
            ),
        ));
    }
    let leaves_old_store = change.stops_writing_old();
    let reads_go_new = change.sends_reads_to_new();
    if (reads_go_new || leaves_old_store) && facts.unsettled_read_repairs > 0 {
        gates.push(unmet(
            "read_repairs_settled",
            format!(
                "{} read-repair copies await their check once the KV consistency window has passed; one decided on a stale read would show an older value (the cron checks them every minute, or POST /admin/migrate/repair)",
                facts.unsettled_read_repairs
            ),
        ));
    }
    if reads_go_new && state.new_store_diverged {
        gates.push(unmet(
            "new_store_in_sync",
            "writes skipped the new store while in phase 0; a clean full verification must show it caught up",
        ));
    }
    if change.sends_reads_to_old() && state.old_store_diverged && !facts.reverse_sync_complete {
        gates.push(unmet(
            "old_store_in_sync",
            format!(
                "writes since phase 4 reached only the new store; the reverse sync must copy them back first ({})",
                facts.reverse_sync_progress
            ),
        ));
    }
    if leaves_old_store && !facts.backfill_complete {
        gates.push(unmet(
            "backfill_complete",
            format!(
                "phase 4 stops writing the old store: the backfill must finish first ({})",
                facts.backfill_progress
            ),
        ));
    }
    if leaves_old_store {
        match &facts.last_full_verification {
            None => gates.push(unmet("verification_clean", "no full verification has run")),
            Some(v) if v.missing > 0 || v.mismatched > 0 || v.extra > 0 => gates.push(unmet(
                "verification_clean",
                format!(
                    "the last full verification found {} missing, {} mismatched and {} extra keys",
                    v.missing, v.mismatched, v.extra
                ),
            )),
            Some(_) => {}
        }
    }
    if leaves_old_store && !reads_move && facts.repair_journal_size > 0 {
        gates.push(unmet(
            "repair_journal_empty",
            format!(
                "{} keys are out of sync between the stores (repair journal)",
                facts.repair_journal_size
            ),
        ));
    }
    if change.stops_reading_old() {
        verification_period_gates(from, facts, &mut gates);
    }
    gates
}

/// Phase 5 stops reading the old store: only after a verification period in phase 4
/// during which no read needed it.
fn verification_period_gates(from: Phase, facts: &GateFacts, gates: &mut Vec<UnmetGate>) {
    if !from.is_verification_period() {
        gates.push(unmet(
            "verification_period",
            "phase 5 follows a verification period in phase 4",
        ));
        return;
    }
    if facts.verification_period_left_ms > 0 {
        gates.push(unmet(
            "verification_period",
            format!(
                "{} s of the verification period in phase 4 are left",
                facts.verification_period_left_ms.div_ceil(1000)
            ),
        ));
    }
    if facts.fallback_hits_in_phase_4 > 0 {
        gates.push(unmet(
            "no_fallback_hits",
            format!(
                "{} keys were read from the old store since phase 4 began: {}",
                facts.fallback_hits_in_phase_4,
                facts.fallback_keys_in_phase_4.join(", ")
            ),
        ));
    }
}

/// An admin's request to change the phase, parsed from the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseChangeRequest {
    pub to: Phase,
    pub force: bool,
    pub reason: Option<String>,
    /// A step of a rollback (audited as one; see [`rollback_jump`]).
    pub rollback: bool,
}

/// Whether a rollback may go from `from` to `to` in one move, without the usual gates:
/// from phase 4 or 5 into phase 2 or 3 reads stay on the new store first and every write
/// keeps reaching it, in every phase isolates may be in meanwhile; the old store only
/// starts to be written again, which the reverse sync then completes.
pub fn rollback_jump(from: Phase, to: Phase) -> bool {
    Move::new(from, to).is_rollback_jump()
}

#[derive(Debug, Clone, PartialEq, Eq)]
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

/// How long isolates may still run the phase before the current one: a cache lifetime
/// after the last change.
pub fn unsettled_ms(state: &PhaseState, settle_ms: u64, now_ms: u64) -> u64 {
    (state.changed_at + settle_ms).saturating_sub(now_ms)
}

/// Clears `new_store_diverged` once a clean full verification showed the new store
/// caught up, with an audit entry. `judged` is the record the verification was judged
/// against: the flag is cleared from a fresh read, and only if no move came since (a
/// move to phase 0 meanwhile diverges the store again). This module is the only writer
/// of the record.
pub async fn clear_new_store_divergence<S: KvStore>(
    new_store: &S,
    judged: &PhaseState,
    who: &str,
    now_ms: u64,
) -> Result<(), Error> {
    let Some(mut state) = load_state(new_store).await? else {
        return Ok(());
    };
    let moved_since = state.phase != judged.phase || state.changed_at != judged.changed_at;
    if !state.new_store_diverged || moved_since {
        return Ok(());
    }
    let detail = "a clean full verification cleared new_store_diverged".to_owned();
    let entry = AuditEntry::action(who, "verification_clean", now_ms, Some(detail));
    audit::append(new_store, &entry).await?;
    state.new_store_diverged = false;
    stored::put(new_store, keys::PHASE, &state, Listing::ValueOnly).await?;
    Ok(())
}

/// Applies a phase change through the gates: refused (409) when a gate is unmet unless
/// forced with a reason; audited before the phase record is written, so no change can
/// happen without its audit entry.
pub async fn change<S: KvStore>(
    new_store: &S,
    current: &CurrentPhase,
    request: PhaseChangeRequest,
    who: &str,
    facts: &GateFacts,
    now_ms: u64,
) -> Result<PhaseChangeOutcome, Error> {
    let (from, to) = (current.phase, request.to);
    if from == to {
        return Ok(PhaseChangeOutcome {
            from,
            to,
            forced_gates: Vec::new(),
        });
    }
    let gates = if request.rollback && rollback_jump(from, to) {
        Vec::new()
    } else {
        unmet_gates(&current.state, from, to, facts)
    };
    if !gates.is_empty() && !request.force {
        let reasons: Vec<String> = gates
            .iter()
            .map(|g| format!("{}: {}", g.gate, g.reason))
            .collect();
        return Err(Error::PhaseChangeRefused(format!(
            "phase {} to {} refused: {}. Pass force with a reason to override.",
            from.number(),
            to.number(),
            reasons.join("; ")
        )));
    }
    if !gates.is_empty()
        && request
            .reason
            .as_deref()
            .is_none_or(|r| r.trim().is_empty())
    {
        return Err(Error::ReasonRequired);
    }

    let mut next = current.state.clone();
    next.phase = to.number();
    next.changed_at = now_ms;
    next.changed_by = who.to_owned();
    apply_store_divergence(&mut next, from, to, facts, now_ms);

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
        unmet_gates: gates.iter().map(|g| g.gate.to_owned()).collect(),
    };
    audit::append(new_store, &entry).await?;
    stored::put(new_store, keys::PHASE, &next, Listing::ValueOnly).await?;
    Ok(PhaseChangeOutcome {
        from,
        to,
        forced_gates: gates,
    })
}
