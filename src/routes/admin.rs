//! The `/admin/migrate` handlers for what the migration is doing, its phase, its audit
//! log and the repair now.

use serde_json::json;

use super::{bodies, render, Ctx};
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::cron;
use crate::migration::state::audit;
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::phase_record;
use crate::migration::status::{self, NextMove};
use crate::store::KvStore;

/// Entries per audit page unless `limit` says otherwise.
const AUDIT_PAGE: u32 = 50;

/// `GET /admin/migrate/status`.
pub async fn status<S: KvStore, R: PhaseRegister>(
    ctx: &Ctx<'_, S, R>,
) -> Result<ApiResponse, ApiError> {
    let (current, settings) = (ctx.current, ctx.config.gate_settings());
    let status = status::gather(ctx.stores, current, settings, ctx.now_ms).await?;
    let facts = &status.facts;
    let history: Vec<_> = status
        .recent_audit
        .iter()
        .filter(|e| e.action == "phase_change" || e.action == "rollback")
        .collect();
    let mut phase = render::phase(current);
    phase["unsettledMs"] = json!(facts.gates.unsettled_ms);
    let next_move = |m: &Option<NextMove>| {
        m.as_ref()
            .map(|m| json!({ "to": m.to, "met": m.unmet.is_empty(), "unmet": m.unmet }))
    };
    Ok(ApiResponse::ok(json!({
        "phase": phase,
        "gates": { "forward": next_move(&status.forward), "back": next_move(&status.back) },
        "history": history,
        "backfill": render::backfill(&facts.checkpoint),
        "reverseSync": render::reverse_sync(current, facts),
        "verificationPeriod": render::verification_period(current, settings, facts),
        "verification": {
            "current": status.verification.as_ref().map(render::verification),
            "lastFull": facts.last_full.as_ref().map(render::verification),
        },
        "fallbackHits": status.fallback_hits,
        "repairJournal": facts.journal,
        "readRepairsSettling": facts.settling,
        "newStoreDiverged": current.state.new_store_diverged,
        "oldStoreDiverged": current.state.old_store_diverged,
        "recentAudit": status.recent_audit,
    })))
}

/// `POST /admin/migrate/phase {phase, force?, reason?}`.
pub async fn change_phase<S: KvStore, R: PhaseRegister>(
    ctx: &Ctx<'_, S, R>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let change = request.json_body::<bodies::PhaseMove>()?.into_request()?;
    let (outcome, after) = phase_record::move_phase(
        ctx.stores,
        ctx.register,
        ctx.config.default_phase,
        change,
        &ctx.caller.subject,
        ctx.config.gate_settings(),
        ctx.now_ms,
    )
    .await?;
    // This isolate serves its own change at once; others within the cache lifetime.
    ctx.cache.put(after, ctx.now_ms);
    Ok(ApiResponse::ok(json!({
        "phase": outcome.to.number(),
        "name": outcome.to.name(),
        "previous": outcome.from.number(),
        "changed": outcome.from != outcome.to,
        "forced": !outcome.forced_gates.is_empty(),
        "forcedGates": outcome.forced_gates,
    })))
}

/// `GET /admin/migrate/audit?limit=&cursor=`: admin actions, newest first, paged.
pub async fn audit_log<S: KvStore, R: PhaseRegister>(
    ctx: &Ctx<'_, S, R>,
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
    let page = audit::page(&ctx.stores.new, limit, cursor.as_deref()).await?;
    Ok(ApiResponse::ok(json!({
        "entries": page.entries,
        "cursor": page.cursor,
        "complete": page.cursor.is_none(),
    })))
}

/// `POST /admin/migrate/repair`: drains the repair journal and checks the due
/// read-repair copies now (the cron does both every minute).
pub async fn repair<S: KvStore, R: PhaseRegister>(
    ctx: &Ctx<'_, S, R>,
) -> Result<ApiResponse, ApiError> {
    let (report, checks) = cron::repair_now(
        ctx.stores,
        ctx.current,
        ctx.config.pass_delay_ms(),
        &ctx.caller.subject,
        ctx.now_ms,
    )
    .await?;
    Ok(ApiResponse::ok(
        json!({ "repair": report, "settle": checks }),
    ))
}
