//! `GET /admin/migrate/conflicts?cursor=&limit=`: every conflict the backfill left, a
//! page at a time, with both stores' values; `POST /admin/migrate/conflicts/prune
//! {cursor?}`: removes the entries of one page that are settled (docs/design.md §6,
//! "Conflicts").

use serde_json::json;

use super::{bodies, Ctx};
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::checking::conflicts::{self, MAX_PAGE};
use crate::migration::state::audit::{self, AuditEntry};
use crate::migration::state::coordinator::PhaseRegister;
use crate::store::KvStore;
use crate::writes::Writers;

pub async fn page<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let limit = request.limit_param(MAX_PAGE, MAX_PAGE)?;
    let cursor = request.query_param("cursor")?.filter(|c| !c.is_empty());
    let page = conflicts::page(ctx.stores, cursor.as_deref(), limit).await?;
    Ok(ApiResponse::ok(json!(page)))
}

pub async fn prune<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let asked = request.json_body::<bodies::Prune>()?;
    let pruned = conflicts::prune(ctx.stores, asked.cursor.as_deref()).await?;
    if pruned.removed > 0 {
        let detail = format!("{} settled conflict entries removed", pruned.removed);
        let entry = AuditEntry::action(
            &ctx.caller.subject,
            "conflicts_pruned",
            ctx.now_ms,
            Some(detail),
        );
        audit::append(&ctx.stores.new, &entry).await?;
    }
    Ok(ApiResponse::ok(json!(pruned)))
}
