//! The backfill and the reverse sync fanned out on a queue (docs/design.md §13): a
//! planner lists the source and queues chunks of keys ([`plan`]); consumers, each with
//! its own invocation budget, copy them with the copy rules every path shares
//! ([`consume`]); the coordinator tallies what they report ([`tally`]). Without a queue
//! the cron copies the chunks itself, as before.

pub mod consume;
pub mod local;
pub mod plan;
pub mod tally;

use futures::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};

use crate::migration::checking::comparisons::CompareChunk;
use crate::migration::checking::emails_fanout::AuditChunk;
use crate::migration::copying::copy::Direction;
use crate::migration::state::coordinator::PhaseRegister;
use crate::store::StoreResult;

pub use consume::{consume, dead_letters, Consumed, Disposition};
pub use plan::{plan, with_tally};
pub use tally::{Chunk, ChunkKey, DoneReport, Held, Tally, TallyAnswer, TallyOp};

/// A message on the backfill queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueueMessage {
    /// Copy these keys.
    Chunk(Chunk),
    /// Queue more chunks: the window emptied or a pass finished.
    Plan { direction: Direction },
    /// Compare these keys' values in both stores (a fanned-out verification).
    Compare(CompareChunk),
    /// Audit these records' or mappings' email mappings (a fanned-out email audit).
    Audit(AuditChunk),
}

/// Where messages are sent: the queue binding, or a queue in memory in native tests.
/// Object-safe, so a request carries it as `Option<&dyn ChunkQueue>`: without one, the
/// cron copies as before.
pub trait ChunkQueue {
    fn send(&self, messages: Vec<QueueMessage>) -> LocalBoxFuture<'_, StoreResult<()>>;
}

/// What fanning out needs: the queue and the coordinator that keeps the tally.
pub struct Fanout<'a, R> {
    pub register: &'a R,
    pub queue: &'a dyn ChunkQueue,
}

impl<R> Clone for Fanout<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Fanout<'_, R> {}

impl<R: PhaseRegister> Fanout<'_, R> {
    pub async fn tally(&self, op: TallyOp) -> StoreResult<TallyAnswer> {
        self.register.tally(op).await
    }
}
