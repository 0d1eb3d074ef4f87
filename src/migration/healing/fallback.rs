//! Fallback hits: reads that the new store could not serve and the old store did. Gate
//! 4→5 needs to know there were none in the verification period, and which keys if there
//! were; one key per customer key keeps the record bounded and listable.

use serde_json::json;

use crate::migration::FALLBACK_PREFIX;
use crate::phase::Phase;
use crate::store::{KvStore, ListedKey, PutOptions, StoreResult};

pub fn entry_key(key: &str) -> String {
    format!("{FALLBACK_PREFIX}{key}")
}

/// When a listed fallback entry was last hit, from its metadata.
pub fn recorded_at(listed: &ListedKey) -> Option<u64> {
    listed.metadata.as_ref()?.get("at")?.as_u64()
}

pub async fn record<S: KvStore>(
    new_store: &S,
    key: &str,
    phase: Phase,
    now_ms: u64,
) -> StoreResult<()> {
    let entry = json!({ "at": now_ms, "phase": phase.number() });
    let bytes = serde_json::to_vec(&entry).unwrap_or_default();
    let options = PutOptions {
        expiration: None,
        metadata: Some(entry),
    };
    new_store.put(&entry_key(key), &bytes, options).await
}
