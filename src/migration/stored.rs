//! Reading and writing the migration's stored entries: each is a serde struct, encoded
//! here and nowhere else. An entry that other code lists rides in its key's metadata too,
//! so a `list` returns the entries without a read per key (KV caps metadata at 1,024
//! bytes; every entry that rides there is small and bounded).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::{KvStore, ListedKey, PutOptions, StoreError, StoreResult};

/// Whether an entry is also written into its key's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    ValueOnly,
    AlsoInMetadata,
}

/// The bytes of an entry. Encoding a plain struct cannot fail in practice; if it ever
/// did, writing empty bytes instead would destroy state, so it is an error.
pub fn encode<T: Serialize>(entry: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(entry)
        .map_err(|err| StoreError::new("encode", format!("an entry could not be encoded: {err}")))
}

pub async fn put<S: KvStore, T: Serialize>(
    store: &S,
    key: &str,
    entry: &T,
    listing: Listing,
) -> StoreResult<()> {
    let bytes = encode(entry)?;
    let metadata = match listing {
        Listing::ValueOnly => None,
        Listing::AlsoInMetadata => Some(to_value(entry)?),
    };
    let options = PutOptions {
        expiration: None,
        metadata,
    };
    store.put(key, &bytes, options).await
}

/// Writes `entry` as the value and `summary` (a shortened form of it that fits KV's
/// metadata) as the metadata.
pub async fn put_with_summary<S: KvStore, T: Serialize, M: Serialize>(
    store: &S,
    key: &str,
    entry: &T,
    summary: &M,
) -> StoreResult<()> {
    let bytes = encode(entry)?;
    let options = PutOptions {
        expiration: None,
        metadata: Some(to_value(summary)?),
    };
    store.put(key, &bytes, options).await
}

fn to_value<T: Serialize>(entry: &T) -> StoreResult<serde_json::Value> {
    serde_json::to_value(entry)
        .map_err(|err| StoreError::new("encode", format!("an entry could not be encoded: {err}")))
}

/// The entry under `key`; `None` when there is none or it cannot be read as a `T` (an
/// unreadable entry is treated as absent, as a fresh start, by every caller).
pub async fn get<S: KvStore, T: DeserializeOwned>(store: &S, key: &str) -> StoreResult<Option<T>> {
    Ok(store
        .get(key)
        .await?
        .and_then(|v| serde_json::from_slice(&v.bytes).ok()))
}

/// The entry a listed key carries in its metadata, if it can be read as a `T`.
pub fn from_listing<T: DeserializeOwned>(listed: &ListedKey) -> Option<T> {
    serde_json::from_value(listed.metadata.clone()?).ok()
}
