//! The `/admin/migrate/backfill` handlers: run one batch now, pause, resume, reset.

use serde_json::{json, Value};

use super::admin::{backfill_json, optional_bool};
use crate::auth::Caller;
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::copying::backfill::{self, Control, RunOptions};
use crate::migration::state::gates::GateSettings;
use crate::migration::state::phase_record::CurrentPhase;
use crate::store::{KvStore, Stores};

const MAX_RECORDS_LIMIT: u64 = 1_000_000;

/// `POST /admin/migrate/backfill {dryRun?, maxRecords?}`: one batch now.
pub async fn run_batch<S: KvStore>(
    stores: &Stores<S>,
    current: &CurrentPhase,
    settings: GateSettings,
    caller: &Caller,
    request: &ApiRequest,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let body = request.json_object()?;
    let dry_run = optional_bool(&body, "dryRun")?;
    let max_records = match body.get("maxRecords") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (1..=MAX_RECORDS_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid_body(format!(
                        "maxRecords must be an integer from 1 to {MAX_RECORDS_LIMIT}"
                    ))
                })?,
        ),
    };
    let options = RunOptions {
        dry_run,
        max_records,
        ..RunOptions::default()
    };
    let batch =
        backfill::run_batch(stores, current, settings, options, &caller.subject, now_ms).await?;
    Ok(ApiResponse::ok(json!({
        "report": batch.report,
        "progress": backfill_json(&batch.checkpoint),
    })))
}

pub async fn control<S: KvStore>(
    stores: &Stores<S>,
    caller: &Caller,
    action: Control,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let checkpoint = backfill::control(&stores.new, action, &caller.subject, now_ms).await?;
    Ok(ApiResponse::ok(
        json!({ "progress": backfill_json(&checkpoint) }),
    ))
}
