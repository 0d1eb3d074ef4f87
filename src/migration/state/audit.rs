//! The audit log of admin actions. Keys sort newest first (inverted timestamps), and each
//! entry rides in its key's metadata as well, so one `list` returns a page of entries.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::migration::keys::AUDIT_PREFIX;
use crate::migration::stored;
use crate::store::{KvStore, StoreResult};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub at: u64,
    pub who: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub forced: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmet_gates: Vec<String>,
}

impl AuditEntry {
    /// An admin action other than a phase change.
    pub fn action(who: &str, action: &str, at: u64, detail: Option<String>) -> Self {
        Self {
            at,
            who: who.to_owned(),
            action: action.to_owned(),
            from: None,
            to: None,
            reason: detail,
            forced: false,
            unmet_gates: Vec::new(),
        }
    }
}

/// KV metadata is capped at 1,024 bytes; longer reasons are cut in the metadata copy
/// (the value keeps the whole entry).
const METADATA_REASON_CHARS: usize = 300;
/// Largest ms timestamp that fits 13 digits; inverting against it sorts newest first.
const INVERSION_BASE: u64 = 9_999_999_999_999;

pub fn entry_key(entry: &AuditEntry, bytes: &[u8]) -> String {
    let inverted = INVERSION_BASE.saturating_sub(entry.at);
    // Two entries in the same millisecond still get distinct keys.
    let discriminator = &hex::encode(Sha256::digest(bytes))[..8];
    format!("{AUDIT_PREFIX}{inverted:013}-{discriminator}")
}

pub async fn append<S: KvStore>(store: &S, entry: &AuditEntry) -> StoreResult<()> {
    let bytes = stored::encode(entry)?;
    let mut summary = entry.clone();
    if let Some(reason) = &mut summary.reason {
        if reason.chars().count() > METADATA_REASON_CHARS {
            *reason = reason
                .chars()
                .take(METADATA_REASON_CHARS)
                .collect::<String>()
                + "…";
        }
    }
    stored::put_with_summary(store, &entry_key(entry, &bytes), entry, &summary).await
}

/// The newest `limit` entries (at most 1,000), read from metadata with one `list`.
pub async fn recent<S: KvStore>(store: &S, limit: u32) -> StoreResult<Vec<AuditEntry>> {
    Ok(page(store, limit, None).await?.entries)
}

pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Where the next (older) page starts; `None` at the oldest entry.
    pub cursor: Option<String>,
}

/// One page of entries, newest first, from `cursor` on. Reasons longer than the
/// metadata holds come cut short, ending in `…`.
pub async fn page<S: KvStore>(
    store: &S,
    limit: u32,
    cursor: Option<&str>,
) -> StoreResult<AuditPage> {
    let listed = store.list(AUDIT_PREFIX, cursor, limit).await?;
    Ok(AuditPage {
        entries: listed
            .keys
            .into_iter()
            .filter_map(|k| stored::from_listing(&k))
            .collect(),
        cursor: listed.cursor.filter(|_| !listed.complete),
    })
}
