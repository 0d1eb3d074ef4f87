//! The reverse sync (docs/design.md §9): after a rollback from phase 4 or 5, copies back
//! to the old store what writes since phase 4 put only in the new store, so that reads
//! may return to the old store without losing an acknowledged write. It is the backfill
//! engine run the other way ([`Direction::Reverse`]), in phases 2 and 3 once settled, and
//! vouches for the old store only if it started after the old store last diverged.

use crate::migration::copying::backfill::{self, Checkpoint, RunOptions, RunReport};
use crate::migration::copying::copy::Direction;
use crate::migration::copying::fanout::{self, Fanout};
use crate::migration::state::coordinator::PhaseRegister;
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
/// finished: copying, or with a queue queuing chunks for consumers. `stores` should be
/// metered by `budget`.
pub async fn advance<S: KvStore, R: PhaseRegister>(
    stores: &Stores<S>,
    fanout: Option<Fanout<'_, R>>,
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
    match fanout {
        Some(fanout) => fanout::plan(stores, fanout, budget, options, now_ms).await,
        None => backfill::run(stores, budget, options, now_ms).await,
    }
    .map(Some)
}
