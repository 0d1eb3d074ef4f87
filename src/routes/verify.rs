//! `POST /admin/migrate/verify {mode?, sample?, restart?}`: start or continue a
//! verification of the new store against the old one.

use super::{bodies, Ctx};
use crate::api::VerificationView;
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::checking::verify;
use crate::migration::state::coordinator::PhaseRegister;
use crate::store::KvStore;
use crate::writes::Writers;

pub async fn run<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let asked = request.json_body::<bodies::Verify>()?.into_request()?;
    let verification = verify::run_requested(
        ctx.stores,
        (ctx.register, ctx.queue),
        ctx.current,
        asked,
        &ctx.caller.subject,
        ctx.config.settle_ms(),
        ctx.now_ms,
    )
    .await?;
    Ok(ApiResponse::ok(serde_json::json!(VerificationView::of(
        &verification
    ))))
}
