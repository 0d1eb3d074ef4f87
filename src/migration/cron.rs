//! What one cron invocation does: drain the repair journal, check the read-repair copies
//! that are due (see `settle`), then advance the backfill
//! (phase 3, unless paused) or, after a rollback from phase 4 or 5, the reverse sync
//! (phases 2 and 3) — all inside one invocation's KV budget.

use serde::Serialize;

use crate::error::Error;
use crate::migration::copying::backfill::{self, RunOptions, RunReport};
use crate::migration::copying::fanout::{self, Fanout};
use crate::migration::copying::reverse;
use crate::migration::healing::read_repair::{self, CheckReport};
use crate::migration::healing::repair::{self, RepairReport};
use crate::migration::state::audit::{self, AuditEntry};
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::gates::{self, GateSettings};
use crate::migration::state::phase_record::{self, CurrentPhase};
use crate::phase::Phase;
use crate::store::budget::{metered, Budget};
use crate::store::{KvStore, StoreResult, Stores};
use crate::writes::repairs::ThroughObjects;
use crate::writes::Writers;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CronReport {
    pub phase: u8,
    pub repair: RepairReport,
    pub settle: CheckReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backfill: Option<RunReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverse_sync: Option<RunReport>,
    pub operations: u32,
}

/// One invocation. With `fanout`, the backfill and the reverse sync queue their chunks
/// for consumers instead of copying them here (docs/design.md §13).
pub async fn run<S: KvStore, W: Writers, R: PhaseRegister>(
    stores: &Stores<S>,
    (writers, fanout): (&W, Option<Fanout<'_, R>>),
    default_phase: Phase,
    timings: GateSettings,
    now_ms: u64,
) -> Result<CronReport, Error> {
    let budget = Budget::per_invocation(0);
    let stores = metered(stores, &budget);
    // The stored phase, not an isolate's cached copy: a cron run is rare and must act on
    // the freshest state.
    let current = phase_record::load(&stores.new, default_phase).await?;
    let (repair, settle) = repair_and_check(
        (&stores, writers),
        &budget,
        &current,
        timings.pass_delay_ms,
        now_ms,
    )
    .await?;
    let mut backfill = None;
    let mut reverse_sync = None;
    // Not while isolates may still run the previous phase: after a rollback from phase 4
    // they write the new store alone, and a copy could overwrite such a write unnoticed
    // (forward), or miss it (reverse).
    let settled = gates::unsettled_ms(&current.state, timings.settle_ms, now_ms) == 0;
    if current.state.old_store_diverged {
        if current.every_phase(Phase::reverse_sync_allowed) && settled {
            reverse_sync = reverse::advance(
                &stores,
                fanout,
                &budget,
                &current.state,
                timings.pass_delay_ms,
                now_ms,
            )
            .await?;
        }
    } else if (current.phase.cron_backfills()
        || current.cohort_phase().is_some_and(Phase::cron_backfills))
        && backfill::may_run(&current, timings.settle_ms, now_ms).is_ok()
    {
        let checkpoint = backfill::load_checkpoint(&stores.new).await?;
        if !checkpoint.paused && !checkpoint.complete() {
            let options = RunOptions {
                pass_delay_ms: timings.pass_delay_ms,
                watch_stall: true,
                ..RunOptions::default()
            };
            backfill = Some(match fanout {
                Some(fanout) => fanout::plan(&stores, fanout, &budget, options, now_ms).await?,
                None => backfill::run(&stores, &budget, options, now_ms).await?,
            });
        }
    }
    Ok(CronReport {
        phase: current.phase.number(),
        repair,
        settle,
        backfill,
        reverse_sync,
        operations: budget.used(),
    })
}

/// Drains the repair journal, then checks as many due read-repair copies as `budget`
/// affords (`stores` should be metered by it). Keys out of sync are a risk whichever
/// store reads come from, so both run in every phase.
pub async fn repair_and_check<S: KvStore, W: Writers>(
    (stores, writers): (&Stores<S>, &W),
    budget: &Budget,
    current: &CurrentPhase,
    pass_delay_ms: u64,
    now_ms: u64,
) -> StoreResult<(RepairReport, CheckReport)> {
    let repairs = ThroughObjects {
        stores,
        writers,
        current,
        now_ms,
    };
    let repair = repair::drain(
        stores,
        &repairs,
        pass_delay_ms,
        now_ms,
        repair::ENTRIES_PER_RUN,
    )
    .await?;
    // Once finalized the old store is not read, and checking a copy reads it.
    if current.state.finalized_at.is_some() {
        return Ok((repair, CheckReport::default()));
    }
    let settle = read_repair::drain(
        stores,
        budget,
        current
            .every_phase(|phase| read_repair::may_correct(phase, current.state.old_store_diverged)),
        pass_delay_ms,
        now_ms,
    )
    .await?;
    Ok((repair, settle))
}

/// `POST /admin/migrate/repair`: what the cron does first, now, within one invocation's
/// budget (the journal first, then as many checks as fit), audited.
pub async fn repair_now<S: KvStore, W: Writers>(
    (stores, writers): (&Stores<S>, &W),
    current: &CurrentPhase,
    pass_delay_ms: u64,
    who: &str,
    now_ms: u64,
) -> Result<(RepairReport, CheckReport), Error> {
    let budget = Budget::per_invocation(0);
    let metered = metered(stores, &budget);
    let (report, settle) =
        repair_and_check((&metered, writers), &budget, current, pass_delay_ms, now_ms).await?;
    let detail = format!(
        "repaired {} of {} journaled keys ({} settling); read-repair copies: {} settled, {} corrected, {} waiting",
        report.repaired, report.examined, report.settling, settle.settled, settle.corrected, settle.waiting
    );
    let entry = AuditEntry::action(who, "repair", now_ms, Some(detail));
    audit::append(&stores.new, &entry).await?;
    Ok((report, settle))
}
