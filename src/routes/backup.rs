//! `GET /admin/migrate/export`, `POST /admin/migrate/import` and
//! `POST /admin/migrate/import/value`: backups of either store as NDJSON pages (see
//! [`crate::migration::backup`]), and their restore, a value too large for an NDJSON
//! request given raw.

use serde_json::json;

use super::Ctx;
use crate::api::ImportView;
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::backup::{self, ExportCursor, ImportRules};
use crate::migration::state::audit::{self, AuditEntry};
use crate::migration::state::coordinator::PhaseRegister;
use crate::store::{KvStore, StoreName};
use crate::writes::Writers;

/// Keys per export page: one list and ten bulk reads, far inside the operation cap.
const EXPORT_PAGE: u32 = 1_000;
/// Lines one import request may write, inside the 1,000 operations of an invocation.
const MAX_IMPORT_LINES: usize = 500;

/// `allKeys=true`: keys outside the two customer families too (docs/http-api.md,
/// "Backups").
fn all_keys_param(request: &ApiRequest) -> Result<bool, ApiError> {
    flag_param(request, "allKeys")
}

/// A query flag: `true` or `false`, absent meaning false.
fn flag_param(request: &ApiRequest, name: &str) -> Result<bool, ApiError> {
    match request.query_param(name)?.as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::bad_request(
            "invalid_query",
            format!("{name} must be true or false"),
        )),
    }
}

/// The store an import writes: never the old store once the migration is finalized.
fn import_target<S, R, W>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<StoreName, ApiError> {
    let store = store_param(request)?;
    if store == StoreName::Old && ctx.current.state.finalized_at.is_some() {
        return Err(crate::error::Error::Finalized.into());
    }
    Ok(store)
}

fn store_param(request: &ApiRequest) -> Result<StoreName, ApiError> {
    let raw = request.query_param("store")?.unwrap_or_default();
    StoreName::parse(&raw)
        .ok_or_else(|| ApiError::bad_request("invalid_query", "store must be old or new"))
}

/// One page of keys under `prefix` (all keys by default; the migration's own state only
/// when the prefix asks for it), with the next cursor in `X-Export-Cursor`.
pub async fn export<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let store = ctx.stores.get(store_param(request)?);
    let prefix = request.query_param("prefix")?.unwrap_or_default();
    let cursor = match request.query_param("cursor")?.filter(|c| !c.is_empty()) {
        None => ExportCursor::default(),
        Some(raw) => ExportCursor::decode(&raw).ok_or_else(|| {
            ApiError::bad_request("invalid_query", "cursor is not one an export answered")
        })?,
    };
    let limit = request.limit_param(EXPORT_PAGE, EXPORT_PAGE)?;
    let all_keys = all_keys_param(request)?;
    if all_keys {
        // Other keys may be another service's (an OTP session): reading them is audited.
        let detail = format!("every key of the {} store", store_param(request)?.as_str());
        ctx.audit("export_all_keys", detail, false).await?;
    }
    let page = backup::export_page(store, (&prefix, all_keys), &cursor, limit).await?;
    let mut response = ApiResponse::raw("application/x-ndjson", page.ndjson)
        .with_header("X-Export-Complete", page.complete.to_string());
    if let Some(next) = page.cursor {
        response = response.with_header("X-Export-Cursor", next.encode());
    }
    Ok(response)
}

/// Writes the lines of an NDJSON body into a store: only keys it lacks by default, or
/// every line with `mode=overwrite`. The body is checked whole before anything is
/// written; an import that fails is audited too.
pub async fn import<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let answer = restore(ctx, request).await;
    audit_failure(ctx, &answer).await;
    answer
}

/// Writes one value, the body's raw bytes, under the key of the query (see
/// docs/http-api.md, "Backups"); checked and audited as an NDJSON line is.
pub async fn import_value<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let answer = restore_value(ctx, request).await;
    audit_failure(ctx, &answer).await;
    answer
}

/// An import that fails is audited too.
async fn audit_failure<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    answer: &Result<ApiResponse, ApiError>,
) {
    if let Err(err) = answer {
        let detail = format!("{}: {}", err.code, err.message);
        let entry = AuditEntry::action(
            &ctx.caller.subject,
            "import_failed",
            ctx.now_ms,
            Some(detail),
        );
        // The refusal is the answer even if its audit cannot be written.
        let _ = audit::append(&ctx.stores.new, &entry).await;
    }
}

async fn restore<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let store_name = import_target(ctx, request)?;
    let overwrite = match request.query_param("mode")?.as_deref() {
        None | Some("missing") => false,
        Some("overwrite") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "mode must be missing or overwrite",
            ))
        }
    };
    let rules = ImportRules {
        now_secs: ctx.now_ms / 1000,
        all_keys: all_keys_param(request)?,
    };
    let lines = backup::parse(&request.body, rules).map_err(ApiError::invalid_body)?;
    if lines.len() > MAX_IMPORT_LINES {
        return Err(ApiError::invalid_body(format!(
            "at most {MAX_IMPORT_LINES} lines per request; send the rest in another"
        )));
    }
    let imported = backup::import(
        ctx.stores,
        store_name,
        lines,
        overwrite,
        &ctx.caller.subject,
        ctx.now_ms,
    )
    .await?;
    Ok(ApiResponse::ok(json!(ImportView {
        store: store_name.as_str().to_owned(),
        written: imported.written,
        already_present: imported.already_present,
        skipped_migration_state: imported.skipped_migration_state,
    })))
}

async fn restore_value<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let invalid = |message: String| ApiError::bad_request("invalid_query", message);
    let store_name = import_target(ctx, request)?;
    let key = request
        .query_param("key")?
        .ok_or_else(|| invalid("key is required".into()))?;
    let expiration = match request.query_param("expiration")? {
        None => None,
        Some(raw) => Some(
            raw.parse::<u64>()
                .map_err(|_| invalid("expiration must be whole seconds since the epoch".into()))?,
        ),
    };
    let metadata = match request.query_param("metadata")? {
        None => None,
        Some(raw) => {
            Some(serde_json::from_str(&raw).map_err(|_| invalid("metadata must be JSON".into()))?)
        }
    };
    let rules = ImportRules {
        now_secs: ctx.now_ms / 1000,
        all_keys: all_keys_param(request)?,
    };
    let options = backup::check_entry(&key, metadata, expiration, rules).map_err(invalid)?;
    let imported = backup::import_value(
        ctx.stores,
        (store_name, &key),
        &request.body,
        options,
        flag_param(request, "overwrite")?,
        (&ctx.caller.subject, ctx.now_ms),
    )
    .await?;
    Ok(ApiResponse::ok(json!(ImportView {
        store: store_name.as_str().to_owned(),
        written: imported.written,
        already_present: imported.already_present,
        skipped_migration_state: imported.skipped_migration_state,
    })))
}
