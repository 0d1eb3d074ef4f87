//! The `/admin/migrate` handlers for what the migration is doing and for its phase.

use serde_json::{json, Map, Value};

use crate::auth::Caller;
use crate::http::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::migration::copying::backfill::Checkpoint;
use crate::migration::cron;
use crate::migration::state::audit::{self};
use crate::migration::state::gates::{Facts, GateSettings};
use crate::migration::state::phase_cache::PhaseCache;
use crate::migration::state::phase_record::{self, CurrentPhase, PhaseChangeRequest, PhaseSource};
use crate::migration::status::{self, NextMove};
use crate::phase::Phase;
use crate::routes::verify::report_json;
use crate::store::{KvStore, Stores};

const MAX_REASON_CHARS: usize = 1_000;

pub async fn status<S: KvStore>(
    stores: &Stores<S>,
    current: &CurrentPhase,
    settings: GateSettings,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let status = status::gather(stores, current, settings, now_ms).await?;
    let facts = &status.facts;
    let history: Vec<_> = status
        .recent_audit
        .iter()
        .filter(|e| e.action == "phase_change" || e.action == "rollback")
        .collect();
    let mut phase = phase_json(current);
    phase["unsettledMs"] = json!(facts.gates.unsettled_ms);
    let next_move = |m: &Option<NextMove>| {
        m.as_ref()
            .map(|m| json!({ "to": m.to, "met": m.unmet.is_empty(), "unmet": m.unmet }))
    };
    Ok(ApiResponse::ok(json!({
        "phase": phase,
        "gates": { "forward": next_move(&status.forward), "back": next_move(&status.back) },
        "history": history,
        "backfill": backfill_json(&facts.checkpoint),
        "reverseSync": reverse_sync_json(current, facts),
        "verificationPeriod": verification_period_json(current, settings, facts),
        "verification": {
            "current": status.verification.as_ref().map(report_json),
            "lastFull": facts.last_full.as_ref().map(report_json),
        },
        "fallbackHits": status.fallback_hits,
        "repairJournal": facts.journal,
        "readRepairsSettling": facts.settling,
        "newStoreDiverged": current.state.new_store_diverged,
        "oldStoreDiverged": current.state.old_store_diverged,
        "recentAudit": status.recent_audit,
    })))
}

/// The reverse sync: needed while the old store lacks writes made since phase 4.
pub fn reverse_sync_json(current: &CurrentPhase, facts: &Facts) -> Value {
    let mut progress = backfill_json(&facts.reverse_sync);
    progress["needed"] = json!(current.state.old_store_diverged);
    progress["vouches"] = json!(facts.gates.reverse_sync_complete);
    progress
}

fn verification_period_json(
    current: &CurrentPhase,
    settings: GateSettings,
    facts: &Facts,
) -> Value {
    if !current.phase.is_verification_period() {
        return Value::Null;
    }
    json!({
        "startedAt": current.state.changed_at,
        "periodMs": settings.verification_period_ms,
        "leftMs": facts.gates.verification_period_left_ms,
        "fallbackHits": facts.fallback_in_phase_4,
    })
}

pub fn backfill_json(checkpoint: &Checkpoint) -> Value {
    json!({
        "stage": checkpoint.stage,
        "complete": checkpoint.complete(),
        "paused": checkpoint.paused,
        "total": checkpoint.total,
        "counts": checkpoint.counts,
        "percent": (checkpoint.percent() * 10.0).round() / 10.0,
        "etaMs": checkpoint.eta_ms(),
        "startedAt": checkpoint.started_at,
        "updatedAt": checkpoint.updated_at,
        "completedAt": checkpoint.completed_at,
        "runs": checkpoint.runs,
        "pass": checkpoint.pass.max(1),
        "passStartsAt": checkpoint.pass_not_before,
        "unsettledCopies": checkpoint.unsettled_copies(),
    })
}

pub fn phase_json(current: &CurrentPhase) -> Value {
    json!({
        "current": current.phase.number(),
        "name": current.phase.name(),
        "source": match current.source { PhaseSource::Stored => "stored", PhaseSource::Default => "default" },
        "changedAt": current.state.changed_at,
        "changedBy": current.state.changed_by,
    })
}

pub async fn change_phase<S: KvStore>(
    stores: &Stores<S>,
    cache: &PhaseCache,
    current: &CurrentPhase,
    caller: &Caller,
    request: &ApiRequest,
    settings: GateSettings,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let change = parse_phase_change(request.json_object()?, "phase")?;
    let outcome =
        phase_record::move_phase(stores, current, change, &caller.subject, settings, now_ms)
            .await?;
    // This isolate sees its own change at once; others within the cache lifetime.
    cache.invalidate();
    Ok(ApiResponse::ok(json!({
        "phase": outcome.to.number(),
        "name": outcome.to.name(),
        "previous": outcome.from.number(),
        "changed": outcome.from != outcome.to,
        "forced": !outcome.forced_gates.is_empty(),
        "forcedGates": outcome.forced_gates,
    })))
}

/// Entries per audit page unless `limit` says otherwise.
const AUDIT_PAGE: u32 = 50;

/// `GET /admin/migrate/audit?limit=&cursor=`: admin actions, newest first, paged.
pub async fn audit_log<S: KvStore>(
    stores: &Stores<S>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let limit = match request.query_param("limit")? {
        None => AUDIT_PAGE,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::bad_request("invalid_query", "limit must be 1 to 1000"))?,
    };
    let cursor = request.query_param("cursor")?.filter(|c| !c.is_empty());
    let page = audit::page(&stores.new, limit, cursor.as_deref()).await?;
    Ok(ApiResponse::ok(json!({
        "entries": page.entries,
        "cursor": page.cursor,
        "complete": page.cursor.is_none(),
    })))
}

/// Drains the repair journal and checks the due read-repair copies now (the cron does
/// both every minute).
pub async fn repair<S: KvStore>(
    stores: &Stores<S>,
    current: &CurrentPhase,
    settings: GateSettings,
    caller: &Caller,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let (report, settle) = cron::repair_now(
        stores,
        current,
        settings.pass_delay_ms,
        &caller.subject,
        now_ms,
    )
    .await?;
    Ok(ApiResponse::ok(
        json!({ "repair": report, "settle": settle }),
    ))
}

/// A move to the phase in `field`, with the optional `force` and `reason`.
pub fn parse_phase_change(
    body: Map<String, Value>,
    field: &str,
) -> Result<PhaseChangeRequest, ApiError> {
    let to = body
        .get(field)
        .and_then(Value::as_u64)
        .and_then(Phase::from_number)
        .ok_or_else(|| ApiError::invalid_body(format!("{field} must be an integer from 0 to 5")))?;
    let force = optional_bool(&body, "force")?;
    let reason = match body.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if r.chars().count() <= MAX_REASON_CHARS => Some(r.clone()),
        Some(Value::String(_)) => {
            return Err(ApiError::invalid_body(format!(
                "reason is longer than {MAX_REASON_CHARS} characters"
            )))
        }
        Some(_) => return Err(ApiError::invalid_body("reason must be a string")),
    };
    Ok(PhaseChangeRequest {
        to,
        force,
        reason,
        rollback: false,
    })
}

/// A boolean field that defaults to false.
pub fn optional_bool(body: &Map<String, Value>, field: &str) -> Result<bool, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid_body(format!("{field} must be a boolean"))),
    }
}
