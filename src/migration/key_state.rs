//! What a key holds in a store, and how a store is made to hold a state: the rules every
//! write, copy, repair and check shares (docs/design.md §2 and §6).

use crate::domain::{is_customer_key, Tombstone};
use crate::store::{KvStore, PutOptions, StoreName, StoreResult, StoredValue};
use crate::time::rfc3339;

/// The state with a tombstone counted as absence.
pub fn live(state: Option<&StoredValue>) -> Option<&StoredValue> {
    state.filter(|v| !Tombstone::is_tombstone(&v.bytes))
}

/// Whether two stores hold the same state of a key: the same bytes and the same
/// metadata, or nothing (a tombstone counts as nothing). Metadata counts because copies
/// carry it and readers get it back; the backfill's "in sync" is the same test.
pub fn agree(a: Option<&StoredValue>, b: Option<&StoredValue>) -> bool {
    live(a) == live(b)
}

/// What removing `key` leaves in `store`: a customer keeps a tombstone in the new store,
/// so its deletion holds whichever store is read (the old store may still hold the
/// record); everything else is simply deleted (`None`).
pub fn removed(store: StoreName, key: &str, now_ms: u64) -> Option<StoredValue> {
    (store == StoreName::New && is_customer_key(key)).then(|| StoredValue {
        bytes: Tombstone::bytes(&rfc3339(now_ms)),
        metadata: None,
    })
}

/// The state `store` must hold to match `source`: the source's live value, or what a
/// removal leaves there.
pub fn matching(
    store: StoreName,
    key: &str,
    source: Option<&StoredValue>,
    now_ms: u64,
) -> Option<StoredValue> {
    match live(source) {
        Some(value) => Some(value.clone()),
        None => removed(store, key, now_ms),
    }
}

/// Makes `kv` hold `state` under `key`: a put with its metadata (and `expiration`), or a
/// delete for `None`.
pub async fn write<S: KvStore>(
    kv: &S,
    key: &str,
    state: Option<&StoredValue>,
    expiration: Option<u64>,
) -> StoreResult<()> {
    match state {
        Some(value) => {
            let options = PutOptions {
                expiration,
                metadata: value.metadata.clone(),
            };
            kv.put(key, &value.bytes, options).await
        }
        None => kv.delete(key).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_value as value;
    use serde_json::json;

    #[test]
    fn only_a_customer_in_the_new_store_keeps_a_tombstone() {
        let marker = removed(StoreName::New, "customer_a", 0).expect("a tombstone");
        assert!(Tombstone::is_tombstone(&marker.bytes));
        assert_eq!(removed(StoreName::Old, "customer_a", 0), None);
        assert_eq!(removed(StoreName::New, "email_to_customer_ab", 0), None);
    }

    #[test]
    fn stores_agree_on_bytes_and_metadata_with_tombstones_as_absence() {
        let marker = removed(StoreName::New, "customer_a", 0);
        assert!(agree(None, marker.as_ref()));
        assert!(agree(Some(&value("v")), Some(&value("v"))));
        assert!(!agree(Some(&value("v")), Some(&value("w"))));
        let with_metadata = StoredValue {
            metadata: Some(json!({ "a": 1 })),
            ..value("v")
        };
        assert!(!agree(Some(&value("v")), Some(&with_metadata)));
    }

    #[test]
    fn a_matching_state_is_the_live_value_or_the_removal() {
        let marker = removed(StoreName::New, "customer_a", 7);
        assert_eq!(
            matching(StoreName::New, "customer_a", marker.as_ref(), 9),
            removed(StoreName::New, "customer_a", 9)
        );
        assert_eq!(
            matching(StoreName::Old, "customer_a", marker.as_ref(), 9),
            None
        );
        assert_eq!(
            matching(StoreName::Old, "customer_a", Some(&value("v")), 9),
            Some(value("v"))
        );
    }
}
