//! Reads and writes routed by the current phase (docs/design.md §3, §4): the one place
//! that decides which store a customer key is read from and written to, in which order,
//! and what happens when the second write fails.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use serde_json::Value;

use crate::domain::{is_customer_key, Tombstone};
use crate::error::Error;
use crate::migration::checking::inventory;
use crate::migration::copying::copy;
use crate::migration::healing::{fallback, journal};
use crate::migration::key_state;
use crate::migration::state::cohort::{self, Cohort};
use crate::phase::Phase;
use crate::store::{read_many, KvStore, PutOptions, StoreName, StoreResult, StoredValue, Stores};

/// A value found by the read path, and which store served it.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub value: StoredValue,
    pub store: StoreName,
}

/// One key's change in a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put {
        key: String,
        bytes: Vec<u8>,
        metadata: Option<Value>,
    },
    /// Removes a key: a customer record keeps a tombstone in the new store
    /// (see [`key_state::removed`]).
    Remove { key: String },
}

impl Change {
    pub fn key(&self) -> &str {
        match self {
            Change::Put { key, .. } | Change::Remove { key, .. } => key,
        }
    }
}

/// The stores as the current phase routes them, for the duration of one request.
pub struct DataPlane<'a, S> {
    pub stores: &'a Stores<S>,
    /// The record's phase: every key's but the records of a cohort's customers.
    pub phase: Phase,
    /// Customers whose records go by the phase one step away (docs/design.md §17).
    pub cohort: Option<Cohort>,
    pub now_ms: u64,
    /// Things worth a log line that did not fail the request (no private data).
    pub warnings: RefCell<Vec<String>>,
    /// Reads this request served from the fallback store (its metrics: `crate::metrics`).
    pub fallback_hits: Cell<u32>,
    /// Whether a fallback read copies the key into the new store. Only for requests that
    /// just read: a request that goes on to write the key relies on the new store
    /// lacking it (see [`DataPlane::apply_after_read`]).
    pub read_repair: bool,
    /// How long after a read-repair its copy is checked again (0: reads are always
    /// current and no request runs past the copy, so its own re-read suffices; see
    /// `migration::healing::read_repair`).
    pub settle_copies_after_ms: u64,
    /// Set while writes since phase 4 are missing from the old store (after a rollback,
    /// until the reverse sync has caught it up): the new store is then the source every
    /// copy reads, so every write goes to it first and no copy runs the other way.
    pub old_store_catching_up: bool,
    /// Set once the migration is finalized: nothing reads the old store, not even for a
    /// mapping's hint (docs/design.md §9, "Finalizing").
    pub old_store_retired: bool,
    /// Set while writes have stopped reaching the new store after it was written (phase 0
    /// after a rollback or a cancelled cohort): a customer the inventory found only there
    /// may have been written to both stores meanwhile (docs/design.md §16).
    pub new_store_behind: bool,
}

impl<'a, S: KvStore> DataPlane<'a, S> {
    pub fn new(stores: &'a Stores<S>, phase: Phase, now_ms: u64) -> Self {
        Self {
            stores,
            phase,
            cohort: None,
            now_ms,
            warnings: RefCell::new(Vec::new()),
            fallback_hits: Cell::new(0),
            read_repair: false,
            settle_copies_after_ms: 0,
            old_store_catching_up: false,
            old_store_retired: false,
            new_store_behind: false,
        }
    }

    /// The same plane while the old store is behind the new one (see the field).
    pub fn with_old_store_catching_up(self, catching_up: bool) -> Self {
        Self {
            old_store_catching_up: catching_up,
            ..self
        }
    }

    /// The same plane while the new store is behind the old one (see the field).
    pub fn with_new_store_behind(self, behind: bool) -> Self {
        Self {
            new_store_behind: behind,
            ..self
        }
    }

    /// The same plane with a cohort's customers' records in the cohort's phase.
    pub fn with_cohort(self, cohort: Option<Cohort>) -> Self {
        Self { cohort, ..self }
    }

    /// The phase `key` is read and written by (docs/design.md §17).
    pub fn phase_for(&self, key: &str) -> Phase {
        cohort::phase_of_key(self.phase, self.cohort.as_ref(), key)
    }

    /// Whether `allowed` holds for the record's phase and the cohort's, if any.
    pub fn every_phase(&self, allowed: impl Fn(Phase) -> bool) -> bool {
        allowed(self.phase)
            && self
                .cohort
                .as_ref()
                .and_then(Cohort::phase)
                .is_none_or(allowed)
    }

    /// The phase of a request's changes: all of one key (asserted in debug builds).
    fn phase_of_changes(&self, changes: &[Change]) -> Phase {
        let phase = changes
            .first()
            .map_or(self.phase, |change| self.phase_for(change.key()));
        debug_assert!(changes.iter().all(|c| self.phase_for(c.key()) == phase));
        phase
    }

    /// The same plane once the migration is finalized (see the field).
    pub fn with_old_store_retired(self, retired: bool) -> Self {
        Self {
            old_store_retired: retired,
            ..self
        }
    }

    /// A plane for a request that only reads: fallback hits are repaired, and each copy
    /// is checked again `settle_copies_after_ms` later.
    pub fn reading(
        stores: &'a Stores<S>,
        phase: Phase,
        now_ms: u64,
        settle_copies_after_ms: u64,
    ) -> Self {
        Self {
            read_repair: true,
            settle_copies_after_ms,
            ..Self::new(stores, phase, now_ms)
        }
    }

    /// Reads `key` from the stores the phase reads, in order. A tombstone anywhere means
    /// the key was deleted and stops the search. A value served by any store but the
    /// first is a fallback hit and is recorded (a write on the fallback path only, so a
    /// read that hits the new store pays nothing for it).
    pub async fn read(&self, key: &str) -> StoreResult<Option<Found>> {
        let phase = self.phase_for(key);
        for (position, &store) in phase.routing().reads.iter().enumerate() {
            let Some(value) = self.stores.get(store).get(key).await? else {
                continue;
            };
            if Tombstone::is_tombstone(&value.bytes) {
                return Ok(None);
            }
            if position > 0 {
                self.after_fallback(key, &value, phase).await;
            }
            return Ok(Some(Found { value, store }));
        }
        self.read_new_only_customer(key, phase).await
    }

    /// In a phase that does not read the new store (0 and 1), a customer record the old
    /// store lacks is looked for there too, and served if the inventory found it only
    /// there: a customer another service created (docs/design.md §16). An unmarked value
    /// is not served: after a rollback the new store may hold what the old store deleted.
    /// Costs one read on a miss, and one more when the new store holds the key.
    async fn read_new_only_customer(&self, key: &str, phase: Phase) -> StoreResult<Option<Found>> {
        if phase.reads_from(StoreName::New) || !is_customer_key(key) {
            return Ok(None);
        }
        let Some(value) = self.stores.new.get(key).await? else {
            return Ok(None);
        };
        if Tombstone::is_tombstone(&value.bytes)
            || !inventory::found_only_in_new_store(&self.stores.new, key).await?
        {
            return Ok(None);
        }
        Ok(Some(Found {
            value,
            store: StoreName::New,
        }))
    }

    /// Values of `keys` (at most [`crate::store::MAX_BULK_KEYS`]) in the phase's read
    /// order: a bulk read of the first store, then one of the fallback store for what it
    /// lacks. A tombstone counts as absent. No fallback hit is recorded: only for
    /// background checks, not for the reads of the API.
    pub async fn read_many(&self, keys: &[String]) -> StoreResult<Vec<Option<StoredValue>>> {
        let phases: Vec<Phase> = keys.iter().map(|key| self.phase_for(key)).collect();
        let Some(other) = phases.iter().copied().find(|p| *p != self.phase) else {
            return self.read_many_in(self.phase, keys).await;
        };
        // A cohort's records go by their own phase's order: one bulk read per phase.
        let mut values = vec![None; keys.len()];
        for phase in [self.phase, other] {
            let (positions, group): (Vec<usize>, Vec<String>) = keys
                .iter()
                .enumerate()
                .filter(|(i, _)| phases[*i] == phase)
                .map(|(i, key)| (i, key.clone()))
                .unzip();
            for (position, value) in positions
                .into_iter()
                .zip(self.read_many_in(phase, &group).await?)
            {
                values[position] = value;
            }
        }
        Ok(values)
    }

    async fn read_many_in(
        &self,
        phase: Phase,
        keys: &[String],
    ) -> StoreResult<Vec<Option<StoredValue>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.stores.get(phase.primary_read_store());
        let mut values = read_many(first, keys).await?;
        if let Some(fallback) = phase.fallback_store() {
            let missing: Vec<String> = keys
                .iter()
                .zip(&values)
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| k.clone())
                .collect();
            if !missing.is_empty() {
                let found = read_many(self.stores.get(fallback), &missing).await?;
                let mut found: HashMap<String, Option<StoredValue>> =
                    missing.into_iter().zip(found).collect();
                for (key, value) in keys.iter().zip(values.iter_mut()) {
                    if value.is_none() {
                        *value = found.remove(key).flatten();
                    }
                }
            }
        }
        Ok(values
            .into_iter()
            .map(|v| v.filter(|v| !Tombstone::is_tombstone(&v.bytes)))
            .collect())
    }

    /// Reads `key` from the store the phase does not read, if there is one. Only for
    /// values that are checked against the read path before they count.
    pub async fn read_elsewhere(&self, key: &str) -> StoreResult<Option<StoredValue>> {
        if self.old_store_retired {
            return Ok(None);
        }
        match self.phase_for(key).unread_store() {
            Some(store) => self.stores.get(store).get(key).await,
            None => Ok(None),
        }
    }

    /// Reads `key` from the store other than `store`, unless that is the retired old
    /// store. Only for values that are checked against the read path before they count.
    pub async fn read_other_store(
        &self,
        store: StoreName,
        key: &str,
    ) -> StoreResult<Option<StoredValue>> {
        let other = match store {
            StoreName::New if self.old_store_retired => return Ok(None),
            StoreName::New => StoreName::Old,
            StoreName::Old => StoreName::New,
        };
        self.stores.get(other).get(key).await
    }

    /// Applies `changes` to the stores the phase writes, the authoritative one first.
    pub async fn apply(&self, changes: &[Change]) -> Result<(), Error> {
        let phase = self.phase_of_changes(changes);
        self.apply_ordered(phase, changes, phase.routing().writes, false)
            .await
            .map(|_| ())
    }

    /// Applies changes that create a key no store held. Where both stores are written,
    /// the old store goes first, as for a key the old store served: a backfill copy or
    /// repair racing the create then sees it when it re-reads the old store. The new
    /// store may hold a tombstone for the key, so its write still has to succeed
    /// wherever the new store is read first.
    pub async fn apply_to_absent_key(&self, changes: &[Change]) -> Result<(), Error> {
        let phase = self.phase_of_changes(changes);
        if phase.writes_both()
            && phase.authoritative_store() == StoreName::New
            && !self.old_store_catching_up
        {
            self.apply_ordered(phase, changes, &[StoreName::Old, StoreName::New], false)
                .await
                .map(|_| ())
        } else {
            self.apply(changes).await
        }
    }

    /// Applies changes to a key that was read from `served_by`, writing that store first
    /// when the phase writes it. A key served by the old store is absent from the new
    /// one, so the old store is the one reads see; writing it first also means a
    /// concurrent backfill copy that could overwrite this write in the new store sees
    /// the change when it re-reads the old store (see `migration::copying::copy`).
    ///
    /// Returns whether the changes reached every store the phase writes (a second-store
    /// failure may be acknowledged, journaled, in phase 3).
    pub async fn apply_after_read(
        &self,
        changes: &[Change],
        served_by: StoreName,
    ) -> Result<bool, Error> {
        let phase = self.phase_of_changes(changes);
        if !phase.writes_to(StoreName::New) {
            if served_by == StoreName::New {
                self.apply_where_it_lives(changes).await?;
            } else {
                self.remove_new_store_copies(changes).await?;
                self.apply(changes).await?;
            }
            return Ok(true);
        }
        if phase.secondary_store() == Some(served_by) && !self.old_store_catching_up {
            // The new store lacked the key: a failed write there leaves it absent, and
            // every read falls through to the old store, which has the change.
            let order = [served_by, phase.authoritative_store()];
            self.apply_ordered(phase, changes, &order, true).await
        } else {
            self.apply_ordered(phase, changes, phase.routing().writes, false)
                .await
        }
    }

    /// Applies changes to a customer only the new store holds, read there in phase 0
    /// (`read_new_only_customer`): there, or a later read there would miss the change;
    /// the old store lacking it, reads fall through to it. A delete removes the key
    /// outright: a tombstone exists to keep a copy from the old store from bringing a
    /// customer back, and the old store never held this one, whereas a tombstone would
    /// hide a customer created again in this phase (in the old store) from phase 2 on.
    async fn apply_where_it_lives(&self, changes: &[Change]) -> Result<(), Error> {
        for change in changes {
            match change {
                Change::Put { .. } => self.apply_to(StoreName::New, change).await?,
                Change::Remove { key } => {
                    key_state::write(&self.stores.new, key, None, None).await?;
                }
            }
        }
        Ok(())
    }

    /// Before a write in phase 0 to the old store, of a customer the new store may hold
    /// a copy of that reads falling through the old store would find (docs/design.md
    /// §16): the copy goes, outright (see `apply_where_it_lives` on tombstones), and
    /// first, so that should the old store's write then fail, reads still find the
    /// customer there.
    /// - A delete: the copy may be another service's (marked `same` or `different`) or
    ///   one dual-written before a return to phase 0; phase 2 would read it first and
    ///   nothing would remove it, since the backfill lists the old store. One KV write.
    /// - Any write while the new store is behind, of a key marked `new_only`: its copy
    ///   there stops following the old store, and once the old store deletes the key a
    ///   read within the consistency window could fall through to that older copy. One
    ///   mark read, and a delete where marked.
    async fn remove_new_store_copies(&self, changes: &[Change]) -> Result<(), Error> {
        for change in changes {
            let key = change.key();
            if !is_customer_key(key) {
                continue;
            }
            let goes = match change {
                Change::Remove { .. } => true,
                Change::Put { .. } => {
                    self.new_store_behind
                        && inventory::found_only_in_new_store(&self.stores.new, key).await?
                }
            };
            if goes {
                key_state::write(&self.stores.new, key, None, None).await?;
            }
        }
        Ok(())
    }

    /// Every change reaches the first store, in order; a failure there fails the request
    /// before anything else is written. The changes then go to the second store
    /// together; a key whose second write fails is recorded in the repair journal.
    ///
    /// The request still succeeds after a failed second write only if no isolate can be
    /// reading that store first: isolates see a phase change at different moments, so an
    /// isolate in an adjacent phase may read it first (in phase 1 the new store, which
    /// phase 2 reads first; in phase 2 the old store, which phase 1 reads first). There,
    /// the write is not acknowledged: a stale value in that store would hide it.
    /// Phase 3's second store, the old one, is read first by neither phase 2 nor 4.
    /// Nor does the request succeed when the journal cannot be written: an acknowledged
    /// write must never be silently out of sync.
    async fn apply_ordered(
        &self,
        phase: Phase,
        changes: &[Change],
        order: &[StoreName],
        second_lacked_keys: bool,
    ) -> Result<bool, Error> {
        let first = order[0];
        for (index, change) in changes.iter().enumerate() {
            if let Err(err) = self.apply_to(first, change).await {
                // A failed write may still have landed (a timeout after the write), and
                // the changes before it did: the second store now lags on all of them.
                if let Some(&second) = order.get(1) {
                    for attempted in &changes[..=index] {
                        let journaled =
                            journal::record(&self.stores.new, attempted.key(), second, self.now_ms)
                                .await;
                        if journaled.is_err() {
                            self.warn("could not journal a partly applied write".into());
                        }
                    }
                }
                return Err(err.into());
            }
        }
        let Some(&second) = order.get(1) else {
            return Ok(true);
        };
        // In order, stopping at the first failure: the order of `changes` is chosen so
        // that any prefix of it leaves a store consistent (a mapping is written before
        // its record and removed after it), which writes issued together would not.
        let mut missed_from = None;
        let mut refused_for_rate = false;
        for (index, change) in changes.iter().enumerate() {
            if let Err(write_err) = self.apply_to(second, change).await {
                self.warn(format!("second write failed, journaling: {write_err}"));
                missed_from = Some(index);
                refused_for_rate = write_err.rate_limited;
                break;
            }
        }
        let missed = missed_from.is_some();
        for change in &changes[missed_from.unwrap_or(changes.len())..] {
            if let Err(journal_err) =
                journal::record(&self.stores.new, change.key(), second, self.now_ms).await
            {
                if journal_err.rate_limited {
                    return Err(Error::RateLimited(format!(
                        "the write reached the {} store, but KV refused both the {} store's write and its repair-journal entry (one write a second to one key): retry after a second",
                        first.as_str(),
                        second.as_str()
                    )));
                }
                return Err(Error::NotAcknowledged(format!(
                        "the write reached the {} store but neither the {} store nor the repair journal: {journal_err}",
                        first.as_str(),
                        second.as_str()
                )));
            }
        }
        // The `mutant-ack-lagging` build acknowledges every write whose second store
        // missed it, as if no isolate could be reading that store first.
        let tolerated = cfg!(feature = "mutant-ack-lagging") || second_lacked_keys;
        if missed && !tolerated && phase.read_first_nearby(second) && refused_for_rate {
            return Err(Error::RateLimited(format!(
                "the write reached the {} store, but KV refused the {} store's write (one write a second to one key); it is journaled for repair: retry after a second",
                first.as_str(),
                second.as_str()
            )));
        }
        if missed && !tolerated && phase.read_first_nearby(second) {
            return Err(Error::NotAcknowledged(format!(
                    "the write reached the {} store but not the {} store, which isolates in phase {} or an adjacent phase read first; it is journaled for repair: retry",
                    first.as_str(),
                    second.as_str(),
                    phase.number()
            )));
        }
        Ok(!missed)
    }

    async fn apply_to(&self, store: StoreName, change: &Change) -> StoreResult<()> {
        let kv = self.stores.get(store);
        match change {
            Change::Put {
                key,
                bytes,
                metadata,
            } => {
                let options = PutOptions {
                    expiration: None,
                    metadata: metadata.clone(),
                };
                kv.put(key, bytes, options).await
            }
            Change::Remove { key } => {
                // The `mutant-no-tombstone` build deletes instead, to show the simulation
                // notices a deleted customer coming back from the old store.
                // Once finalized nothing reads the old store, so nothing can bring the
                // record back: the delete is a delete (docs/design.md §9).
                let state = if cfg!(feature = "mutant-no-tombstone") || self.old_store_retired {
                    None
                } else {
                    key_state::removed(store, key, self.now_ms)
                };
                key_state::write(kv, key, state.as_ref(), None).await
            }
        }
    }

    /// Records a fallback hit and, while both stores are written (phases 2 and 3),
    /// copies the key into the new store so the next read hits it. Not in phase 4: its
    /// writers skip the old store, so a copy racing one of them could not be checked.
    /// Neither step fails the read.
    async fn after_fallback(&self, key: &str, served: &StoredValue, phase: Phase) {
        self.fallback_hits
            .set(self.fallback_hits.get().saturating_add(1));
        if let Err(err) = fallback::record(&self.stores.new, key, phase, self.now_ms).await {
            self.warn(format!("could not record a fallback hit: {err}"));
        }
        if self.read_repair && !self.old_store_catching_up && phase.read_repairs() {
            if let Err(err) = copy::repair_on_read(
                self.stores,
                key,
                served,
                self.settle_copies_after_ms,
                self.now_ms,
            )
            .await
            {
                self.warn(format!("read-repair failed: {err}"));
            }
        }
    }

    fn warn(&self, message: String) {
        self.warnings.borrow_mut().push(message);
    }
}
