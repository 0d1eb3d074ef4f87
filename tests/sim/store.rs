//! The simulated KV namespace: every operation is one scheduler step (it yields once
//! before acting), and may fail before it acts or after it acted, as the seed decides.
//!
//! Reads can be stale the way Workers KV's are: a write takes up to the consistency
//! window to reach other locations (here, a task is an isolate in a location of its
//! own). A read returns any version of the key that was current within the window, as
//! the seed decides, but never one older than what its location last saw or wrote
//! (caches move forward; a location sees its own writes). `list` sees every key
//! written, and may still show a key deleted within the window, as KV's listings do.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use customer_kv_migration::store::{
    list_page, KvStore, ListPage, PutOptions, StoreError, StoreResult, StoredValue,
};
use serde_json::Value;

use super::rng::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub bytes: Vec<u8>,
    pub expiration: Option<u64>,
    pub metadata: Option<Value>,
}

/// What both namespaces share: the seeded randomness, the clock, the fault settings and
/// the history's trace.
pub struct Shared {
    pub rng: RefCell<Rng>,
    pub clock: Cell<u64>,
    /// Probability that an operation fails.
    pub fault_rate: Cell<f64>,
    pub faults: Cell<u64>,
    pub operations: Cell<u64>,
    /// Injected faults, by their number, that shrinking turned off: the operation
    /// succeeds instead (the draw is still made, so later draws stay the same).
    pub spared_faults: BTreeSet<u64>,
    /// The faults injected so far, by number.
    pub injected: RefCell<Vec<u64>>,
    /// The task running now: each task is an isolate in a location of its own.
    pub location: Cell<usize>,
    /// How long a location may serve what it last saw of a key (0: reads are current).
    pub stale_window_ms: u64,
    /// Reads that returned something other than the latest write.
    pub stale_reads: Cell<u64>,
    /// When the history began: the trace gives times from it.
    pub start_ms: u64,
    pub trace: RefCell<Vec<String>>,
}

impl Shared {
    pub fn new(seed: u64, fault_rate: f64, stale_window_ms: u64, start_ms: u64) -> Self {
        Self {
            rng: RefCell::new(Rng::new(seed ^ 0x5eed)),
            clock: Cell::new(start_ms),
            fault_rate: Cell::new(fault_rate),
            faults: Cell::new(0),
            operations: Cell::new(0),
            spared_faults: BTreeSet::new(),
            injected: RefCell::new(Vec::new()),
            location: Cell::new(usize::MAX),
            start_ms,
            stale_window_ms,
            stale_reads: Cell::new(0),
            trace: RefCell::new(Vec::new()),
        }
    }

    pub fn note(&self, text: String) {
        let at = self.clock.get().saturating_sub(self.start_ms);
        self.trace.borrow_mut().push(format!("{at:>7} ms  {text}"));
    }
}

/// One version of a key: from when it was current, and its value (`None`: absent).
type Version = (u64, Option<Entry>);

pub struct SimKv {
    pub name: &'static str,
    pub entries: RefCell<BTreeMap<String, Entry>>,
    /// Every version of each key written during the history, oldest first.
    versions: RefCell<HashMap<String, Vec<Version>>>,
    /// Per location and key: the newest version it has seen or written.
    seen: RefCell<HashMap<(usize, String), usize>>,
    pub shared: Rc<Shared>,
}

/// A future that is pending once: the point where the scheduler may switch tasks.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Fate {
    Succeed,
    /// Fails before acting: nothing changed.
    FailBefore,
    /// Acts, then reports failure (a timeout after the write landed).
    FailAfter,
}

impl SimKv {
    pub fn new(name: &'static str, shared: Rc<Shared>) -> Self {
        Self {
            name,
            entries: RefCell::new(BTreeMap::new()),
            versions: RefCell::new(HashMap::new()),
            seen: RefCell::new(HashMap::new()),
            shared,
        }
    }

    pub async fn step(&self, operation: &str, key: &str) -> Fate {
        YieldOnce(false).await;
        let shared = &self.shared;
        shared.operations.set(shared.operations.get() + 1);
        let rate = shared.fault_rate.get();
        let mut rng = shared.rng.borrow_mut();
        if !(rate > 0.0 && rng.chance(rate)) {
            return Fate::Succeed;
        }
        let fate = if rng.chance(0.5) {
            Fate::FailBefore
        } else {
            Fate::FailAfter
        };
        let number = shared.faults.get();
        shared.faults.set(number + 1);
        if shared.spared_faults.contains(&number) {
            return Fate::Succeed;
        }
        shared.injected.borrow_mut().push(number);
        shared.note(format!(
            "  fault #{number}: {} {operation} {key}: {fate:?}",
            self.name
        ));
        fate
    }

    /// The latest write, as the checks see it.
    pub fn peek(&self, key: &str) -> Option<Entry> {
        self.entries.borrow().get(key).cloned()
    }

    /// What the running location reads: a version current within the window, not
    /// older than the one it saw last.
    fn read(&self, key: &str) -> Option<Entry> {
        let latest = self.peek(key);
        let window = self.shared.stale_window_ms;
        if window == 0 {
            return latest;
        }
        let since = self.shared.clock.get().saturating_sub(window);
        let versions = self.versions.borrow();
        let Some(versions) = versions.get(key) else {
            return latest; // never written during the history
        };
        let slot = (self.shared.location.get(), key.to_owned());
        let floor = self.seen.borrow().get(&slot).copied().unwrap_or(0);
        // Versions replaced before the window began are gone everywhere.
        let first = (floor..versions.len())
            .find(|&i| versions.get(i + 1).is_none_or(|(until, _)| *until > since))
            .unwrap_or(versions.len() - 1);
        let chosen = first
            + self
                .shared
                .rng
                .borrow_mut()
                .below((versions.len() - first) as u64) as usize;
        self.seen.borrow_mut().insert(slot, chosen);
        if chosen + 1 < versions.len() {
            self.shared
                .stale_reads
                .set(self.shared.stale_reads.get() + 1);
        }
        versions[chosen].1.clone()
    }

    /// The keys a listing shows: the latest, and, as KV's listings do within the window,
    /// any key of `prefix` deleted in it may still be listed (as the seed decides).
    fn listed_view(&self, prefix: &str) -> BTreeMap<String, Entry> {
        let mut view = self.entries.borrow().clone();
        let window = self.shared.stale_window_ms;
        if window == 0 {
            return view;
        }
        let since = self.shared.clock.get().saturating_sub(window);
        let versions = self.versions.borrow();
        let mut deleted: Vec<(&String, &Entry)> = versions
            .iter()
            .filter(|(key, _)| key.starts_with(prefix) && !view.contains_key(*key))
            .filter_map(|(key, versions)| match versions.as_slice() {
                [.., (_, Some(before)), (deleted_at, None)] if *deleted_at > since => {
                    Some((key, before))
                }
                _ => None,
            })
            .collect();
        // In key order, so the draws do not depend on the map's order.
        deleted.sort_by(|a, b| a.0.cmp(b.0));
        let mut rng = self.shared.rng.borrow_mut();
        for (key, before) in deleted {
            if rng.chance(0.5) {
                view.insert(key.clone(), before.clone());
            }
        }
        view
    }

    fn write(&self, key: &str, entry: Option<Entry>) {
        // `SIM_WATCH=<key>` shows every write of that key, for diagnosing a replay.
        if std::env::var("SIM_WATCH").is_ok_and(|watched| watched == key) {
            let value = entry
                .as_ref()
                .map(|e| String::from_utf8_lossy(&e.bytes).into_owned());
            let (at, location) = (self.shared.clock.get(), self.shared.location.get());
            eprintln!(
                "{at} ms, location {location}: {} {key} <- {value:?}",
                self.name
            );
        }
        let before = match &entry {
            Some(entry) => self
                .entries
                .borrow_mut()
                .insert(key.to_owned(), entry.clone()),
            None => self.entries.borrow_mut().remove(key),
        };
        if self.shared.stale_window_ms == 0 {
            return;
        }
        let mut versions = self.versions.borrow_mut();
        let versions = versions
            .entry(key.to_owned())
            .or_insert_with(|| vec![(0, before)]);
        versions.push((self.shared.clock.get(), entry));
        let slot = (self.shared.location.get(), key.to_owned());
        self.seen.borrow_mut().insert(slot, versions.len() - 1);
    }
}

fn injected(operation: &'static str) -> StoreError {
    StoreError::new(operation, "injected fault")
}

fn stored(entry: Entry) -> StoredValue {
    StoredValue {
        bytes: entry.bytes,
        metadata: entry.metadata,
    }
}

impl KvStore for SimKv {
    async fn get(&self, key: &str) -> StoreResult<Option<StoredValue>> {
        if self.step("get", key).await != Fate::Succeed {
            return Err(injected("get"));
        }
        Ok(self.read(key).map(stored))
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<StoredValue>>> {
        let first = keys.first().map_or("", String::as_str);
        if self.step("get_many", first).await != Fate::Succeed {
            return Err(injected("get"));
        }
        Ok(keys.iter().map(|k| self.read(k).map(stored)).collect())
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> StoreResult<()> {
        let fate = self.step("put", key).await;
        if fate == Fate::FailBefore {
            return Err(injected("put"));
        }
        let entry = Entry {
            bytes: value.to_vec(),
            expiration: options.expiration,
            metadata: options.metadata,
        };
        self.write(key, Some(entry));
        if fate == Fate::FailAfter {
            return Err(injected("put"));
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let fate = self.step("delete", key).await;
        if fate == Fate::FailBefore {
            return Err(injected("delete"));
        }
        self.write(key, None);
        if fate == Fate::FailAfter {
            return Err(injected("delete"));
        }
        Ok(())
    }

    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> StoreResult<ListPage> {
        if self.step("list", prefix).await != Fate::Succeed {
            return Err(injected("list"));
        }
        let view = self.listed_view(prefix);
        Ok(list_page(&view, prefix, cursor, limit, |e| {
            (e.expiration, e.metadata.clone())
        }))
    }
}

/// Lets the scheduler run other tasks: a client thinking, a cron waiting for its minute.
pub async fn pause() {
    YieldOnce(false).await;
}
