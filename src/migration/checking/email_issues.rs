//! Every email conflict and orphan mapping the email audit found, kept by mapping key so
//! the operator can see all of them, not only the audit's 20 samples (docs/design.md §6,
//! "Email mappings"). A real audit writes an entry per issue it meets (one write each,
//! counted in its chunk's budget); [`page`] lists those of the latest real audit, so an
//! entry an earlier run wrote and this one did not meet again is not shown.

use serde::{Deserialize, Serialize};

use crate::migration::keys::{self, EMAIL_ISSUE_PREFIX};
use crate::store::{read_many, KvStore, PutOptions, StoreResult};

/// Entries listed per page at most: one list and one bulk read.
pub const MAX_PAGE: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// Two customers' records hold the email the mapping is for; the mapping names one.
    Conflict,
    /// The mapping names a customer that does not exist.
    Orphan,
}

/// An entry as stored under `__migration/email-issue/<mapping key>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Issue {
    /// The `email_to_customer_…` key.
    pub key: String,
    pub kind: IssueKind,
    /// For a conflict, the customer the mapping names, then the other holder; for an
    /// orphan, the customer named.
    pub customers: Vec<String>,
    pub found_at: u64,
    /// When the audit that found it started: only the latest audit's are listed.
    pub audit_started_at: u64,
}

/// Writes an entry for each issue found.
pub async fn record<S: KvStore>(new_store: &S, issues: &[Issue]) -> StoreResult<()> {
    for issue in issues {
        let bytes = serde_json::to_vec(issue).unwrap_or_default();
        new_store
            .put(
                &keys::email_issue(&issue.key),
                &bytes,
                PutOptions::default(),
            )
            .await?;
    }
    Ok(())
}

/// A page of the issues the audit that started at `audit_started_at` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuePage {
    pub issues: Vec<Issue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    pub complete: bool,
}

/// One page of entries from `cursor` (one list, one bulk read), keeping those of the
/// audit that started at `audit_started_at`.
pub async fn page<S: KvStore>(
    new_store: &S,
    audit_started_at: u64,
    cursor: Option<&str>,
    limit: u32,
) -> StoreResult<IssuePage> {
    let listed = new_store
        .list(EMAIL_ISSUE_PREFIX, cursor, limit.clamp(1, MAX_PAGE))
        .await?;
    let names: Vec<String> = listed.keys.iter().map(|k| k.name.clone()).collect();
    let values = read_many(new_store, &names).await?;
    let issues = values
        .into_iter()
        .flatten()
        .filter_map(|v| serde_json::from_slice::<Issue>(&v.bytes).ok())
        .filter(|issue| issue.audit_started_at == audit_started_at)
        .collect();
    Ok(IssuePage {
        issues,
        complete: listed.complete,
        cursor: if listed.complete { None } else { listed.cursor },
    })
}
