//! The repair journal: keys whose second write failed, so the two stores disagree on them
//! until a repair copies the authoritative value over (docs/design.md §4). One entry per
//! key, however many writes failed, so its size is the number of keys out of sync.

use serde::{Deserialize, Serialize};

use crate::migration::keys;
use crate::migration::stored::{self, Listing};
use crate::store::{KvStore, ListedKey, StoreName, StoreResult};

/// A journal entry, in the value and in the metadata (so listing needs no reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    /// The store that missed the write (a failed request's entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lagging: Option<StoreName>,
    /// When the failed request journaled the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
    /// When a repair that wrote must be checked again (a repair's own entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_after: Option<u64>,
}

impl JournalEntry {
    /// The entry of a listed journal key, if its metadata can be read.
    pub fn from_listing(listed: &ListedKey) -> Option<Self> {
        stored::from_listing(listed)
    }

    /// When the entry is due: once what was written before it is visible everywhere (a
    /// repair's own entry says when; a failed request's, when it was journaled).
    pub fn due_at(&self, pass_delay_ms: u64) -> Option<u64> {
        self.check_after
            .or_else(|| self.at.map(|at| at + pass_delay_ms))
    }
}

/// Records that `key` is stale in the `lagging` store.
pub async fn record<S: KvStore>(
    journal: &S,
    key: &str,
    lagging: StoreName,
    now_ms: u64,
) -> StoreResult<()> {
    let entry = JournalEntry {
        lagging: Some(lagging),
        at: Some(now_ms),
        check_after: None,
    };
    let name = keys::journal_entry(key);
    stored::put(journal, &name, &entry, Listing::AlsoInMetadata).await
}

/// Keeps an entry after a repair that wrote, to be checked again at `due`.
pub async fn check_later<S: KvStore>(journal: &S, entry_name: &str, due: u64) -> StoreResult<()> {
    let entry = JournalEntry {
        lagging: None,
        at: None,
        check_after: Some(due),
    };
    stored::put(journal, entry_name, &entry, Listing::AlsoInMetadata).await
}

/// Removes an entry unless a newer failure rewrote it while the key was repaired.
pub async fn forget<S: KvStore>(
    journal: &S,
    entry_name: &str,
    repaired: Option<JournalEntry>,
) -> StoreResult<()> {
    let current = journal.get(entry_name).await?;
    let now: Option<JournalEntry> = current
        .as_ref()
        .and_then(|v| v.metadata.clone())
        .and_then(|m| serde_json::from_value(m).ok());
    if now != repaired {
        return Ok(());
    }
    journal.delete(entry_name).await
}
