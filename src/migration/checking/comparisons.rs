//! A verification fanned out on the queue (docs/design.md §13, "Verification fanned
//! out"): the planner walks both listings and sends the keys whose values are to be
//! compared, in chunks, to consumers; the coordinator keeps the walk and what the
//! consumers found. Every op is applied one at a time under the coordinator's lock
//! ([`apply`]), so concurrent consumers' reports are each counted and two planners
//! cannot both advance the walk. A chunk stays stored until a consumer reports it, so one
//! whose sending was lost is sent again, and one reported twice counts once.

use serde::{Deserialize, Serialize};

use crate::domain::Tombstone;
use crate::migration::checking::verify::{FanoutProgress, Verification, SAMPLE_KEYS};
use crate::migration::copying::fanout::tally::TallyStore;
use crate::store::{read_many, KvStore, StoreError, StoreResult, StoredValue, Stores};

/// Chunks sent and not yet reported, at most: bounds the coordinator's storage of them
/// and what a restart leaves on the queue. Below the 1,000 entries one storage listing
/// returns, so [`CompareOp::Read`] sees every one (a plan may overshoot by a chunk).
pub const WINDOW: u64 = 900;
/// Chunks one plan commits (its request to the coordinator carries their keys).
pub const CHUNKS_PER_PLAN: usize = 100;
/// A chunk not reported this long after it was sent is sent again: its sending or its
/// report was lost.
pub const RESEND_AFTER_MS: u64 = 5 * 60_000;
/// Chunks sent again per planner call.
const RESEND_LIMIT: usize = 100;
/// What one storage listing returns at most.
const LISTING_CAP: u32 = 1_000;

const STATE_KEY: &str = "compare/state";
/// Chunks sent and not yet reported.
const SENT_PREFIX: &str = "compare/chunk/";
/// Chunks that kept failing, kept so a late report still counts.
const FAILED_PREFIX: &str = "compare/failed/";

/// The coordinator's record of the verification in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Comparisons {
    /// The planner's walk of both listings: where it stands and what the listings showed.
    /// Its `startedAt` names the run; chunks of another run are ignored.
    pub walk: Option<Verification>,
    /// Bumped by every plan: a planner that read another version was overtaken.
    pub version: u64,
    pub queued: u64,
    pub done: u64,
    /// Chunks that kept failing (dead-lettered): their values were not compared.
    pub failed: u64,
    pub values_compared: u64,
    pub mismatched: u64,
    pub mismatched_keys: Vec<String>,
    pub failed_keys: Vec<String>,
    pub last_done_at: Option<u64>,
    /// A call answered it complete (and saved it where the gates read it): the next call
    /// starts a new one.
    pub answered_complete: bool,
}

impl Comparisons {
    pub fn run(&self) -> Option<u64> {
        self.walk.as_ref().map(|walk| walk.started_at)
    }

    /// Chunks sent and neither reported nor failed.
    pub fn pending(&self) -> u64 {
        self.queued.saturating_sub(self.done + self.failed)
    }

    /// Chunks the planner may send now.
    pub fn room(&self) -> u64 {
        WINDOW.saturating_sub(self.pending())
    }

    /// The verification as it stands: the walk's findings and the consumers'.
    pub fn verification(&self) -> Option<Verification> {
        let mut merged = self.walk.clone()?;
        merged.values_compared += self.values_compared;
        merged.mismatched += self.mismatched;
        let room = SAMPLE_KEYS.saturating_sub(merged.mismatched_keys.len());
        merged
            .mismatched_keys
            .extend(self.mismatched_keys.iter().take(room).cloned());
        merged.fanout = Some(FanoutProgress {
            queued: self.queued,
            done: self.done,
            failed: self.failed,
            failed_keys: self.failed_keys.clone(),
        });
        // Complete once every chunk is reported; dated by the end of the listing, which
        // is what the gates compare with the backfill's end (the values are compared
        // later, never earlier).
        if self.pending() > 0 {
            merged.completed_at = None;
        }
        if let Some(done_at) = self.last_done_at {
            merged.updated_at = merged.updated_at.max(done_at);
        }
        Some(merged)
    }
}

/// Keys whose values a consumer compares, as they travel on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompareChunk {
    pub run: u64,
    pub seq: u64,
    pub keys: Vec<String>,
}

/// What a consumer found in one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compared {
    pub run: u64,
    pub seq: u64,
    pub compared: u64,
    /// The keys whose values differ (at most the chunk's).
    pub mismatched: Vec<String>,
}

/// A chunk the coordinator keeps until it is reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredChunk {
    keys: Vec<String>,
    /// When it was last sent; 0 if its sending failed.
    sent_at: u64,
}

/// One op on the comparisons, as it travels to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CompareOp {
    /// The record, and the chunks to send again: unreported and sent long enough ago.
    Read { now_ms: u64 },
    /// Starts a verification: forgets the last one and its chunks.
    Start { walk: Verification },
    /// Advances the walk and stores its chunks, if the planner read `version` of this
    /// `run`; the answer numbers the chunks from `first_seq`.
    Plan {
        run: u64,
        version: u64,
        walk: Verification,
        chunks: Vec<Vec<String>>,
        now_ms: u64,
    },
    /// The chunks were sent at `sent_at` (0: their sending failed, send them at the next
    /// read).
    Sent {
        run: u64,
        seqs: Vec<u64>,
        sent_at: u64,
    },
    /// What one consumer invocation compared.
    Done { reports: Vec<Compared>, now_ms: u64 },
    /// A chunk reached the dead-letter queue.
    Failed { chunk: CompareChunk },
    /// A call answered the run complete.
    AnsweredComplete { run: u64 },
}

/// The record after an op, and what the op answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompareAnswer {
    pub comparisons: Comparisons,
    /// False when the op did nothing: a plan another planner overtook, a report of
    /// another run or of a chunk already reported.
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// Chunks to send again (`Read`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resend: Vec<CompareChunk>,
}

impl CompareAnswer {
    fn of(comparisons: Comparisons, accepted: bool) -> Self {
        Self {
            comparisons,
            accepted,
            ..Self::default()
        }
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::new("comparisons", format!("the {what} is unreadable"))
}

fn chunk_key(prefix: &str, seq: u64) -> String {
    // Zero-padded so entries list in sequence order.
    format!("{prefix}{seq:020}")
}

fn seq_of(prefix: &str, key: &str) -> StoreResult<u64> {
    key[prefix.len()..]
        .parse()
        .map_err(|_| corrupt("stored chunk's number"))
}

async fn load<T: TallyStore>(store: &T) -> StoreResult<Comparisons> {
    match store.get(STATE_KEY).await? {
        None => Ok(Comparisons::default()),
        Some(text) => serde_json::from_str(&text).map_err(|_| corrupt("comparisons' record")),
    }
}

async fn save<T: TallyStore>(store: &T, comparisons: &Comparisons) -> StoreResult<()> {
    let text = serde_json::to_string(comparisons).map_err(|_| corrupt("comparisons' record"))?;
    store.put(STATE_KEY, text).await
}

async fn stored_chunk<T: TallyStore>(
    store: &T,
    prefix: &str,
    seq: u64,
) -> StoreResult<Option<StoredChunk>> {
    match store.get(&chunk_key(prefix, seq)).await? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|_| corrupt("stored chunk")),
    }
}

async fn keep<T: TallyStore>(
    store: &T,
    prefix: &str,
    seq: u64,
    chunk: &StoredChunk,
) -> StoreResult<()> {
    let text = serde_json::to_string(chunk).map_err(|_| corrupt("stored chunk"))?;
    store.put(&chunk_key(prefix, seq), text).await
}

async fn forget_all<T: TallyStore>(store: &T, prefix: &str) -> StoreResult<()> {
    loop {
        let stored = store.list(prefix, 128).await?;
        if stored.is_empty() {
            return Ok(());
        }
        for (key, _) in stored {
            store.delete(&key).await?;
        }
    }
}

fn note_keys(samples: &mut Vec<String>, keys: impl IntoIterator<Item = String>) {
    let room = SAMPLE_KEYS.saturating_sub(samples.len());
    samples.extend(keys.into_iter().take(room));
}

/// Applies `op`. The caller holds the coordinator's lock.
///
/// An op writes its chunk's entry before the record, so an op that fails between the two
/// leaves the record counting a chunk whose entry is gone, never a chunk counted twice;
/// [`CompareOp::Read`] finds such chunks and holds them as failed (see [`reconcile`]).
pub async fn apply<T: TallyStore>(store: &T, op: CompareOp) -> StoreResult<CompareAnswer> {
    let mut comparisons = load(store).await?;
    match op {
        CompareOp::Read { now_ms } => {
            let due = reconcile(store, &mut comparisons, now_ms).await?;
            let mut answer = CompareAnswer::of(comparisons, true);
            answer.resend = due;
            Ok(answer)
        }
        CompareOp::Start { mut walk } => {
            // The run is named by its start, which must differ from the last one's even
            // within a millisecond: a chunk of that run must not pass for this one's.
            if let Some(last) = comparisons.run() {
                walk.started_at = walk.started_at.max(last + 1);
            }
            forget_all(store, SENT_PREFIX).await?;
            forget_all(store, FAILED_PREFIX).await?;
            let comparisons = Comparisons {
                walk: Some(walk),
                version: comparisons.version + 1,
                ..Comparisons::default()
            };
            save(store, &comparisons).await?;
            Ok(CompareAnswer::of(comparisons, true))
        }
        CompareOp::Plan {
            run,
            version,
            walk,
            chunks,
            now_ms,
        } => {
            if comparisons.run() != Some(run) || comparisons.version != version {
                return Ok(CompareAnswer::of(comparisons, false));
            }
            let first_seq = comparisons.queued;
            for (seq, keys) in (first_seq..).zip(chunks) {
                let chunk = StoredChunk {
                    keys,
                    sent_at: now_ms,
                };
                keep(store, SENT_PREFIX, seq, &chunk).await?;
                comparisons.queued = seq + 1;
            }
            comparisons.walk = Some(walk);
            comparisons.version += 1;
            save(store, &comparisons).await?;
            let mut answer = CompareAnswer::of(comparisons, true);
            answer.first_seq = Some(first_seq);
            Ok(answer)
        }
        CompareOp::Sent { run, seqs, sent_at } => {
            if comparisons.run() != Some(run) {
                return Ok(CompareAnswer::of(comparisons, false));
            }
            for seq in seqs {
                if let Some(mut chunk) = stored_chunk(store, SENT_PREFIX, seq).await? {
                    chunk.sent_at = sent_at;
                    keep(store, SENT_PREFIX, seq, &chunk).await?;
                }
            }
            Ok(CompareAnswer::of(comparisons, true))
        }
        CompareOp::Done { reports, now_ms } => {
            let mut accepted = false;
            for report in reports {
                if comparisons.run() != Some(report.run) {
                    continue;
                }
                if stored_chunk(store, SENT_PREFIX, report.seq)
                    .await?
                    .is_some()
                {
                    store.delete(&chunk_key(SENT_PREFIX, report.seq)).await?;
                } else if let Some(failed) = stored_chunk(store, FAILED_PREFIX, report.seq).await? {
                    // Compared after all, by a delivery that outlived the dead letter.
                    store.delete(&chunk_key(FAILED_PREFIX, report.seq)).await?;
                    comparisons.failed = comparisons.failed.saturating_sub(1);
                    comparisons
                        .failed_keys
                        .retain(|key| !failed.keys.contains(key));
                } else {
                    // Reported before (a message delivered twice): it counts once.
                    continue;
                }
                comparisons.done += 1;
                comparisons.values_compared += report.compared;
                comparisons.mismatched += report.mismatched.len() as u64;
                note_keys(&mut comparisons.mismatched_keys, report.mismatched);
                comparisons.last_done_at = Some(comparisons.last_done_at.unwrap_or(0).max(now_ms));
                accepted = true;
            }
            if accepted {
                save(store, &comparisons).await?;
            }
            Ok(CompareAnswer::of(comparisons, accepted))
        }
        CompareOp::AnsweredComplete { run } => {
            // Only the first answer counts: that call alone saves the verification where
            // the gates read it.
            if comparisons.run() != Some(run) || comparisons.answered_complete {
                return Ok(CompareAnswer::of(comparisons, false));
            }
            comparisons.answered_complete = true;
            save(store, &comparisons).await?;
            Ok(CompareAnswer::of(comparisons, true))
        }
        CompareOp::Failed { chunk } => {
            if comparisons.run() != Some(chunk.run) {
                return Ok(CompareAnswer::of(comparisons, false));
            }
            let Some(stored) = stored_chunk(store, SENT_PREFIX, chunk.seq).await? else {
                return Ok(CompareAnswer::of(comparisons, false));
            };
            keep(store, FAILED_PREFIX, chunk.seq, &stored).await?;
            store.delete(&chunk_key(SENT_PREFIX, chunk.seq)).await?;
            comparisons.failed += 1;
            note_keys(&mut comparisons.failed_keys, stored.keys);
            save(store, &comparisons).await?;
            Ok(CompareAnswer::of(comparisons, true))
        }
    }
}

/// Checks the stored chunks against the record and returns those to send again:
/// unreported and sent long enough ago (or never). Every applied op keeps one stored
/// chunk per pending one; a chunk the record counts as pending whose entry is gone was
/// lost by an op that failed between its writes, so its values may never be compared:
/// it is held as failed, which leaves the verification complete and not clean rather
/// than never complete. Entries past the record's count are a plan's that failed before
/// it was answered, never sent: they are dropped.
async fn reconcile<T: TallyStore>(
    store: &T,
    comparisons: &mut Comparisons,
    now_ms: u64,
) -> StoreResult<Vec<CompareChunk>> {
    let Some(run) = comparisons.run() else {
        return Ok(Vec::new());
    };
    let stored = store.list(SENT_PREFIX, LISTING_CAP).await?;
    let complete_listing = (stored.len() as u32) < LISTING_CAP;
    let mut due = Vec::new();
    let mut counted = 0;
    for (key, text) in stored {
        let seq = seq_of(SENT_PREFIX, &key)?;
        if seq >= comparisons.queued {
            store.delete(&key).await?;
            continue;
        }
        counted += 1;
        let chunk: StoredChunk =
            serde_json::from_str(&text).map_err(|_| corrupt("stored chunk"))?;
        let late = chunk.sent_at == 0 || chunk.sent_at + RESEND_AFTER_MS <= now_ms;
        if late && due.len() < RESEND_LIMIT {
            due.push(CompareChunk {
                run,
                seq,
                keys: chunk.keys,
            });
        }
    }
    let lost = comparisons.pending().saturating_sub(counted);
    if complete_listing && lost > 0 {
        comparisons.failed += lost;
        save(store, comparisons).await?;
    }
    Ok(due)
}

/// Whether two stores' values of a listed key differ. A key deleted from the old store
/// since it was listed is no difference of the copy's.
pub fn values_differ(old: &Option<StoredValue>, new: &Option<StoredValue>) -> bool {
    let same = match (old, new) {
        (Some(o), Some(n)) => o.bytes == n.bytes,
        (None, _) => new
            .as_ref()
            .is_none_or(|n| Tombstone::is_tombstone(&n.bytes)),
        (Some(_), None) => false,
    };
    !same
}

/// A consumer's work on one chunk: both stores' values in one bulk read each (a chunk
/// holds at most a bulk read's keys).
pub async fn compare_chunk<S: KvStore>(
    stores: &Stores<S>,
    chunk: &CompareChunk,
) -> StoreResult<Compared> {
    let old_values = read_many(&stores.old, &chunk.keys).await?;
    let new_values = read_many(&stores.new, &chunk.keys).await?;
    let mismatched = chunk
        .keys
        .iter()
        .zip(old_values.iter().zip(&new_values))
        .filter(|(_, (old, new))| values_differ(old, new))
        .map(|(name, _)| name.clone())
        .collect();
    Ok(Compared {
        run: chunk.run,
        seq: chunk.seq,
        compared: chunk.keys.len() as u64,
        mismatched,
    })
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::migration::checking::verify::Mode;
    use crate::migration::copying::fanout::tally::MemoryTally;

    fn walk(started_at: u64) -> Verification {
        Verification::new(Mode::Full, 1, started_at)
    }

    fn plan(version: u64, chunks: usize) -> CompareOp {
        CompareOp::Plan {
            run: 10,
            version,
            walk: walk(10),
            chunks: (0..chunks).map(|i| vec![format!("k{i}")]).collect(),
            now_ms: 10,
        }
    }

    /// A verification started and listed to the end, with chunks `k0` and `k1` sent.
    fn listed_with_two_chunks(store: &MemoryTally, listed: Verification) {
        let version = block_on(apply(store, CompareOp::Start { walk: walk(10) }))
            .unwrap()
            .comparisons
            .version;
        let op = CompareOp::Plan {
            run: 10,
            version,
            walk: Verification {
                family: 2,
                completed_at: Some(10),
                ..listed
            },
            chunks: vec![vec!["k0".into()], vec!["k1".into()]],
            now_ms: 10,
        };
        assert!(block_on(apply(store, op)).unwrap().accepted);
    }

    fn done(seq: u64, mismatched: &[&str]) -> Compared {
        Compared {
            run: 10,
            seq,
            compared: 1,
            mismatched: mismatched.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    #[test]
    fn a_plan_from_a_version_another_plan_overtook_is_refused() {
        let store = MemoryTally::default();
        let started = block_on(apply(&store, CompareOp::Start { walk: walk(10) })).unwrap();
        let version = started.comparisons.version;
        let first = block_on(apply(&store, plan(version, 2))).unwrap();
        assert_eq!((first.accepted, first.first_seq), (true, Some(0)));
        // A second planner that read the same version walked the same keys.
        let second = block_on(apply(&store, plan(version, 2))).unwrap();
        assert!(!second.accepted);
        assert_eq!(second.comparisons.queued, 2);
    }

    #[test]
    fn the_verification_is_complete_only_when_every_chunk_is_reported_once() {
        let store = MemoryTally::default();
        let listed = Verification {
            mismatched: 1,
            mismatched_keys: vec!["meta".into()],
            ..walk(10)
        };
        listed_with_two_chunks(&store, listed);
        let reports = vec![done(0, &["k0"]), done(0, &["k0"])];
        let once = block_on(apply(
            &store,
            CompareOp::Done {
                reports,
                now_ms: 20,
            },
        ))
        .unwrap();
        let merged = once.comparisons.verification().unwrap();
        assert!(!merged.complete());
        assert_eq!((merged.mismatched, merged.values_compared), (2, 1));
        assert_eq!(merged.mismatched_keys, ["meta", "k0"]);
        let reports = vec![done(1, &[])];
        let all = block_on(apply(
            &store,
            CompareOp::Done {
                reports,
                now_ms: 30,
            },
        ))
        .unwrap();
        let merged = all.comparisons.verification().unwrap();
        assert!(merged.complete() && !merged.clean());
        // Dated by the end of the listing, as the gates compare it with the backfill's.
        assert_eq!((merged.completed_at, merged.updated_at), (Some(10), 30));
    }

    #[test]
    fn a_chunk_lost_between_an_ops_writes_is_held_as_failed_not_waited_for_forever() {
        let store = MemoryTally::default();
        listed_with_two_chunks(&store, walk(10));
        // A report's op deleted chunk 0's entry and failed before saving the count.
        block_on(store.delete(&chunk_key(SENT_PREFIX, 0))).unwrap();
        // A plan that failed before its record was saved left an entry past the count.
        let orphan = StoredChunk {
            keys: vec!["k9".into()],
            sent_at: 10,
        };
        block_on(keep(&store, SENT_PREFIX, 2, &orphan)).unwrap();
        let read = block_on(apply(&store, CompareOp::Read { now_ms: 11 })).unwrap();
        assert_eq!(read.comparisons.failed, 1);
        assert!(block_on(stored_chunk(&store, SENT_PREFIX, 2))
            .unwrap()
            .is_none());
        let reports = vec![done(1, &[])];
        let all = block_on(apply(
            &store,
            CompareOp::Done {
                reports,
                now_ms: 12,
            },
        ))
        .unwrap();
        let merged = all.comparisons.verification().unwrap();
        assert!(merged.complete() && !merged.clean(), "{merged:?}");
    }

    #[test]
    fn a_failed_chunk_reported_after_all_counts_as_compared() {
        let store = MemoryTally::default();
        let version = block_on(apply(&store, CompareOp::Start { walk: walk(10) }))
            .unwrap()
            .comparisons
            .version;
        block_on(apply(&store, plan(version, 1))).unwrap();
        let chunk = CompareChunk {
            run: 10,
            seq: 0,
            keys: vec!["k0".into()],
        };
        let failed = block_on(apply(&store, CompareOp::Failed { chunk })).unwrap();
        assert_eq!(failed.comparisons.failed_keys, ["k0"]);
        let reports = vec![done(0, &[])];
        let late = block_on(apply(
            &store,
            CompareOp::Done {
                reports,
                now_ms: 20,
            },
        ))
        .unwrap();
        assert_eq!((late.comparisons.failed, late.comparisons.done), (0, 1));
        assert!(late.comparisons.failed_keys.is_empty());
    }

    #[test]
    fn an_unreported_chunk_is_due_again_after_the_resend_delay_and_a_failed_one_never() {
        let store = MemoryTally::default();
        let version = block_on(apply(&store, CompareOp::Start { walk: walk(10) }))
            .unwrap()
            .comparisons
            .version;
        block_on(apply(&store, plan(version, 2))).unwrap();
        let failed = CompareChunk {
            run: 10,
            seq: 1,
            keys: Vec::new(),
        };
        let unknown = CompareChunk {
            run: 10,
            seq: 7,
            keys: Vec::new(),
        };
        let refused = block_on(apply(&store, CompareOp::Failed { chunk: unknown })).unwrap();
        assert!(!refused.accepted);
        let reports = vec![done(7, &[])];
        let refused = block_on(apply(
            &store,
            CompareOp::Done {
                reports,
                now_ms: 11,
            },
        ))
        .unwrap();
        assert!(!refused.accepted);
        block_on(apply(&store, CompareOp::Failed { chunk: failed })).unwrap();
        let early = block_on(apply(&store, CompareOp::Read { now_ms: 11 })).unwrap();
        assert!(early.resend.is_empty());
        let now_ms = 10 + RESEND_AFTER_MS;
        let late = block_on(apply(&store, CompareOp::Read { now_ms })).unwrap();
        let due: Vec<u64> = late.resend.iter().map(|c| c.seq).collect();
        assert_eq!(due, [0]);
        assert_eq!(late.resend[0].keys, ["k0"]);
    }
}
