//! `POST /admin/migrate/emails {dryRun?, restart?}`: audit and repair the email mappings.

use serde_json::json;

use super::{bodies, Ctx};
use crate::api::EmailAuditView;
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::checking::emails;
use crate::migration::state::coordinator::PhaseRegister;
use crate::store::KvStore;
use crate::writes::Writers;

pub async fn run<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let body = request.json_body::<bodies::EmailAudit>()?;
    let report = emails::run_requested(
        (ctx.stores, ctx.writers),
        ctx.current,
        body.dry_run(),
        body.restart(),
        &ctx.caller.subject,
        ctx.now_ms,
    )
    .await?;
    let complete = report.complete();
    let mut body = json!(EmailAuditView {
        audit: report,
        complete,
    });
    if let Some(fields) = body.as_object_mut() {
        fields.remove("plannedRepoints");
    }
    Ok(ApiResponse::ok(body))
}
