//! The gates a phase move must pass (docs/design.md §7): the facts they are judged on,
//! gathered from the stores, and the pure judgement of a move against them.

use serde::{Deserialize, Serialize};

use crate::migration::checking::inventory;
use crate::migration::checking::verify::{self, Verification};
use crate::migration::copying::backfill::{self, Checkpoint};
use crate::migration::copying::copy::Direction;
use crate::migration::copying::reverse;
use crate::migration::healing::fallback;
use crate::migration::keys::{self, FALLBACK_PREFIX, JOURNAL_PREFIX, READ_REPAIR_CHECK_PREFIX};
use crate::migration::state::phase_record::{CurrentPhase, PhaseState};
use crate::migration::{sample_keys, KeySample};
use crate::phase::{Move, Phase};
use crate::store::{KvStore, StoreResult, Stores};

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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
    /// An inventory begun in phase 0 and not finished, with how far it is (§16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory_unfinished: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerificationFacts {
    pub missing: u64,
    pub mismatched: u64,
    pub extra: u64,
    /// Chunks of a fanned-out verification whose values were never compared.
    #[serde(default)]
    pub uncompared_chunks: u64,
}

/// Every gate a move may have to pass (docs/design.md §7), by the name operators see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    Settled,
    Adjacent,
    RepairJournalEmpty,
    BackfillSettled,
    ReadRepairsSettled,
    NewStoreInSync,
    OldStoreInSync,
    BackfillComplete,
    VerificationClean,
    VerificationPeriod,
    NoFallbackHits,
    InventoryComplete,
}

impl Gate {
    pub fn name(self) -> &'static str {
        match self {
            Gate::Settled => "settled",
            Gate::Adjacent => "adjacent",
            Gate::RepairJournalEmpty => "repair_journal_empty",
            Gate::BackfillSettled => "backfill_settled",
            Gate::ReadRepairsSettled => "read_repairs_settled",
            Gate::NewStoreInSync => "new_store_in_sync",
            Gate::OldStoreInSync => "old_store_in_sync",
            Gate::BackfillComplete => "backfill_complete",
            Gate::VerificationClean => "verification_clean",
            Gate::VerificationPeriod => "verification_period",
            Gate::NoFallbackHits => "no_fallback_hits",
            Gate::InventoryComplete => "inventory_complete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmetGate {
    pub gate: Gate,
    pub reason: String,
}

fn unmet(gate: Gate, reason: impl Into<String>) -> UnmetGate {
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
            Gate::Settled,
            format!(
                "isolates may run the previous phase for {} ms more; two moves inside that time would put isolates two phases apart",
                facts.unsettled_ms
            ),
        ));
    }
    let change = Move::new(from, to);
    if change.skips_phases() {
        gates.push(unmet(
            Gate::Adjacent,
            format!(
                "phase {} to {} skips phases; only adjacent moves are safe while isolates disagree",
                from.number(),
                to.number()
            ),
        ));
    }
    if let (true, Some(progress)) = (change.starts_writing_new(), &facts.inventory_unfinished) {
        gates.push(unmet(
            Gate::InventoryComplete,
            format!(
                "an inventory of CUSTOMER_KV is begun and not finished ({progress}); once the migration writes the new store it can never finish: run it to the end (kv-migrate inventory)"
            ),
        ));
    }
    let reads_move = change.moves_reads();
    if reads_move && facts.repair_journal_size > 0 {
        gates.push(unmet(
            Gate::RepairJournalEmpty,
            format!(
                "{} keys are out of sync between the stores (repair journal)",
                facts.repair_journal_size
            ),
        ));
    }
    if change.sends_reads_to_new() && facts.backfill_unsettled {
        gates.push(unmet(
            Gate::BackfillSettled,
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
            Gate::ReadRepairsSettled,
            format!(
                "{} read-repair copies await their check once the KV consistency window has passed; one decided on a stale read would show an older value (the cron checks them every minute, or POST /admin/migrate/repair)",
                facts.unsettled_read_repairs
            ),
        ));
    }
    if reads_go_new && state.new_store_diverged {
        gates.push(unmet(
            Gate::NewStoreInSync,
            "writes skipped the new store while in phase 0; a clean full verification must show it caught up",
        ));
    }
    if change.sends_reads_to_old() && state.old_store_diverged && !facts.reverse_sync_complete {
        gates.push(unmet(
            Gate::OldStoreInSync,
            format!(
                "writes since phase 4 reached only the new store; the reverse sync must copy them back first ({})",
                facts.reverse_sync_progress
            ),
        ));
    }
    if leaves_old_store && !facts.backfill_complete {
        gates.push(unmet(
            Gate::BackfillComplete,
            format!(
                "phase 4 stops writing the old store: the backfill must finish first ({})",
                facts.backfill_progress
            ),
        ));
    }
    if leaves_old_store {
        match &facts.last_full_verification {
            None => gates.push(unmet(
                Gate::VerificationClean,
                "no full verification has run",
            )),
            Some(v) if v.missing > 0 || v.mismatched > 0 || v.extra > 0 => gates.push(unmet(
                Gate::VerificationClean,
                format!(
                    "the last full verification found {} missing, {} mismatched and {} extra keys",
                    v.missing, v.mismatched, v.extra
                ),
            )),
            Some(v) if v.uncompared_chunks > 0 => gates.push(unmet(
                Gate::VerificationClean,
                format!(
                    "the last full verification could not compare the values of {} chunks of keys",
                    v.uncompared_chunks
                ),
            )),
            Some(_) => {}
        }
    }
    if leaves_old_store && !reads_move && facts.repair_journal_size > 0 {
        gates.push(unmet(
            Gate::RepairJournalEmpty,
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
            Gate::VerificationPeriod,
            "phase 5 follows a verification period in phase 4",
        ));
        return;
    }
    if facts.verification_period_left_ms > 0 {
        gates.push(unmet(
            Gate::VerificationPeriod,
            format!(
                "{} s of the verification period in phase 4 are left",
                facts.verification_period_left_ms.div_ceil(1000)
            ),
        ));
    }
    if facts.fallback_hits_in_phase_4 > 0 {
        gates.push(unmet(
            Gate::NoFallbackHits,
            format!(
                "{} keys were read from the old store since phase 4 began: {}",
                facts.fallback_hits_in_phase_4,
                facts.fallback_keys_in_phase_4.join(", ")
            ),
        ));
    }
}

/// How long isolates may still run the phase before the current one: a cache lifetime
/// after the last change.
/// How far an inventory begun and not finished is, in phase 0 only (the one phase it
/// runs in, and so the only one whose moves it can hold).
async fn unfinished_inventory<S: KvStore>(
    stores: &Stores<S>,
    current: &CurrentPhase,
) -> StoreResult<Option<String>> {
    if current.phase != Phase::Legacy {
        return Ok(None);
    }
    Ok(inventory::load(&stores.new)
        .await?
        .filter(|inventory| !inventory.complete())
        .map(|inventory| format!("{} keys sorted", inventory.listed)))
}

/// `gates` but `settled`: a cohort's widening, completion or cancel keeps customers in
/// the two phases it already runs side by side (docs/design.md §17).
pub fn without_settled(gates: Vec<UnmetGate>) -> Vec<UnmetGate> {
    gates
        .into_iter()
        .filter(|g| g.gate != Gate::Settled)
        .collect()
}

pub fn unsettled_ms(state: &PhaseState, settle_ms: u64, now_ms: u64) -> u64 {
    (state.routing_changed_at() + settle_ms).saturating_sub(now_ms)
}

/// Pages of 1,000 keys a status call may list per prefix, bounding its cost.
pub const STATUS_LIST_PAGES: u32 = 5;
/// Keys named per category in a status answer.
pub const STATUS_SAMPLE_KEYS: usize = 20;

/// What the gates are judged on, read from the new store.
pub struct Facts {
    pub gates: GateFacts,
    pub journal: KeySample,
    /// Read-repair copies not yet checked after the consistency window.
    pub settling: KeySample,
    pub checkpoint: Checkpoint,
    pub reverse_sync: Checkpoint,
    pub last_full: Option<Verification>,
    pub fallback_in_phase_4: KeySample,
}

fn progress(checkpoint: &Checkpoint, now_ms: u64) -> String {
    let waiting = checkpoint.waiting_ms(now_ms);
    if waiting > 0 && !checkpoint.complete() {
        return format!(
            "pass {} starts in {} s, once the last pass's copies reach every KV location",
            checkpoint.pass,
            waiting.div_ceil(1000)
        );
    }
    format!(
        "pass {}, stage {:?}, {:.1}% scanned",
        checkpoint.pass.max(1),
        checkpoint.stage,
        checkpoint.percent()
    )
}

/// Reads what the gates are judged on from the new store: a few lists and reads,
/// bounded by [`STATUS_LIST_PAGES`].
pub async fn gather<S: KvStore>(
    stores: &Stores<S>,
    current: &CurrentPhase,
    settings: GateSettings,
    now_ms: u64,
) -> StoreResult<Facts> {
    let journal = sample_keys(
        &stores.new,
        JOURNAL_PREFIX,
        STATUS_LIST_PAGES,
        STATUS_SAMPLE_KEYS,
        |_| true,
    )
    .await?;
    let settling = sample_keys(
        &stores.new,
        READ_REPAIR_CHECK_PREFIX,
        STATUS_LIST_PAGES,
        STATUS_SAMPLE_KEYS,
        |_| true,
    )
    .await?;
    let checkpoint = backfill::load_checkpoint(&stores.new).await?;
    let last_full = verify::load(&stores.new, keys::LAST_FULL_VERIFICATION).await?;
    // Only a verification finished after the backfill vouches for what it copied.
    let vouching = last_full.as_ref().filter(|v| {
        let done = checkpoint.completed_at;
        done.is_some_and(|done| v.completed_at.is_some_and(|at| at >= done))
    });
    let reverse_sync = backfill::load_checkpoint_of(&stores.new, Direction::Reverse).await?;
    let state = &current.state;
    let reverse_sync_complete = reverse::vouches(&reverse_sync, state);
    let in_phase_4 = current.phase.is_verification_period()
        || current
            .cohort_phase()
            .is_some_and(Phase::is_verification_period);
    // Fallback hits count from when writes first skipped the old store: a cohort in
    // phase 4 opened before the move completed it (docs/design.md §17). The period
    // itself runs from the move, when every customer's reads depend on it.
    let hits_since = match state.left_old_store_at {
        0 => state.changed_at,
        left => state.changed_at.min(left),
    };
    let fallback_in_phase_4 = if in_phase_4 {
        sample_keys(
            &stores.new,
            FALLBACK_PREFIX,
            STATUS_LIST_PAGES,
            STATUS_SAMPLE_KEYS,
            |k| fallback::recorded_at(k).is_some_and(|at| at >= hits_since),
        )
        .await?
    } else {
        KeySample::default()
    };
    let gates = GateFacts {
        unsettled_ms: unsettled_ms(state, settings.settle_ms, now_ms),
        repair_journal_size: journal.count,
        unsettled_read_repairs: settling.count,
        backfill_complete: checkpoint.complete(),
        backfill_unsettled: checkpoint.unsettled_copies(),
        backfill_progress: progress(&checkpoint, now_ms),
        last_full_verification: vouching.map(|v| VerificationFacts {
            missing: v.missing,
            mismatched: v.mismatched,
            extra: v.extra,
            uncompared_chunks: v.fanout.as_ref().map_or(0, |f| f.failed),
        }),
        reverse_sync_complete,
        reverse_sync_progress: progress(&reverse_sync, now_ms),
        verification_period_left_ms: if in_phase_4 {
            (state.changed_at + settings.verification_period_ms).saturating_sub(now_ms)
        } else {
            0
        },
        fallback_hits_in_phase_4: fallback_in_phase_4.count,
        fallback_keys_in_phase_4: fallback_in_phase_4.keys.clone(),
        inventory_unfinished: unfinished_inventory(stores, current).await?,
    };
    Ok(Facts {
        gates,
        journal,
        settling,
        checkpoint,
        reverse_sync,
        last_full,
        fallback_in_phase_4,
    })
}
