//! A customer's object checks its own deletes once every copy decided on a read from
//! before them has landed (docs/design.md §12, "Deletes are checked").
//!
//! A backfill copy decided on stale reads may put a deleted customer's record back over
//! the tombstone in the new store. The backfill's next pass cannot correct it: the old
//! store no longer holds the key, so no pass lists it. The object remembers the
//! tombstone it wrote, so it is the one that can tell the record in KV is older and put
//! the tombstone back.

use serde::{Deserialize, Serialize};

use crate::domain::{customer_key, CustomerId};
use crate::phase::Phase;
use crate::store::{KvStore, PutOptions, StoreName, StoreResult, Stores};
use crate::writes::memo::{self, memory_is_newest, Memo, Remembering, Waiter};
use crate::writes::object::{CustomerOp, ObjectClock};

/// When the object should check the op's writes, if it should: after a delete in a phase
/// where copies into the new store run (the backfill and read-repair, phases 1 to 3),
/// once a copy decided on a read from just before the delete has landed and is visible
/// everywhere. With no consistency window, a copy's re-read sees the delete and corrects
/// the copy itself (docs/design.md §6).
pub fn check_at(phase: Phase, op: &CustomerOp, clock: ObjectClock) -> Option<u64> {
    // The `mutant-no-delete-check` build never checks: a copy that brought a deleted
    // customer back stays.
    let copies_run = phase.backfill_allowed() && !cfg!(feature = "mutant-no-delete-check");
    (matches!(op, CustomerOp::Delete) && copies_run && clock.check_after_ms > 0)
        .then(|| clock.now_ms + clock.check_after_ms)
}

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    /// Stores where KV held an older state than the object's last write, which the
    /// object wrote again.
    pub restored: Vec<StoreName>,
}

/// Makes each store hold at least the object's last write of `id`'s record: where KV
/// holds an older state of it (a copy decided on a stale read), the object writes its
/// own again. A key KV no longer holds is left alone: no copy removes one, and whoever
/// did (an operator's purge, a restore) is not second-guessed.
pub async fn check<S: KvStore, M: Memo, W: Waiter>(
    stores: &Stores<S>,
    memo: &M,
    waiter: &W,
    id: &CustomerId,
    clock: ObjectClock,
) -> StoreResult<Checked> {
    let key = customer_key(id);
    let mut checked = Checked::default();
    for store in [StoreName::Old, StoreName::New] {
        let Some(entry) = memo.recall(store, &key).await? else {
            continue;
        };
        let Some(in_kv) = stores.get(store).get(&key).await? else {
            continue;
        };
        let ours = entry.stored();
        if ours.as_ref() == Some(&in_kv) || !memory_is_newest(&entry, Some(&in_kv)) {
            continue;
        }
        let now_ms = memo::paced(memo, waiter, &key, clock.now_ms).await?;
        let writing = Remembering::new(
            stores.get(store),
            store,
            memo,
            ObjectClock { now_ms, ..clock },
        );
        match ours {
            Some(value) => {
                let options = PutOptions {
                    metadata: value.metadata,
                    ..PutOptions::default()
                };
                writing.put(&key, &value.bytes, options).await?;
            }
            None => writing.delete(&key).await?,
        }
        checked.restored.push(store);
    }
    Ok(checked)
}
