//! The inventory of what `CUSTOMER_KV` held before the migration first wrote to it
//! (docs/design.md §16): another service may have created customers there. Taken in
//! phase 0, it walks the new store's customer keys and sorts each into only in the new
//! store, in both with equal values, or in both with different values. The first and
//! the last are marked (`keys::preexisting`), once per key, so that later the
//! verification reports them apart from real extras and the backfill never overwrites
//! them. It is resumable like the verification: progress is saved after every batch.

use serde::{Deserialize, Serialize};

use crate::domain::{Tombstone, CUSTOMER_PREFIX, EMAIL_PREFIX};
use crate::migration::keys;
use crate::migration::stored::{self, Listing};
use crate::store::budget::metered;
use crate::store::budget::Budget;
use crate::store::{
    read_many, KvStore, PutOptions, StoreResult, StoredValue, Stores, MAX_BULK_KEYS,
};

const LIST_PAGE: u32 = 1_000;
/// Keys named per category.
const SAMPLE_KEYS: usize = 20;
const FAMILIES: [&str; 2] = [CUSTOMER_PREFIX, EMAIL_PREFIX];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Inventory {
    /// Index into the key families; 2 once complete.
    pub family: usize,
    /// The cursor that lists the page in progress.
    pub cursor: Option<String>,
    /// Every key up to this one (in the current family) has been sorted.
    pub done_through: Option<String>,
    pub started_at: u64,
    pub updated_at: u64,
    pub completed_at: Option<u64>,
    pub listed: u64,
    pub new_only: u64,
    pub same: u64,
    pub different: u64,
    pub new_only_keys: Vec<String>,
    pub different_keys: Vec<String>,
    /// Whether keys equal in both stores are marked too (`Found::Same`), as every
    /// inventory since `purge-new` is: without those marks a purge could not tell them
    /// from the migration's copies.
    pub marks_same: bool,
}

/// How a key the new store held before the migration compares with the old store: the
/// value of its mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Found {
    NewOnly,
    Different,
    /// Equal in both stores: the migration owes it nothing, but a purge of the new store
    /// must keep it (docs/design.md §9, "Purging the new store").
    Same,
}

impl Found {
    /// Whether the key must be left as the inventory found it: a copy never overwrites
    /// it and the verification counts it apart. A `Same` key is an ordinary legacy
    /// customer to both.
    pub fn held_back(self) -> bool {
        matches!(self, Found::NewOnly | Found::Different)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    pub found: Found,
    pub at: u64,
    /// The SHA-256 of the value found: the mark protects that value, not whatever the
    /// key holds after someone settled it.
    #[serde(default)]
    pub digest: String,
}

impl Mark {
    /// Whether the new store still holds the value the inventory found.
    pub fn still_holds(&self, value: &StoredValue) -> bool {
        self.digest == digest(value)
    }
}

/// A value's fingerprint: its bytes and its metadata.
pub fn digest(value: &StoredValue) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(&value.bytes);
    hash.update(
        value
            .metadata
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    );
    hex::encode(hash.finalize())
}

impl Inventory {
    fn new(now_ms: u64) -> Self {
        Self {
            started_at: now_ms,
            updated_at: now_ms,
            marks_same: true,
            ..Self::default()
        }
    }

    pub fn complete(&self) -> bool {
        self.family >= FAMILIES.len()
    }

    /// Keys the migration must leave as they are.
    pub fn preexisting(&self) -> u64 {
        self.new_only + self.different
    }

    fn note(&mut self, found: Found, key: &str) {
        let (count, samples) = match found {
            Found::Same => {
                self.same += 1;
                return;
            }
            Found::NewOnly => (&mut self.new_only, &mut self.new_only_keys),
            Found::Different => (&mut self.different, &mut self.different_keys),
        };
        *count += 1;
        if samples.len() < SAMPLE_KEYS {
            samples.push(key.to_owned());
        }
    }
}

pub async fn load<S: KvStore>(new_store: &S) -> StoreResult<Option<Inventory>> {
    stored::get(new_store, keys::INVENTORY).await
}

/// Whether the inventory found `key` only in the new store: a customer another service
/// created there, which reads in phases 0 and 1 find in the new store (docs/design.md
/// §16). One read.
pub async fn found_only_in_new_store<S: KvStore>(new_store: &S, key: &str) -> StoreResult<bool> {
    let mark = new_store.get(&keys::preexisting(key)).await?;
    Ok(mark
        .and_then(|v| serde_json::from_slice::<Mark>(&v.bytes).ok())
        .is_some_and(|m| m.found == Found::NewOnly))
}

/// The marks of `names`, in their order: one bulk read per 100 keys.
pub async fn marks<S: KvStore>(new_store: &S, names: &[String]) -> StoreResult<Vec<Option<Mark>>> {
    let mark_keys: Vec<String> = names.iter().map(|n| keys::preexisting(n)).collect();
    let mut found = Vec::with_capacity(names.len());
    for chunk in mark_keys.chunks(MAX_BULK_KEYS) {
        for value in read_many(new_store, chunk).await? {
            found.push(value.and_then(|v| serde_json::from_slice(&v.bytes).ok()));
        }
    }
    Ok(found)
}

/// Starts (or, with `restart`, starts over) or continues the inventory as far as
/// `budget` allows, and saves where it stands. The walk is metered by `budget`; the
/// save is not, so that a walk the budget stopped is never lost.
pub async fn run<S: KvStore>(
    stores: &Stores<S>,
    budget: &Budget,
    restart: bool,
    now_ms: u64,
) -> StoreResult<Inventory> {
    let mut inventory = match load(&stores.new).await? {
        Some(inventory) if !restart => inventory,
        _ => Inventory::new(now_ms),
    };
    let result = advance(&metered(stores, budget), budget, &mut inventory, now_ms).await;
    stored::put(&stores.new, keys::INVENTORY, &inventory, Listing::ValueOnly).await?;
    result.map(|()| inventory)
}

async fn advance<S: KvStore>(
    stores: &Stores<S>,
    budget: &Budget,
    inventory: &mut Inventory,
    now_ms: u64,
) -> StoreResult<()> {
    // A batch costs a list, two bulk reads and a write per mark.
    while !inventory.complete() && budget.affords(3 + MAX_BULK_KEYS as u32) {
        let prefix = FAMILIES[inventory.family];
        let page = stores
            .new
            .list(prefix, inventory.cursor.as_deref(), LIST_PAGE)
            .await?;
        let through = inventory.done_through.clone();
        let pending: Vec<String> = page
            .keys
            .into_iter()
            .map(|k| k.name)
            .filter(|name| through.as_ref().is_none_or(|d| name > d))
            .collect();
        for batch in pending.chunks(MAX_BULK_KEYS) {
            if !budget.affords(2 + batch.len() as u32) {
                return Ok(());
            }
            // A batch counts whole or not at all: one that fails or runs out of budget
            // is sorted again by the next call, and must not be counted twice.
            let mut sorted = inventory.clone();
            if !sort_batch(stores, budget, &mut sorted, batch, now_ms).await? {
                return Ok(());
            }
            sorted.done_through = batch.last().cloned();
            sorted.updated_at = now_ms;
            *inventory = sorted;
        }
        if page.complete {
            inventory.family += 1;
            inventory.cursor = None;
            inventory.done_through = None;
            if inventory.complete() {
                inventory.completed_at = Some(now_ms);
            }
        } else {
            inventory.cursor = page.cursor;
            inventory.done_through = None;
        }
        inventory.updated_at = now_ms;
    }
    Ok(())
}

/// Sorts one batch of new-store keys and marks those the migration must leave alone;
/// `false` when the budget cannot pay for its marks (a bulk read KV refused for its
/// size splits into several).
async fn sort_batch<S: KvStore>(
    stores: &Stores<S>,
    budget: &Budget,
    inventory: &mut Inventory,
    names: &[String],
    now_ms: u64,
) -> StoreResult<bool> {
    let new_values = read_many(&stores.new, names).await?;
    let old_values = read_many(&stores.old, names).await?;
    if !budget.affords(names.len() as u32) {
        return Ok(false);
    }
    for ((name, new), old) in names.iter().zip(new_values).zip(old_values) {
        let Some(new) = new else { continue };
        // Gone since listed, or a deletion's marker: not a customer to keep.
        if Tombstone::is_tombstone(&new.bytes) {
            continue;
        }
        inventory.listed += 1;
        let found = match old {
            None => Found::NewOnly,
            Some(old) if old.bytes == new.bytes && old.metadata == new.metadata => Found::Same,
            Some(_) => Found::Different,
        };
        let mark = Mark {
            found,
            at: now_ms,
            digest: digest(&new),
        };
        let bytes = stored::encode(&mark)?;
        stores
            .new
            .put(&keys::preexisting(name), &bytes, PutOptions::default())
            .await?;
        inventory.note(found, name);
    }
    Ok(true)
}
