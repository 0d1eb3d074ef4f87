//! A queue in memory, for native tests and the simulation: messages wait in order until
//! a test takes them, and a message retried `max_retries` times goes to the dead letters,
//! as Cloudflare Queues does (docs/design.md §13).

use std::cell::RefCell;
use std::collections::VecDeque;

use futures::future::LocalBoxFuture;

use crate::migration::copying::fanout::consume::Disposition;
use crate::migration::copying::fanout::{ChunkQueue, QueueMessage};
use crate::store::{StoreError, StoreResult};

/// A message as the queue hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: QueueMessage,
    /// How many times it has been delivered, this time included.
    pub attempts: u32,
}

#[derive(Debug, Default)]
pub struct LocalQueue {
    waiting: RefCell<VecDeque<Delivery>>,
    dead: RefCell<VecDeque<Delivery>>,
    /// When set, sends fail (a queue outage).
    pub refuse_sends: std::cell::Cell<bool>,
    sent: std::cell::Cell<u64>,
}

/// Retries before a message is dead-lettered (the `max_retries` of wrangler.toml).
pub const MAX_RETRIES: u32 = 3;

impl LocalQueue {
    /// Takes up to `max` waiting messages, as one batch.
    pub fn take(&self, max: usize) -> Vec<Delivery> {
        let mut waiting = self.waiting.borrow_mut();
        let count = max.min(waiting.len());
        waiting.drain(..count).collect()
    }

    /// Takes the message at `index` (reordering), if any.
    pub fn take_at(&self, index: usize) -> Option<Delivery> {
        self.waiting.borrow_mut().remove(index)
    }

    /// Takes up to `max` dead letters.
    pub fn take_dead(&self, max: usize) -> Vec<Delivery> {
        let mut dead = self.dead.borrow_mut();
        let count = max.min(dead.len());
        dead.drain(..count).collect()
    }

    /// Puts a delivery back as the queue would after `disposition`.
    pub fn settle(&self, delivery: Delivery, disposition: Disposition) {
        if disposition == Disposition::Ack {
            return;
        }
        let next = Delivery {
            attempts: delivery.attempts + 1,
            ..delivery
        };
        if next.attempts > MAX_RETRIES + 1 {
            self.dead.borrow_mut().push_back(Delivery {
                attempts: 1,
                ..next
            });
        } else {
            self.waiting.borrow_mut().push_back(next);
        }
    }

    /// Delivers `delivery` once more, as at-least-once delivery may.
    pub fn redeliver(&self, delivery: Delivery) {
        self.waiting.borrow_mut().push_back(Delivery {
            attempts: delivery.attempts + 1,
            ..delivery
        });
    }

    pub fn waiting(&self) -> usize {
        self.waiting.borrow().len()
    }

    pub fn dead(&self) -> usize {
        self.dead.borrow().len()
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.get()
    }
}

impl ChunkQueue for LocalQueue {
    fn send(&self, messages: Vec<QueueMessage>) -> LocalBoxFuture<'_, StoreResult<()>> {
        let result = if self.refuse_sends.get() {
            Err(StoreError::new("queue send", "the queue refused the batch"))
        } else {
            self.sent.set(self.sent.get() + messages.len() as u64);
            let mut waiting = self.waiting.borrow_mut();
            waiting.extend(messages.into_iter().map(|message| Delivery {
                message,
                attempts: 1,
            }));
            Ok(())
        };
        Box::pin(async move { result })
    }
}
