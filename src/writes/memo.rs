//! What a writer object remembers of its own writes (docs/design.md §12). KV shows a
//! write at once only where it was made, and an object's next request may find its
//! isolate elsewhere; so for the consistency window after each of its writes the object
//! believes its own memory of that key over a KV read, and never decides on a view older
//! than what it wrote itself. Only customer records and email mappings are remembered:
//! nothing else the object writes is read back by it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{is_customer_key, is_migrated_key, Tombstone};
use crate::migration::copying::copy::newer_version;
use crate::migration::state::coordinator::newest;
use crate::migration::state::phase_record::PhaseState;
use crate::store::{
    KvStore, ListPage, PutOptions, StoreError, StoreName, StoreResult, StoredValue, Stores,
};
use crate::time::rfc3339;
use crate::writes::claims::Holder;
use crate::writes::held::Recollection;
use crate::writes::object::ObjectClock;

/// KV accepts one write a second to one key (docs/design.md §12).
pub const MIN_WRITE_INTERVAL_MS: u64 = 1_000;

/// The object's last write of one key in one store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    /// The value written; `None` after a delete.
    pub value: Option<RememberedValue>,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RememberedValue {
    /// Every value the product writes is UTF-8 (JSON, an id, a tombstone).
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl Remembered {
    pub(crate) fn stored(&self) -> Option<StoredValue> {
        self.value.as_ref().map(|v| StoredValue {
            bytes: v.text.as_bytes().to_vec(),
            metadata: v.metadata.clone(),
        })
    }
}

/// The object's strongly consistent storage, as far as remembering goes.
#[allow(async_fn_in_trait)]
pub trait Memo {
    /// Everything the memory holds, in one read (`held::Held` loads an object's copy).
    async fn recall_all(&self) -> StoreResult<Recollection>;
    async fn recall(&self, store: StoreName, key: &str) -> StoreResult<Option<Remembered>>;
    async fn remember(&self, store: StoreName, key: &str, entry: Remembered) -> StoreResult<()>;
    async fn forget(&self, store: StoreName, key: &str) -> StoreResult<()>;
    /// The newest phase record the object has acted on.
    async fn recall_phase(&self) -> StoreResult<Option<PhaseState>>;
    async fn remember_phase(&self, record: &PhaseState) -> StoreResult<()>;
    /// For an email's object: the customer it granted the email to last.
    async fn recall_holder(&self) -> StoreResult<Option<Holder>>;
    async fn remember_holder(&self, holder: Option<&Holder>) -> StoreResult<()>;
}

/// Both stores as an object sees them during an op.
pub fn remembering<'a, S, M>(
    stores: &'a Stores<S>,
    memo: &'a M,
    clock: ObjectClock,
) -> Stores<Remembering<'a, S, M>> {
    Stores {
        old: Remembering::new(&stores.old, StoreName::Old, memo, clock),
        new: Remembering::new(&stores.new, StoreName::New, memo, clock),
    }
}

/// The phase record an object acts on: the newer of the one it acted on last and the one
/// the request was served under (`coordinator::newest`). An object's phase never goes
/// back, though its requests come from isolates that see a move at different moments:
/// a key written in phase 1 (both stores) and then in phase 0 (the old store alone) would
/// leave the new store behind, which phase 2 reads first. A record the worker made up
/// from `DEFAULT_PHASE` (none stored yet) never outranks the request's.
pub async fn acting_phase<M: Memo>(memo: &M, seen: PhaseState) -> StoreResult<PhaseState> {
    // The `mutant-phase-goes-back` build acts in whatever phase each request saw.
    if cfg!(feature = "mutant-phase-goes-back") {
        return Ok(seen);
    }
    let kept = memo.recall_phase().await?;
    let made_up = |r: &PhaseState| r.revision == 0 && r.changed_at == 0;
    let acting = match kept.clone() {
        Some(kept) if !made_up(&kept) => match newest(Some(kept), Some(seen.clone())) {
            Some(newer) => newer,
            None => seen,
        },
        _ => seen,
    };
    if kept.as_ref() != Some(&acting) {
        memo.remember_phase(&acting).await?;
    }
    Ok(acting)
}

/// The name an entry is kept under.
pub fn memo_key(store: StoreName, key: &str) -> String {
    format!("{}/{key}", store.as_str())
}

/// Whether a name in an object's storage is an entry's (`memo_key`).
pub fn is_memo_key(name: &str) -> bool {
    name.split_once('/')
        .is_some_and(|(store, _)| StoreName::parse(store).is_some())
}

/// When `key` may next be written in either store: a second after the object last wrote
/// it (0 if it has not).
pub async fn free_at<M: Memo>(memo: &M, key: &str) -> StoreResult<u64> {
    let mut free = 0;
    for store in [StoreName::Old, StoreName::New] {
        if let Some(entry) = memo.recall(store, key).await? {
            free = free.max(entry.at_ms + MIN_WRITE_INTERVAL_MS);
        }
    }
    Ok(free)
}

/// How an object waits out the rest of a second before writing a key again.
#[allow(async_fn_in_trait)]
pub trait Waiter {
    /// Returns once the object's clock reads at least `at_ms`; the clock then.
    async fn wait_until(&self, at_ms: u64) -> u64;
}

/// The time an object may act on `key`: now, or once the second since its last write of
/// the key has passed. Requests queued behind a write therefore wait, rather than fail,
/// for KV's one write a second to one key.
pub async fn paced<M: Memo, W: Waiter>(
    memo: &M,
    waiter: &W,
    key: &str,
    now_ms: u64,
) -> StoreResult<u64> {
    let free = free_at(memo, key).await?;
    if free <= now_ms {
        return Ok(now_ms);
    }
    Ok(waiter.wait_until(free).await)
}

/// One store seen through the object's memory.
///
/// A customer record the object wrote is believed over KV for as long as KV shows no
/// later state of it (`copy::newer_version`): every client write of the record is the
/// object's, so an older state in KV is a copy decided on a stale read that no check has
/// corrected yet, and merging a PATCH into it would make it the truth. A mapping is
/// believed for `trust_ms` after the write: mappings are hints, and the email audit
/// rewrites them.
pub struct Remembering<'a, S, M> {
    inner: &'a S,
    store: StoreName,
    memo: &'a M,
    clock: ObjectClock,
}

/// Values larger than this are not remembered (an object's storage takes values up to
/// 2 MiB): KV stays the only witness of such a record.
pub const MAX_REMEMBERED_BYTES: usize = 1 << 20;

impl<'a, S, M> Remembering<'a, S, M> {
    pub fn new(inner: &'a S, store: StoreName, memo: &'a M, clock: ObjectClock) -> Self {
        Self {
            inner,
            store,
            memo,
            clock,
        }
    }

    async fn recall(&self, key: &str) -> StoreResult<Option<Remembered>>
    where
        M: Memo,
    {
        match is_migrated_key(key) {
            true => self.memo.recall(self.store, key).await,
            false => Ok(None),
        }
    }

    /// Now, as the op goes on.
    fn now_ms(&self) -> u64 {
        self.clock.now_ms.max((self.clock.live_ms)())
    }

    /// Refuses a write KV would refuse: the object wrote `key` less than a second ago.
    async fn refuse_if_too_soon(&self, key: &str, operation: &'static str) -> StoreResult<()>
    where
        M: Memo,
    {
        if let Some(entry) = self.memo.recall(self.store, key).await? {
            if self.now_ms() < entry.at_ms + MIN_WRITE_INTERVAL_MS {
                let mut refused =
                    StoreError::new(operation, "this key was written less than a second ago");
                refused.rate_limited = true;
                return Err(refused);
            }
        }
        Ok(())
    }

    /// Stamped when the write has landed, so that pacing and trust count from then.
    async fn note(&self, key: &str, value: Option<RememberedValue>) -> StoreResult<()>
    where
        M: Memo,
    {
        let entry = Remembered {
            value,
            at_ms: self.now_ms(),
        };
        self.memo.remember(self.store, key, entry).await
    }
}

/// What the object takes `key` to hold past the trust window: its memory of a record
/// while KV shows nothing later, else what KV shows.
fn believed(key: &str, entry: Remembered, in_kv: Option<StoredValue>) -> Option<StoredValue> {
    if is_customer_key(key) && memory_is_newest(&entry, in_kv.as_ref()) {
        return entry.stored();
    }
    in_kv
}

/// Whether the memory of a record is still the newest state of it, given what KV shows.
pub(crate) fn memory_is_newest(entry: &Remembered, in_kv: Option<&StoredValue>) -> bool {
    let Some(in_kv) = in_kv else {
        return true;
    };
    match entry.stored() {
        Some(remembered) => !newer_version(in_kv, &remembered),
        // The object deleted it: only a record written after that is newer.
        None => !newer_version(
            in_kv,
            &StoredValue {
                bytes: Tombstone::bytes(&rfc3339(entry.at_ms)),
                metadata: None,
            },
        ),
    }
}

impl<S: KvStore, M: Memo> KvStore for Remembering<'_, S, M> {
    async fn get(&self, key: &str) -> StoreResult<Option<StoredValue>> {
        let Some(entry) = self.recall(key).await? else {
            return self.inner.get(key).await;
        };
        if self.now_ms() < entry.at_ms + self.clock.trust_ms {
            return Ok(entry.stored());
        }
        let in_kv = self.inner.get(key).await?;
        Ok(believed(key, entry, in_kv))
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> StoreResult<()> {
        let metadata = options.metadata.clone();
        if is_migrated_key(key) {
            self.refuse_if_too_soon(key, "put").await?;
        }
        self.inner.put(key, value, options).await?;
        if !is_migrated_key(key) {
            return Ok(());
        }
        match String::from_utf8(value.to_vec()) {
            Ok(text) if text.len() <= MAX_REMEMBERED_BYTES => {
                self.note(key, Some(RememberedValue { text, metadata }))
                    .await
            }
            // Not the product's own value, or too large to keep: KV is its only witness,
            // and an older memory of the key must not outlive it.
            _ => self.memo.forget(self.store, key).await,
        }
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<StoredValue>>> {
        let mut values = self.inner.get_many(keys).await?;
        for (key, value) in keys.iter().zip(values.iter_mut()) {
            if let Some(entry) = self.recall(key).await? {
                *value = if self.now_ms() < entry.at_ms + self.clock.trust_ms {
                    entry.stored()
                } else {
                    believed(key, entry, value.take())
                };
            }
        }
        Ok(values)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        if is_migrated_key(key) {
            self.refuse_if_too_soon(key, "delete").await?;
        }
        self.inner.delete(key).await?;
        if is_migrated_key(key) {
            self.note(key, None).await?;
        }
        Ok(())
    }

    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> StoreResult<ListPage> {
        self.inner.list(prefix, cursor, limit).await
    }
}

/// A memo in a map, for a native object.
#[derive(Default)]
pub struct MemoryMemo {
    entries: std::cell::RefCell<std::collections::HashMap<String, Remembered>>,
    phase: std::cell::RefCell<Option<PhaseState>>,
    holder: std::cell::RefCell<Option<Holder>>,
}

impl Memo for MemoryMemo {
    async fn recall_all(&self) -> StoreResult<Recollection> {
        Ok(Recollection {
            entries: self.entries.borrow().clone(),
            phase: self.phase.borrow().clone(),
            holder: self.holder.borrow().clone(),
        })
    }

    async fn recall(&self, store: StoreName, key: &str) -> StoreResult<Option<Remembered>> {
        Ok(self.entries.borrow().get(&memo_key(store, key)).cloned())
    }

    async fn remember(&self, store: StoreName, key: &str, entry: Remembered) -> StoreResult<()> {
        self.entries
            .borrow_mut()
            .insert(memo_key(store, key), entry);
        Ok(())
    }

    async fn forget(&self, store: StoreName, key: &str) -> StoreResult<()> {
        self.entries.borrow_mut().remove(&memo_key(store, key));
        Ok(())
    }

    async fn recall_phase(&self) -> StoreResult<Option<PhaseState>> {
        Ok(self.phase.borrow().clone())
    }

    async fn remember_phase(&self, record: &PhaseState) -> StoreResult<()> {
        *self.phase.borrow_mut() = Some(record.clone());
        Ok(())
    }

    async fn recall_holder(&self) -> StoreResult<Option<Holder>> {
        Ok(self.holder.borrow().clone())
    }

    async fn remember_holder(&self, holder: Option<&Holder>) -> StoreResult<()> {
        *self.holder.borrow_mut() = holder.cloned();
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::store::MemoryStore;

    fn record(updated_at: &str) -> Vec<u8> {
        format!(r#"{{"customerId":"c1","updatedAt":"{updated_at}"}}"#).into_bytes()
    }

    /// An object's clock at `now_ms`, trusting its memory for 10 s.
    pub(crate) fn clock(now_ms: u64) -> ObjectClock {
        ObjectClock {
            now_ms,
            trust_ms: 10_000,
            check_after_ms: 0,
            live_ms: || 0,
        }
    }

    #[test]
    fn the_objects_own_write_wins_over_an_older_copy_but_not_a_newer_one() {
        let (kv, memo) = (MemoryStore::new(), MemoryMemo::default());
        let t0 = crate::time::parse_rfc3339_ms("2026-01-01T00:00:00.000Z").unwrap();
        let writing = Remembering::new(&kv, StoreName::New, &memo, clock(t0));
        let ours = record("2026-01-01T00:00:00.000Z");
        block_on(writing.put("customer_c1", &ours, PutOptions::default())).unwrap();
        // A copy decided on a stale read puts an older version back, long after.
        kv.insert(
            "customer_c1",
            &record("2025-06-01T00:00:00.000Z"),
            PutOptions::default(),
        );
        let later = Remembering::new(&kv, StoreName::New, &memo, clock(t0 + 3_600_000));
        let keys = ["customer_c1".to_owned()];
        let got = block_on(later.get("customer_c1")).unwrap().unwrap();
        assert_eq!(got.bytes, ours);
        let many = block_on(later.get_many(&keys)).unwrap();
        assert_eq!(many[0].as_ref().unwrap().bytes, ours, "get_many agrees");
        // A later version in KV (an import, say) is taken.
        let newer = record("2026-02-01T00:00:00.000Z");
        kv.insert("customer_c1", &newer, PutOptions::default());
        assert_eq!(
            block_on(later.get("customer_c1")).unwrap().unwrap().bytes,
            newer
        );
    }

    #[test]
    fn a_key_written_less_than_a_second_ago_is_refused_as_kv_would() {
        let (kv, memo) = (MemoryStore::new(), MemoryMemo::default());
        let first = Remembering::new(&kv, StoreName::Old, &memo, clock(1_000));
        block_on(first.put("customer_c1", b"{}", PutOptions::default())).unwrap();
        let soon = Remembering::new(&kv, StoreName::Old, &memo, clock(1_500));
        let refused = block_on(soon.delete("customer_c1")).unwrap_err();
        assert!(refused.rate_limited);
        let later = Remembering::new(&kv, StoreName::Old, &memo, clock(2_000));
        block_on(later.delete("customer_c1")).unwrap();
    }
}
