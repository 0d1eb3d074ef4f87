//! `POST /admin/migrate/cohort {to, percent?, customers?, force?, reason?}` opens a
//! cohort, or widens the open one; `POST /admin/migrate/cohort/cancel {force?, reason?}`
//! takes its customers back. A move of the phase to the cohort's completes it
//! (docs/design.md §17).

use serde_json::json;

use super::{bodies, Ctx};
use crate::api::{CohortView, PhaseView};
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::phase_record::{self, CohortRequest};
use crate::store::KvStore;
use crate::writes::Writers;

pub async fn widen<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let step = request.json_body::<bodies::CohortWiden>()?.into_request()?;
    apply(ctx, step).await
}

pub async fn cancel<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let step = request
        .json_body::<bodies::CohortCancel>()?
        .into_request()?;
    apply(ctx, step).await
}

async fn apply<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    step: CohortRequest,
) -> Result<ApiResponse, ApiError> {
    let (outcome, after) = phase_record::cohort_step(
        ctx.stores,
        ctx.register,
        ctx.config.default_phase,
        step,
        &ctx.caller.subject,
        ctx.config.gate_settings(),
        ctx.now_ms,
    )
    .await?;
    let phase = PhaseView::of(&after);
    // This isolate serves its own step at once; others within the cache lifetime.
    ctx.cache.put(after, ctx.now_ms);
    Ok(ApiResponse::ok(json!(CohortView {
        done: outcome.done,
        forced: !outcome.forced_gates.is_empty(),
        forced_gates: outcome.forced_gates,
        phase,
    })))
}
