//! The reverse sync: after a rollback from phase 4 or 5, copies back to the old store
//! what writes since phase 4 put only in the new store, so that reads may return to the
//! old store without losing an acknowledged write.
//!
//! It is the backfill engine run the other way ([`Direction::Reverse`]): the new store
//! is the source, a tombstone there deletes the key from the old store, and the copy
//! re-reads the new store afterwards. That re-read catches every racing write because,
//! while the old store is behind, every request writes the new store first (see
//! `DataPlane::old_store_catching_up`).
//!
//! It runs only in phases 2 and 3, once settled: there every write reaches both stores
//! and reads still go to the new store first. It vouches for the old store only if it
//! started after the old store last diverged (`PhaseState::left_old_store_at`); a sync
//! from before that is started over. Like the backfill, it is complete only after a
//! pass that wrote nothing, made once its earlier copies were visible everywhere: a
//! failed copy, or one decided on a stale read, is redone by the next pass.

use crate::migration::copying::backfill::{self, Checkpoint, RunOptions, RunReport};
use crate::migration::copying::copy::Direction;
use crate::migration::state::phase_record::PhaseState;
use crate::store::budget::Budget;
use crate::store::{KvStore, StoreResult, Stores};

/// Whether `checkpoint` is a finished sync that vouches for the old store in `state`:
/// its last pass found nothing to copy, and it started after the old store last
/// diverged.
pub fn vouches(checkpoint: &Checkpoint, state: &PhaseState) -> bool {
    state.old_store_diverged
        && checkpoint.complete()
        && checkpoint
            .started_at
            .is_some_and(|started| started >= state.left_old_store_at)
}

/// One run within `budget`, unless a sync that vouches for the old store already
/// finished. `stores` should be metered by `budget`.
pub async fn advance<S: KvStore>(
    stores: &Stores<S>,
    budget: &Budget,
    state: &PhaseState,
    pass_delay_ms: u64,
    now_ms: u64,
) -> StoreResult<Option<RunReport>> {
    let checkpoint = backfill::load_checkpoint_of(&stores.new, Direction::Reverse).await?;
    if vouches(&checkpoint, state) {
        return Ok(None);
    }
    let options = RunOptions {
        direction: Direction::Reverse,
        fresh_after_ms: state.left_old_store_at,
        pass_delay_ms,
        ..RunOptions::default()
    };
    backfill::run(stores, budget, options, now_ms)
        .await
        .map(Some)
}
