//! The copy routine the backfill, read-repair and the reverse sync share (docs/design.md
//! §6): copy a key from the source store to the target only when the target lacks it or
//! holds an older version, byte for byte with its metadata and expiration, then read the
//! source again and correct the copy if the key changed or vanished meanwhile. The
//! re-read suffices against a racing request because every request writes the source of
//! such a copy first (§4).

use futures::future::join_all;
use serde::{Deserialize, Serialize};

use crate::domain::{CustomerRecord, Tombstone, CUSTOMER_PREFIX};
use crate::migration::checking::conflicts::{self, ConflictKind};
use crate::migration::checking::inventory;
use crate::migration::healing::read_repair;
use crate::migration::key_state;
use crate::store::{
    read_many, KvStore, ListedKey, PutOptions, StoreName, StoreResult, StoredValue, Stores,
};
use crate::time::parse_rfc3339_ms;

/// Which way data flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The migration: old store to new store.
    Forward,
    /// The reverse sync after a rollback from phase 4 or 5: writes since phase 4 reached
    /// only the new store, which is therefore the source of truth.
    Reverse,
}

impl Direction {
    pub fn source(self) -> StoreName {
        match self {
            Direction::Forward => StoreName::Old,
            Direction::Reverse => StoreName::New,
        }
    }

    pub fn target(self) -> StoreName {
        match self {
            Direction::Forward => StoreName::New,
            Direction::Reverse => StoreName::Old,
        }
    }
}

/// What to do with one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The target lacks the key or holds an older version.
    Copy,
    /// The source holds a tombstone and the target the record it deleted (reverse only:
    /// the old store keeps no tombstones).
    Delete,
    /// The target holds the same bytes and metadata.
    InSync,
    /// The target holds a newer version (dual writes put it there).
    NewerInTarget,
    /// The new store holds a tombstone: the customer was deleted (forward only).
    Deleted,
    /// Both stores hold different values that cannot be ordered; reported, not overwritten.
    Conflict,
    /// The key's expiration has passed; KV will drop it.
    Expired,
    /// The key was listed but is gone from the source.
    Gone,
}

pub fn decide(
    direction: Direction,
    source: Option<&StoredValue>,
    target: Option<&StoredValue>,
    expiration: Option<u64>,
    now_ms: u64,
) -> Verdict {
    if expiration.is_some_and(|at| at * 1000 <= now_ms) {
        return Verdict::Expired;
    }
    let Some(source) = source else {
        return Verdict::Gone;
    };
    if Tombstone::is_tombstone(&source.bytes) {
        // Only the new store holds tombstones, so only a reverse sync meets one here.
        return match target {
            None => Verdict::InSync,
            Some(target) if record_newer_than_tombstone(target, source) => Verdict::NewerInTarget,
            Some(_) => Verdict::Delete,
        };
    }
    let Some(target) = target else {
        return Verdict::Copy;
    };
    if Tombstone::is_tombstone(&target.bytes) {
        return Verdict::Deleted;
    }
    if source.bytes == target.bytes && source.metadata == target.metadata {
        return Verdict::InSync;
    }
    match (version(&source.bytes), version(&target.bytes)) {
        (Some(source_at), Some(target_at)) if source_at > target_at => Verdict::Copy,
        (Some(_), Some(_)) => Verdict::NewerInTarget,
        // Since phase 4 every write reached the new store alone, so in reverse it wins
        // even where versions cannot tell (an email mapping that was repointed).
        _ if direction == Direction::Reverse => Verdict::Copy,
        _ => Verdict::Conflict,
    }
}

/// Whether `record` is a customer record updated after the tombstone `marker` was set:
/// a write made after the delete, which must win over it.
pub fn record_newer_than_tombstone(record: &StoredValue, marker: &StoredValue) -> bool {
    match (
        Tombstone::deleted_at_ms(&marker.bytes),
        version(&record.bytes),
    ) {
        (Some(deleted), Some(updated)) => updated > deleted,
        _ => false,
    }
}

/// Whether `a` and `b` are both states of a customer record — versions or tombstones —
/// and `a` is the later one. Versions only move forward (an update stamps one past the
/// last) and a customer's writes are one at a time (docs/design.md §12), so the later
/// state is the later acknowledged write: a delete is later than the version it
/// removed, a re-create later than the delete.
pub fn newer_version(a: &StoredValue, b: &StoredValue) -> bool {
    let stamp = |v: &StoredValue| Tombstone::deleted_at_ms(&v.bytes).or_else(|| version(&v.bytes));
    match (stamp(a), stamp(b)) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

/// A record's version: its `updatedAt` in milliseconds.
fn version(bytes: &[u8]) -> Option<u64> {
    match CustomerRecord::scanned_updated_at(bytes) {
        Some(at) => parse_rfc3339_ms(at),
        None => CustomerRecord::from_stored(bytes)
            .ok()?
            .updated_at()
            .and_then(parse_rfc3339_ms),
    }
}

fn is_corrupt_record(key: &str, bytes: &[u8]) -> bool {
    key.starts_with(CUSTOMER_PREFIX)
        && !Tombstone::is_tombstone(bytes)
        && CustomerRecord::from_stored(bytes).is_err()
}

/// Samples of keys kept per category in a report.
pub const SAMPLE_KEYS: usize = 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CopyCounts {
    pub scanned: u64,
    pub copied: u64,
    pub skipped: u64,
    pub conflicts: u64,
    pub corrupt: u64,
    pub expired: u64,
    /// Copies corrected because the source changed while they were made.
    pub corrected: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflict_keys: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_keys: Vec<String>,
    /// Every key whose value does not parse as the record its name promises, in the
    /// order found, up to [`MAX_CORRUPT_KEYS`] and [`MAX_CORRUPT_KEY_BYTES`]; `corrupt`
    /// counts them all. Kept here rather than in an entry per key: it costs no KV
    /// operation, and corrupt legacy values are few.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub corrupt_keys: Vec<String>,
}

/// Corrupt keys named in full, up to these bounds: the list travels in the checkpoint
/// and in the coordinator's tally, a Durable Object value capped at 128 KiB.
pub const MAX_CORRUPT_KEYS: usize = 500;
pub const MAX_CORRUPT_KEY_BYTES: usize = 16 * 1024;

impl CopyCounts {
    /// The keys scanned and the writes made, without the findings.
    pub fn scanned_and_writes(&self) -> CopyCounts {
        CopyCounts {
            scanned: self.scanned,
            copied: self.copied,
            corrected: self.corrected,
            errors: self.errors,
            error_keys: self.error_keys.clone(),
            ..CopyCounts::default()
        }
    }

    pub fn add(&mut self, other: &CopyCounts) {
        self.scanned += other.scanned;
        self.copied += other.copied;
        self.skipped += other.skipped;
        self.conflicts += other.conflicts;
        self.corrupt += other.corrupt;
        self.expired += other.expired;
        self.corrected += other.corrected;
        self.errors += other.errors;
        extend_capped(&mut self.conflict_keys, &other.conflict_keys);
        extend_capped(&mut self.error_keys, &other.error_keys);
        for key in &other.corrupt_keys {
            self.note_corrupt(key);
        }
    }

    /// Names a corrupt key, while the list has room (see the field).
    fn note_corrupt(&mut self, key: &str) {
        let bytes: usize = self.corrupt_keys.iter().map(String::len).sum();
        if self.corrupt_keys.len() < MAX_CORRUPT_KEYS
            && bytes + key.len() <= MAX_CORRUPT_KEY_BYTES
            && !self.corrupt_keys.iter().any(|k| k == key)
        {
            self.corrupt_keys.push(key.to_owned());
        }
    }
}

fn extend_capped(into: &mut Vec<String>, from: &[String]) {
    let room = SAMPLE_KEYS.saturating_sub(into.len());
    into.extend(from.iter().take(room).cloned());
}

/// Copies at most [`crate::store::MAX_BULK_KEYS`] keys listed from the source. Costs
/// three bulk reads plus one write per copied key (and two more operations per
/// correction). With `dry_run` it reads, decides and counts, and writes nothing.
pub async fn copy_chunk<S: KvStore>(
    stores: &Stores<S>,
    direction: Direction,
    keys: &[ListedKey],
    now_ms: u64,
    dry_run: bool,
) -> StoreResult<CopyCounts> {
    let mut counts = CopyCounts {
        scanned: keys.len() as u64,
        ..Default::default()
    };
    let names: Vec<String> = keys.iter().map(|k| k.name.clone()).collect();
    let source_values = read_many(stores.get(direction.source()), &names).await?;
    let target_values = read_many(stores.get(direction.target()), &names).await?;

    let mut to_write: Vec<(&ListedKey, StoredValue)> = Vec::new();
    let mut found: Vec<(String, ConflictKind)> = Vec::new();
    // Copies that would replace a value the new store holds, with that value.
    let mut overwrites: Vec<(String, StoredValue)> = Vec::new();
    // Reverse copies of keys the old store lacks.
    let mut new_only: Vec<String> = Vec::new();
    for ((listed, source), target) in keys.iter().zip(source_values).zip(target_values) {
        let verdict = decide(
            direction,
            source.as_ref(),
            target.as_ref(),
            listed.expiration,
            now_ms,
        );
        // Found whatever the verdict: a corrupt value copied by an earlier run is as
        // corrupt as one copied now.
        if verdict != Verdict::Expired
            && source
                .as_ref()
                .is_some_and(|v| is_corrupt_record(&listed.name, &v.bytes))
        {
            counts.corrupt += 1;
            counts.note_corrupt(&listed.name);
        }
        match verdict {
            Verdict::Copy | Verdict::Delete => {
                let Some(source) = source else { continue };
                match (direction, &target) {
                    (Direction::Forward, Some(held)) => {
                        overwrites.push((listed.name.clone(), held.clone()))
                    }
                    (Direction::Reverse, None) => new_only.push(listed.name.clone()),
                    _ => {}
                }
                to_write.push((listed, source));
            }
            Verdict::Expired => counts.expired += 1,
            Verdict::Conflict => found.push((listed.name.clone(), ConflictKind::Unordered)),
            Verdict::InSync | Verdict::NewerInTarget | Verdict::Deleted | Verdict::Gone => {
                counts.skipped += 1
            }
        }
    }
    if !overwrites.is_empty() {
        keep_preexisting(&stores.new, &mut to_write, &overwrites, &mut found).await?;
    }
    if !new_only.is_empty() {
        counts.skipped += leave_in_new_store(&stores.new, &mut to_write, &new_only).await?;
    }
    counts.conflicts += found.len() as u64;
    let names: Vec<String> = found.iter().map(|(name, _)| name.clone()).collect();
    extend_capped(&mut counts.conflict_keys, &names);
    if dry_run {
        counts.copied = to_write.len() as u64;
        return Ok(counts);
    }

    conflicts::record(&stores.new, &found, now_ms).await?;
    let written = write_copies(stores, direction, to_write, now_ms, &mut counts).await?;
    counts.copied = written;
    Ok(counts)
}

/// Drops the copies that would replace a value the new store held before the migration
/// and still holds (the inventory marked it, docs/design.md §16): the operator settles
/// those, so they are conflicts. Once the value has changed — settled, or written
/// through the API — the mark no longer holds the copy back. One bulk read per 100 such
/// keys, which only a new store that holds older versions than the old store's makes.
async fn keep_preexisting<S: KvStore>(
    new_store: &S,
    to_write: &mut Vec<(&ListedKey, StoredValue)>,
    overwrites: &[(String, StoredValue)],
    found: &mut Vec<(String, ConflictKind)>,
) -> StoreResult<()> {
    let names: Vec<String> = overwrites.iter().map(|(name, _)| name.clone()).collect();
    let marks = inventory::marks(new_store, &names).await?;
    let kept: Vec<&String> = overwrites
        .iter()
        .zip(marks)
        .filter_map(|((name, held), mark)| {
            // A `new_only` key the old store holds now was put there by the migration
            // (dual writes, a repair): versions decide, as for any key.
            mark.filter(|m| m.found == inventory::Found::Different && m.still_holds(held))
                .map(|_| name)
        })
        .collect();
    if kept.is_empty() {
        return Ok(());
    }
    to_write.retain(|(listed, _)| !kept.contains(&&listed.name));
    found.extend(
        kept.into_iter()
            .map(|name| (name.clone(), ConflictKind::Preexisting)),
    );
    Ok(())
}

/// Drops the reverse copies of customers the inventory found only in the new store:
/// they live there, and reads in phases 0 and 1 find them there (docs/design.md §16),
/// so the old store never receives them. One bulk read per 100 keys the old store
/// lacks. Returns how many were dropped.
async fn leave_in_new_store<S: KvStore>(
    new_store: &S,
    to_write: &mut Vec<(&ListedKey, StoredValue)>,
    names: &[String],
) -> StoreResult<u64> {
    let marks = inventory::marks(new_store, names).await?;
    let homed: Vec<&String> = names
        .iter()
        .zip(marks)
        .filter(|(_, mark)| {
            mark.as_ref()
                .is_some_and(|m| m.found == inventory::Found::NewOnly)
        })
        .map(|(name, _)| name)
        .collect();
    let before = to_write.len();
    to_write.retain(|(listed, _)| !homed.contains(&&listed.name));
    Ok((before - to_write.len()) as u64)
}

/// Writes the copies, then re-reads and corrects them; returns how many were written.
async fn write_copies<S: KvStore>(
    stores: &Stores<S>,
    direction: Direction,
    to_write: Vec<(&ListedKey, StoredValue)>,
    now_ms: u64,
    counts: &mut CopyCounts,
) -> StoreResult<u64> {
    let target = stores.get(direction.target());
    // A tombstone in the source (reverse only) deletes the key from the old store.
    let states: Vec<Option<StoredValue>> = to_write
        .iter()
        .map(|(listed, value)| {
            key_state::matching(direction.target(), &listed.name, Some(value), now_ms)
        })
        .collect();
    let writes = to_write.iter().zip(&states).map(|((listed, _), state)| {
        key_state::write(target, &listed.name, state.as_ref(), listed.expiration)
    });
    let results = join_all(writes).await;
    let mut copied = 0;
    // A write that reported failure may still have landed (a timeout after the write),
    // so it is re-checked like the others: a source changed meanwhile is corrected.
    let mut maybe_written = Vec::new();
    for ((listed, value), result) in to_write.into_iter().zip(results) {
        match result {
            Ok(()) => copied += 1,
            Err(_) => {
                counts.errors += 1;
                extend_capped(&mut counts.error_keys, std::slice::from_ref(&listed.name));
            }
        }
        maybe_written.push((listed.name.clone(), value));
    }
    counts.corrected += recheck(stores, direction, maybe_written, now_ms).await?;
    Ok(copied)
}

/// Re-reads the source for keys just copied and corrects the copies of those that
/// changed or vanished. Returns how many were corrected.
async fn recheck<S: KvStore>(
    stores: &Stores<S>,
    direction: Direction,
    copied: Vec<(String, StoredValue)>,
    now_ms: u64,
) -> StoreResult<u64> {
    // The `mutant-no-recheck` build drops the re-check, to show the simulation notices.
    const ROUNDS: usize = if cfg!(feature = "mutant-no-recheck") {
        0
    } else {
        3
    };
    // What the source held when the target was last made to match it.
    let mut expected: Vec<(String, Option<StoredValue>)> = copied
        .into_iter()
        .map(|(key, value)| (key, Some(value)))
        .collect();
    let mut corrected = 0;
    for _ in 0..ROUNDS {
        if expected.is_empty() {
            break;
        }
        let names: Vec<String> = expected.iter().map(|(k, _)| k.clone()).collect();
        let now_in_source = read_many(stores.get(direction.source()), &names).await?;
        let mut changed = Vec::new();
        for ((key, was), current) in expected.into_iter().zip(now_in_source) {
            if current == was {
                continue;
            }
            corrected += 1;
            match_source(stores, direction, &key, current.as_ref(), now_ms).await?;
            // Check again: the source may change once more while this correction lands.
            changed.push((key, current));
        }
        expected = changed;
    }
    Ok(corrected)
}

/// Makes the target hold what the source now holds for `key`. A writer changed it: its
/// value carries no expiration (API writes have none).
async fn match_source<S: KvStore>(
    stores: &Stores<S>,
    direction: Direction,
    key: &str,
    current: Option<&StoredValue>,
    now_ms: u64,
) -> StoreResult<()> {
    let target = direction.target();
    let state = key_state::matching(target, key, current, now_ms);
    key_state::write(stores.get(target), key, state.as_ref(), None).await
}

/// Read-repair: copies a key the old store just served (and the new store lacked) into
/// the new store, with the expiration `list` reports for it, then re-reads the old store
/// and corrects the copy if a write raced it. Three operations: the list, the write and
/// the re-read.
///
/// A re-read made at once cannot see a write from another location that KV has not yet
/// spread, nor one that a racing request has yet to make (see `migration::healing::read_repair`). So
/// with `check_after_ms` above 0 (a consistency window or a request margin) each write
/// into the new store is preceded by a settle entry, checked `check_after_ms` later, at
/// one more operation, and a record changed within that time is not copied at all.
pub async fn repair_on_read<S: KvStore>(
    stores: &Stores<S>,
    key: &str,
    served: &StoredValue,
    check_after_ms: u64,
    now_ms: u64,
) -> StoreResult<CopyCounts> {
    // A record written this recently may already be replaced at another location, the
    // way a customer created there and at once updated is: the copy could only show the
    // older value until its check. The read is served all the same (with no KV operation
    // spent here); a later read or the backfill copies the key.
    if version(&served.bytes).is_some_and(|at| now_ms.saturating_sub(at) < check_after_ms) {
        return Ok(CopyCounts {
            skipped: 1,
            ..Default::default()
        });
    }
    // The key itself sorts first among the keys it prefixes, so one entry is enough.
    let page = stores.old.list(key, None, 1).await?;
    let Some(listed) = page.keys.into_iter().find(|k| k.name == key) else {
        return Ok(CopyCounts::default());
    };
    let mut counts = CopyCounts {
        scanned: 1,
        ..Default::default()
    };
    let direction = Direction::Forward;
    if decide(direction, Some(served), None, listed.expiration, now_ms) != Verdict::Copy {
        return Ok(counts);
    }
    if check_after_ms == 0 {
        counts.copied = write_copies(
            stores,
            direction,
            vec![(&listed, served.clone())],
            now_ms,
            &mut counts,
        )
        .await?;
        return Ok(counts);
    }
    let due_ms = now_ms + check_after_ms;
    read_repair::expect(
        &stores.new,
        key,
        &[read_repair::digest(Some(served))],
        due_ms,
    )
    .await?;
    let options = PutOptions {
        expiration: listed.expiration,
        metadata: served.metadata.clone(),
    };
    stores.new.put(key, &served.bytes, options).await?;
    counts.copied = 1;
    // A write that raced the copy from this location is visible already: correct it now
    // rather than leave it to the check (which the correction's own entry still gets).
    let again = stores.old.get(key).await?;
    if again.as_ref() != Some(served) {
        read_repair::correct(stores, key, Some(served), again, due_ms, now_ms).await?;
        counts.corrected = 1;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_keys_are_named_once_each_within_their_bounds() {
        let mut counts = CopyCounts::default();
        counts.note_corrupt("customer_a");
        counts.note_corrupt("customer_a");
        assert_eq!(counts.corrupt_keys, ["customer_a"]);
        for n in 0..2 * MAX_CORRUPT_KEYS {
            counts.note_corrupt(&format!("customer_{n}"));
        }
        assert_eq!(counts.corrupt_keys.len(), MAX_CORRUPT_KEYS);
        let mut long = CopyCounts::default();
        let name = format!("customer_{}", "x".repeat(500));
        for _ in 0..100 {
            long.note_corrupt(&format!("{name}{}", long.corrupt_keys.len()));
        }
        let bytes: usize = long.corrupt_keys.iter().map(String::len).sum();
        assert!(bytes <= MAX_CORRUPT_KEY_BYTES, "{bytes}");
        assert!(long.corrupt_keys.len() >= MAX_CORRUPT_KEY_BYTES / 520);
    }
}
