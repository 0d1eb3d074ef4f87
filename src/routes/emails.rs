//! `POST /admin/migrate/emails`: audit and repair the email mappings.

use serde_json::json;

use super::admin::optional_bool;
use crate::auth::Caller;
use crate::dataplane::DataPlane;
use crate::http::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::migration::checking::emails;
use crate::migration::state::audit::{self, AuditEntry};
use crate::migration::state::phase_record::CurrentPhase;
use crate::store::budget::{metered, Budget};
use crate::store::{KvStore, Stores};

const REQUEST_OVERHEAD_OPS: u32 = 4;

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
    let budget = Budget::per_invocation(REQUEST_OVERHEAD_OPS);
    let metered_stores = metered(stores, &budget);
    let plane = DataPlane::new(&metered_stores, current.phase, now_ms)
        .with_old_store_catching_up(current.state.old_store_diverged);
    let report = emails::run(&plane, &budget, dry_run, restart).await?;
    if !dry_run {
        let detail = format!(
            "derived {}, repointed {}, re-keyed {}; {} conflicts, {} orphans",
            report.derived, report.repointed, report.rekeyed, report.conflicts, report.orphans
        );
        audit::append(
            &stores.new,
            &AuditEntry::action(&caller.subject, "email_repair", now_ms, Some(detail)),
        )
        .await?;
    }
    let mut body = serde_json::to_value(&report).unwrap_or_default();
    body["complete"] = json!(report.complete());
    if let Some(fields) = body.as_object_mut() {
        fields.remove("plannedRepoints");
    }
    Ok(ApiResponse::ok(body))
}
