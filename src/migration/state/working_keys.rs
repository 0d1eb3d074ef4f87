//! Removing the migration's working keys from KV once it is finalized (docs/design.md
//! §9, "Finalizing"): journal, fallback and read-repair entries, conflict and
//! email-issue entries, the inventory and its marks, and run state where it is in KV
//! rather than the coordinator's ledger. Nothing reads them after the finalize has
//! settled; the phase record and the audit stay. A page per call, the caller carrying
//! the cursor: a skipped page only leaves keys behind.

use serde::{Deserialize, Serialize};

use crate::migration::keys::{AUDIT_PREFIX, MIGRATION_PREFIX, PHASE};
use crate::store::{KvStore, StoreResult};

/// Keys listed per call: at most one delete each, within the 1,000 operations.
pub const PAGE: u32 = 900;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Purged {
    pub dry_run: bool,
    pub listed: u64,
    /// Removed, or that a dry run would remove.
    pub removed: u64,
    /// The phase record and the audit entries.
    pub kept: u64,
    /// Where the next call continues; `None` once complete.
    pub cursor: Option<String>,
    pub complete: bool,
}

/// Whether `key` outlives the migration: the phase record and the audit.
fn kept(key: &str) -> bool {
    key == PHASE || key.starts_with(AUDIT_PREFIX)
}

/// One page of the `__migration/` keys from `cursor`: removes (or with `dry_run` counts)
/// every one but those [`kept`].
pub async fn page<S: KvStore>(
    new_store: &S,
    (cursor, limit): (Option<&str>, u32),
    dry_run: bool,
) -> StoreResult<Purged> {
    let listed = new_store
        .list(MIGRATION_PREFIX, cursor, limit.min(PAGE))
        .await?;
    let mut purged = Purged {
        dry_run,
        listed: listed.keys.len() as u64,
        complete: listed.complete,
        cursor: if listed.complete { None } else { listed.cursor },
        ..Purged::default()
    };
    for key in &listed.keys {
        if kept(&key.name) {
            purged.kept += 1;
            continue;
        }
        if !dry_run {
            new_store.delete(&key.name).await?;
        }
        purged.removed += 1;
    }
    Ok(purged)
}
