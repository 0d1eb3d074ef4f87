//! Removing the tombstones from CUSTOMER_KV once the migration is finalized (docs/design.md
//! §9, "Finalizing"). A tombstone stops the old store's copy of a deleted customer from
//! coming back; once nothing reads the old store, it only costs storage. Each one is
//! removed in its customer's object: KV has no compare-and-delete, and a client may be
//! creating the customer again at that moment, which the object orders before or after
//! the removal, never across it.

use serde::{Deserialize, Serialize};

use crate::domain::{CustomerId, Tombstone, CUSTOMER_PREFIX};
use crate::error::Error;
use crate::migration::backup;
use crate::store::{read_many, KvStore};
use crate::writes::{Writers, Writing};

/// Keys listed per call at most: a list, one bulk read and a call to the customer's
/// object per tombstone, one after another, so that a page of tombstones answers well
/// within a client's timeout and holds at most 100 values in memory.
pub const PAGE: u32 = 100;

/// What one call did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Purged {
    pub dry_run: bool,
    /// Customer keys listed.
    pub listed: u64,
    /// Tombstones found among them.
    pub tombstones: u64,
    /// Removed, or that a dry run would remove.
    pub removed: u64,
    /// A client created the customer again before its object removed the tombstone: the
    /// record stays.
    pub recreated: u64,
    /// Gone before its object came to it (another purge, say).
    pub gone: u64,
    /// Not a customer id any request can name (and so no request wrote it): left alone.
    pub unreachable: u64,
    /// The object could not be reached or failed: run the purge again for these.
    pub failed: u64,
    /// The tombstones removed (a dry run: that it would remove), as lines of an export
    /// (`kv-migrate import` restores them).
    #[serde(default)]
    pub export: String,
    /// Where the next call continues; `None` once complete.
    pub cursor: Option<String>,
    pub complete: bool,
}

impl Purged {
    /// Adds a page's counts to running totals (the CLI's).
    pub fn add(&mut self, page: &Purged) {
        self.dry_run = page.dry_run;
        self.listed += page.listed;
        self.tombstones += page.tombstones;
        self.removed += page.removed;
        self.recreated += page.recreated;
        self.gone += page.gone;
        self.unreachable += page.unreachable;
        self.failed += page.failed;
        self.complete = page.complete;
    }
}

/// What a customer's object found when asked to drop its tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dropped {
    Removed,
    /// A record stands there now.
    Recreated,
    Gone,
}

/// One page of the customer keys from `cursor`: every tombstone among them removed in
/// its object (a dry run only counts them). Run only once the finalize has settled
/// (`finalize::settled`).
pub async fn page<S: KvStore, W: Writers>(
    writing: &Writing<'_, S, W>,
    new_store: &S,
    (cursor, limit): (Option<&str>, u32),
    dry_run: bool,
) -> Result<Purged, Error> {
    let listed = new_store
        .list(CUSTOMER_PREFIX, cursor, limit.min(PAGE))
        .await?;
    let names: Vec<String> = listed.keys.iter().map(|k| k.name.clone()).collect();
    let values = read_many(new_store, &names).await?;
    let mut purged = Purged {
        dry_run,
        listed: names.len() as u64,
        complete: listed.complete,
        cursor: if listed.complete { None } else { listed.cursor },
        ..Purged::default()
    };
    let mut export = Vec::new();
    for (key, value) in listed.keys.iter().zip(values) {
        let Some(value) = value.filter(|v| Tombstone::is_tombstone(&v.bytes)) else {
            continue;
        };
        purged.tombstones += 1;
        let id = key
            .name
            .strip_prefix(CUSTOMER_PREFIX)
            .and_then(|raw| CustomerId::parse(raw).ok());
        let Some(id) = id else {
            purged.unreachable += 1;
            continue;
        };
        let outcome = match dry_run {
            true => Ok(Dropped::Removed),
            false => writing.drop_tombstone(&id).await,
        };
        match outcome {
            Ok(Dropped::Removed) => {
                purged.removed += 1;
                backup::write_line(&mut export, &key.name, &value, key.expiration);
            }
            Ok(Dropped::Recreated) => purged.recreated += 1,
            Ok(Dropped::Gone) => purged.gone += 1,
            Err(_) => purged.failed += 1,
        }
    }
    // Every line is UTF-8 JSON: a tombstone is text, and other bytes would be base64.
    purged.export = String::from_utf8(export).unwrap_or_default();
    Ok(purged)
}

/// In the customer's object: removes the key if it still holds a tombstone, as the
/// object sees it (its memory of its own writes over KV). Only once the old store is
/// retired: before, the tombstone is what keeps the old store's copy from coming back.
pub async fn drop_in_object<S: KvStore>(
    new_store: &S,
    key: &str,
    old_store_retired: bool,
) -> Result<Dropped, Error> {
    if !old_store_retired {
        return Err(Error::PurgeNotAllowed(
            "tombstones are removed after the migration is finalized (kv-migrate finalize)".into(),
        ));
    }
    Ok(match new_store.get(key).await? {
        None => Dropped::Gone,
        Some(value) if Tombstone::is_tombstone(&value.bytes) => {
            new_store.delete(key).await?;
            Dropped::Removed
        }
        Some(_) => Dropped::Recreated,
    })
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::store::{MemoryStore, PutOptions, StoreName};
    use crate::writes::memo::tests::clock;
    use crate::writes::memo::{MemoryMemo, Remembering};

    const KEY: &str = "customer_c1";

    fn tombstone() -> Vec<u8> {
        Tombstone::bytes("2026-01-01T00:00:00.000Z")
    }

    #[test]
    fn only_a_tombstone_is_removed_and_only_once_the_old_store_is_retired() {
        let kv = MemoryStore::new();
        kv.insert(KEY, &tombstone(), PutOptions::default());
        let refused = block_on(drop_in_object(&kv, KEY, false)).unwrap_err();
        assert!(matches!(refused, Error::PurgeNotAllowed(_)), "{refused:?}");
        assert!(kv.keys().contains(&KEY.to_owned()));

        assert_eq!(
            block_on(drop_in_object(&kv, KEY, true)).unwrap(),
            Dropped::Removed
        );
        assert!(kv.keys().is_empty());
        assert_eq!(
            block_on(drop_in_object(&kv, KEY, true)).unwrap(),
            Dropped::Gone
        );

        kv.insert(KEY, br#"{"customerId":"c1"}"#, PutOptions::default());
        assert_eq!(
            block_on(drop_in_object(&kv, KEY, true)).unwrap(),
            Dropped::Recreated
        );
        assert!(kv.keys().contains(&KEY.to_owned()));
    }

    /// The race the object closes: a client created the customer again through the
    /// object, and the KV this op reads still shows the tombstone (another location, or
    /// within the consistency window). The object's memory of its own write wins.
    #[test]
    fn a_record_the_object_wrote_is_kept_though_kv_still_shows_the_tombstone() {
        let (kv, memo) = (MemoryStore::new(), MemoryMemo::default());
        let t0 = crate::time::parse_rfc3339_ms("2026-02-01T00:00:00.000Z").unwrap();
        let created = Remembering::new(&kv, StoreName::New, &memo, clock(t0));
        let record = br#"{"customerId":"c1","updatedAt":"2026-02-01T00:00:00.000Z"}"#;
        block_on(created.put(KEY, record, PutOptions::default())).unwrap();
        kv.insert(KEY, &tombstone(), PutOptions::default());
        for later in [t0 + 2_000, t0 + 3_600_000] {
            let seen = Remembering::new(&kv, StoreName::New, &memo, clock(later));
            let dropped = block_on(drop_in_object(&seen, KEY, true)).unwrap();
            assert_eq!(dropped, Dropped::Recreated, "at +{} ms", later - t0);
        }
    }
}
