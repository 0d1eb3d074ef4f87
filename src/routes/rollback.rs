//! `POST /admin/migrate/rollback {toPhase, force?, reason?, dryRun?}`: walks the phase
//! down to `toPhase` as far as is safe right now ([`rollback::advance`]), and says what
//! is left: 200 once the target is reached, or 409 `rollback_in_progress` with the
//! progress and what it waits for; calling again continues. A dry run answers the plan
//! ([`rollback::preview`]) and changes nothing.

use serde_json::json;

use super::{bodies, Ctx};
use crate::api::{RollbackAnswer, RollbackView};
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::copying::copy::Direction;
use crate::migration::copying::fanout::{Tally, TallyOp};
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::rollback::{self, Progress};
use crate::store::KvStore;
use crate::writes::Writers;

pub async fn run<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let body = request.json_body::<bodies::Rollback>()?;
    let dry_run = body.dry_run();
    let change = body.into_request()?;
    let rollback = rollback::Context {
        stores: ctx.stores,
        register: ctx.register,
        writers: ctx.writers,
        queue: ctx.queue,
        default_phase: ctx.config.default_phase,
        settings: ctx.config.gate_settings(),
        who: &ctx.caller.subject,
        now_ms: ctx.now_ms,
    };
    if dry_run {
        let preview = rollback::preview(&rollback, &change).await?;
        let mut body = json!(preview);
        body["dryRun"] = json!(true);
        return Ok(ApiResponse::ok(body));
    }
    let progress = rollback::advance(&rollback, change).await?;
    if progress.moved() {
        // This isolate serves its own moves at once; others within the cache lifetime.
        ctx.cache.put(progress.current.clone(), ctx.now_ms);
    }
    // A reverse sync that fans out counts in the coordinator until its pass ends.
    let fanned_out = progress
        .facts
        .as_ref()
        .is_some_and(|f| f.reverse_sync.fanned_out);
    let tally = match fanned_out {
        true => {
            let op = TallyOp::Read {
                direction: Direction::Reverse,
            };
            Some(ctx.register.tally(op).await?.tally)
        }
        false => None,
    };
    Ok(render(&progress, tally.as_ref()))
}

fn render(progress: &Progress, reverse_tally: Option<&Tally>) -> ApiResponse {
    let view = RollbackView::of(progress, reverse_tally);
    if progress.done() {
        return ApiResponse::ok(json!(RollbackAnswer { rollback: view }));
    }
    let mut body = ApiError::conflict(
        "rollback_in_progress",
        format!(
            "rollback to phase {} is under way at phase {}: {}",
            progress.target.number(),
            progress.current.phase.number(),
            progress.waiting_for
        ),
    )
    .body();
    body["rollback"] = json!(view);
    ApiResponse::json(409, body)
}
