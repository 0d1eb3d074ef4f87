//! The `/admin/migrate/backfill` handlers: run one batch now, pause, resume, reset.

use serde_json::json;

use super::{bodies, Ctx};
use crate::api::{BatchView, ProgressView};
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::copying::backfill::{self, Control};
use crate::migration::state::coordinator::PhaseRegister;
use crate::store::KvStore;
use crate::writes::Writers;

/// `POST /admin/migrate/backfill {dryRun?, maxRecords?}`: one batch now.
pub async fn run_batch<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let options = request
        .json_body::<bodies::BackfillBatch>()?
        .into_options()?;
    let batch = backfill::run_batch(
        ctx.stores,
        ctx.fanout(),
        ctx.current,
        ctx.config.gate_settings(),
        options,
        &ctx.caller.subject,
        ctx.now_ms,
    )
    .await?;
    Ok(ApiResponse::ok(json!(BatchView {
        report: Some(batch.report),
        progress: ProgressView::of(&batch.checkpoint),
    })))
}

/// `POST /admin/migrate/backfill/{pause,resume,reset}`.
pub async fn control<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    action: Control,
) -> Result<ApiResponse, ApiError> {
    let checkpoint =
        backfill::control(&ctx.stores.new, action, &ctx.caller.subject, ctx.now_ms).await?;
    Ok(ApiResponse::ok(json!(BatchView {
        report: None,
        progress: ProgressView::of(&checkpoint),
    })))
}
