//! The `/admin/migrate/backfill` handlers: run one batch now, pause, resume, reset.

use serde_json::{json, Value};

use super::admin::{backfill_json, optional_bool};
use crate::auth::Caller;
use crate::http::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::migration::copying::backfill::{self, RunOptions};
use crate::migration::state::audit::{self, AuditEntry};
use crate::migration::state::gates::{self, GateSettings};
use crate::migration::state::phase_record::CurrentPhase;
use crate::store::budget::{metered, Budget};
use crate::store::{KvStore, Stores};

/// KV operations a request has made before the batch starts (token-free, but the phase
/// may have been read); the batch's budget is what is left of the invocation's.
const REQUEST_OVERHEAD_OPS: u32 = 4;
const MAX_RECORDS_LIMIT: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Reset,
}

/// Runs one batch now. Allowed in phases 1 to 3 once the phase has settled, where every
/// write reaches both stores:
/// from phase 4 on, writers skip the old store, and a copy racing one could not be
/// checked; in phase 0 the copies would go stale at the next write.
pub async fn run_batch<S: KvStore>(
    stores: &Stores<S>,
    current: &CurrentPhase,
    timings: GateSettings,
    caller: &Caller,
    request: &ApiRequest,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let phase = current.phase;
    let unsettled_ms = gates::unsettled_ms(&current.state, timings.settle_ms, now_ms);
    let body = request.json_object()?;
    let dry_run = optional_bool(&body, "dryRun")?;
    let max_records = match body.get("maxRecords") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (1..=MAX_RECORDS_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid_body(format!(
                        "maxRecords must be an integer from 1 to {MAX_RECORDS_LIMIT}"
                    ))
                })?,
        ),
    };
    if !phase.backfill_allowed() {
        return Err(ApiError::conflict(
            "backfill_not_allowed",
            format!(
                "backfill batches run in phases 1 to 3; the phase is {}",
                phase.number()
            ),
        ));
    }
    if current.state.old_store_diverged {
        // The new store holds writes the old one lacks: copying old to new now could
        // carry a value back that those writes replaced.
        return Err(ApiError::conflict(
            "backfill_not_allowed",
            "writes since phase 4 reached only the new store; the reverse sync must finish before the backfill may run again",
        ));
    }
    if unsettled_ms > 0 {
        // Isolates still on phase 0 write the old store only: a copy made now could be
        // outdated by one of their writes without anything noticing.
        return Err(ApiError::conflict(
            "backfill_not_allowed",
            format!("the phase changed moments ago; isolates may run the previous phase for {unsettled_ms} ms more"),
        ));
    }
    let budget = Budget::per_invocation(REQUEST_OVERHEAD_OPS);
    let report = backfill::run(
        &metered(stores, &budget),
        &budget,
        RunOptions {
            dry_run,
            max_records,
            pass_delay_ms: timings.pass_delay_ms,
            ..RunOptions::default()
        },
        now_ms,
    )
    .await?;
    if !dry_run && report.ran {
        let detail = format!(
            "scanned {}, copied {}",
            report.counts.scanned, report.counts.copied
        );
        audit::append(
            &stores.new,
            &AuditEntry::action(&caller.subject, "backfill_batch", now_ms, Some(detail)),
        )
        .await?;
    }
    let checkpoint = backfill::load_checkpoint(&stores.new).await?;
    Ok(ApiResponse::ok(
        json!({ "report": report, "progress": backfill_json(&checkpoint) }),
    ))
}

pub async fn control<S: KvStore>(
    stores: &Stores<S>,
    caller: &Caller,
    action: Control,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let name = match action {
        Control::Pause => "backfill_pause",
        Control::Resume => "backfill_resume",
        Control::Reset => "backfill_reset",
    };
    audit::append(
        &stores.new,
        &AuditEntry::action(&caller.subject, name, now_ms, None),
    )
    .await?;
    match action {
        Control::Pause | Control::Resume => {
            backfill::set_paused(&stores.new, action == Control::Pause).await?;
        }
        Control::Reset => backfill::reset(&stores.new).await?,
    }
    let checkpoint = backfill::load_checkpoint(&stores.new).await?;
    Ok(ApiResponse::ok(
        json!({ "progress": backfill_json(&checkpoint) }),
    ))
}
