//! `POST /admin/migrate/purge-new {dryRun?, restart?, force?, reason?}`: removes what the
//! migration put into the new store, a page per call, after a rollback that is final
//! (docs/design.md §9, "Purging the new store").

use serde_json::json;

use super::{bodies, Ctx};
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::checking::inventory;
use crate::migration::keys::JOURNAL_PREFIX;
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::purge::{self, Facts};
use crate::store::KvStore;
use crate::writes::Writers;

pub async fn run<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let asked = request.json_body::<bodies::PurgeNew>()?;
    let forced = asked.forced_reason()?;
    let dry_run = asked.dry_run();
    let taken = inventory::load(&ctx.stores.new).await?;
    let journal = ctx.stores.new.list(JOURNAL_PREFIX, None, 1).await?;
    purge::may_purge(&Facts {
        current: ctx.current,
        settle_ms: ctx.config.settle_ms(),
        now_ms: ctx.now_ms,
        inventory: taken.as_ref(),
        journal_pending: !journal.keys.is_empty(),
        forced: forced.is_some(),
    })?;
    let mut run = purge::load(&ctx.stores.new, dry_run, asked.restart(), ctx.now_ms).await?;
    let starting = run.listed == 0 && !run.complete();
    if starting && !dry_run {
        // Audited before the first delete: a purge cut off midway still has its record.
        run.forced = forced.is_some();
        let detail = match &forced {
            Some(reason) => format!("forced past the inventory's checks: {reason}"),
            None => "every key the inventory found before the migration is kept".to_owned(),
        };
        ctx.audit("new_store_purge", detail, run.forced).await?;
    }
    let was_complete = run.complete();
    purge::page(ctx.stores, &mut run, ctx.now_ms).await?;
    if run.complete() && !was_complete && !dry_run {
        let detail = format!(
            "{} keys removed from CUSTOMER_KV; kept {} the inventory found and {} it cannot account for",
            run.removed, run.kept, run.unexplained
        );
        ctx.audit("new_store_purged", detail, false).await?;
    }
    Ok(ApiResponse::ok(json!(run)))
}
