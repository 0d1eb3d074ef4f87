//! Every conflict the backfill could not settle, kept by key so the operator can see all
//! of them, not only the report's samples (docs/design.md §6, "Conflicts"). The backfill
//! writes an entry per conflict it meets; [`page`] lists the entries with both stores'
//! values side by side, read when asked, so an entry whose stores have since come to
//! agree (the customer was written through the API) shows as settled.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::migration::checking::resolve;
use crate::migration::key_state;
use crate::migration::keys::{self, CONFLICT_PREFIX};
use crate::store::{read_many, KvStore, PutOptions, StoreResult, StoredValue, Stores};

/// Entries listed per page at most: each page reads three values per entry in bulk.
pub const MAX_PAGE: u32 = 100;

/// Why the backfill left a key alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// Both stores hold different values and `updatedAt` cannot order them (missing or
    /// unreadable on either side, or an email mapping naming two customers).
    Unordered,
    /// The old store's value is newer, but the new store still holds the value it held
    /// before the migration (the inventory's mark, §16).
    Preexisting,
}

/// An entry as stored under `__migration/conflict/<key>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub key: String,
    pub kind: ConflictKind,
    /// When the backfill last met it.
    pub found_at: u64,
}

/// Writes an entry for each conflict found: one KV write each, in place of the copy the
/// backfill did not make, so a chunk never costs more than its copies would.
pub async fn record<S: KvStore>(
    new_store: &S,
    found: &[(String, ConflictKind)],
    now_ms: u64,
) -> StoreResult<()> {
    for (key, kind) in found {
        let entry = Entry {
            key: key.clone(),
            kind: *kind,
            found_at: now_ms,
        };
        let bytes = serde_json::to_vec(&entry).unwrap_or_default();
        new_store
            .put(&keys::conflict(key), &bytes, PutOptions::default())
            .await?;
    }
    Ok(())
}

/// One store's side of a conflict as the listing shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Side {
    pub present: bool,
    /// The value as JSON when it parses, else as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl Side {
    fn of(stored: Option<&StoredValue>) -> Self {
        let Some(stored) = stored else {
            return Self {
                present: false,
                value: None,
                metadata: None,
            };
        };
        let value = serde_json::from_slice(&stored.bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&stored.bytes).into()));
        Self {
            present: true,
            value: Some(value),
            metadata: stored.metadata.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    pub key: String,
    pub kind: ConflictKind,
    pub found_at: u64,
    pub old: Side,
    pub new: Side,
    /// Whether the stores agree now (`key_state::agree`): settled since it was found.
    pub settled: bool,
    /// Both values as read now (`resolve::fingerprint`): a settle given it acts only if
    /// they are still what the operator saw.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictPage {
    pub conflicts: Vec<Conflict>,
    /// Where the next page starts; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    pub complete: bool,
}

/// One page of entries, from `cursor`, with both stores' values: one list and three bulk
/// reads (the entries, then each store's values).
pub async fn page<S: KvStore>(
    stores: &Stores<S>,
    cursor: Option<&str>,
    limit: u32,
) -> StoreResult<ConflictPage> {
    Ok(read_page(stores, cursor, limit).await?.0)
}

/// What a prune of one page did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pruned {
    pub checked: u64,
    pub removed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    pub complete: bool,
}

/// Removes the entries of one page whose stores agree now: [`page`]'s reads plus one
/// delete per settled entry. An entry the backfill meets again is written again.
pub async fn prune<S: KvStore>(stores: &Stores<S>, cursor: Option<&str>) -> StoreResult<Pruned> {
    let (page, entry_names) = read_page(stores, cursor, MAX_PAGE).await?;
    let mut removed = 0;
    for (conflict, name) in page.conflicts.iter().zip(&entry_names) {
        if conflict.settled {
            stores.new.delete(name).await?;
            removed += 1;
        }
    }
    Ok(Pruned {
        checked: page.conflicts.len() as u64,
        removed,
        complete: page.complete,
        cursor: page.cursor,
    })
}

/// A page of entries from `cursor`, with each entry's own key name, and where the next
/// page starts: one list and one bulk read.
async fn named_entries<S: KvStore>(
    stores: &Stores<S>,
    cursor: Option<&str>,
    limit: u32,
) -> StoreResult<(Vec<(String, Entry)>, Option<String>)> {
    let listed = stores
        .new
        .list(CONFLICT_PREFIX, cursor, limit.clamp(1, MAX_PAGE))
        .await?;
    let names: Vec<String> = listed.keys.into_iter().map(|k| k.name).collect();
    let entries = read_many(&stores.new, &names)
        .await?
        .into_iter()
        .zip(names)
        .filter_map(|(stored, name)| {
            let entry = serde_json::from_slice(&stored?.bytes).ok()?;
            Some((name, entry))
        })
        .collect();
    Ok((entries, listed.cursor.filter(|_| !listed.complete)))
}

/// A page of entries from `cursor`, and where the next page starts.
pub async fn entries<S: KvStore>(
    stores: &Stores<S>,
    cursor: Option<&str>,
    limit: u32,
) -> StoreResult<(Vec<Entry>, Option<String>)> {
    let (named, cursor) = named_entries(stores, cursor, limit).await?;
    Ok((named.into_iter().map(|(_, e)| e).collect(), cursor))
}

/// A page, and the entries' own key names alongside its conflicts.
async fn read_page<S: KvStore>(
    stores: &Stores<S>,
    cursor: Option<&str>,
    limit: u32,
) -> StoreResult<(ConflictPage, Vec<String>)> {
    let (named, cursor) = named_entries(stores, cursor, limit).await?;
    let (entry_names, entries): (Vec<String>, Vec<Entry>) = named.into_iter().unzip();
    let keys: Vec<String> = entries.iter().map(|e| e.key.clone()).collect();
    let old = read_many(&stores.old, &keys).await?;
    let new = read_many(&stores.new, &keys).await?;
    let conflicts = entries
        .into_iter()
        .zip(old.iter().zip(new.iter()))
        .map(|(entry, (old, new))| Conflict {
            settled: key_state::agree(old.as_ref(), new.as_ref()),
            fingerprint: resolve::fingerprint(old.as_ref(), new.as_ref()),
            old: Side::of(old.as_ref()),
            new: Side::of(new.as_ref()),
            key: entry.key,
            kind: entry.kind,
            found_at: entry.found_at,
        })
        .collect();
    let page = ConflictPage {
        conflicts,
        complete: cursor.is_none(),
        cursor,
    };
    Ok((page, entry_names))
}
