//! A check fanned out on the queue, as the coordinator keeps it (docs/design.md §13,
//! "Verification fanned out"; the email audit fans out the same way): the planner's walk
//! of the listings, each chunk of keys sent to consumers and not yet reported, and what
//! the consumers found. Every op is applied one at a time under the coordinator's lock
//! ([`apply`]), so concurrent consumers' reports are each counted and two planners cannot
//! both advance the walk. A chunk stays stored until a consumer reports it, so one whose
//! sending was lost is sent again, and one reported twice counts once.
//!
//! What a check walks ([`Walk`]) and what its consumers report ([`Findings`]) are the
//! check's own; each check keeps its entries under its own space in the object's storage.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::migration::checking::verify::SAMPLE_KEYS;
use crate::migration::copying::fanout::tally::TallyStore;
use crate::migration::copying::fanout::{ChunkQueue, QueueMessage};
use crate::store::{StoreError, StoreResult};

/// Chunks sent and not yet reported, at most: bounds the coordinator's storage of them
/// and what a restart leaves on the queue. Below the 1,000 entries one storage listing
/// returns, so [`FanOp::Read`] sees every one (a plan may overshoot by a chunk).
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

/// The planner's walk of a check's listings: where it stands and what the listings
/// showed.
pub trait Walk: Clone + Serialize + DeserializeOwned {
    /// Names the run: chunks of another run are ignored.
    fn started_at(&self) -> u64;
    fn set_started_at(&mut self, at: u64);
}

/// What consumers found, summed over the chunks they reported.
pub trait Findings: Default + Clone + Serialize + DeserializeOwned {
    /// What one consumer found in one chunk.
    type Report: Clone + Serialize + DeserializeOwned;
    fn add(&mut self, report: Self::Report);
}

/// The coordinator's record of a check in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, bound = "W: Walk, F: Findings")]
pub struct FannedOut<W, F> {
    /// Its `startedAt` names the run.
    pub walk: Option<W>,
    /// Bumped by every plan: a planner that read another version was overtaken.
    pub version: u64,
    pub queued: u64,
    pub done: u64,
    /// Chunks that kept failing (dead-lettered): their keys were not checked.
    pub failed: u64,
    #[serde(flatten)]
    pub found: F,
    pub failed_keys: Vec<String>,
    pub last_done_at: Option<u64>,
    /// A call answered it complete: the next call starts a new one.
    pub answered_complete: bool,
}

impl<W, F: Default> Default for FannedOut<W, F> {
    fn default() -> Self {
        Self {
            walk: None,
            version: 0,
            queued: 0,
            done: 0,
            failed: 0,
            found: F::default(),
            failed_keys: Vec::new(),
            last_done_at: None,
            answered_complete: false,
        }
    }
}

/// The chunks of a fanned-out check, as its report shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FanoutProgress {
    pub queued: u64,
    pub done: u64,
    /// Chunks that kept failing: their keys were not checked.
    pub failed: u64,
    pub failed_keys: Vec<String>,
}

impl FanoutProgress {
    /// Every chunk sent reported or failed. The `mutant-check-completes-early` build
    /// does not wait for them: a check completes once its listing does.
    pub fn settled(&self) -> bool {
        self.done + self.failed >= self.queued || cfg!(feature = "mutant-check-completes-early")
    }
}

impl<W: Walk, F> FannedOut<W, F> {
    pub fn run(&self) -> Option<u64> {
        self.walk.as_ref().map(Walk::started_at)
    }

    /// Chunks sent and neither reported nor failed.
    pub fn pending(&self) -> u64 {
        self.queued.saturating_sub(self.done + self.failed)
    }

    /// Chunks the planner may send now.
    pub fn room(&self) -> u64 {
        WINDOW.saturating_sub(self.pending())
    }

    /// A report's `(completedAt, updatedAt)` from the walk's: complete once every chunk
    /// is reported, dated by the end of the listing (the keys are checked later, never
    /// earlier); updated by the consumers' last report.
    pub fn dates(&self, completed_at: Option<u64>, updated_at: u64) -> (Option<u64>, u64) {
        let settled = self.pending() == 0 || cfg!(feature = "mutant-check-completes-early");
        let completed_at = completed_at.filter(|_| settled);
        let updated_at = updated_at.max(self.last_done_at.unwrap_or(0));
        (completed_at, updated_at)
    }

    pub fn progress(&self) -> FanoutProgress {
        FanoutProgress {
            queued: self.queued,
            done: self.done,
            failed: self.failed,
            failed_keys: self.failed_keys.clone(),
        }
    }
}

/// Keys a consumer checks, as they travel on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChunk {
    pub run: u64,
    pub seq: u64,
    pub keys: Vec<String>,
}

/// What a consumer found in one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report<R> {
    pub run: u64,
    pub seq: u64,
    #[serde(flatten)]
    pub found: R,
}

/// A chunk the coordinator keeps until it is reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredChunk {
    keys: Vec<String>,
    /// When it was last sent; 0 if its sending failed.
    sent_at: u64,
}

/// One op on a fanned-out check, as it travels to the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", bound = "W: Walk, F: Findings")]
pub enum FanOp<W, F: Findings> {
    /// The record, and the chunks to send again: unreported and sent long enough ago.
    Read { now_ms: u64 },
    /// Starts a check: forgets the last one and its chunks.
    Start { walk: W },
    /// Advances the walk and stores its chunks, if the planner read `version` of this
    /// `run`; the answer numbers the chunks from `first_seq`.
    Plan {
        run: u64,
        version: u64,
        walk: W,
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
    /// What one consumer invocation found.
    Done {
        reports: Vec<Report<F::Report>>,
        now_ms: u64,
    },
    /// A chunk reached the dead-letter queue.
    Failed { chunk: KeyChunk },
    /// A call answered the run complete.
    AnsweredComplete { run: u64 },
}

/// The record after an op, and what the op answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", bound = "W: Walk, F: Findings")]
pub struct FanAnswer<W, F> {
    /// Named `comparisons` on the wire, which versions that fanned out only the
    /// verification read.
    #[serde(rename = "comparisons")]
    pub state: FannedOut<W, F>,
    /// False when the op did nothing: a plan another planner overtook, a report of
    /// another run or of a chunk already reported.
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// Chunks to send again (`Read`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resend: Vec<KeyChunk>,
}

impl<W, F> FanAnswer<W, F> {
    fn of(state: FannedOut<W, F>, accepted: bool) -> Self {
        Self {
            state,
            accepted,
            first_seq: None,
            resend: Vec::new(),
        }
    }
}

/// Where a check keeps its entries in the coordinator's storage: `<space>/state`, the
/// chunks sent and not yet reported under `<space>/chunk/`, and those that kept failing
/// (kept so a late report still counts) under `<space>/failed/`.
struct Keys {
    state: String,
    sent: String,
    failed: String,
}

impl Keys {
    fn of(space: &str) -> Self {
        Self {
            state: format!("{space}/state"),
            sent: format!("{space}/chunk/"),
            failed: format!("{space}/failed/"),
        }
    }
}

fn corrupt(space: &'static str, what: &str) -> StoreError {
    StoreError::new(space, format!("the {what} is unreadable"))
}

fn chunk_key(prefix: &str, seq: u64) -> String {
    // Zero-padded so entries list in sequence order.
    format!("{prefix}{seq:020}")
}

struct Entries<'a, T> {
    store: &'a T,
    space: &'static str,
    keys: Keys,
}

impl<T: TallyStore> Entries<'_, T> {
    async fn load<W: Walk, F: Findings>(&self) -> StoreResult<FannedOut<W, F>> {
        match self.store.get(&self.keys.state).await? {
            None => Ok(FannedOut::default()),
            Some(text) => {
                serde_json::from_str(&text).map_err(|_| corrupt(self.space, "fanned-out record"))
            }
        }
    }

    async fn save<W: Walk, F: Findings>(&self, state: &FannedOut<W, F>) -> StoreResult<()> {
        let text =
            serde_json::to_string(state).map_err(|_| corrupt(self.space, "fanned-out record"))?;
        self.store.put(&self.keys.state, text).await
    }

    async fn chunk(&self, prefix: &str, seq: u64) -> StoreResult<Option<StoredChunk>> {
        match self.store.get(&chunk_key(prefix, seq)).await? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|_| corrupt(self.space, "stored chunk")),
        }
    }

    async fn keep(&self, prefix: &str, seq: u64, chunk: &StoredChunk) -> StoreResult<()> {
        let text = serde_json::to_string(chunk).map_err(|_| corrupt(self.space, "stored chunk"))?;
        self.store.put(&chunk_key(prefix, seq), text).await
    }

    async fn forget(&self, prefix: &str, seq: u64) -> StoreResult<()> {
        self.store.delete(&chunk_key(prefix, seq)).await
    }

    async fn forget_all(&self, prefix: &str) -> StoreResult<()> {
        loop {
            let stored = self.store.list(prefix, 128).await?;
            if stored.is_empty() {
                return Ok(());
            }
            for (key, _) in stored {
                self.store.delete(&key).await?;
            }
        }
    }
}

fn note_keys(samples: &mut Vec<String>, keys: impl IntoIterator<Item = String>) {
    let room = SAMPLE_KEYS.saturating_sub(samples.len());
    samples.extend(keys.into_iter().take(room));
}

/// Applies `op` to the check kept under `space`. The caller holds the coordinator's lock.
///
/// An op writes its chunk's entry before the record, so an op that fails between the two
/// leaves the record counting a chunk whose entry is gone, never a chunk counted twice;
/// [`FanOp::Read`] finds such chunks and holds them as failed (see [`reconcile`]).
pub async fn apply<T: TallyStore, W: Walk, F: Findings>(
    store: &T,
    space: &'static str,
    op: FanOp<W, F>,
) -> StoreResult<FanAnswer<W, F>> {
    let entries = Entries {
        store,
        space,
        keys: Keys::of(space),
    };
    let sent = entries.keys.sent.clone();
    let failed_prefix = entries.keys.failed.clone();
    let mut state: FannedOut<W, F> = entries.load().await?;
    match op {
        FanOp::Read { now_ms } => {
            let due = reconcile(&entries, &mut state, now_ms).await?;
            let mut answer = FanAnswer::of(state, true);
            answer.resend = due;
            Ok(answer)
        }
        FanOp::Start { mut walk } => {
            // The run is named by its start, which must differ from the last one's even
            // within a millisecond: a chunk of that run must not pass for this one's.
            if let Some(last) = state.run() {
                walk.set_started_at(walk.started_at().max(last + 1));
            }
            entries.forget_all(&sent).await?;
            entries.forget_all(&failed_prefix).await?;
            let state = FannedOut {
                walk: Some(walk),
                version: state.version + 1,
                ..FannedOut::default()
            };
            entries.save(&state).await?;
            Ok(FanAnswer::of(state, true))
        }
        FanOp::Plan {
            run,
            version,
            walk,
            chunks,
            now_ms,
        } => {
            if state.run() != Some(run) || state.version != version {
                return Ok(FanAnswer::of(state, false));
            }
            let first_seq = state.queued;
            for (seq, keys) in (first_seq..).zip(chunks) {
                let chunk = StoredChunk {
                    keys,
                    sent_at: now_ms,
                };
                entries.keep(&sent, seq, &chunk).await?;
                state.queued = seq + 1;
            }
            state.walk = Some(walk);
            state.version += 1;
            entries.save(&state).await?;
            let mut answer = FanAnswer::of(state, true);
            answer.first_seq = Some(first_seq);
            Ok(answer)
        }
        FanOp::Sent { run, seqs, sent_at } => {
            if state.run() != Some(run) {
                return Ok(FanAnswer::of(state, false));
            }
            for seq in seqs {
                if let Some(mut chunk) = entries.chunk(&sent, seq).await? {
                    chunk.sent_at = sent_at;
                    entries.keep(&sent, seq, &chunk).await?;
                }
            }
            Ok(FanAnswer::of(state, true))
        }
        FanOp::Done { reports, now_ms } => {
            let mut accepted = false;
            for report in reports {
                if state.run() != Some(report.run) {
                    continue;
                }
                if entries.chunk(&sent, report.seq).await?.is_some() {
                    entries.forget(&sent, report.seq).await?;
                } else if let Some(failed) = entries.chunk(&failed_prefix, report.seq).await? {
                    // Checked after all, by a delivery that outlived the dead letter.
                    entries.forget(&failed_prefix, report.seq).await?;
                    state.failed = state.failed.saturating_sub(1);
                    state.failed_keys.retain(|key| !failed.keys.contains(key));
                } else {
                    // Reported before (a message delivered twice): it counts once.
                    continue;
                }
                state.done += 1;
                state.found.add(report.found);
                state.last_done_at = Some(state.last_done_at.unwrap_or(0).max(now_ms));
                accepted = true;
            }
            if accepted {
                entries.save(&state).await?;
            }
            Ok(FanAnswer::of(state, accepted))
        }
        FanOp::AnsweredComplete { run } => {
            // Only the first answer counts: that call alone acts on the completion.
            if state.run() != Some(run) || state.answered_complete {
                return Ok(FanAnswer::of(state, false));
            }
            state.answered_complete = true;
            entries.save(&state).await?;
            Ok(FanAnswer::of(state, true))
        }
        FanOp::Failed { chunk } => {
            if state.run() != Some(chunk.run) {
                return Ok(FanAnswer::of(state, false));
            }
            let Some(stored) = entries.chunk(&sent, chunk.seq).await? else {
                return Ok(FanAnswer::of(state, false));
            };
            entries.keep(&failed_prefix, chunk.seq, &stored).await?;
            entries.forget(&sent, chunk.seq).await?;
            state.failed += 1;
            note_keys(&mut state.failed_keys, stored.keys);
            entries.save(&state).await?;
            Ok(FanAnswer::of(state, true))
        }
    }
}

/// Checks the stored chunks against the record and returns those to send again:
/// unreported and sent long enough ago (or never). Every applied op keeps one stored
/// chunk per pending one; a chunk the record counts as pending whose entry is gone was
/// lost by an op that failed between its writes, so its keys may never be checked: it is
/// held as failed, which leaves the check complete and not clean rather than never
/// complete. Entries past the record's count are a plan's that failed before it was
/// answered, never sent: they are dropped.
async fn reconcile<T: TallyStore, W: Walk, F: Findings>(
    entries: &Entries<'_, T>,
    state: &mut FannedOut<W, F>,
    now_ms: u64,
) -> StoreResult<Vec<KeyChunk>> {
    let Some(run) = state.run() else {
        return Ok(Vec::new());
    };
    let prefix = &entries.keys.sent;
    let stored = entries.store.list(prefix, LISTING_CAP).await?;
    let complete_listing = (stored.len() as u32) < LISTING_CAP;
    let mut due = Vec::new();
    let mut counted = 0;
    for (key, text) in stored {
        let seq: u64 = key[prefix.len()..]
            .parse()
            .map_err(|_| corrupt(entries.space, "stored chunk's number"))?;
        if seq >= state.queued {
            entries.store.delete(&key).await?;
            continue;
        }
        counted += 1;
        let chunk: StoredChunk =
            serde_json::from_str(&text).map_err(|_| corrupt(entries.space, "stored chunk"))?;
        let late = chunk.sent_at == 0 || chunk.sent_at + RESEND_AFTER_MS <= now_ms;
        if late && due.len() < RESEND_LIMIT {
            due.push(KeyChunk {
                run,
                seq,
                keys: chunk.keys,
            });
        }
    }
    let lost = state.pending().saturating_sub(counted);
    if complete_listing && lost > 0 {
        state.failed += lost;
        entries.save(state).await?;
    }
    Ok(due)
}

/// The coordinator as one check's planner reaches it.
#[allow(async_fn_in_trait)]
pub trait Coordinated<W: Walk, F: Findings> {
    async fn apply(&self, op: FanOp<W, F>) -> StoreResult<FanAnswer<W, F>>;
}

/// Sends chunks, each with its number; if that fails they are marked unsent, so the next
/// call sends them.
pub async fn send<W: Walk, F: Findings>(
    coordinator: &impl Coordinated<W, F>,
    queue: &dyn ChunkQueue,
    run: u64,
    chunks: Vec<(u64, QueueMessage)>,
) -> StoreResult<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    let (seqs, messages): (Vec<u64>, Vec<QueueMessage>) = chunks.into_iter().unzip();
    if let Err(err) = queue.send(messages).await {
        let op = FanOp::Sent {
            run,
            seqs,
            sent_at: 0,
        };
        // If this fails too, the chunks are sent again once they are overdue.
        let _ = coordinator.apply(op).await;
        return Err(err);
    }
    Ok(())
}

/// Sends again the chunks whose sending or report was lost, and notes when.
pub async fn resend<W: Walk, F: Findings>(
    coordinator: &impl Coordinated<W, F>,
    queue: &dyn ChunkQueue,
    run: u64,
    chunks: Vec<(u64, QueueMessage)>,
    now_ms: u64,
) -> StoreResult<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    let seqs = chunks.iter().map(|(seq, _)| *seq).collect();
    send(coordinator, queue, run, chunks).await?;
    let op = FanOp::Sent {
        run,
        seqs,
        sent_at: now_ms,
    };
    coordinator.apply(op).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::migration::copying::fanout::tally::MemoryTally;

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    struct Listed {
        started_at: u64,
    }

    impl Walk for Listed {
        fn started_at(&self) -> u64 {
            self.started_at
        }

        fn set_started_at(&mut self, at: u64) {
            self.started_at = at;
        }
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    struct Seen {
        seen: u64,
    }

    impl Findings for Seen {
        type Report = Seen;

        fn add(&mut self, report: Seen) {
            self.seen += report.seen;
        }
    }

    type Op = FanOp<Listed, Seen>;
    const SPACE: &str = "test";

    fn apply_op(store: &MemoryTally, op: Op) -> FanAnswer<Listed, Seen> {
        block_on(apply(store, SPACE, op)).unwrap()
    }

    fn entries(store: &MemoryTally) -> Entries<'_, MemoryTally> {
        Entries {
            store,
            space: SPACE,
            keys: Keys::of(SPACE),
        }
    }

    /// A check started, with chunks `k0` and `k1` sent.
    fn two_chunks_sent(store: &MemoryTally) {
        let walk = Listed { started_at: 10 };
        let version = apply_op(store, Op::Start { walk: walk.clone() })
            .state
            .version;
        let op = Op::Plan {
            run: 10,
            version,
            walk,
            chunks: vec![vec!["k0".into()], vec!["k1".into()]],
            now_ms: 10,
        };
        assert!(apply_op(store, op).accepted);
    }

    fn done(seq: u64) -> Op {
        let found = Seen { seen: 1 };
        Op::Done {
            reports: vec![Report {
                run: 10,
                seq,
                found,
            }],
            now_ms: 12,
        }
    }

    #[test]
    fn a_chunk_lost_between_an_ops_writes_is_held_as_failed_not_waited_for_forever() {
        let store = MemoryTally::default();
        two_chunks_sent(&store);
        let entries = entries(&store);
        // A report's op deleted chunk 0's entry and failed before saving the count.
        block_on(entries.forget("test/chunk/", 0)).unwrap();
        // A plan that failed before its record was saved left an entry past the count.
        let orphan = StoredChunk {
            keys: vec!["k9".into()],
            sent_at: 10,
        };
        block_on(entries.keep("test/chunk/", 2, &orphan)).unwrap();
        let read = apply_op(&store, Op::Read { now_ms: 11 });
        assert_eq!(read.state.failed, 1);
        assert!(block_on(entries.chunk("test/chunk/", 2)).unwrap().is_none());
        let all = apply_op(&store, done(1));
        assert_eq!((all.state.pending(), all.state.found.seen), (0, 1));
    }

    #[test]
    fn checks_kept_under_other_spaces_do_not_meet() {
        let store = MemoryTally::default();
        two_chunks_sent(&store);
        let other: FanAnswer<Listed, Seen> =
            block_on(apply(&store, "other", Op::Read { now_ms: 11 })).unwrap();
        assert_eq!((other.state.run(), other.state.queued), (None, 0));
        let refused: FanAnswer<Listed, Seen> = block_on(apply(&store, "other", done(0))).unwrap();
        assert!(!refused.accepted);
        assert_eq!(apply_op(&store, done(0)).state.done, 1);
    }

    #[test]
    fn the_record_reads_as_the_fields_of_its_findings_beside_its_own() {
        let store = MemoryTally::default();
        two_chunks_sent(&store);
        let answer = apply_op(&store, done(0));
        let json = serde_json::to_value(&answer).unwrap();
        // Named as versions that fanned out only the verification read it.
        assert_eq!(
            (
                json["comparisons"]["seen"].as_u64(),
                json["accepted"].as_bool()
            ),
            (Some(1), Some(true))
        );
        let read: FanAnswer<Listed, Seen> = serde_json::from_value(json).unwrap();
        assert_eq!(read.state, answer.state);
    }
}
