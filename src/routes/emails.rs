//! `POST /admin/migrate/emails {dryRun?, restart?}`: audit and repair the email mappings.

use serde_json::json;

use super::admin::optional_bool;
use crate::auth::Caller;
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::checking::emails;
use crate::migration::state::phase_record::CurrentPhase;
use crate::store::{KvStore, Stores};

pub async fn run<S: KvStore>(
    stores: &Stores<S>,
    current: &CurrentPhase,
    caller: &Caller,
    request: &ApiRequest,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let body = request.json_object()?;
    let dry_run = optional_bool(&body, "dryRun")?;
    let restart = optional_bool(&body, "restart")?;
    let report =
        emails::run_requested(stores, current, dry_run, restart, &caller.subject, now_ms).await?;
    let mut body = json!(report);
    body["complete"] = json!(report.complete());
    if let Some(fields) = body.as_object_mut() {
        fields.remove("plannedRepoints");
    }
    Ok(ApiResponse::ok(body))
}
