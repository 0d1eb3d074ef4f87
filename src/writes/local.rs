//! The objects of a single process (docs/design.md §12): a lock and a memory per
//! customer and per email, applying exactly the decisions the Durable Objects apply.
//! Native tests and the simulation use them.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use futures::lock::Mutex;

use crate::domain::CustomerId;
use crate::error::Error;
use crate::store::{KvStore, Stores};
use crate::writes::claims::{self, ClaimAnswer, ClaimSender, EmailRequest};
use crate::writes::delete_check;
use crate::writes::held::Held;
use crate::writes::memo::{MemoryMemo, Waiter};
use crate::writes::object::{self, ObjectClock, Reply, WriteRequest};
use crate::writes::Writers;

/// One object's state: its lock, its storage and the copy of it its instance holds.
#[derive(Default)]
struct ObjectCell {
    lock: Mutex<()>,
    memo: MemoryMemo,
    held: Held,
}

/// Every object of the process, by name.
#[derive(Default)]
pub struct ObjectCells {
    customers: RefCell<HashMap<String, Rc<ObjectCell>>>,
    emails: RefCell<HashMap<String, Rc<ObjectCell>>>,
    calls: std::cell::Cell<ObjectCalls>,
    /// Each customer object's alarm: when it checks its writes (`delete_check::check_at`).
    /// An object has one alarm; setting it again moves it.
    alarms: RefCell<BTreeMap<String, u64>>,
}

/// Requests the objects were sent: in production, each is one billed Durable Object
/// request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ObjectCalls {
    pub customer: u32,
    pub email: u32,
}

impl ObjectCells {
    pub fn calls(&self) -> ObjectCalls {
        self.calls.get()
    }

    /// The customer objects whose alarm is set, and when it rings.
    pub fn alarms(&self) -> Vec<(String, u64)> {
        let alarms = self.alarms.borrow();
        alarms.iter().map(|(id, at)| (id.clone(), *at)).collect()
    }

    /// Every object instance goes, as the platform evicts idle objects: each keeps its
    /// storage and reads it again at its next request (`held`).
    pub fn evict_all(&self) {
        for cells in [&self.customers, &self.emails] {
            for cell in cells.borrow().values() {
                cell.held.evict();
            }
        }
    }

    pub fn reset_calls(&self) {
        self.calls.set(ObjectCalls::default());
    }

    fn count(&self, add: impl FnOnce(&mut ObjectCalls)) {
        let mut calls = self.calls.get();
        add(&mut calls);
        self.calls.set(calls);
    }
}

fn cell(map: &RefCell<HashMap<String, Rc<ObjectCell>>>, name: &str) -> Rc<ObjectCell> {
    map.borrow_mut().entry(name.to_owned()).or_default().clone()
}

/// The process's objects over `stores`.
pub struct LocalWriters<'a, S> {
    pub stores: &'a Stores<S>,
    pub cells: &'a ObjectCells,
    pub clock: ObjectClock,
    /// How long a fresh grant of an email binds (see `claims::decide`).
    pub hold_ms: u64,
}

impl<S: KvStore> Writers for LocalWriters<'_, S> {
    async fn write(&self, id: &CustomerId, request: WriteRequest) -> Reply {
        self.cells.count(|c| c.customer += 1);
        let cell = cell(&self.cells.customers, id.as_str());
        // The `mutant-no-serialization` build lets writes of one customer interleave
        // and decide on KV alone, as the worker did before its objects.
        let _held = if cfg!(feature = "mutant-no-serialization") {
            None
        } else {
            Some(cell.lock.lock().await)
        };
        let forgetful = (MemoryMemo::default(), Held::default());
        let (memo, held) = if cfg!(feature = "mutant-no-serialization") {
            (&forgetful.0, &forgetful.1)
        } else {
            (&cell.memo, &cell.held)
        };
        let memo = held.over(memo);
        let ran = object::run(self.stores, &memo, (self, self), id, request, self.clock).await;
        if let Some(at) = ran.check_at {
            let mut alarms = self.cells.alarms.borrow_mut();
            alarms.insert(id.as_str().to_owned(), at);
        }
        ran.reply
    }
}

impl<S: KvStore> LocalWriters<'_, S> {
    /// Rings the alarms due by the clock, as the platform would have: each object checks
    /// its writes under its lock. Returns how many objects wrote a store again. An alarm
    /// whose check fails stays set, as the platform retries it.
    pub async fn ring_alarms(&self) -> usize {
        let due: Vec<String> = {
            let alarms = self.cells.alarms.borrow();
            let now_ms = self.clock.now_ms;
            alarms
                .iter()
                .filter(|(_, at)| **at <= now_ms)
                .map(|(id, _)| id.clone())
                .collect()
        };
        let mut restored = 0;
        for name in due {
            let Ok(id) = CustomerId::parse(&name) else {
                continue;
            };
            let cell = cell(&self.cells.customers, &name);
            let _held = cell.lock.lock().await;
            let still_due = self.cells.alarms.borrow().get(&name).copied();
            if still_due.is_none_or(|at| at > self.clock.now_ms) {
                continue; // a write moved it while this waited for the lock
            }
            if let Ok(checked) = delete_check::check(
                self.stores,
                &cell.held.over(&cell.memo),
                self,
                &id,
                self.clock,
            )
            .await
            {
                self.cells.alarms.borrow_mut().remove(&name);
                restored += usize::from(!checked.restored.is_empty());
            }
        }
        restored
    }
}

/// A process's object does not sleep: its clock jumps to the time it would have waited
/// for, as if the request had taken that much longer.
impl<S> Waiter for LocalWriters<'_, S> {
    async fn wait_until(&self, at_ms: u64) -> u64 {
        at_ms.max(self.clock.now_ms)
    }
}

impl<S: KvStore> ClaimSender for LocalWriters<'_, S> {
    async fn send(&self, request: EmailRequest) -> Result<ClaimAnswer, Error> {
        self.cells.count(|c| c.email += 1);
        let cell = cell(&self.cells.emails, &request.hash);
        let _held = cell.lock.lock().await;
        claims::run(
            self.stores,
            &cell.held.over(&cell.memo),
            self,
            request,
            (self.clock, self.hold_ms),
        )
        .await
    }
}
