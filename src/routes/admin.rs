//! The `/admin/migrate` handlers for what the migration is doing, its phase, its audit
//! log and the repair now.

use serde_json::json;

use super::{bodies, Ctx};
use crate::api::{
    AdminSignInView, AuditPageView, PhaseChangeView, Probe, QueueBinding, ReadyView, RepairView,
    StatusView,
};
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::copying::copy::Direction;
use crate::migration::copying::fanout::tally::TallyOp;
use crate::migration::cron;
use crate::migration::state::audit;
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::phase_record;
use crate::migration::status;
use crate::store::{KvStore, StoreError};
use crate::writes::Writers;

/// Entries per audit page unless `limit` says otherwise.
const AUDIT_PAGE: u32 = 50;

/// `GET /admin/migrate/status`.
pub async fn status<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
) -> Result<ApiResponse, ApiError> {
    let settings = ctx.config.gate_settings();
    let status =
        status::gather(ctx.stores, ctx.register, ctx.current, settings, ctx.now_ms).await?;
    Ok(ApiResponse::ok(json!(StatusView::of(
        ctx.current,
        settings,
        status
    ))))
}

/// A key no product writes: reading it touches a namespace and costs one read.
const READY_PROBE_KEY: &str = "__ready_probe";

/// `GET /admin/migrate/ready`: touches each binding the worker needs once and reports
/// each (`/health` stays cheap and public). 503 when any fails.
pub async fn ready<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
) -> Result<ApiResponse, ApiError> {
    let probe = |failed: Option<StoreError>| Probe {
        ok: failed.is_none(),
        error: failed.map(|err| format!("{} failed", err.operation)),
    };
    // Once finalized nothing uses OTP_AUTH_KV, whose binding may be gone (design §9).
    let old = match ctx.current.state.finalized_at {
        Some(_) => None,
        None => ctx.stores.old.get(READY_PROBE_KEY).await.err(),
    };
    let new = ctx.stores.new.get(READY_PROBE_KEY).await.err();
    let read_tally = TallyOp::Read {
        direction: Direction::Forward,
    };
    let coordinator = ctx.register.tally(read_tally).await.err();
    let ready = old.is_none() && new.is_none() && coordinator.is_none();
    let body = json!(ReadyView {
        ready,
        old_store: probe(old),
        new_store: probe(new),
        coordinator: probe(coordinator),
        queue: QueueBinding {
            bound: ctx.queue.is_some(),
        },
        admin_sign_in: AdminSignInView {
            method: ctx.config.admin_sign_in.describe().to_owned(),
            shares_otp_secret: ctx.config.admin_sign_in.shares_the_otp_secret(),
        },
    });
    Ok(ApiResponse::json(if ready { 200 } else { 503 }, body))
}

/// `POST /admin/migrate/phase {phase, force?, reason?}`.
pub async fn change_phase<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
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
    Ok(ApiResponse::ok(json!(PhaseChangeView {
        phase: outcome.to,
        name: outcome.to.name().to_owned(),
        previous: outcome.from,
        changed: outcome.from != outcome.to,
        forced: !outcome.forced_gates.is_empty(),
        forced_gates: outcome.forced_gates,
    })))
}

/// `GET /admin/migrate/audit?limit=&cursor=`: admin actions, newest first, paged.
pub async fn audit_log<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let limit = request.limit_param(AUDIT_PAGE, 1000)?;
    let cursor = request.query_param("cursor")?.filter(|c| !c.is_empty());
    let page = audit::page(&ctx.stores.new, limit, cursor.as_deref()).await?;
    let complete = page.cursor.is_none();
    Ok(ApiResponse::ok(json!(AuditPageView {
        entries: page.entries,
        cursor: page.cursor,
        complete,
    })))
}

/// `POST /admin/migrate/repair`: drains the repair journal and checks the due
/// read-repair copies now (the cron does both every minute).
pub async fn repair<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
) -> Result<ApiResponse, ApiError> {
    let (report, checks) = cron::repair_now(
        (ctx.stores, ctx.writers),
        ctx.current,
        ctx.config.pass_delay_ms(),
        &ctx.caller.subject,
        ctx.now_ms,
    )
    .await?;
    Ok(ApiResponse::ok(json!(RepairView {
        repair: report,
        settle: checks,
    })))
}
