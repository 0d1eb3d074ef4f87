//! Draining the repair journal: for each key whose second write failed, copy the state
//! of the store that took the write onto the store that missed it.
//!
//! A concurrent request may write the key while it is being repaired, so each copy is
//! checked by reading the source again afterwards and redone if it changed: a write that
//! lands on the source after that check reaches the lagging store after it too, since
//! every request writes its second store after its first.

use serde::Serialize;

use super::JOURNAL_PREFIX;
use crate::domain::{Tombstone, CUSTOMER_PREFIX};
use crate::store::{KvStore, PutOptions, StoreName, StoreResult, StoredValue, Stores};
use crate::time::rfc3339;

/// Entries repaired per run: about five KV operations each, well inside the 1,000
/// operations one invocation may make.
pub const ENTRIES_PER_RUN: u32 = 150;
/// Copies of one key retried while the source keeps changing under it.
const COPY_ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairReport {
    pub examined: u32,
    pub repaired: u32,
    /// Keys left in the journal because a store failed or the source kept changing.
    pub deferred: u32,
    /// The journal had more entries than one run repairs.
    pub more: bool,
}

pub async fn drain<S: KvStore>(
    stores: &Stores<S>,
    now_ms: u64,
    limit: u32,
) -> StoreResult<RepairReport> {
    let page = stores.new.list(JOURNAL_PREFIX, None, limit).await?;
    let mut report = RepairReport {
        more: !page.complete,
        ..Default::default()
    };
    for entry in page.keys {
        report.examined += 1;
        let key = &entry.name[JOURNAL_PREFIX.len()..];
        let lagging = entry
            .metadata
            .as_ref()
            .and_then(|m| m.get("lagging"))
            .and_then(|v| v.as_str())
            .and_then(StoreName::parse);
        let Some(lagging) = lagging else {
            // Unreadable entry: repair both ways is impossible to decide; keep it visible.
            report.deferred += 1;
            continue;
        };
        match repair_key(stores, key, lagging, now_ms).await {
            Ok(true) => match forget(stores, &entry.name, entry.metadata.as_ref()).await {
                Ok(()) => report.repaired += 1,
                Err(_) => report.deferred += 1,
            },
            Ok(false) | Err(_) => report.deferred += 1,
        }
    }
    Ok(report)
}

/// Copies the source's state of `key` onto `lagging`; true once the copy is confirmed.
async fn repair_key<S: KvStore>(
    stores: &Stores<S>,
    key: &str,
    lagging: StoreName,
    now_ms: u64,
) -> StoreResult<bool> {
    let source = match lagging {
        StoreName::Old => &stores.new,
        StoreName::New => &stores.old,
    };
    let target = stores.get(lagging);
    let mut seen = source.get(key).await?;
    for _ in 0..COPY_ATTEMPTS {
        copy_state(target, key, seen.as_ref(), lagging, now_ms).await?;
        let again = source.get(key).await?;
        if again == seen {
            return Ok(true);
        }
        seen = again;
    }
    Ok(false)
}

async fn copy_state<S: KvStore>(
    target: &S,
    key: &str,
    state: Option<&StoredValue>,
    target_name: StoreName,
    now_ms: u64,
) -> StoreResult<()> {
    let deleted = state.is_none_or(|v| Tombstone::is_tombstone(&v.bytes));
    match (deleted, state) {
        (false, Some(value)) => {
            let options = PutOptions {
                expiration: None,
                metadata: value.metadata.clone(),
            };
            target.put(key, &value.bytes, options).await
        }
        // The new store keeps a tombstone for a deleted record so the old copy cannot return.
        _ if target_name == StoreName::New && key.starts_with(CUSTOMER_PREFIX) => {
            target
                .put(
                    key,
                    &Tombstone::bytes(&rfc3339(now_ms)),
                    PutOptions::default(),
                )
                .await
        }
        _ => target.delete(key).await,
    }
}

/// Removes a journal entry unless a newer failure rewrote it while the key was repaired.
async fn forget<S: KvStore>(
    stores: &Stores<S>,
    entry_key: &str,
    repaired: Option<&serde_json::Value>,
) -> StoreResult<()> {
    let current = stores.new.get(entry_key).await?;
    if current.as_ref().and_then(|v| v.metadata.as_ref()) != repaired {
        return Ok(());
    }
    stores.new.delete(entry_key).await
}
