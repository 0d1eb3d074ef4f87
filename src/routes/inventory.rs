//! `POST /admin/migrate/inventory {restart?}`: start or continue the inventory of what
//! the new store held before the migration (docs/design.md §16).

use super::{bodies, Ctx};
use crate::api::InventoryView;
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::checking::inventory;
use crate::migration::state::coordinator::PhaseRegister;
use crate::phase::Phase;
use crate::store::budget::Budget;
use crate::store::KvStore;
use crate::writes::Writers;

/// KV operations an admin request has made before the inventory starts.
const REQUEST_OVERHEAD_OPS: u32 = 4;

pub async fn run<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let asked = request.json_body::<bodies::Inventory>()?;
    // Once the migration has written the new store, its copies and dual writes cannot
    // be told from what was there before.
    if ctx.current.phase != Phase::Legacy
        || ctx.current.state.new_store_diverged
        || ctx.current.cohort_phase().is_some()
    {
        return Err(ApiError::new(
            409,
            "inventory_not_allowed",
            "the inventory is taken in phase 0, before the migration first writes CUSTOMER_KV",
        ));
    }
    let budget = Budget::per_invocation(REQUEST_OVERHEAD_OPS);
    let restart = asked.restart.unwrap_or(false);
    let taken = inventory::run(ctx.stores, &budget, restart, ctx.now_ms).await?;
    Ok(ApiResponse::ok(serde_json::json!(InventoryView::of(
        &taken
    ))))
}
