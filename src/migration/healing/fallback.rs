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

pub async fn record<S: KvStore>(
    new_store: &S,
    key: &str,
    phase: Phase,
    now_ms: u64,
) -> StoreResult<()> {
    let hit = FallbackHit {
        at: now_ms,
        phase: phase.number(),
    };
    let name = keys::fallback_entry(key);
    stored::put(new_store, &name, &hit, Listing::AlsoInMetadata).await
}
