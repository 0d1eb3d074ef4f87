//! The small async key-value interface every decision is written against. The worker's
//! adapter implements it over Workers KV; [`MemoryStore`] implements it for native tests.

pub mod budget;
mod memory;

pub use memory::{list_page, Fault, MemoryStore, OpCounts};

use std::ops::Range;

use serde_json::Value;

/// The most keys one bulk read may ask for (Workers KV's limit).
pub const MAX_BULK_KEYS: usize = 100;
/// The largest value KV holds, and the most bytes one bulk read may return (25 MiB).
pub const MAX_VALUE_BYTES: usize = 25 * 1024 * 1024;

/// Which of the two namespaces an operation addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreName {
    /// `OTP_AUTH_KV`
    Old,
    /// `CUSTOMER_KV`
    New,
}

impl StoreName {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreName::Old => "old",
            StoreName::New => "new",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "old" => Some(StoreName::Old),
            "new" => Some(StoreName::New),
            _ => None,
        }
    }
}

/// A value as read back: its bytes and the KV metadata written with it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredValue {
    pub bytes: Vec<u8>,
    pub metadata: Option<Value>,
}

/// A value of `text` without metadata, for unit tests.
#[cfg(test)]
pub fn test_value(text: &str) -> StoredValue {
    StoredValue {
        bytes: text.as_bytes().to_vec(),
        metadata: None,
    }
}

/// The longest key Workers KV stores, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// Options of a put. `expiration` is absolute, in seconds since the epoch, as KV takes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PutOptions {
    pub expiration: Option<u64>,
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListedKey {
    pub name: String,
    pub expiration: Option<u64>,
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListPage {
    pub keys: Vec<ListedKey>,
    /// Where the next page starts; `None` once `complete`.
    pub cursor: Option<String>,
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreError {
    pub operation: std::borrow::Cow<'static, str>,
    pub message: String,
    /// KV refused the operation for its rate (429: more than one write a second to one
    /// key); nothing was written.
    pub rate_limited: bool,
    /// KV refused a bulk read because its values add up to more than 25 MB (413): a
    /// smaller read of the same keys may succeed ([`read_many`]).
    #[serde(default)]
    pub too_large: bool,
}

impl StoreError {
    pub fn new(operation: &'static str, message: impl Into<String>) -> Self {
        Self {
            operation: operation.into(),
            message: message.into(),
            rate_limited: false,
            too_large: false,
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KV {} failed: {}", self.operation, self.message)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Workers KV as the product uses it. Each call is one billed KV operation.
///
/// The futures are not `Send`: a worker isolate is single-threaded, and the KV bindings
/// are JavaScript objects that cannot cross threads.
#[allow(async_fn_in_trait)]
pub trait KvStore {
    async fn get(&self, key: &str) -> StoreResult<Option<StoredValue>>;
    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> StoreResult<()>;
    /// Up to [`MAX_BULK_KEYS`] values as one operation, in the order of `keys`.
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<StoredValue>>>;
    async fn delete(&self, key: &str) -> StoreResult<()>;
    /// One page of keys with `prefix`, in key order, at most `limit` (KV caps it at 1,000).
    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> StoreResult<ListPage>;
}

/// The values of `keys`, in their order, as [`KvStore::get_many`] reads them, whatever
/// their size: a bulk read KV refuses because its values add up to more than 25 MB is
/// split in halves until each part fits, down to single reads (docs/design.md §2,
/// "Record size"), so one large legacy value can never stop a reader. Every bulk
/// reader goes through here; each part is one more operation on the caller's budget.
pub async fn read_many<S: KvStore>(
    store: &S,
    keys: &[String],
) -> StoreResult<Vec<Option<StoredValue>>> {
    if keys.is_empty() {
        // Nothing to ask KV for (an empty chunk, say): not even one operation.
        return Ok(Vec::new());
    }
    let mut values = vec![None; keys.len()];
    let mut pending: Vec<Range<usize>> = Vec::new();
    pending.push(0..keys.len());
    while let Some(part) = pending.pop() {
        match store.get_many(&keys[part.clone()]).await {
            Ok(found) => {
                for (slot, value) in values[part].iter_mut().zip(found) {
                    *slot = value;
                }
            }
            Err(err) if err.too_large && part.len() > 1 => {
                let middle = part.start + part.len() / 2;
                pending.push(middle..part.end);
                pending.push(part.start..middle);
            }
            Err(err) if err.too_large => values[part.start] = store.get(&keys[part.start]).await?,
            Err(err) => return Err(err),
        }
    }
    Ok(values)
}

/// The old and the new namespace side by side.
pub struct Stores<S> {
    pub old: S,
    pub new: S,
}

impl<S> Stores<S> {
    pub fn get(&self, name: StoreName) -> &S {
        match name {
            StoreName::Old => &self.old,
            StoreName::New => &self.new,
        }
    }
}
