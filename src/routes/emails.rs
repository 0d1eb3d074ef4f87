//! `POST /admin/migrate/emails {dryRun?, restart?}`: audit and repair the email mappings;
//! `GET /admin/migrate/emails/issues?limit=&cursor=`: every conflict and orphan the latest
//! real audit found.

use serde_json::json;

use super::{bodies, Ctx};
use crate::api::EmailAuditView;
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::checking::email_issues::{self, MAX_PAGE};
use crate::migration::checking::emails;
use crate::migration::keys;
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
        (ctx.register, ctx.queue),
        ctx.current,
        (body.dry_run(), body.restart()),
        &ctx.caller.subject,
        ctx.now_ms,
    )
    .await?;
    let mut body = json!(EmailAuditView::of(report));
    if let Some(fields) = body.as_object_mut() {
        fields.remove("plannedRepoints");
    }
    Ok(ApiResponse::ok(body))
}

pub async fn issues<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let limit = request.limit_param(MAX_PAGE, MAX_PAGE)?;
    let cursor = request.query_param("cursor")?.filter(|c| !c.is_empty());
    let Some(audit) = emails::load(&ctx.stores.new, keys::EMAIL_AUDIT).await? else {
        return Ok(ApiResponse::ok(json!({
            "issues": [], "complete": true, "audit": null
        })));
    };
    let page =
        email_issues::page(&ctx.stores.new, audit.started_at, cursor.as_deref(), limit).await?;
    let mut body = json!(page);
    body["audit"] = json!({
        "startedAt": audit.started_at,
        "completedAt": audit.completed_at,
        "conflicts": audit.counts.conflicts,
        "orphans": audit.counts.orphans,
    });
    Ok(ApiResponse::ok(body))
}
