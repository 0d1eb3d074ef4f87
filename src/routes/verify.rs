//! `POST /admin/migrate/verify {mode?, sample?, restart?}`: start or continue a
//! verification of the new store against the old one.

use super::{bodies, render, Ctx};
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::checking::verify;
use crate::store::KvStore;

pub async fn run<S: KvStore>(
    ctx: &Ctx<'_, S>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let (requested, restart) = request.json_body::<bodies::Verify>()?.into_request()?;
    let verification = verify::run_requested(
        ctx.stores,
        ctx.current,
        requested,
        restart,
        &ctx.caller.subject,
        ctx.config.settle_ms(),
        ctx.now_ms,
    )
    .await?;
    Ok(ApiResponse::ok(render::verification(&verification)))
}
