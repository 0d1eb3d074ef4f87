//! The `/admin/migrate/backfill` handlers: run one batch now, pause, resume, reset.

use serde_json::json;

use super::{bodies, Ctx};
use crate::api::{BatchView, ProgressView};
use crate::error::Error;
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::copying::backfill::{self, Checkpoint, Control};
use crate::migration::copying::copy::Direction;
use crate::migration::copying::fanout::TallyOp;
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
        progress: progress(ctx, &batch.checkpoint).await?,
    })))
}

/// `POST /admin/migrate/backfill/{pause,resume,reset}`.
pub async fn control<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    action: Control,
) -> Result<ApiResponse, ApiError> {
    let checkpoint = backfill::control(
        &ctx.stores.new,
        (ctx.register, ctx.queue),
        action,
        &ctx.caller.subject,
        ctx.now_ms,
    )
    .await?;
    standing(ctx, &checkpoint).await
}

/// `POST /admin/migrate/backfill/throttle {maxInFlight}`: how many chunks a fanned-out
/// backfill may have queued and not yet done.
pub async fn throttle<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let max_in_flight = request.json_body::<bodies::Throttle>()?.max_in_flight()?;
    let checkpoint = backfill::throttle(
        &ctx.stores.new,
        ctx.register,
        max_in_flight,
        &ctx.caller.subject,
        ctx.now_ms,
    )
    .await?;
    standing(ctx, &checkpoint).await
}

/// The answer to a control: no batch ran, and where the backfill stands now.
async fn standing<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    checkpoint: &Checkpoint,
) -> Result<ApiResponse, ApiError> {
    Ok(ApiResponse::ok(json!(BatchView {
        report: None,
        progress: progress(ctx, checkpoint).await?,
    })))
}

/// Where the backfill stands, with the coordinator's tally when it fans out.
async fn progress<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    checkpoint: &Checkpoint,
) -> Result<ProgressView, ApiError> {
    if !checkpoint.fanned_out {
        return Ok(ProgressView::of(checkpoint));
    }
    let op = TallyOp::Read {
        direction: Direction::Forward,
    };
    let tally = ctx.register.tally(op).await.map_err(Error::from)?.tally;
    Ok(ProgressView::of_run(checkpoint, Some(&tally)))
}
