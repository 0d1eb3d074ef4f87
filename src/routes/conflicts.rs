//! `GET /admin/migrate/conflicts?cursor=&limit=`: every conflict the backfill left, a
//! page at a time, with both stores' values (docs/design.md §6, "Conflicts").

use serde_json::json;

use super::Ctx;
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::checking::conflicts::{self, MAX_PAGE};
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
