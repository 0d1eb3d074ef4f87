//! The per-invocation KV budget. Workers allows 1,000 KV operations per invocation; a
//! background run meters every operation through [`Metered`] so it stops short of the
//! cap instead of failing in the middle of a write.

use std::cell::Cell;

use crate::store::{KvStore, ListPage, PutOptions, StoreError, StoreResult, StoredValue, Stores};

/// The platform's cap on KV operations per invocation.
pub const PLATFORM_OPERATION_CAP: u32 = 1_000;
/// Operations kept back for a run's own bookkeeping (checkpoint, lease, report).
pub const BOOKKEEPING_RESERVE: u32 = 12;

#[derive(Debug)]
pub struct Budget {
    limit: u32,
    used: Cell<u32>,
}

impl Budget {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            used: Cell::new(0),
        }
    }

    /// A budget for one cron or admin invocation that has already spent `spent`.
    pub fn per_invocation(spent: u32) -> Self {
        let budget = Self::new(PLATFORM_OPERATION_CAP);
        budget.used.set(spent);
        budget
    }

    pub fn used(&self) -> u32 {
        self.used.get()
    }

    pub fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.used.get())
    }

    /// Charges `operations` spent outside the metered stores (requests to a Durable
    /// Object or a queue, which count against the invocation's subrequests too).
    pub fn charge(&self, operations: u32) {
        self.used.set(self.used.get().saturating_add(operations));
    }

    /// Whether `operations` more fit while keeping the bookkeeping reserve.
    pub fn affords(&self, operations: u32) -> bool {
        self.remaining() >= operations + BOOKKEEPING_RESERVE
    }

    /// How many units of one operation each fit beside `overhead` more operations while
    /// keeping the bookkeeping reserve: a run sizes its last chunk to this rather than
    /// leave the end of its budget unused.
    pub fn affordable(&self, overhead: u32) -> u32 {
        self.remaining()
            .saturating_sub(overhead + BOOKKEEPING_RESERVE)
    }

    fn spend(&self, operation: &'static str) -> StoreResult<()> {
        if self.used.get() >= self.limit {
            return Err(StoreError::new(
                operation,
                format!("the run's budget of {} KV operations is spent", self.limit),
            ));
        }
        self.used.set(self.used.get() + 1);
        Ok(())
    }
}

/// A store whose every operation is charged to a [`Budget`].
pub struct Metered<'a, S> {
    inner: &'a S,
    budget: &'a Budget,
}

impl<'a, S> Metered<'a, S> {
    pub fn new(inner: &'a S, budget: &'a Budget) -> Self {
        Self { inner, budget }
    }
}

/// Both stores charged to one budget.
pub fn metered<'a, S>(stores: &'a Stores<S>, budget: &'a Budget) -> Stores<Metered<'a, S>> {
    Stores {
        old: Metered::new(&stores.old, budget),
        new: Metered::new(&stores.new, budget),
    }
}

impl<S: KvStore> KvStore for Metered<'_, S> {
    async fn get(&self, key: &str) -> StoreResult<Option<StoredValue>> {
        self.budget.spend("get")?;
        self.inner.get(key).await
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<StoredValue>>> {
        self.budget.spend("get")?;
        self.inner.get_many(keys).await
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> StoreResult<()> {
        self.budget.spend("put")?;
        self.inner.put(key, value, options).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.budget.spend("delete")?;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> StoreResult<ListPage> {
        self.budget.spend("list")?;
        self.inner.list(prefix, cursor, limit).await
    }
}
