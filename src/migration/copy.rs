//! The copy routine the backfill and read-repair share: copy a key from the old store to
//! the new one only when the new store lacks it or holds an older version, byte for byte
//! with its metadata and expiration, then read the old store again and correct the copy
//! if the key changed or vanished meanwhile.
//!
//! Why the re-read suffices: every request that writes a key the new store lacks writes
//! the old store first (see `DataPlane::apply`), so a write that a copy could have
//! overwritten in the new store reached the old store before the re-read.

use futures::future::join_all;
use serde::{Deserialize, Serialize};

use crate::domain::{CustomerRecord, Tombstone, CUSTOMER_PREFIX};
use crate::store::{KvStore, ListedKey, PutOptions, StoreResult, StoredValue, Stores};
use crate::time::{parse_rfc3339_ms, rfc3339};

/// What to do with one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The new store lacks the key or holds an older version.
    Copy,
    /// The new store holds the same bytes and metadata.
    InSync,
    /// The new store holds a newer version (dual writes put it there).
    NewerInNew,
    /// The new store holds a tombstone: the customer was deleted.
    Deleted,
    /// Both stores hold different values that cannot be ordered; reported, not overwritten.
    Conflict,
    /// The key's expiration has passed; KV will drop it.
    Expired,
    /// The key was listed but is gone from the old store.
    Gone,
}

pub fn decide(
    old: Option<&StoredValue>,
    new: Option<&StoredValue>,
    expiration: Option<u64>,
    now_ms: u64,
) -> Verdict {
    if expiration.is_some_and(|at| at * 1000 <= now_ms) {
        return Verdict::Expired;
    }
    let Some(old) = old else { return Verdict::Gone };
    let Some(new) = new else { return Verdict::Copy };
    if Tombstone::is_tombstone(&new.bytes) {
        return Verdict::Deleted;
    }
    if old.bytes == new.bytes && old.metadata == new.metadata {
        return Verdict::InSync;
    }
    match (version(&old.bytes), version(&new.bytes)) {
        (Some(old_at), Some(new_at)) if old_at > new_at => Verdict::Copy,
        (Some(_), Some(_)) => Verdict::NewerInNew,
        _ => Verdict::Conflict,
    }
}

/// A record's version: its `updatedAt` in milliseconds.
fn version(bytes: &[u8]) -> Option<u64> {
    CustomerRecord::from_stored(bytes)
        .ok()?
        .updated_at()
        .and_then(parse_rfc3339_ms)
}

fn is_corrupt_record(key: &str, bytes: &[u8]) -> bool {
    key.starts_with(CUSTOMER_PREFIX) && CustomerRecord::from_stored(bytes).is_err()
}

/// Samples of keys kept per category in a report.
pub const SAMPLE_KEYS: usize = 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CopyCounts {
    pub scanned: u64,
    pub copied: u64,
    pub skipped: u64,
    pub conflicts: u64,
    pub corrupt: u64,
    pub expired: u64,
    /// Copies corrected because the old store changed while they were made.
    pub corrected: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflict_keys: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_keys: Vec<String>,
}

impl CopyCounts {
    pub fn add(&mut self, other: &CopyCounts) {
        self.scanned += other.scanned;
        self.copied += other.copied;
        self.skipped += other.skipped;
        self.conflicts += other.conflicts;
        self.corrupt += other.corrupt;
        self.expired += other.expired;
        self.corrected += other.corrected;
        self.errors += other.errors;
        extend_capped(&mut self.conflict_keys, &other.conflict_keys);
        extend_capped(&mut self.error_keys, &other.error_keys);
    }
}

fn extend_capped(into: &mut Vec<String>, from: &[String]) {
    let room = SAMPLE_KEYS.saturating_sub(into.len());
    into.extend(from.iter().take(room).cloned());
}

/// Copies at most [`crate::store::MAX_BULK_KEYS`] listed keys. Costs three bulk reads
/// plus one write per copied key (and two more operations per correction).
/// With `dry_run` it reads, decides and counts, and writes nothing.
pub async fn copy_chunk<S: KvStore>(
    stores: &Stores<S>,
    keys: &[ListedKey],
    now_ms: u64,
    dry_run: bool,
) -> StoreResult<CopyCounts> {
    let mut counts = CopyCounts {
        scanned: keys.len() as u64,
        ..Default::default()
    };
    let names: Vec<String> = keys.iter().map(|k| k.name.clone()).collect();
    let old_values = stores.old.get_many(&names).await?;
    let new_values = stores.new.get_many(&names).await?;

    let mut to_copy: Vec<(&ListedKey, StoredValue)> = Vec::new();
    for ((listed, old), new) in keys.iter().zip(old_values).zip(new_values) {
        match decide(old.as_ref(), new.as_ref(), listed.expiration, now_ms) {
            Verdict::Copy => {
                let Some(old) = old else { continue };
                if is_corrupt_record(&listed.name, &old.bytes) {
                    counts.corrupt += 1;
                }
                to_copy.push((listed, old));
            }
            Verdict::Expired => counts.expired += 1,
            Verdict::Conflict => {
                counts.conflicts += 1;
                extend_capped(
                    &mut counts.conflict_keys,
                    std::slice::from_ref(&listed.name),
                );
            }
            Verdict::InSync | Verdict::NewerInNew | Verdict::Deleted | Verdict::Gone => {
                counts.skipped += 1
            }
        }
    }
    if dry_run {
        counts.copied = to_copy.len() as u64;
        return Ok(counts);
    }

    let written = write_copies(stores, to_copy, now_ms, &mut counts).await?;
    counts.copied = written;
    Ok(counts)
}

/// Writes the copies, then re-reads and corrects them; returns how many were written.
async fn write_copies<S: KvStore>(
    stores: &Stores<S>,
    to_copy: Vec<(&ListedKey, StoredValue)>,
    now_ms: u64,
    counts: &mut CopyCounts,
) -> StoreResult<u64> {
    let writes = to_copy.iter().map(|(listed, value)| {
        let options = PutOptions {
            expiration: listed.expiration,
            metadata: value.metadata.clone(),
        };
        stores.new.put(&listed.name, &value.bytes, options)
    });
    let results = join_all(writes).await;
    let mut written = Vec::new();
    for ((listed, value), result) in to_copy.into_iter().zip(results) {
        match result {
            Ok(()) => written.push((listed.name.clone(), value)),
            Err(_) => {
                counts.errors += 1;
                extend_capped(&mut counts.error_keys, std::slice::from_ref(&listed.name));
            }
        }
    }
    let copied = written.len() as u64;
    counts.corrected += recheck(stores, written, now_ms).await?;
    Ok(copied)
}

/// Re-reads the old store for keys just copied and corrects the copies of those that
/// changed or vanished. Returns how many were corrected.
async fn recheck<S: KvStore>(
    stores: &Stores<S>,
    copied: Vec<(String, StoredValue)>,
    now_ms: u64,
) -> StoreResult<u64> {
    // The `mutant-no-recheck` build drops the re-check, to show the simulation notices.
    const ROUNDS: usize = if cfg!(feature = "mutant-no-recheck") {
        0
    } else {
        3
    };
    // What the old store held when the new store was last made to match it.
    let mut expected: Vec<(String, Option<StoredValue>)> = copied
        .into_iter()
        .map(|(key, value)| (key, Some(value)))
        .collect();
    let mut corrected = 0;
    for _ in 0..ROUNDS {
        if expected.is_empty() {
            break;
        }
        let names: Vec<String> = expected.iter().map(|(k, _)| k.clone()).collect();
        let now_in_old = stores.old.get_many(&names).await?;
        let mut changed = Vec::new();
        for ((key, was), current) in expected.into_iter().zip(now_in_old) {
            if current == was {
                continue;
            }
            corrected += 1;
            match &current {
                // A writer changed it: its value carries no expiration (API writes have none).
                Some(value) => {
                    let options = PutOptions {
                        expiration: None,
                        metadata: value.metadata.clone(),
                    };
                    stores.new.put(&key, &value.bytes, options).await?;
                }
                None => remove_copy(&stores.new, &key, now_ms).await?,
            }
            // Check again: the old store may change once more while this correction lands.
            changed.push((key, current));
        }
        expected = changed;
    }
    Ok(corrected)
}

/// Undoes a copy whose source was deleted: a customer keeps a tombstone, so that the
/// deletion holds whichever store is read.
async fn remove_copy<S: KvStore>(new_store: &S, key: &str, now_ms: u64) -> StoreResult<()> {
    if key.starts_with(CUSTOMER_PREFIX) {
        new_store
            .put(
                key,
                &Tombstone::bytes(&rfc3339(now_ms)),
                PutOptions::default(),
            )
            .await
    } else {
        new_store.delete(key).await
    }
}

/// Read-repair: copies a key the old store just served (and the new store lacked) into
/// the new store, with the expiration `list` reports for it. Three operations: the
/// list, the write and the re-read.
pub async fn repair_on_read<S: KvStore>(
    stores: &Stores<S>,
    key: &str,
    served: &StoredValue,
    now_ms: u64,
) -> StoreResult<CopyCounts> {
    // The key itself sorts first among the keys it prefixes, so one entry is enough.
    let page = stores.old.list(key, None, 1).await?;
    let Some(listed) = page.keys.into_iter().find(|k| k.name == key) else {
        return Ok(CopyCounts::default());
    };
    let mut counts = CopyCounts {
        scanned: 1,
        ..Default::default()
    };
    if decide(Some(served), None, listed.expiration, now_ms) == Verdict::Copy {
        counts.copied =
            write_copies(stores, vec![(&listed, served.clone())], now_ms, &mut counts).await?;
    }
    Ok(counts)
}
