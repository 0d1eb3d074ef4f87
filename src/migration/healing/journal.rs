//! The repair journal: keys whose second write failed, so the two stores disagree on them
//! until a repair copies the authoritative value over. One entry per key, however many
//! writes failed, so its size is the number of keys out of sync.

use serde_json::json;

use crate::migration::JOURNAL_PREFIX;
use crate::store::{KvStore, PutOptions, StoreName, StoreResult};

pub fn entry_key(key: &str) -> String {
    format!("{JOURNAL_PREFIX}{key}")
}

/// Records that `key` is stale in the `lagging` store.
pub async fn record<S: KvStore>(
    journal: &S,
    key: &str,
    lagging: StoreName,
    now_ms: u64,
) -> StoreResult<()> {
    let entry = json!({ "lagging": lagging.as_str(), "at": now_ms });
    let bytes = serde_json::to_vec(&entry).unwrap_or_default();
    let options = PutOptions {
        expiration: None,
        // The entry rides in the metadata too, so listing the journal needs no reads.
        metadata: Some(entry),
    };
    journal.put(&entry_key(key), &bytes, options).await
}
