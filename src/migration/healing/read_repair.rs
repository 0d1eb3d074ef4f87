//! Checks of read-repair copies (docs/design.md §5). A read-repair copies into the new
//! store a value the old store served; both reads may have been stale, so the copy may
//! have landed an older value over a write made elsewhere. Each copy therefore first
//! leaves an entry with a digest of what it copies, and the entry is checked once the
//! copy is visible everywhere ([`check`]): settled if a writer replaced the copy or the
//! stores agree, else corrected from the old store — only while every writer writes it
//! ([`may_correct`]) — and the correction checked the same way.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::migration::key_state;
use crate::migration::keys;
use crate::migration::stored::{self, Listing};
use crate::phase::Phase;
use crate::store::budget::{Budget, BOOKKEEPING_RESERVE};
use crate::store::{read_many, KvStore, ListedKey, StoreName, StoreResult, StoredValue, Stores};

/// Entries listed per run; how many are checked is bounded by the run's budget.
pub const ENTRIES_PER_RUN: u32 = 1_000;
/// Entries checked with one pair of bulk reads.
const CHECK_CHUNK: usize = crate::store::MAX_BULK_KEYS;

/// A digest of a key's state in a store: its bytes and metadata, or its absence.
pub fn digest(value: Option<&StoredValue>) -> String {
    let Some(value) = value else {
        return "absent".to_owned();
    };
    let mut hasher = Sha256::new();
    hasher.update(&value.bytes);
    hasher.update([0]);
    if let Some(metadata) = &value.metadata {
        hasher.update(metadata.to_string().as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Records, before a copy into the new store, that `key` must be checked at `due_ms`.
/// `copied` holds the digests of the states the copy may have left in the new store.
pub async fn expect<S: KvStore>(
    new_store: &S,
    key: &str,
    copied: &[String],
    due_ms: u64,
) -> StoreResult<()> {
    let check = CheckEntry {
        due: due_ms,
        copied: copied.to_vec(),
    };
    let name = keys::read_repair_check(key, due_ms);
    stored::put(new_store, &name, &check, Listing::AlsoInMetadata).await
}

/// A stored check entry, in the value and in the metadata. Each digest is 64 hex
/// characters and an entry holds at most two, well inside KV's 1,024-byte metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CheckEntry {
    due: u64,
    copied: Vec<String>,
}

/// An entry as listed.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    key: String,
    due_ms: u64,
    copied: Vec<String>,
}

impl Entry {
    /// An entry whose metadata is unreadable is due at once and vouches for no copy: it
    /// goes at its first check.
    fn from_listed(listed: &ListedKey) -> Entry {
        let stored: Option<CheckEntry> = stored::from_listing(listed);
        Entry {
            name: listed.name.clone(),
            key: keys::read_repair_checked_key(&listed.name).to_owned(),
            due_ms: stored.as_ref().map_or(0, |e| e.due),
            copied: stored.map(|e| e.copied).unwrap_or_default(),
        }
    }
}

/// What a check of one entry found.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// The copy was right, or a writer replaced it: the entry may go.
    Settled,
    /// The new store still holds the copy and the old store something else: the new
    /// store must hold this (the old store's state; `None`: the key is gone).
    Correct(Option<StoredValue>),
    /// It needs correcting, but the old store is no longer a safe source.
    Defer,
}

/// Decides one entry from the stores' current states.
pub fn check(
    copied: &[String],
    old: Option<&StoredValue>,
    new: Option<&StoredValue>,
    may_correct: bool,
) -> Check {
    if !copied.contains(&digest(new)) || key_state::agree(old, new) {
        return Check::Settled;
    }
    if may_correct {
        Check::Correct(old.cloned())
    } else {
        Check::Defer
    }
}

/// Whether the old store may be copied from: every writer writes it, and it is not the
/// store catching up after a rollback.
pub fn may_correct(phase: Phase, old_store_diverged: bool) -> bool {
    phase.read_repairs() && !old_store_diverged
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CheckReport {
    pub examined: u32,
    pub settled: u32,
    pub corrected: u32,
    /// Entries that need correcting while the old store is not a safe source, or whose
    /// check failed; they stay.
    pub deferred: u32,
    /// Entries not yet due.
    pub waiting: u32,
    /// How long until the first of those is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// More entries than one run lists, or than its budget checks.
    pub more: bool,
}

impl CheckReport {
    fn waits(&mut self, wait_ms: u64) {
        self.waiting += 1;
        self.wait_ms = Some(self.wait_ms.map_or(wait_ms, |w| w.min(wait_ms)));
    }
}

/// Checks the due entries, as many as `budget` affords: per chunk of 100, two bulk
/// reads, then a delete per settled entry or an entry and a write per correction.
pub async fn drain<S: KvStore>(
    stores: &Stores<S>,
    budget: &Budget,
    may_correct: bool,
    pass_delay_ms: u64,
    now_ms: u64,
) -> StoreResult<CheckReport> {
    let page = stores
        .new
        .list(keys::READ_REPAIR_CHECK_PREFIX, None, ENTRIES_PER_RUN)
        .await?;
    let mut report = CheckReport {
        more: !page.complete,
        ..Default::default()
    };
    let mut due = Vec::new();
    for entry in page.keys.iter().map(Entry::from_listed) {
        match entry.due_ms.checked_sub(now_ms).filter(|wait| *wait > 0) {
            Some(wait) => report.waits(wait),
            None => due.push(entry),
        }
    }
    for listed_chunk in due.chunks(CHECK_CHUNK) {
        // Two bulk reads, and at most two writes per entry.
        let affordable = budget.remaining().saturating_sub(2 + BOOKKEEPING_RESERVE) / 2;
        let chunk = &listed_chunk[..listed_chunk.len().min(affordable as usize)];
        if chunk.is_empty() {
            report.more = true;
            break;
        }
        let keys: Vec<String> = chunk.iter().map(|e| e.key.clone()).collect();
        let old = read_many(&stores.old, &keys).await?;
        let new = read_many(&stores.new, &keys).await?;
        for ((entry, old), new) in chunk.iter().zip(old).zip(new) {
            report.examined += 1;
            let verdict = check(&entry.copied, old.as_ref(), new.as_ref(), may_correct);
            // A check that fails leaves its entry for the next run.
            match verdict {
                Check::Settled => match stores.new.delete(&entry.name).await {
                    Ok(()) => report.settled += 1,
                    Err(_) => report.deferred += 1,
                },
                Check::Correct(state) => {
                    let due = now_ms + pass_delay_ms;
                    let corrected = async {
                        correct(stores, &entry.key, new.as_ref(), state, due, now_ms).await?;
                        stores.new.delete(&entry.name).await
                    };
                    match corrected.await {
                        Ok(()) => report.corrected += 1,
                        Err(_) => report.deferred += 1,
                    }
                }
                Check::Defer => report.deferred += 1,
            }
        }
        if chunk.len() < listed_chunk.len() {
            report.more = true;
            break;
        }
    }
    Ok(report)
}

/// Makes the new store hold `state`, after recording an entry for the correction that
/// covers both what the new store holds now and what it is about to hold.
pub async fn correct<S: KvStore>(
    stores: &Stores<S>,
    key: &str,
    in_new: Option<&StoredValue>,
    state: Option<StoredValue>,
    due_ms: u64,
    now_ms: u64,
) -> StoreResult<()> {
    let target = key_state::matching(StoreName::New, key, state.as_ref(), now_ms);
    expect(
        &stores.new,
        key,
        &[digest(in_new), digest(target.as_ref())],
        due_ms,
    )
    .await?;
    key_state::write(&stores.new, key, target.as_ref(), None).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Tombstone;
    use crate::store::test_value as value;
    use serde_json::json;

    #[test]
    fn a_copy_a_writer_replaced_is_settled() {
        let copied = [digest(Some(&value("v0")))];
        let verdict = check(&copied, Some(&value("v1")), Some(&value("v2")), true);
        assert_eq!(verdict, Check::Settled);
    }

    #[test]
    fn a_copy_the_old_store_still_holds_is_settled() {
        let copied = [digest(Some(&value("v0")))];
        let verdict = check(&copied, Some(&value("v0")), Some(&value("v0")), true);
        assert_eq!(verdict, Check::Settled);
    }

    #[test]
    fn a_stale_copy_is_corrected_from_the_old_store() {
        let copied = [digest(Some(&value("v0")))];
        let verdict = check(&copied, Some(&value("v1")), Some(&value("v0")), true);
        assert_eq!(verdict, Check::Correct(Some(value("v1"))));
    }

    #[test]
    fn a_copy_of_a_customer_deleted_since_is_corrected_to_nothing() {
        let copied = [digest(Some(&value("v0")))];
        assert_eq!(
            check(&copied, None, Some(&value("v0")), true),
            Check::Correct(None)
        );
    }

    #[test]
    fn a_tombstone_agrees_with_a_key_the_old_store_lacks() {
        let marker = StoredValue {
            bytes: Tombstone::bytes("2027-01-01T00:00:00.000Z"),
            metadata: None,
        };
        let copied = [digest(Some(&marker))];
        assert_eq!(check(&copied, None, Some(&marker), true), Check::Settled);
    }

    #[test]
    fn metadata_counts_in_the_digest() {
        let with_metadata = StoredValue {
            metadata: Some(json!({ "a": 1 })),
            ..value("v0")
        };
        assert_ne!(digest(Some(&value("v0"))), digest(Some(&with_metadata)));
        assert_ne!(digest(None), digest(Some(&value(""))));
    }

    #[test]
    fn no_correction_once_the_old_store_is_not_a_safe_source() {
        let copied = [digest(Some(&value("v0")))];
        let verdict = check(&copied, Some(&value("v1")), Some(&value("v0")), false);
        assert_eq!(verdict, Check::Defer);
        assert!(may_correct(Phase::Backfill, false));
        assert!(!may_correct(Phase::NewPrimary, false));
        assert!(!may_correct(Phase::Backfill, true));
        assert!(!may_correct(Phase::Legacy, false));
    }
}
