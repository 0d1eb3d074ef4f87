//! Where the migration stands, for `GET /admin/migrate/status`: the gates' facts and the
//! gates of the next move each way, fallback hits, the verification under way and recent
//! audit entries. Reads only; its cost is bounded by [`gates::STATUS_LIST_PAGES`].

use crate::migration::checking::inventory::{self, Inventory};
use crate::migration::checking::verify::{self, Verification};
use crate::migration::copying::copy::Direction;
use crate::migration::copying::fanout::{Tally, TallyOp};
use crate::migration::keys::{self, FALLBACK_PREFIX};
use crate::migration::state::audit::{self, AuditEntry};
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::gates::{self, without_settled, Facts, GateSettings, UnmetGate};
use crate::migration::state::phase_record::CurrentPhase;
use crate::migration::{sample_keys, KeySample};
use crate::phase::Phase;
use crate::store::{KvStore, StoreResult, Stores};

/// Audit entries a status shows.
const RECENT_AUDIT_ENTRIES: u32 = 50;

/// A move one step up or down and the gates it would fail now.
pub struct NextMove {
    pub to: Phase,
    pub unmet: Vec<UnmetGate>,
}

pub struct Status {
    pub facts: Facts,
    pub forward: Option<NextMove>,
    pub back: Option<NextMove>,
    /// With a cohort open: its cancel, back to the record's phase (docs/design.md §17).
    pub cancel: Option<NextMove>,
    /// Every key read from the old store since the hits were last cleared.
    pub fallback_hits: KeySample,
    pub verification: Option<Verification>,
    pub inventory: Option<Inventory>,
    pub recent_audit: Vec<AuditEntry>,
    /// The coordinator's tally of the backfill's pass, when it fans out.
    pub fanout: Option<Tally>,
    /// The same for the reverse sync's pass.
    pub reverse_fanout: Option<Tally>,
}

pub async fn gather<S: KvStore, R: PhaseRegister>(
    stores: &Stores<S>,
    register: &R,
    current: &CurrentPhase,
    settings: GateSettings,
    now_ms: u64,
) -> StoreResult<Status> {
    let facts = gates::gather(stores, current, settings, now_ms).await?;
    let fallback_hits = sample_keys(
        &stores.new,
        FALLBACK_PREFIX,
        gates::STATUS_LIST_PAGES,
        gates::STATUS_SAMPLE_KEYS,
        |_| true,
    )
    .await?;
    let recent_audit = audit::recent(&stores.new, RECENT_AUDIT_ENTRIES).await?;
    let verification = verify::load(&stores.new, keys::VERIFICATION).await?;
    let inventory = inventory::load(&stores.new).await?;
    let next_move = |to: Option<Phase>| {
        to.map(|to| NextMove {
            to,
            unmet: gates::unmet_gates(&current.state, current.phase, to, &facts.gates),
        })
    };
    let tally_of = |direction, fanned_out| async move {
        match fanned_out {
            true => Ok(Some(
                register.tally(TallyOp::Read { direction }).await?.tally,
            )),
            false => StoreResult::Ok(None),
        }
    };
    let fanout = tally_of(Direction::Forward, facts.checkpoint.fanned_out).await?;
    let reverse_fanout = tally_of(Direction::Reverse, facts.reverse_sync.fanned_out).await?;
    // Once finalized no move is possible (docs/design.md §9, "Finalizing").
    let finalized = current.state.finalized_at.is_some();
    let (forward, back, cancel) = match current.cohort_phase() {
        // The one move is the cohort's completion; the settle time does not hold it.
        Some(cohort) => {
            let completion = NextMove {
                to: cohort,
                unmet: without_settled(gates::unmet_gates(
                    &current.state,
                    current.phase,
                    cohort,
                    &facts.gates,
                )),
            };
            let cancel = NextMove {
                to: current.phase,
                unmet: without_settled(gates::unmet_gates(
                    &current.state,
                    cohort,
                    current.phase,
                    &facts.gates,
                )),
            };
            if cohort > current.phase {
                (Some(completion), None, Some(cancel))
            } else {
                (None, Some(completion), Some(cancel))
            }
        }
        None => (
            next_move(current.phase.next().filter(|_| !finalized)),
            next_move(current.phase.previous().filter(|_| !finalized)),
            None,
        ),
    };
    Ok(Status {
        facts,
        forward,
        back,
        cancel,
        fallback_hits,
        verification,
        inventory,
        recent_audit,
        fanout,
        reverse_fanout,
    })
}
