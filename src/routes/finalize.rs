//! `POST /admin/migrate/finalize {dryRun?}`: ends the migration in phase 5; from then on
//! nothing touches `OTP_AUTH_KV` (docs/design.md §9, "Finalizing"). `POST
//! /admin/migrate/finalize/purge {dryRun?, cursor?, limit?}` then removes its working keys,
//! and `POST /admin/migrate/finalize/tombstones` (the same body) the tombstones.

use serde_json::json;

use super::{bodies, Ctx};
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::finalize;
use crate::migration::state::phase_record::CurrentPhase;
use crate::migration::state::{tombstones, working_keys};
use crate::store::KvStore;
use crate::writes::Writers;

pub async fn run<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let asked = request.json_body::<bodies::Finalize>()?;
    let timing = (
        ctx.config.settle_ms(),
        ctx.config.verification_period_ms,
        ctx.now_ms,
    );
    let facts = finalize::gather(ctx.stores, timing).await?;
    let who = ctx.caller.subject.as_str();
    let done = finalize::run(ctx.register, ctx.current, &facts, (who, asked.dry_run())).await?;
    // This isolate serves the finalized record at once; others within the cache lifetime.
    if let Some(record) = done.record.clone() {
        let current = CurrentPhase::of(Some(record), ctx.config.default_phase)?;
        ctx.cache.put(current, ctx.now_ms);
    }
    Ok(ApiResponse::ok(json!(done)))
}

pub async fn purge_working_keys<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let asked = request.json_body::<bodies::PurgePage>()?;
    let dry_run = asked.dry_run();
    let settle_ms = ctx.config.settle_ms();
    finalize::settled(ctx.current, settle_ms, ctx.now_ms, "the working keys")?;
    if asked.cursor().is_none() && !dry_run {
        // Audited before the first delete: a purge cut off midway still has its record.
        let detail = "the phase record and the audit are kept".to_owned();
        ctx.audit("working_keys_purge", detail, false).await?;
    }
    let from = (asked.cursor(), asked.limit(working_keys::PAGE));
    let purged = working_keys::page(&ctx.stores.new, from, dry_run).await?;
    if purged.complete && !dry_run {
        let detail = format!("{} working keys removed in the last page", purged.removed);
        ctx.audit("working_keys_purged", detail, false).await?;
    }
    Ok(ApiResponse::ok(json!(purged)))
}

pub async fn purge_tombstones<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let asked = request.json_body::<bodies::PurgePage>()?;
    let dry_run = asked.dry_run();
    let settle_ms = ctx.config.settle_ms();
    finalize::settled(ctx.current, settle_ms, ctx.now_ms, "tombstones")?;
    if asked.cursor().is_none() && !dry_run {
        // Audited before the first removal: a purge cut off midway still has its record.
        let detail = "each removed in its customer's object".to_owned();
        ctx.audit("tombstones_purge", detail, false).await?;
    }
    let from = (asked.cursor(), asked.limit(tombstones::PAGE));
    let purged = tombstones::page(&ctx.writing(), &ctx.stores.new, from, dry_run).await?;
    if purged.complete && !dry_run {
        let detail = format!(
            "last page: {} removed, {} recreated since, {} failed",
            purged.removed, purged.recreated, purged.failed
        );
        ctx.audit("tombstones_purged", detail, false).await?;
    }
    Ok(ApiResponse::ok(json!(purged)))
}
