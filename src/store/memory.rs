//! An in-memory [`KvStore`] for native tests: it counts every operation (so tests can
//! state the KV cost of a request exactly) and fails chosen operations on demand.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::{KvStore, ListPage, ListedKey, PutOptions, StoreError, StoreResult, StoredValue};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub gets: u32,
    pub puts: u32,
    pub deletes: u32,
    pub lists: u32,
}

impl OpCounts {
    pub fn total(&self) -> u32 {
        self.gets + self.puts + self.deletes + self.lists
    }
}

/// Which operations to fail. A fault matches an operation kind and a key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Get(String),
    Put(String),
    Delete(String),
    List(String),
    /// Puts under the prefix are refused as KV refuses a second write to one key within
    /// a second (429).
    PutRateLimited(String),
}

impl Fault {
    fn matches(&self, operation: &str, key: &str) -> bool {
        let (kind, prefix) = match self {
            Fault::Get(p) => ("get", p),
            Fault::Put(p) => ("put", p),
            Fault::Delete(p) => ("delete", p),
            Fault::List(p) => ("list", p),
            Fault::PutRateLimited(p) => ("put", p),
        };
        kind == operation && key.starts_with(prefix.as_str())
    }
}

#[derive(Debug, Clone)]
struct Entry {
    bytes: Vec<u8>,
    expiration: Option<u64>,
    metadata: Option<serde_json::Value>,
}

#[derive(Default)]
pub struct MemoryStore {
    entries: RefCell<BTreeMap<String, Entry>>,
    counts: RefCell<OpCounts>,
    faults: RefCell<Vec<Fault>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counts(&self) -> OpCounts {
        *self.counts.borrow()
    }

    pub fn reset_counts(&self) {
        *self.counts.borrow_mut() = OpCounts::default();
    }

    pub fn fail(&self, fault: Fault) {
        self.faults.borrow_mut().push(fault);
    }

    pub fn heal(&self) {
        self.faults.borrow_mut().clear();
    }

    /// Direct access for test setup and inspection; counts no operation.
    pub fn insert(&self, key: &str, bytes: &[u8], options: PutOptions) {
        self.entries.borrow_mut().insert(
            key.to_owned(),
            Entry {
                bytes: bytes.to_vec(),
                expiration: options.expiration,
                metadata: options.metadata,
            },
        );
    }

    /// Direct removal for test setup; counts no operation.
    pub fn remove(&self, key: &str) {
        self.entries.borrow_mut().remove(key);
    }

    pub fn peek(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.borrow().get(key).map(|e| e.bytes.clone())
    }

    pub fn keys(&self) -> Vec<String> {
        self.entries.borrow().keys().cloned().collect()
    }

    fn check(&self, operation: &'static str, key: &str) -> StoreResult<()> {
        let mut counts = self.counts.borrow_mut();
        match operation {
            "get" => counts.gets += 1,
            "put" => counts.puts += 1,
            "delete" => counts.deletes += 1,
            _ => counts.lists += 1,
        }
        let faults = self.faults.borrow();
        if let Some(fault) = faults.iter().find(|f| f.matches(operation, key)) {
            // Worded as the platform words its failures: a first line, then a stack.
            let mut err = StoreError::new(
                operation,
                "Error: injected fault: 413 Total size of request exceeds the limit of 25MB\n    at KvNamespace.get (worker.js:1:1)",
            );
            err.rate_limited = matches!(fault, Fault::PutRateLimited(_));
            return Err(err);
        }
        Ok(())
    }
}

impl KvStore for MemoryStore {
    async fn get(&self, key: &str) -> StoreResult<Option<StoredValue>> {
        self.check("get", key)?;
        Ok(self.entries.borrow().get(key).map(|e| StoredValue {
            bytes: e.bytes.clone(),
            metadata: e.metadata.clone(),
        }))
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<StoredValue>>> {
        assert!(
            keys.len() <= super::MAX_BULK_KEYS,
            "bulk read of {} keys",
            keys.len()
        );
        // One operation, failing if any of its keys is set to fail.
        let first_faulty = keys
            .iter()
            .find(|k| self.faults.borrow().iter().any(|f| f.matches("get", k)));
        self.check("get", first_faulty.map_or("", String::as_str))?;
        let entries = self.entries.borrow();
        // As KV does, a bulk read fails whole when its values add up to more than 25 MB.
        let total: usize = keys
            .iter()
            .filter_map(|key| entries.get(key))
            .map(|e| e.bytes.len())
            .sum();
        if total > super::MAX_VALUE_BYTES {
            return Err(StoreError {
                too_large: true,
                ..StoreError::new(
                    "get",
                    "Error: KV GET_BULK failed: 413 Total size of request exceeds the limit of 25MB",
                )
            });
        }
        Ok(keys
            .iter()
            .map(|key| {
                entries.get(key).map(|e| StoredValue {
                    bytes: e.bytes.clone(),
                    metadata: e.metadata.clone(),
                })
            })
            .collect())
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> StoreResult<()> {
        self.check("put", key)?;
        self.insert(key, value, options);
        Ok(())
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.check("delete", key)?;
        self.entries.borrow_mut().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> StoreResult<ListPage> {
        self.check("list", prefix)?;
        let entries = self.entries.borrow();
        Ok(list_page(&entries, prefix, cursor, limit, |e| {
            (e.expiration, e.metadata.clone())
        }))
    }
}

/// One `list` page over sorted entries, as KV pages them: keys with `prefix` after the
/// cursor (here, the last key of the previous page), at most `limit` (capped at 1,000).
pub fn list_page<E>(
    entries: &BTreeMap<String, E>,
    prefix: &str,
    cursor: Option<&str>,
    limit: u32,
    details: impl Fn(&E) -> (Option<u64>, Option<serde_json::Value>),
) -> ListPage {
    let after = cursor.unwrap_or("");
    let mut keys = Vec::new();
    let mut more = false;
    for (name, entry) in entries.range(prefix.to_owned()..) {
        if !name.starts_with(prefix) {
            break;
        }
        if !after.is_empty() && name.as_str() <= after {
            continue;
        }
        if keys.len() == limit.clamp(1, 1000) as usize {
            more = true;
            break;
        }
        let (expiration, metadata) = details(entry);
        keys.push(ListedKey {
            name: name.clone(),
            expiration,
            metadata,
        });
    }
    let cursor = if more {
        keys.last().map(|k| k.name.clone())
    } else {
        None
    };
    ListPage {
        keys,
        cursor,
        complete: !more,
    }
}
