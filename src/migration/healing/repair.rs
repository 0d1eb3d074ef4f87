//! Draining the repair journal (docs/design.md §4): each journaled key is out of sync
//! between the stores. The repair makes the other store agree with the store the current
//! phase's reads are served from for that key — the first store in read order that
//! holds it — because that is what every acknowledged write reached, whatever phase the
//! entry was written in. Email mappings are the exception: see [`repair_mapping`].
//!
//! Each copy is followed by a re-read of its source and redone if the source changed
//! (§6). Reads may be stale, so an entry is repaired only once the failed request's
//! writes are visible everywhere, and one whose repair wrote stays until a later check
//! finds the stores agreeing (§5).

use serde::{Deserialize, Serialize};

use crate::domain::EMAIL_PREFIX;
use crate::migration::checking::inventory;
use crate::migration::copying::copy::{newer_version, record_newer_than_tombstone};
use crate::migration::healing::journal::{self, JournalEntry};
use crate::migration::key_state;
use crate::migration::keys;
use crate::phase::Phase;
use crate::store::{KvStore, PutOptions, StoreName, StoreResult, StoredValue, Stores};

/// Entries repaired per run: about seven KV operations each, well inside the 1,000
/// operations one invocation may make.
pub const ENTRIES_PER_RUN: u32 = 110;
/// Copies of one key retried while the source keeps changing under it.
const COPY_ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RepairReport {
    pub examined: u32,
    pub repaired: u32,
    /// Keys left in the journal: a store failed, the source kept changing, or (in phase
    /// 4) only the old store holds the key, which no writer there updates.
    pub deferred: u32,
    /// The journal had more entries than one run repairs.
    pub more: bool,
    /// Keys repaired and kept in the journal until a check after the consistency window.
    pub settling: u32,
    /// How long until the first of those checks is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

impl RepairReport {
    /// Counts an entry kept until a check due in `wait_ms`.
    fn settles_in(&mut self, wait_ms: u64) {
        self.settling += 1;
        self.wait_ms = Some(self.wait_ms.map_or(wait_ms, |w| w.min(wait_ms)));
    }
}

/// What a repair of one key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Repaired {
    /// The stores agree: the entry may go.
    Agreed,
    /// The lagging store was written: the entry stays until a later check agrees.
    Written,
    /// The store reads go to was written from the other one: racing writers write the
    /// store reads go to first, which the re-read did not watch, so a later check must
    /// agree whatever the consistency window.
    WrittenAgainstReads,
    /// Not repaired now: a store failed, the source kept changing, or no safe source.
    Deferred,
}

/// Whoever repairs one key: a customer record in its customer's object, which decides on
/// its memory of its own writes rather than a KV read that may not show them yet
/// (docs/design.md §12); an email mapping in place ([`in_place`]).
#[allow(async_fn_in_trait)]
pub trait Repairs {
    /// `lagging`: the store the journal entry says missed the write, if it says.
    async fn repair(&self, key: &str, lagging: Option<StoreName>) -> StoreResult<Repaired>;
}

pub async fn drain<S: KvStore, R: Repairs>(
    stores: &Stores<S>,
    repairs: &R,
    pass_delay_ms: u64,
    now_ms: u64,
    limit: u32,
) -> StoreResult<RepairReport> {
    let page = stores.new.list(keys::JOURNAL_PREFIX, None, limit).await?;
    let mut report = RepairReport {
        more: !page.complete,
        ..Default::default()
    };
    for entry in page.keys {
        report.examined += 1;
        let journaled = JournalEntry::from_listing(&entry);
        let due = journaled.and_then(|e| e.due_at(pass_delay_ms));
        if let Some(due) = due.filter(|due| *due > now_ms) {
            report.settles_in(due - now_ms);
            continue;
        }
        let key = &entry.name[keys::JOURNAL_PREFIX.len()..];
        let lagging = journaled.and_then(|e| e.lagging);
        let repaired = repairs
            .repair(key, lagging)
            .await
            .unwrap_or(Repaired::Deferred);
        let settled = match repaired {
            Repaired::Agreed => true,
            // With reads that are always current, the re-read after the copy suffices.
            Repaired::Written => pass_delay_ms == 0,
            Repaired::WrittenAgainstReads => false,
            Repaired::Deferred => {
                report.deferred += 1;
                continue;
            }
        };
        let kept = if settled {
            journal::forget(&stores.new, &entry.name, journaled).await
        } else {
            journal::check_later(&stores.new, &entry.name, now_ms + pass_delay_ms).await
        };
        match (kept, settled) {
            (Ok(()), true) => report.repaired += 1,
            (Ok(()), false) => report.settles_in(pass_delay_ms),
            (Err(_), _) => report.deferred += 1,
        }
    }
    Ok(report)
}

/// Makes the other store agree with the one serving `key`, reading `stores` as they are;
/// `lagging` is the store the journal says missed the write, if it says.
pub async fn in_place<S: KvStore>(
    stores: &Stores<S>,
    phase: Phase,
    key: &str,
    lagging: Option<StoreName>,
    now_ms: u64,
) -> StoreResult<Repaired> {
    if key.starts_with(EMAIL_PREFIX) {
        return repair_mapping(stores, key).await;
    }
    let primary = phase.primary_read_store();
    let first = stores.get(primary).get(key).await?;
    let (source_name, mut seen) = match (first, phase.fallback_store()) {
        (Some(value), _) => (primary, Some(value)),
        (None, Some(fallback)) => (fallback, stores.get(fallback).get(key).await?),
        // Where reads find a customer only the new store holds (docs/design.md §16), it
        // is the source: the old store lacking it does not mean it was deleted — unless
        // the new store is the one that missed the write (a delete whose tombstone failed).
        (None, None)
            if lagging != Some(StoreName::New)
                && inventory::found_only_in_new_store(&stores.new, key).await? =>
        {
            (StoreName::New, stores.new.get(key).await?)
        }
        (None, None) => (primary, None),
    };
    let mut source_name = source_name;
    let mut target_name = other(source_name);
    let mut against_reads = false;
    let in_target = stores.get(target_name).get(key).await?;
    // Stores that already agree need no write — and a blind write here could land after
    // a request's write to the target and hide it.
    if key_state::agree(seen.as_ref(), in_target.as_ref()) {
        return Ok(Repaired::Agreed);
    }
    // A create over a deleted customer writes the old store first: a record there newer
    // than the new store's tombstone is such a create, so the old store is the source
    // (the re-read below must watch the store racing writers write first).
    if source_name == StoreName::New
        && matches!((&in_target, &seen), (Some(record), Some(marker)) if record_newer_than_tombstone(record, marker))
    {
        (source_name, target_name) = (StoreName::Old, StoreName::New);
        seen = in_target;
    } else if phase.writes_both()
        && matches!((&in_target, &seen), (Some(other), Some(served)) if newer_version(other, served))
    {
        // The other store holds a later version: a later acknowledged write. The store
        // reads go to can hold an older one only through a copy decided on a stale read
        // that no settling pass has corrected yet (docs/design.md §5); repairing from it
        // would make that stale copy the truth in both stores. So the later version is
        // the source, as the backfill's rules would have it (never older over newer).
        // Only in phases 1 to 3: from phase 4 on the new store is the one every writer
        // writes, and the old store's later version is a write that phase 4 superseded.
        (source_name, target_name) = (target_name, source_name);
        seen = in_target;
        against_reads = true;
    }
    // From phase 4 on nobody writes the old store, so a copy from it into the new store
    // could overwrite a write it would never notice.
    if source_name == StoreName::Old && !phase.old_store_is_a_copy_source() {
        return Ok(Repaired::Deferred);
    }
    let (source, target) = (stores.get(source_name), stores.get(target_name));
    for _ in 0..COPY_ATTEMPTS {
        copy_state(target, key, seen.as_ref(), target_name, now_ms).await?;
        let again = source.get(key).await?;
        if again == seen && against_reads {
            return Ok(Repaired::WrittenAgainstReads);
        }
        if again == seen {
            return Ok(Repaired::Written);
        }
        seen = again;
    }
    Ok(Repaired::Deferred)
}

fn other(store: StoreName) -> StoreName {
    match store {
        StoreName::Old => StoreName::New,
        StoreName::New => StoreName::Old,
    }
}

/// Mappings are derived from records and a mapping counts only when its record holds
/// the email, so an extra mapping is harmless while a missing one hides a customer: a
/// mapping one store lacks is copied from the other, and none is ever removed here
/// (the email audit removes obsolete ones).
async fn repair_mapping<S: KvStore>(stores: &Stores<S>, key: &str) -> StoreResult<Repaired> {
    let (old, new) = (stores.old.get(key).await?, stores.new.get(key).await?);
    let (present, lacking) = match (&old, &new) {
        (Some(value), None) => (value, &stores.new),
        (None, Some(value)) => (value, &stores.old),
        _ => return Ok(Repaired::Agreed),
    };
    let options = PutOptions {
        expiration: None,
        metadata: present.metadata.clone(),
    };
    lacking.put(key, &present.bytes, options).await?;
    Ok(Repaired::Written)
}

/// Makes the lagging store match the source's state (see [`key_state::matching`]).
async fn copy_state<S: KvStore>(
    target: &S,
    key: &str,
    state: Option<&StoredValue>,
    target_name: StoreName,
    now_ms: u64,
) -> StoreResult<()> {
    let state = key_state::matching(target_name, key, state, now_ms);
    key_state::write(target, key, state.as_ref(), None).await
}
