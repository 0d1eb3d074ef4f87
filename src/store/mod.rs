//! The small async key-value interface every decision is written against. The worker's
//! adapter implements it over Workers KV; [`MemoryStore`] implements it for native tests.

pub mod budget;
mod memory;

pub use memory::{list_page, Fault, MemoryStore, OpCounts};

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
}

impl StoreError {
    pub fn new(operation: &'static str, message: impl Into<String>) -> Self {
        Self {
            operation: operation.into(),
            message: message.into(),
            rate_limited: false,
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
