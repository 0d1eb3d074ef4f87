//! A verification fanned out on the queue (docs/design.md §13, "Verification fanned
//! out"): the planner walks both listings and sends the keys whose values are to be
//! compared, in chunks, to consumers; the coordinator keeps the walk and what the
//! consumers found. Every op is applied one at a time under the coordinator's lock
//! ([`apply`]), so concurrent consumers cannot lose a report and two planners cannot
//! both advance the walk. A chunk stays stored until a consumer reports it, so one whose
//! sending was lost is sent again, and one reported twice counts once.

use serde::{Deserialize, Serialize};

use crate::domain::Tombstone;
use crate::migration::checking::verify::{FanoutProgress, Verification, SAMPLE_KEYS};
use crate::migration::copying::fanout::tally::TallyStore;
use crate::store::{read_many, KvStore, StoreError, StoreResult, StoredValue, Stores};

/// Chunks sent and not yet reported, at most: bounds the coordinator's storage and what
/// a restart leaves on the queue.
pub const WINDOW: u64 = 1_000;
/// Chunks one plan commits (its request to the coordinator carries their keys).
pub const CHUNKS_PER_PLAN: usize = 100;
/// A chunk not reported this long after it was sent is sent again: its sending or its
/// report was lost.
pub const RESEND_AFTER_MS: u64 = 5 * 60_000;
/// Chunks sent again per planner call.
const RESEND_LIMIT: u32 = 100;

const STATE_KEY: &str = "compare/state";
const CHUNK_PREFIX: &str = "compare/chunk/";

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
        merged.completed_at = match merged.completed_at {
            Some(listed) if self.pending() == 0 => Some(listed.max(self.last_done_at.unwrap_or(0))),
            _ => None,
        };
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
struct Pending {
    keys: Vec<String>,
    /// When it was last sent; 0 if its sending failed.
    sent_at: u64,
    #[serde(default)]
    failed: bool,
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

fn chunk_key(seq: u64) -> String {
    // Zero-padded so entries list in sequence order.
    format!("{CHUNK_PREFIX}{seq:020}")
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

async fn pending<T: TallyStore>(store: &T, seq: u64) -> StoreResult<Option<Pending>> {
    match store.get(&chunk_key(seq)).await? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|_| corrupt("stored chunk")),
    }
}

async fn keep<T: TallyStore>(store: &T, seq: u64, chunk: &Pending) -> StoreResult<()> {
    let text = serde_json::to_string(chunk).map_err(|_| corrupt("stored chunk"))?;
    store.put(&chunk_key(seq), text).await
}

/// Applies `op`. The caller holds the coordinator's lock.
pub async fn apply<T: TallyStore>(store: &T, op: CompareOp) -> StoreResult<CompareAnswer> {
    let mut comparisons = load(store).await?;
    match op {
        CompareOp::Read { now_ms } => {
            let mut answer = CompareAnswer::of(comparisons, true);
            answer.resend = due(store, &answer.comparisons, now_ms).await?;
            Ok(answer)
        }
        CompareOp::Start { mut walk } => {
            // The run is named by its start, which must differ from the last one's even
            // within a millisecond: a chunk of that run must not pass for this one's.
            if let Some(last) = comparisons.run() {
                walk.started_at = walk.started_at.max(last + 1);
            }
            loop {
                let stored = store.list(CHUNK_PREFIX, 128).await?;
                if stored.is_empty() {
                    break;
                }
                for (key, _) in stored {
                    store.delete(&key).await?;
                }
            }
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
                let sent_at = now_ms;
                keep(
                    store,
                    seq,
                    &Pending {
                        keys,
                        sent_at,
                        failed: false,
                    },
                )
                .await?;
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
                if let Some(mut chunk) = pending(store, seq).await? {
                    chunk.sent_at = sent_at;
                    keep(store, seq, &chunk).await?;
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
                // Reported before (a message delivered twice): it counts once.
                let Some(chunk) = pending(store, report.seq).await? else {
                    continue;
                };
                store.delete(&chunk_key(report.seq)).await?;
                if chunk.failed {
                    comparisons.failed = comparisons.failed.saturating_sub(1);
                }
                comparisons.done += 1;
                comparisons.values_compared += report.compared;
                comparisons.mismatched += report.mismatched.len() as u64;
                let room = SAMPLE_KEYS.saturating_sub(comparisons.mismatched_keys.len());
                comparisons
                    .mismatched_keys
                    .extend(report.mismatched.into_iter().take(room));
                comparisons.last_done_at = Some(comparisons.last_done_at.unwrap_or(0).max(now_ms));
                accepted = true;
            }
            if accepted {
                save(store, &comparisons).await?;
            }
            Ok(CompareAnswer::of(comparisons, accepted))
        }
        CompareOp::AnsweredComplete { run } => {
            if comparisons.run() != Some(run) {
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
            let Some(mut stored) = pending(store, chunk.seq).await? else {
                return Ok(CompareAnswer::of(comparisons, false));
            };
            if stored.failed {
                return Ok(CompareAnswer::of(comparisons, false));
            }
            stored.failed = true;
            keep(store, chunk.seq, &stored).await?;
            comparisons.failed += 1;
            let room = SAMPLE_KEYS.saturating_sub(comparisons.failed_keys.len());
            comparisons
                .failed_keys
                .extend(stored.keys.iter().take(room).cloned());
            save(store, &comparisons).await?;
            Ok(CompareAnswer::of(comparisons, true))
        }
    }
}

/// Unreported chunks sent long enough ago (or never): their sending or their report was
/// lost. A failed chunk is not sent again; a new verification is.
async fn due<T: TallyStore>(
    store: &T,
    comparisons: &Comparisons,
    now_ms: u64,
) -> StoreResult<Vec<CompareChunk>> {
    let Some(run) = comparisons.run() else {
        return Ok(Vec::new());
    };
    if comparisons.pending() == 0 {
        return Ok(Vec::new());
    }
    // Stored chunks are the pending ones (at most the window) and the failed ones.
    let stored_chunks = comparisons.pending() + comparisons.failed;
    let stored = store
        .list(
            CHUNK_PREFIX,
            u32::try_from(stored_chunks).unwrap_or(u32::MAX),
        )
        .await?;
    let mut due = Vec::new();
    for (key, text) in stored {
        let chunk: Pending = serde_json::from_str(&text).map_err(|_| corrupt("stored chunk"))?;
        let late = chunk.sent_at == 0 || chunk.sent_at + RESEND_AFTER_MS <= now_ms;
        if chunk.failed || !late {
            continue;
        }
        let seq = key[CHUNK_PREFIX.len()..]
            .parse()
            .map_err(|_| corrupt("stored chunk's number"))?;
        due.push(CompareChunk {
            run,
            seq,
            keys: chunk.keys,
        });
        if due.len() as u32 == RESEND_LIMIT {
            break;
        }
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
        let mut listed = walk(10);
        listed.family = 2;
        listed.completed_at = Some(10);
        listed.mismatched = 1;
        listed.mismatched_keys = vec!["meta".into()];
        let version = block_on(apply(&store, CompareOp::Start { walk: walk(10) }))
            .unwrap()
            .comparisons
            .version;
        let op = CompareOp::Plan {
            run: 10,
            version,
            walk: listed,
            chunks: vec![vec!["k0".into()], vec!["k1".into()]],
            now_ms: 10,
        };
        block_on(apply(&store, op)).unwrap();
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
        assert_eq!(merged.completed_at, Some(30));
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
