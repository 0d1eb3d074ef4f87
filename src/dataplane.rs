//! Reads and writes routed by the current phase: the one place that decides which store
//! a customer key is read from and written to, in which order, and what happens when the
//! second write fails.

use std::cell::RefCell;

use futures::future::join_all;
use serde_json::Value;

use crate::domain::Tombstone;
use crate::error::ApiError;
use crate::migration::{fallback, journal};
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
                if let Err(err) =
                    fallback::record(&self.stores.new, key, self.phase, self.now_ms).await
                {
                    self.warn(format!("could not record a fallback hit: {err}"));
                }
            }
            return Ok(Some(Found { value, store }));
        }
        Ok(None)
    }

    /// Applies `changes` to the stores the phase writes. Every change reaches the
    /// authoritative store first, in order; a failure there fails the request before
    /// anything else is written. The changes then go to the second store together; a key
    /// whose second write fails is recorded in the repair journal and the request still
    /// succeeds — unless the journal cannot be written either, in which case the request
    /// fails, because an acknowledged write must never be silently out of sync.
    pub async fn apply(&self, changes: &[Change]) -> Result<(), ApiError> {
        let writes = self.phase.routing().writes;
        let authoritative = writes[0];
        for change in changes {
            self.apply_to(authoritative, change).await?;
        }
        let Some(&secondary) = writes.get(1) else {
            return Ok(());
        };
        let results = join_all(changes.iter().map(|c| self.apply_to(secondary, c))).await;
        for (change, result) in changes.iter().zip(results) {
            let Err(write_err) = result else { continue };
            self.warn(format!("secondary write failed, journaling: {write_err}"));
            if let Err(journal_err) =
                journal::record(&self.stores.new, change.key(), secondary, self.now_ms).await
            {
                return Err(ApiError::new(
                    503,
                    "store_unavailable",
                    format!(
                        "the write reached the {} store but neither the {} store nor the repair journal: {journal_err}",
                        authoritative.as_str(),
                        secondary.as_str()
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

    fn warn(&self, message: String) {
        self.warnings.borrow_mut().push(message);
    }
}
