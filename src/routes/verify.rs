//! `POST /admin/migrate/verify`: start or continue a verification of the new store
//! against the old one.

use serde_json::{json, Value};

use super::admin::optional_bool;
use crate::auth::Caller;
use crate::http::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::migration::checking::verify::{self, Mode, Verification};
use crate::migration::copying::backfill;
use crate::migration::state::phase_record::{self, CurrentPhase};
use crate::store::budget::{metered, Budget};
use crate::store::{KvStore, Stores};

const REQUEST_OVERHEAD_OPS: u32 = 4;
/// Values compared in one key in this many when a sample is asked for and the number of
/// keys is not known yet (the backfill counts them).
const DEFAULT_SAMPLE_RATE: u64 = 10;

pub async fn run<S: KvStore>(
    stores: &Stores<S>,
    current: &CurrentPhase,
    caller: &Caller,
    request: &ApiRequest,
    settle_ms: u64,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let body = request.json_object()?;
    let mode = match body.get("mode").and_then(Value::as_str) {
        None | Some("full") => Mode::Full,
        Some("sample") => Mode::Sample,
        Some(_) => {
            return Err(ApiError::invalid_body(
                "mode must be \"full\" or \"sample\"",
            ))
        }
    };
    let restart = optional_bool(&body, "restart")?;
    let rate = match mode {
        Mode::Full => 1,
        Mode::Sample => {
            let wanted = match body.get("sample") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                    ApiError::invalid_body("sample must be a positive integer (keys to compare)")
                })?),
            };
            let total = backfill::load_checkpoint(&stores.new).await?.total;
            match (wanted, total) {
                (Some(n), total) if total > 0 => total.div_ceil(n).max(1),
                _ => DEFAULT_SAMPLE_RATE,
            }
        }
    };
    let budget = Budget::per_invocation(REQUEST_OVERHEAD_OPS);
    let verification = verify::run(
        &metered(stores, &budget),
        &budget,
        mode,
        rate,
        restart,
        now_ms,
    )
    .await?;
    if current.state.new_store_diverged
        && proves_new_store_caught_up(&verification, current, settle_ms)
    {
        phase_record::clear_new_store_divergence(
            &stores.new,
            &current.state,
            &caller.subject,
            now_ms,
        )
        .await?;
    }
    Ok(ApiResponse::ok(report_json(&verification)))
}

/// A clean full verification shows that the new store caught up after writes skipped
/// it — if it started once every isolate writes the new store again: in phase 1 or
/// later, a cache lifetime after the phase changed.
fn proves_new_store_caught_up(
    verification: &Verification,
    current: &CurrentPhase,
    settle_ms: u64,
) -> bool {
    verification.clean()
        && verification.mode == Mode::Full
        && current.phase.verification_can_clear_new_store_divergence()
        && verification.started_at >= current.state.changed_at + settle_ms
}

pub fn report_json(v: &Verification) -> Value {
    json!({
        "mode": v.mode,
        "rate": v.rate,
        "complete": v.complete(),
        "clean": v.clean(),
        "listed": v.listed,
        "valuesCompared": v.values_compared,
        "missing": { "count": v.missing, "keys": v.missing_keys },
        "extra": { "count": v.extra, "keys": v.extra_keys },
        "mismatched": { "count": v.mismatched, "keys": v.mismatched_keys },
        "startedAt": v.started_at,
        "updatedAt": v.updated_at,
        "completedAt": v.completed_at,
    })
}
