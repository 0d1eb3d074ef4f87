//! The isolate's copy of the phase (docs/design.md §3).

use std::cell::RefCell;

use crate::error::Error;
use crate::migration::state::phase_record::{load, CurrentPhase};
use crate::phase::Phase;
use crate::store::KvStore;

/// The isolate's copy of the phase. A request within `ttl_ms` of the last read pays no
/// KV operation for it; this is why a phase change takes up to that long to reach every
/// isolate, and why any two adjacent phases must be safe side by side.
#[derive(Default)]
pub struct PhaseCache {
    entry: RefCell<Option<(CurrentPhase, u64)>>,
}

impl PhaseCache {
    pub fn fresh(&self, now_ms: u64, ttl_ms: u64) -> Option<CurrentPhase> {
        let entry = self.entry.borrow();
        let (current, fetched_at) = entry.as_ref()?;
        // The `mutant-stale-phase` build never re-reads the phase, to show the
        // simulation notices isolates more than one phase apart.
        let fresh =
            cfg!(feature = "mutant-stale-phase") || now_ms.saturating_sub(*fetched_at) < ttl_ms;
        fresh.then(|| current.clone())
    }

    pub fn stale(&self) -> Option<CurrentPhase> {
        self.entry.borrow().as_ref().map(|(c, _)| c.clone())
    }

    pub fn put(&self, current: CurrentPhase, now_ms: u64) {
        *self.entry.borrow_mut() = Some((current, now_ms));
    }

    pub fn invalidate(&self) {
        *self.entry.borrow_mut() = None;
    }
}

/// The phase to serve a request in: the cached copy while fresh, else the stored one.
/// If the store cannot be read, a stale copy is better than a guess; with none, the
/// request fails rather than route writes by a default that may be wrong.
pub async fn current<S: KvStore>(
    cache: &PhaseCache,
    new_store: &S,
    default: Phase,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<CurrentPhase, Error> {
    if let Some(current) = cache.fresh(now_ms, ttl_ms) {
        return Ok(current);
    }
    match load(new_store, default).await {
        Ok(current) => {
            cache.put(current.clone(), now_ms);
            Ok(current)
        }
        Err(err) => cache.stale().ok_or(err),
    }
}
