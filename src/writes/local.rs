//! The objects of a single process (docs/design.md §12): a lock and a memory per
//! customer and per email, applying exactly the decisions the Durable Objects apply.
//! Native tests and the simulation use them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use futures::lock::Mutex;

use crate::domain::{email_key, CustomerId, EmailHash};
use crate::error::Error;
use crate::migration::dataplane::DataPlane;
use crate::store::{KvStore, StoreName, Stores};
use crate::writes::claims::{self, ClaimAnswer, ClaimSender, EmailRequest, Holder};
use crate::writes::memo::{self, MemoryMemo, Remembering, Waiter};
use crate::writes::object::{self, ObjectClock, Reply, WriteRequest};
use crate::writes::Writers;

/// One object's state: its lock, its memory of its writes and, for an email, its holder.
#[derive(Default)]
struct ObjectCell {
    lock: Mutex<()>,
    memo: MemoryMemo,
    holder: RefCell<Option<Holder>>,
}

/// Every object of the process, by name.
#[derive(Default)]
pub struct ObjectCells {
    customers: RefCell<HashMap<String, Rc<ObjectCell>>>,
    emails: RefCell<HashMap<String, Rc<ObjectCell>>>,
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
        let cell = cell(&self.cells.customers, id.as_str());
        // The `mutant-no-serialization` build lets writes of one customer interleave
        // and decide on KV alone, as the worker did before its objects.
        let _held = if cfg!(feature = "mutant-no-serialization") {
            None
        } else {
            Some(cell.lock.lock().await)
        };
        let forgetful = MemoryMemo::default();
        let memo = if cfg!(feature = "mutant-no-serialization") {
            &forgetful
        } else {
            &cell.memo
        };
        object::run(self.stores, memo, (self, self), id, request, self.clock).await
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
        let cell = cell(&self.cells.emails, &request.hash);
        let _held = cell.lock.lock().await;
        let hash = EmailHash::from_hex(&request.hash)
            .ok_or_else(|| Error::invalid(crate::error::Input::Email, "not an email hash"))?;
        let now_ms = memo::paced(&cell.memo, self, &email_key(&hash), self.clock.now_ms).await?;
        let seen = Stores {
            old: Remembering::new(
                &self.stores.old,
                StoreName::Old,
                &cell.memo,
                now_ms,
                self.clock.trust_ms,
            ),
            new: Remembering::new(
                &self.stores.new,
                StoreName::New,
                &cell.memo,
                now_ms,
                self.clock.trust_ms,
            ),
        };
        let plane = DataPlane::new(&seen, request.phase, now_ms)
            .with_old_store_catching_up(request.old_store_catching_up);
        let held = cell.holder.borrow().clone();
        let (answer, holder) =
            claims::decide(&plane, &hash, held, request.op, self.hold_ms).await?;
        *cell.holder.borrow_mut() = holder;
        Ok(answer)
    }
}
