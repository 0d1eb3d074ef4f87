//! The simulated KV namespace: every operation is one scheduler step (it yields once
//! before acting), and may fail before it acts or after it acted, as the seed decides.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
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

/// What both namespaces share: the seeded randomness and the fault settings.
pub struct Shared {
    pub rng: RefCell<Rng>,
    /// Probability that an operation fails.
    pub fault_rate: Cell<f64>,
    pub faults: Cell<u64>,
    pub operations: Cell<u64>,
}

pub struct SimKv {
    pub entries: RefCell<BTreeMap<String, Entry>>,
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

#[derive(Clone, Copy, PartialEq)]
enum Fate {
    Succeed,
    /// Fails before acting: nothing changed.
    FailBefore,
    /// Acts, then reports failure (a timeout after the write landed).
    FailAfter,
}

impl SimKv {
    pub fn new(shared: Rc<Shared>) -> Self {
        Self {
            entries: RefCell::new(BTreeMap::new()),
            shared,
        }
    }

    async fn step(&self) -> Fate {
        YieldOnce(false).await;
        self.shared.operations.set(self.shared.operations.get() + 1);
        let rate = self.shared.fault_rate.get();
        let mut rng = self.shared.rng.borrow_mut();
        if rate > 0.0 && rng.chance(rate) {
            self.shared.faults.set(self.shared.faults.get() + 1);
            if rng.chance(0.5) {
                Fate::FailBefore
            } else {
                Fate::FailAfter
            }
        } else {
            Fate::Succeed
        }
    }

    pub fn peek(&self, key: &str) -> Option<Entry> {
        self.entries.borrow().get(key).cloned()
    }
}

fn injected(operation: &'static str) -> StoreError {
    StoreError {
        operation,
        message: "injected fault".into(),
    }
}

impl KvStore for SimKv {
    async fn get(&self, key: &str) -> StoreResult<Option<StoredValue>> {
        if self.step().await != Fate::Succeed {
            return Err(injected("get"));
        }
        Ok(self.peek(key).map(|e| StoredValue {
            bytes: e.bytes,
            metadata: e.metadata,
        }))
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<StoredValue>>> {
        if self.step().await != Fate::Succeed {
            return Err(injected("get"));
        }
        Ok(keys
            .iter()
            .map(|k| {
                self.peek(k).map(|e| StoredValue {
                    bytes: e.bytes,
                    metadata: e.metadata,
                })
            })
            .collect())
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> StoreResult<()> {
        let fate = self.step().await;
        if fate == Fate::FailBefore {
            return Err(injected("put"));
        }
        let entry = Entry {
            bytes: value.to_vec(),
            expiration: options.expiration,
            metadata: options.metadata,
        };
        self.entries.borrow_mut().insert(key.to_owned(), entry);
        if fate == Fate::FailAfter {
            return Err(injected("put"));
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let fate = self.step().await;
        if fate == Fate::FailBefore {
            return Err(injected("delete"));
        }
        self.entries.borrow_mut().remove(key);
        if fate == Fate::FailAfter {
            return Err(injected("delete"));
        }
        Ok(())
    }

    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> StoreResult<ListPage> {
        if self.step().await != Fate::Succeed {
            return Err(injected("list"));
        }
        let entries = self.entries.borrow();
        Ok(list_page(&entries, prefix, cursor, limit, |e| {
            (e.expiration, e.metadata.clone())
        }))
    }
}

/// Lets the scheduler run other tasks: a client thinking, a cron waiting for its minute.
pub async fn pause() {
    YieldOnce(false).await;
}
