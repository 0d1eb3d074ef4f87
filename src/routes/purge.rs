//! `POST /admin/migrate/purge-new {dryRun?, cursor?, force?, reason?}`: removes what the
//! migration put into the new store, a page per call, after a rollback that is final
//! (docs/design.md §9, "Purging the new store").

use serde_json::json;

use super::{bodies, Ctx};
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::checking::inventory;
use crate::migration::state::audit::{self, AuditEntry};
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::purge::{self, Position};
use crate::store::KvStore;
use crate::writes::Writers;

pub async fn run<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let asked = request.json_body::<bodies::PurgeNew>()?;
    let forced = asked.forced_reason()?;
    let position = Position::parse(asked.cursor.as_deref())?;
    let taken = inventory::load(&ctx.stores.new).await?;
    let timing = (ctx.config.settle_ms(), ctx.now_ms);
    purge::may_purge(ctx.current, timing, taken.as_ref(), forced.is_some())?;
    let purged = purge::purge(ctx.stores, position, asked.dry_run()).await?;
    if !purged.dry_run {
        let mut detail = format!(
            "{} keys removed from CUSTOMER_KV, {} the inventory found kept{}",
            purged.removed,
            purged.kept,
            if purged.complete {
                "; purge complete"
            } else {
                ""
            }
        );
        if let Some(reason) = &forced {
            detail.push_str(&format!("; forced without an inventory: {reason}"));
        }
        let mut entry = AuditEntry::action(
            &ctx.caller.subject,
            "new_store_purged",
            ctx.now_ms,
            Some(detail),
        );
        entry.forced = forced.is_some();
        audit::append(&ctx.stores.new, &entry).await?;
    }
    Ok(ApiResponse::ok(json!(purged)))
}
