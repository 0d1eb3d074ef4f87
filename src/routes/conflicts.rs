//! `GET /admin/migrate/conflicts?cursor=&limit=`: every conflict the backfill left, a
//! page at a time, with both stores' values; `POST /admin/migrate/conflicts/prune
//! {cursor?}`: removes the entries of one page that are settled (docs/design.md §6,
//! "Conflicts"); `POST /admin/migrate/conflicts/settle`: settles conflicts by a rule
//! ("Settling").

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{bodies, Ctx};
use crate::domain::{CustomerId, CUSTOMER_PREFIX};
use crate::http::{ApiError, ApiRequest, ApiResponse};
use crate::migration::checking::conflicts::{self, MAX_PAGE};
use crate::migration::checking::resolve::Rule;
use crate::migration::checking::settling::{self, Outcome, Scope};
use crate::migration::state::coordinator::PhaseRegister;
use crate::store::KvStore;
use crate::writes::Writers;
use sha2::{Digest, Sha256};

pub async fn page<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let limit = request.limit_param(MAX_PAGE, MAX_PAGE)?;
    let cursor = request.query_param("cursor")?.filter(|c| !c.is_empty());
    let page = conflicts::page(ctx.stores, cursor.as_deref(), limit).await?;
    Ok(ApiResponse::ok(json!(page)))
}

pub async fn prune<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let asked = request.json_body::<bodies::Prune>()?;
    let pruned = conflicts::prune(ctx.stores, asked.cursor.as_deref()).await?;
    if pruned.removed > 0 {
        let detail = format!("{} settled conflict entries removed", pruned.removed);
        ctx.audit("conflicts_pruned", detail, false).await?;
    }
    Ok(ApiResponse::ok(json!(pruned)))
}

pub async fn settle<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let asked = request.json_body::<bodies::Settle>()?;
    let (scope, dry_run) = (asked.scope()?, asked.dry_run());
    if !dry_run {
        // Audited before anything is written, as a phase change is: a settle cut off
        // midway still has its record.
        let intent = match &scope {
            Scope::Keys(keys) => {
                let named: Vec<String> = keys.iter().map(|k| audit_name(k)).collect();
                format!("rule {}: {}", rule_name(asked.rule), named.join(", "))
            }
            Scope::Page { limit, .. } => {
                format!(
                    "rule {}: a page of up to {limit} entries",
                    rule_name(asked.rule)
                )
            }
        };
        ctx.audit("conflicts_settle", intent, false).await?;
    }
    let writing = ctx.writing();
    let report = settling::settle(
        ctx.stores,
        &writing,
        (asked.rule, scope, dry_run),
        &asked.expect,
        ctx.now_ms,
    )
    .await?;
    let results: Vec<Value> = report.results.iter().map(result_json).collect();
    let counts = count(&report.results);
    if !dry_run && !report.results.is_empty() {
        let detail = audit_detail(asked.rule, &report.results, &counts);
        ctx.audit("conflicts_settled", detail, false).await?;
    }
    Ok(ApiResponse::ok(json!({
        "rule": asked.rule,
        "dryRun": dry_run,
        "results": results,
        "counts": counts,
        "cursor": report.cursor,
        "complete": report.cursor.is_none(),
        "entriesLeft": report.entries_left,
    })))
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::WouldWrite(_) => "would_write",
        Outcome::Written(_) => "written",
        Outcome::Agreed => "agreed",
        Outcome::Changed => "changed",
        Outcome::Undecidable(_) => "undecidable",
        Outcome::NotAConflict => "not_a_conflict",
        Outcome::Failed(_) => "failed",
    }
}

fn result_json((key, outcome): &(String, Outcome)) -> Value {
    let mut result = json!({ "key": key, "outcome": outcome_name(outcome) });
    match outcome {
        Outcome::WouldWrite(chose) | Outcome::Written(chose) => result["chose"] = json!(chose),
        Outcome::Undecidable(reason) => result["reason"] = json!(reason),
        Outcome::Failed(err) => {
            let err = ApiError::from(err.clone());
            result["code"] = json!(err.code);
            result["reason"] = json!(err.message);
        }
        _ => {}
    }
    result
}

fn count(results: &[(String, Outcome)]) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    for (_, outcome) in results {
        *counts.entry(outcome_name(outcome)).or_default() += 1;
    }
    counts
}

fn rule_name(rule: Rule) -> String {
    serde_json::to_value(rule)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A key as the audit, which is kept for good, names it: a legacy id may be an email
/// address, so a customer key whose id is outside the id alphabet is named by a digest.
fn audit_name(key: &str) -> String {
    match key.strip_prefix(CUSTOMER_PREFIX) {
        Some(id) if !CustomerId::in_alphabet(id) => {
            let digest = Sha256::digest(id.as_bytes());
            let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
            format!("{CUSTOMER_PREFIX}#{short}")
        }
        _ => key.to_owned(),
    }
}

/// Every decision: the keys written and the side each took, then the other outcomes'
/// counts.
fn audit_detail(
    rule: Rule,
    results: &[(String, Outcome)],
    counts: &BTreeMap<&'static str, u64>,
) -> String {
    let written: Vec<String> = results
        .iter()
        .filter_map(|(key, outcome)| match outcome {
            Outcome::Written(chose) => {
                let side = json!(chose);
                Some(format!(
                    "{} ({})",
                    audit_name(key),
                    side.as_str().unwrap_or_default()
                ))
            }
            _ => None,
        })
        .collect();
    let others: Vec<String> = counts
        .iter()
        .filter(|(name, _)| **name != "written")
        .map(|(name, n)| format!("{n} {name}"))
        .collect();
    format!(
        "rule {}: written {}; {}",
        rule_name(rule),
        if written.is_empty() {
            "none".to_owned()
        } else {
            written.join(", ")
        },
        if others.is_empty() {
            "nothing else".to_owned()
        } else {
            others.join(", ")
        },
    )
}
