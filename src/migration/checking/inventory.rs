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
use crate::store::budget::Budget;
use crate::store::{read_many, KvStore, PutOptions, StoreResult, Stores, MAX_BULK_KEYS};

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
}

/// How a key the new store held before the migration compares with the old store: the
/// value of its mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Found {
    NewOnly,
    Different,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    pub found: Found,
    pub at: u64,
}

impl Inventory {
    fn new(now_ms: u64) -> Self {
        Self {
            started_at: now_ms,
            updated_at: now_ms,
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

    fn note(&mut self, found: Option<Found>, key: &str) {
        let (count, samples) = match found {
            None => {
                self.same += 1;
                return;
            }
            Some(Found::NewOnly) => (&mut self.new_only, &mut self.new_only_keys),
            Some(Found::Different) => (&mut self.different, &mut self.different_keys),
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
/// `budget` allows, and saves where it stands; `stores` should be metered by `budget`.
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
    let result = advance(stores, budget, &mut inventory, now_ms).await;
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
            sort_batch(stores, inventory, batch, now_ms).await?;
            inventory.done_through = batch.last().cloned();
            inventory.updated_at = now_ms;
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

/// Sorts one batch of new-store keys and marks those the migration must leave alone.
async fn sort_batch<S: KvStore>(
    stores: &Stores<S>,
    inventory: &mut Inventory,
    names: &[String],
    now_ms: u64,
) -> StoreResult<()> {
    let new_values = read_many(&stores.new, names).await?;
    let old_values = read_many(&stores.old, names).await?;
    for ((name, new), old) in names.iter().zip(new_values).zip(old_values) {
        let Some(new) = new else { continue };
        // Gone since listed, or a deletion's marker: not a customer to keep.
        if Tombstone::is_tombstone(&new.bytes) {
            continue;
        }
        inventory.listed += 1;
        let found = match old {
            None => Some(Found::NewOnly),
            Some(old) if old.bytes == new.bytes && old.metadata == new.metadata => None,
            Some(_) => Some(Found::Different),
        };
        if let Some(found) = found {
            let mark = Mark { found, at: now_ms };
            let bytes = stored::encode(&mark)?;
            stores
                .new
                .put(&keys::preexisting(name), &bytes, PutOptions::default())
                .await?;
        }
        inventory.note(found, name);
    }
    Ok(())
}
