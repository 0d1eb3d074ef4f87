//! Fallback hits: reads that the new store could not serve and the old store did. Gate
//! 4→5 needs to know there were none in the verification period, and which keys if there
//! were; one key per customer key keeps the record bounded and listable.

use serde::{Deserialize, Serialize};

use crate::migration::keys;
use crate::migration::stored::{self, Listing};
use crate::phase::Phase;
use crate::store::{KvStore, ListedKey, StoreResult};

/// The last fallback hit of one key, in the value and in the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackHit {
    pub at: u64,
    pub phase: u8,
}

/// When a listed fallback entry was last hit, from its metadata.
pub fn recorded_at(listed: &ListedKey) -> Option<u64> {
    stored::from_listing::<FallbackHit>(listed).map(|hit| hit.at)
}

/// How often one key's hit is recorded at most. Gate 4→5 asks whether there were hits
/// in the verification period (days), so a minute loses nothing it needs, and a key read
/// from the old store many times a second stays far below KV's one write a second to
/// its entry (docs/design.md §12).
pub const RECORD_INTERVAL_MS: u64 = 60_000;

/// Records a hit unless one of the last minute is recorded: a read first, so a hot key
/// costs a read per hit and a write a minute (per location: another location may not see
/// the entry yet, and a write KV refuses for its rate is only a warning).
pub async fn record<S: KvStore>(
    new_store: &S,
    key: &str,
    phase: Phase,
    now_ms: u64,
) -> StoreResult<()> {
    let name = keys::fallback_entry(key);
    let last: Option<FallbackHit> = stored::get(new_store, &name).await?;
    if last.is_some_and(|hit| now_ms < hit.at.saturating_add(RECORD_INTERVAL_MS)) {
        return Ok(());
    }
    let hit = FallbackHit {
        at: now_ms,
        phase: phase.number(),
    };
    stored::put(new_store, &name, &hit, Listing::AlsoInMetadata).await
}
