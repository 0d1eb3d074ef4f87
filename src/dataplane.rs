//! Reads and writes routed by the current phase: the one place that decides which store
//! a customer key is read from and written to, in which order, and what happens when the
//! second write fails.

use std::cell::RefCell;

use futures::future::join_all;
use serde_json::Value;

use crate::domain::Tombstone;
use crate::error::ApiError;
use crate::migration::{copy, fallback, journal};
use crate::phase::Phase;
use crate::store::{KvStore, PutOptions, StoreName, StoreResult, StoredValue, Stores};
use crate::time::rfc3339;

/// A value found by the read path, and which store served it.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub value: StoredValue,
    pub store: StoreName,
}

/// One key's change in a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put {
        key: String,
        bytes: Vec<u8>,
        metadata: Option<Value>,
    },
    /// Removes a key; with `tombstone`, the new store keeps a tombstone instead where
    /// the phase asks for one (customer records, never email mappings).
    Remove { key: String, tombstone: bool },
}

impl Change {
    pub fn key(&self) -> &str {
        match self {
            Change::Put { key, .. } | Change::Remove { key, .. } => key,
        }
    }
}

/// The stores as the current phase routes them, for the duration of one request.
pub struct DataPlane<'a, S> {
    pub stores: &'a Stores<S>,
    pub phase: Phase,
    pub now_ms: u64,
    /// Things worth a log line that did not fail the request (no private data).
    pub warnings: RefCell<Vec<String>>,
}

impl<'a, S: KvStore> DataPlane<'a, S> {
    pub fn new(stores: &'a Stores<S>, phase: Phase, now_ms: u64) -> Self {
        Self {
            stores,
            phase,
            now_ms,
            warnings: RefCell::new(Vec::new()),
        }
    }

    /// Reads `key` from the stores the phase reads, in order. A tombstone anywhere means
    /// the key was deleted and stops the search. A value served by any store but the
    /// first is a fallback hit and is recorded (a write on the fallback path only, so a
    /// read that hits the new store pays nothing for it).
    pub async fn read(&self, key: &str) -> StoreResult<Option<Found>> {
        for (position, &store) in self.phase.routing().reads.iter().enumerate() {
            let Some(value) = self.stores.get(store).get(key).await? else {
                continue;
            };
            if Tombstone::is_tombstone(&value.bytes) {
                return Ok(None);
            }
            if position > 0 {
                self.after_fallback(key, &value).await;
            }
            return Ok(Some(Found { value, store }));
        }
        Ok(None)
    }

    /// Applies `changes` to the stores the phase writes, the authoritative one first.
    pub async fn apply(&self, changes: &[Change]) -> Result<(), ApiError> {
        self.apply_ordered(changes, self.phase.routing().writes)
            .await
    }

    /// Applies changes to a key that was read from `served_by`, writing that store first
    /// when the phase writes it. A key served by the old store is absent from the new
    /// one, so the old store is the one reads see; writing it first also means a
    /// concurrent backfill copy that could overwrite this write in the new store sees
    /// the change when it re-reads the old store (see `migration::copy`).
    pub async fn apply_after_read(
        &self,
        changes: &[Change],
        served_by: StoreName,
    ) -> Result<(), ApiError> {
        let writes = self.phase.routing().writes;
        if writes.len() == 2 && writes[1] == served_by {
            self.apply_ordered(changes, &[writes[1], writes[0]]).await
        } else {
            self.apply_ordered(changes, writes).await
        }
    }

    /// Every change reaches the first store, in order; a failure there fails the request
    /// before anything else is written. The changes then go to the second store
    /// together; a key whose second write fails is recorded in the repair journal and
    /// the request still succeeds — unless the journal cannot be written either, in
    /// which case the request fails, because an acknowledged write must never be
    /// silently out of sync.
    async fn apply_ordered(&self, changes: &[Change], order: &[StoreName]) -> Result<(), ApiError> {
        let first = order[0];
        for change in changes {
            self.apply_to(first, change).await?;
        }
        let Some(&second) = order.get(1) else {
            return Ok(());
        };
        let results = join_all(changes.iter().map(|c| self.apply_to(second, c))).await;
        for (change, result) in changes.iter().zip(results) {
            let Err(write_err) = result else { continue };
            self.warn(format!("second write failed, journaling: {write_err}"));
            if let Err(journal_err) =
                journal::record(&self.stores.new, change.key(), second, self.now_ms).await
            {
                return Err(ApiError::new(
                    503,
                    "store_unavailable",
                    format!(
                        "the write reached the {} store but neither the {} store nor the repair journal: {journal_err}",
                        first.as_str(),
                        second.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn apply_to(&self, store: StoreName, change: &Change) -> StoreResult<()> {
        let kv = self.stores.get(store);
        match change {
            Change::Put {
                key,
                bytes,
                metadata,
            } => {
                let options = PutOptions {
                    expiration: None,
                    metadata: metadata.clone(),
                };
                kv.put(key, bytes, options).await
            }
            Change::Remove { key, tombstone } => {
                if *tombstone && store == StoreName::New && self.phase.tombstones_deletes() {
                    let marker = Tombstone::bytes(&rfc3339(self.now_ms));
                    kv.put(key, &marker, PutOptions::default()).await
                } else {
                    kv.delete(key).await
                }
            }
        }
    }

    /// Records a fallback hit and, while both stores are written (phases 2 and 3),
    /// copies the key into the new store so the next read hits it. Not in phase 4: its
    /// writers skip the old store, so a copy racing one of them could not be checked.
    /// Neither step fails the read.
    async fn after_fallback(&self, key: &str, served: &StoredValue) {
        if let Err(err) = fallback::record(&self.stores.new, key, self.phase, self.now_ms).await {
            self.warn(format!("could not record a fallback hit: {err}"));
        }
        if self.phase.routing().writes.len() == 2 {
            if let Err(err) = copy::repair_on_read(self.stores, key, served, self.now_ms).await {
                self.warn(format!("read-repair failed: {err}"));
            }
        }
    }

    fn warn(&self, message: String) {
        self.warnings.borrow_mut().push(message);
    }
}
