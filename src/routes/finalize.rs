//! `POST /admin/migrate/finalize {dryRun?}`: ends the migration in phase 5; from then on
//! nothing touches `OTP_AUTH_KV` (docs/design.md §9, "Finalizing").

use serde_json::json;

use super::{bodies, Ctx};
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::finalize;
use crate::migration::state::phase_record::CurrentPhase;
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
