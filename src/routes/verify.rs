//! `POST /admin/migrate/verify {mode?, sample?, restart?}`: start or continue a
//! verification of the new store against the old one.

use serde_json::{json, Value};

use super::admin::optional_bool;
use crate::auth::Caller;
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::checking::verify::{self, Requested, Verification};
use crate::migration::state::phase_record::CurrentPhase;
use crate::store::{KvStore, Stores};

pub async fn run<S: KvStore>(
    stores: &Stores<S>,
    current: &CurrentPhase,
    caller: &Caller,
    request: &ApiRequest,
    settle_ms: u64,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let body = request.json_object()?;
    let sample = match body.get("mode").and_then(Value::as_str) {
        None | Some("full") => false,
        Some("sample") => true,
        Some(_) => {
            return Err(ApiError::invalid_body(
                "mode must be \"full\" or \"sample\"",
            ))
        }
    };
    let restart = optional_bool(&body, "restart")?;
    let requested = if sample {
        let keys = match body.get("sample") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                ApiError::invalid_body("sample must be a positive integer (keys to compare)")
            })?),
        };
        Requested::Sample { keys }
    } else {
        Requested::Full
    };
    let verification = verify::run_requested(
        stores,
        current,
        requested,
        restart,
        &caller.subject,
        settle_ms,
        now_ms,
    )
    .await?;
    Ok(ApiResponse::ok(report_json(&verification)))
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
