//! An object's memory, held in the object between its requests (docs/design.md §12).
//!
//! An object's storage is its own: while an instance lives, nothing else writes it. So a
//! copy kept in the instance is exact. The instance reads its whole storage once, with
//! one list, at its first recall, answers every later recall from the copy and writes
//! every change through to storage before taking it into the copy. A new instance (after
//! an eviction or a restart) starts empty and reads storage again.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::migration::state::phase_record::PhaseState;
use crate::store::{StoreName, StoreResult};
use crate::writes::claims::Holder;
use crate::writes::memo::{memo_key, Memo, Remembered};

/// Everything an object's memory holds: its whole storage as the object reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recollection {
    /// By `memo_key`.
    pub entries: HashMap<String, Remembered>,
    pub phase: Option<PhaseState>,
    pub holder: Option<Holder>,
}

/// The most bytes of remembered values an instance keeps in its copy. An isolate's 128 MB
/// is shared by every object it runs, and a record may be remembered up to 1 MiB: an
/// object holding more than this keeps no copy and reads its storage at each recall.
pub const HELD_MAX_BYTES: usize = 64 * 1024;

impl Recollection {
    fn value_bytes(&self) -> usize {
        let text = |e: &Remembered| e.value.as_ref().map_or(0, |v| v.text.len());
        self.entries.values().map(text).sum()
    }
}

/// The copy an object instance keeps; empty until its first recall.
#[derive(Default)]
pub struct Held {
    copy: RefCell<Option<Recollection>>,
    /// Set when the object's storage was too large to hold (`HELD_MAX_BYTES`).
    unheld: Cell<bool>,
}

impl Held {
    /// The object's memory for one request: `storage` read through this copy.
    pub fn over<'a, M: Memo>(&'a self, storage: &'a M) -> Holding<'a, M> {
        Holding {
            held: self,
            storage,
        }
    }

    /// Drops the copy, as a new instance of the object starts without one.
    pub fn evict(&self) {
        self.copy.borrow_mut().take();
        self.unheld.set(false);
    }

    /// Keeps `all` as the copy unless it is too large to.
    fn keep(&self, all: Recollection) {
        match all.value_bytes() > HELD_MAX_BYTES {
            true => self.unheld.set(true),
            false => *self.copy.borrow_mut() = Some(all),
        }
    }

    /// Whether the instance has read its storage.
    pub fn is_loaded(&self) -> bool {
        self.copy.borrow().is_some()
    }
}

/// An object's storage as one request sees it through the instance's copy.
pub struct Holding<'a, M> {
    held: &'a Held,
    storage: &'a M,
}

impl<M: Memo> Holding<'_, M> {
    /// Whether recalls go to storage: the object's storage is too large to hold.
    fn unheld(&self) -> bool {
        self.held.unheld.get()
    }

    async fn read<T>(&self, pick: impl FnOnce(&Recollection) -> T) -> StoreResult<T> {
        if !self.held.is_loaded() {
            let all = self.storage.recall_all().await?;
            let picked = pick(&all);
            self.held.keep(all);
            return Ok(picked);
        }
        let copy = self.held.copy.borrow();
        Ok(pick(copy.as_ref().unwrap_or(&Recollection::default())))
    }

    /// Takes a change into the copy once storage has it. A write that failed may or may
    /// not have landed, so the copy is dropped and the next recall reads storage again.
    async fn write(
        &self,
        written: StoreResult<()>,
        change: impl FnOnce(&mut Recollection),
    ) -> StoreResult<()> {
        match written {
            Ok(()) => {
                let mut copy = self.held.copy.borrow_mut();
                if let Some(mut held) = copy.take() {
                    change(&mut held);
                    drop(copy);
                    self.held.keep(held);
                }
                Ok(())
            }
            Err(err) => {
                self.held.evict();
                Err(err)
            }
        }
    }
}

impl<M: Memo> Memo for Holding<'_, M> {
    async fn recall_all(&self) -> StoreResult<Recollection> {
        self.read(Recollection::clone).await
    }

    async fn recall(&self, store: StoreName, key: &str) -> StoreResult<Option<Remembered>> {
        if self.unheld() {
            return self.storage.recall(store, key).await;
        }
        let name = memo_key(store, key);
        self.read(|copy| copy.entries.get(&name).cloned()).await
    }

    async fn remember(&self, store: StoreName, key: &str, entry: Remembered) -> StoreResult<()> {
        let written = self.storage.remember(store, key, entry.clone()).await;
        let name = memo_key(store, key);
        self.write(written, |copy| {
            copy.entries.insert(name, entry);
        })
        .await
    }

    async fn forget(&self, store: StoreName, key: &str) -> StoreResult<()> {
        let written = self.storage.forget(store, key).await;
        let name = memo_key(store, key);
        self.write(written, |copy| {
            copy.entries.remove(&name);
        })
        .await
    }

    async fn recall_phase(&self) -> StoreResult<Option<PhaseState>> {
        if self.unheld() {
            return self.storage.recall_phase().await;
        }
        self.read(|copy| copy.phase.clone()).await
    }

    async fn remember_phase(&self, record: &PhaseState) -> StoreResult<()> {
        let written = self.storage.remember_phase(record).await;
        self.write(written, |copy| copy.phase = Some(record.clone()))
            .await
    }

    async fn recall_holder(&self) -> StoreResult<Option<Holder>> {
        if self.unheld() {
            return self.storage.recall_holder().await;
        }
        self.read(|copy| copy.holder.clone()).await
    }

    async fn remember_holder(&self, holder: Option<&Holder>) -> StoreResult<()> {
        let written = self.storage.remember_holder(holder).await;
        self.write(written, |copy| copy.holder = holder.cloned())
            .await
    }
}

#[cfg(test)]
mod tests {

    use futures::executor::block_on;

    use super::*;
    use crate::store::StoreError;
    use crate::writes::memo::MemoryMemo;

    /// Storage that counts its reads and fails its writes on demand.
    #[derive(Default)]
    struct Storage {
        inner: MemoryMemo,
        reads: Cell<u32>,
        failing: Cell<bool>,
    }

    impl Storage {
        fn written(&self) -> StoreResult<()> {
            match self.failing.get() {
                true => Err(StoreError::new("object storage put", "injected")),
                false => Ok(()),
            }
        }
    }

    impl Memo for Storage {
        async fn recall_all(&self) -> StoreResult<Recollection> {
            self.reads.set(self.reads.get() + 1);
            self.inner.recall_all().await
        }
        async fn recall(&self, store: StoreName, key: &str) -> StoreResult<Option<Remembered>> {
            self.reads.set(self.reads.get() + 1);
            self.inner.recall(store, key).await
        }
        async fn remember(&self, store: StoreName, key: &str, e: Remembered) -> StoreResult<()> {
            self.written()?;
            self.inner.remember(store, key, e).await
        }
        async fn forget(&self, store: StoreName, key: &str) -> StoreResult<()> {
            self.written()?;
            self.inner.forget(store, key).await
        }
        async fn recall_phase(&self) -> StoreResult<Option<PhaseState>> {
            self.reads.set(self.reads.get() + 1);
            self.inner.recall_phase().await
        }
        async fn remember_phase(&self, record: &PhaseState) -> StoreResult<()> {
            self.written()?;
            self.inner.remember_phase(record).await
        }
        async fn recall_holder(&self) -> StoreResult<Option<Holder>> {
            self.reads.set(self.reads.get() + 1);
            self.inner.recall_holder().await
        }
        async fn remember_holder(&self, holder: Option<&Holder>) -> StoreResult<()> {
            self.written()?;
            self.inner.remember_holder(holder).await
        }
    }

    fn entry(at_ms: u64) -> Remembered {
        Remembered { value: None, at_ms }
    }

    #[test]
    fn storage_is_read_once_per_instance_and_every_change_written_through() {
        let (storage, held) = (Storage::default(), Held::default());
        let memo = held.over(&storage);
        assert_eq!(block_on(memo.recall(StoreName::Old, "k")).unwrap(), None);
        block_on(memo.remember(StoreName::Old, "k", entry(5))).unwrap();
        let holder = Holder {
            id: "c1".into(),
            at_ms: 7,
        };
        block_on(memo.remember_holder(Some(&holder))).unwrap();
        assert_eq!(
            block_on(memo.recall(StoreName::Old, "k")).unwrap(),
            Some(entry(5))
        );
        assert_eq!(block_on(memo.recall(StoreName::New, "k")).unwrap(), None);
        assert_eq!(
            block_on(memo.recall_holder()).unwrap(),
            Some(holder.clone())
        );
        assert_eq!(storage.reads.get(), 1, "one list, then memory");
        // Storage has every change: a new instance reads the same.
        let fresh = Held::default();
        let memo = fresh.over(&storage);
        assert_eq!(
            block_on(memo.recall(StoreName::Old, "k")).unwrap(),
            Some(entry(5))
        );
        assert_eq!(block_on(memo.recall_holder()).unwrap(), Some(holder));
        block_on(memo.forget(StoreName::Old, "k")).unwrap();
        assert_eq!(block_on(memo.recall(StoreName::Old, "k")).unwrap(), None);
        assert_eq!(
            block_on(storage.inner.recall(StoreName::Old, "k")).unwrap(),
            None
        );
    }

    #[test]
    fn an_object_holding_more_than_the_bound_reads_storage_at_each_recall() {
        let (storage, held) = (Storage::default(), Held::default());
        let memo = held.over(&storage);
        let large = Remembered {
            value: Some(crate::writes::memo::RememberedValue {
                text: "x".repeat(HELD_MAX_BYTES + 1),
                metadata: None,
            }),
            at_ms: 1,
        };
        assert_eq!(block_on(memo.recall(StoreName::Old, "k")).unwrap(), None);
        assert!(held.is_loaded());
        block_on(memo.remember(StoreName::Old, "k", large.clone())).unwrap();
        assert!(!held.is_loaded(), "too large to hold");
        let reads = storage.reads.get();
        for _ in 0..2 {
            let got = block_on(memo.recall(StoreName::Old, "k")).unwrap();
            assert_eq!(got, Some(large.clone()));
        }
        assert_eq!(storage.reads.get(), reads + 2, "each recall reads storage");
        // A new instance finds it too large at once.
        let fresh = Held::default();
        let memo = fresh.over(&storage);
        assert_eq!(
            block_on(memo.recall(StoreName::Old, "k")).unwrap(),
            Some(large)
        );
        assert!(!fresh.is_loaded());
    }

    #[test]
    fn a_failed_write_drops_the_copy_so_storage_is_read_again() {
        let (storage, held) = (Storage::default(), Held::default());
        let memo = held.over(&storage);
        block_on(memo.remember(StoreName::New, "k", entry(1))).unwrap();
        assert_eq!(block_on(memo.recall_phase()).unwrap(), None);
        storage.failing.set(true);
        assert!(block_on(memo.remember(StoreName::New, "k", entry(2))).is_err());
        assert!(!held.is_loaded());
        storage.failing.set(false);
        let reads = storage.reads.get();
        assert_eq!(
            block_on(memo.recall(StoreName::New, "k")).unwrap(),
            Some(entry(1)),
            "what storage holds, not what the failed write meant"
        );
        assert_eq!(storage.reads.get(), reads + 1);
    }
}
