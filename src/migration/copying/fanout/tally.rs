//! The coordinator's tally of a pass fanned out on the queue (docs/design.md §13): how
//! many chunks the planner queued, which ones consumers finished, which ones failed or
//! were set aside while paused, and what they found. Consumers report concurrently and
//! a message may arrive twice, so every change is an op the coordinator applies one at a
//! time ([`apply`]) against its strongly consistent storage; a chunk counts once, by its
//! sequence number in the pass.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::migration::copying::copy::{CopyCounts, Direction, SAMPLE_KEYS};
use crate::store::{StoreError, StoreResult};

/// Chunks in flight at once unless the operator throttles: enough to keep many consumers
/// busy, few enough that a pause sets aside a bounded number.
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 500;
/// Sequence numbers per block of the done set (one bit each).
const BLOCK_SEQS: u64 = 8 * 1024;
/// A released chunk is sent again only if it was not sent in this long (it may still be
/// queued from the last release).
const RESEND_AFTER_MS: u64 = 10 * 60_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Tally {
    /// The run the pass belongs to (its checkpoint's `startedAt`): a reset starts a new
    /// run, and messages of another run are ignored.
    pub run: u64,
    pub pass: u32,
    /// Chunks the planner queued in this pass, numbered from 0.
    pub queued: u64,
    pub done: u64,
    /// Chunks that kept failing (dead-lettered), held until `retry-failed`.
    pub failed: u64,
    /// Chunks set aside while paused, held until resumed.
    pub parked: u64,
    /// Whether the planner has listed the pass's last page.
    pub listed_all: bool,
    /// What the consumers found in this pass.
    pub counts: CopyCounts,
    /// Writes the pass made or attempted (copies, corrections, failures).
    pub writes: u64,
    pub last_write_at: Option<u64>,
    pub first_done_at: Option<u64>,
    pub last_done_at: Option<u64>,
    /// Keys of failed chunks, a few.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_keys: Vec<String>,
    /// Operator controls, kept across passes.
    pub paused: bool,
    pub max_in_flight: u64,
    /// The pass's last reservation of sequence numbers, which the planner may make again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reservation: Option<Reservation>,
}

/// Sequence numbers reserved for the chunks of one listed page (`TallyOp::Queue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// Where the planner listed the page from (`plan::page_position`): a planner that
    /// lists from there again asks again, whatever the page holds now.
    pub page: String,
    pub first_seq: u64,
    pub chunks: u64,
}

impl Tally {
    pub fn in_flight(&self) -> u64 {
        self.queued
            .saturating_sub(self.done + self.failed + self.parked)
    }

    pub fn window(&self) -> u64 {
        if self.max_in_flight == 0 {
            DEFAULT_MAX_IN_FLIGHT
        } else {
            self.max_in_flight
        }
    }

    /// Room for more chunks under the throttle.
    pub fn room(&self) -> u64 {
        self.window().saturating_sub(self.in_flight())
    }

    /// Every chunk of the pass is listed and done.
    pub fn finished(&self) -> bool {
        self.listed_all && self.done == self.queued
    }

    /// Whether the planner should queue more: a consumer that sees this asks for it.
    fn wants_planning(&self) -> bool {
        !self.listed_all && !self.paused && self.in_flight() <= self.window() / 2
    }

    fn record_writes(&mut self, writes: u64, now_ms: u64) {
        if writes > 0 {
            self.writes += writes;
            self.last_write_at = Some(self.last_write_at.unwrap_or(0).max(now_ms));
        }
    }

    fn is(&self, run: u64, pass: u32) -> bool {
        self.run == run && self.pass == pass
    }

    /// Records per second over the pass so far.
    pub fn records_per_second(&self) -> Option<f64> {
        let elapsed = self.last_done_at?.checked_sub(self.first_done_at?)?;
        (elapsed > 0).then(|| self.counts.scanned as f64 * 1000.0 / elapsed as f64)
    }
}

/// Why a chunk is held instead of done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Held {
    /// It kept failing and reached the dead-letter queue.
    Failed,
    /// It arrived while the backfill was paused (or not allowed to run).
    Parked,
}

/// One key of a chunk, as the planner listed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkKey {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u64>,
}

/// A chunk of up to 100 keys of one pass, as it travels on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub direction: Direction,
    pub run: u64,
    pub pass: u32,
    pub seq: u64,
    pub keys: Vec<ChunkKey>,
}

/// A held chunk, kept until it is sent again and done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeldChunk {
    why: Held,
    chunk: Chunk,
    #[serde(default)]
    sent_at: Option<u64>,
}

/// One op on the tally, as it travels to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TallyOp {
    Read {
        direction: Direction,
    },
    /// Tallies pass `pass` of run `run` from now on (nothing changes if it already does).
    /// `absorbed_writes` are the last pass's writes the planner took into its checkpoint:
    /// writes reported since carry over to the new pass.
    Start {
        direction: Direction,
        run: u64,
        pass: u32,
        absorbed_writes: u64,
    },
    /// Reserves `chunks` sequence numbers, if the planner saw `expected_queued`: a second
    /// planner must not number other keys the same. A reservation listed from where the
    /// last one was (its `page`) is that one made again: its answer was lost, or its
    /// planner stopped before it saved its checkpoint.
    Queue {
        direction: Direction,
        run: u64,
        pass: u32,
        expected_queued: u64,
        chunks: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page: Option<String>,
        #[serde(default)]
        now_ms: u64,
    },
    /// The planner listed the pass's last page.
    Listed {
        direction: Direction,
        run: u64,
        pass: u32,
    },
    /// Whether a consumer may copy a chunk of this run and pass now.
    Admit {
        direction: Direction,
        run: u64,
        pass: u32,
    },
    Done {
        chunk_of: ChunkRef,
        counts: CopyCounts,
        /// How many writes the copy made or attempted.
        writes: u64,
        now_ms: u64,
    },
    /// The chunks of one direction that one consumer invocation copied, reported
    /// together: one request to the coordinator per batch rather than per chunk
    /// (docs/design.md §13).
    DoneMany {
        reports: Vec<DoneReport>,
        now_ms: u64,
    },
    /// A copy of the chunk failed and is retried: it may have written some of its copies,
    /// which the pass's successor must re-read.
    Attempted {
        chunk_of: ChunkRef,
        now_ms: u64,
    },
    /// Holds a chunk; one that failed may have written some of its copies.
    Hold {
        why: Held,
        chunk: Chunk,
        now_ms: u64,
    },
    /// Hands out up to `limit` held chunks to send again.
    Release {
        direction: Direction,
        why: Held,
        limit: u32,
        now_ms: u64,
    },
    Control {
        direction: Direction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        paused: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_in_flight: Option<u64>,
    },
}

/// One chunk's report within [`TallyOp::DoneMany`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneReport {
    pub chunk_of: ChunkRef,
    pub counts: CopyCounts,
    /// How many writes the copy made or attempted.
    pub writes: u64,
}

/// Which chunk a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub direction: Direction,
    pub run: u64,
    pub pass: u32,
    pub seq: u64,
}

impl Chunk {
    pub fn reference(&self) -> ChunkRef {
        ChunkRef {
            direction: self.direction,
            run: self.run,
            pass: self.pass,
            seq: self.seq,
        }
    }
}

/// What a consumer may do with a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    Copy,
    /// The chunk belongs to a pass or run that is over: drop it.
    Stale,
    /// Set it aside until resumed.
    Paused,
}

/// The tally after an op, and what the op answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TallyAnswer {
    pub tally: Tally,
    /// False when the op did nothing: a report of a stale or already counted chunk, a
    /// reservation another planner overtook.
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// How many numbers from `first_seq` the reservation holds (`Queue`): more than the
    /// planner asked for when it made a reservation again for a page that shrank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<Admission>,
    /// Chunks to send again (`Release`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<Chunk>,
    /// The planner should run now: the pass finished, or the window half emptied.
    #[serde(default)]
    pub nudge: bool,
}

impl TallyAnswer {
    fn of(tally: Tally, accepted: bool) -> Self {
        Self {
            tally,
            accepted,
            first_seq: None,
            reserved: None,
            admission: None,
            released: Vec::new(),
            nudge: false,
        }
    }
}

/// The strongly consistent entries the tally lives in: the coordinator's storage, or a
/// map in native tests. The caller runs one op at a time.
#[allow(async_fn_in_trait)]
pub trait TallyStore {
    async fn get(&self, key: &str) -> StoreResult<Option<String>>;
    async fn put(&self, key: &str, value: String) -> StoreResult<()>;
    async fn delete(&self, key: &str) -> StoreResult<()>;
    /// Up to `limit` entries under `prefix`, in key order.
    async fn list(&self, prefix: &str, limit: u32) -> StoreResult<Vec<(String, String)>>;
}

/// The tally's entries in memory: the coordinator of native tests and the simulation.
#[derive(Debug, Default)]
pub struct MemoryTally {
    entries: RefCell<BTreeMap<String, String>>,
}

impl TallyStore for MemoryTally {
    async fn get(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(self.entries.borrow().get(key).cloned())
    }

    async fn put(&self, key: &str, value: String) -> StoreResult<()> {
        self.entries.borrow_mut().insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.entries.borrow_mut().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str, limit: u32) -> StoreResult<Vec<(String, String)>> {
        let entries = self.entries.borrow();
        let found = entries
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit as usize)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Ok(found)
    }
}

fn tally_key(direction: Direction) -> String {
    format!("tally/{}", direction_name(direction))
}

fn done_block_key(direction: Direction, block: u64) -> String {
    format!("tally/{}/done/{block}", direction_name(direction))
}

fn held_prefix(direction: Direction) -> String {
    format!("tally/{}/held/", direction_name(direction))
}

fn held_key(direction: Direction, seq: u64) -> String {
    // Zero-padded so entries list in sequence order.
    format!("{}{seq:020}", held_prefix(direction))
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Forward => "forward",
        Direction::Reverse => "reverse",
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::new("tally", format!("the tally's {what} is unreadable"))
}

async fn load<T: TallyStore>(store: &T, direction: Direction) -> StoreResult<Tally> {
    match store.get(&tally_key(direction)).await? {
        None => Ok(Tally::default()),
        Some(text) => serde_json::from_str(&text).map_err(|_| corrupt("record")),
    }
}

async fn save<T: TallyStore>(store: &T, direction: Direction, tally: &Tally) -> StoreResult<()> {
    let text = serde_json::to_string(tally).map_err(|_| corrupt("record"))?;
    store.put(&tally_key(direction), text).await
}

/// Whether `seq` is in the done set, and marks it if `mark`.
async fn done_bit<T: TallyStore>(
    store: &T,
    direction: Direction,
    seq: u64,
    mark: bool,
) -> StoreResult<bool> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let key = done_block_key(direction, seq / BLOCK_SEQS);
    let mut block = match store.get(&key).await? {
        Some(text) => engine.decode(text).map_err(|_| corrupt("done set"))?,
        None => Vec::new(),
    };
    let bit = (seq % BLOCK_SEQS) as usize;
    let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
    let was = block.get(byte).is_some_and(|b| b & mask != 0);
    if mark && !was {
        if block.len() <= byte {
            block.resize(byte + 1, 0);
        }
        block[byte] |= mask;
        store.put(&key, engine.encode(&block)).await?;
    }
    Ok(was)
}

/// Forgets the last pass: its done set and held chunks.
async fn clear_pass<T: TallyStore>(
    store: &T,
    direction: Direction,
    last: &Tally,
) -> StoreResult<()> {
    for block in 0..=last.queued / BLOCK_SEQS {
        store.delete(&done_block_key(direction, block)).await?;
    }
    loop {
        let held = store.list(&held_prefix(direction), 128).await?;
        if held.is_empty() {
            return Ok(());
        }
        for (key, _) in held {
            store.delete(&key).await?;
        }
    }
}

/// Applies `op`. The caller holds the coordinator's lock.
pub async fn apply<T: TallyStore>(store: &T, op: TallyOp) -> StoreResult<TallyAnswer> {
    match op {
        TallyOp::Read { direction } => Ok(TallyAnswer::of(load(store, direction).await?, true)),
        TallyOp::Start {
            direction,
            run,
            pass,
            absorbed_writes,
        } => {
            let last = load(store, direction).await?;
            // The tally never goes back: a planner whose checkpoint is behind it (an
            // earlier run, or an earlier pass of this run) would reopen a pass whose
            // chunks and writes it cannot see, and could close it as having written
            // nothing. It is refused; it sees another run or pass in the answer.
            if last.is(run, pass) || (run, pass) < (last.run, last.pass) {
                return Ok(TallyAnswer::of(last, false));
            }
            clear_pass(store, direction, &last).await?;
            let mut tally = Tally {
                run,
                pass,
                paused: last.paused,
                max_in_flight: last.max_in_flight,
                ..Tally::default()
            };
            // Writes no planner took into a checkpoint, this run's or a run it replaces
            // (a reset, or a run started over), still need a pass that re-reads them.
            let late = if last.run == run {
                last.writes.saturating_sub(absorbed_writes)
            } else {
                last.writes
            };
            tally.record_writes(late, last.last_write_at.unwrap_or(0));
            save(store, direction, &tally).await?;
            Ok(TallyAnswer::of(tally, true))
        }
        TallyOp::Queue {
            direction,
            run,
            pass,
            expected_queued,
            chunks,
            page,
            now_ms,
        } => {
            let mut tally = load(store, direction).await?;
            if !tally.is(run, pass) || tally.listed_all {
                return Ok(TallyAnswer::of(tally, false));
            }
            let again = tally
                .last_reservation
                .as_ref()
                .filter(|last| page.as_ref() == Some(&last.page))
                .cloned();
            let reservation = match again {
                // The same numbers again, as many as either listing needs: the planner
                // sends empty chunks for the rest, so none of them stays undone. The
                // first sending may have gone out with keys this listing lacks; an empty
                // chunk counted done in their place must not end the run, so the pass
                // counts as having written, and its successor lists every key again.
                Some(last) if tally.queued == last.first_seq + last.chunks => {
                    tally.record_writes(1, now_ms);
                    Reservation {
                        chunks: last.chunks.max(chunks),
                        ..last
                    }
                }
                _ if tally.queued != expected_queued => {
                    return Ok(TallyAnswer::of(tally, false));
                }
                _ => Reservation {
                    page: page.unwrap_or_default(),
                    first_seq: tally.queued,
                    chunks,
                },
            };
            tally.queued = reservation.first_seq + reservation.chunks;
            let (first_seq, reserved) = (reservation.first_seq, reservation.chunks);
            tally.last_reservation = Some(reservation);
            save(store, direction, &tally).await?;
            let mut answer = TallyAnswer::of(tally, true);
            answer.first_seq = Some(first_seq);
            answer.reserved = Some(reserved);
            Ok(answer)
        }
        TallyOp::Listed {
            direction,
            run,
            pass,
        } => {
            let mut tally = load(store, direction).await?;
            if !tally.is(run, pass) {
                return Ok(TallyAnswer::of(tally, false));
            }
            tally.listed_all = true;
            save(store, direction, &tally).await?;
            Ok(TallyAnswer::of(tally, true))
        }
        TallyOp::Admit {
            direction,
            run,
            pass,
        } => {
            let tally = load(store, direction).await?;
            let admission = if !tally.is(run, pass) {
                Admission::Stale
            } else if tally.paused {
                Admission::Paused
            } else {
                Admission::Copy
            };
            let mut answer = TallyAnswer::of(tally, true);
            answer.admission = Some(admission);
            Ok(answer)
        }
        TallyOp::Done {
            chunk_of,
            counts,
            writes,
            now_ms,
        } => done(store, chunk_of, counts, writes, now_ms).await,
        TallyOp::DoneMany { reports, now_ms } => {
            // Each report as if sent alone; the answer is the last one's tally, accepted
            // and nudging if any report was.
            let mut answer: Option<TallyAnswer> = None;
            for report in reports {
                let one =
                    done(store, report.chunk_of, report.counts, report.writes, now_ms).await?;
                answer = Some(match answer {
                    None => one,
                    Some(before) => TallyAnswer {
                        accepted: before.accepted || one.accepted,
                        nudge: before.nudge || one.nudge,
                        ..one
                    },
                });
            }
            match answer {
                Some(answer) => Ok(answer),
                None => Ok(TallyAnswer::of(Tally::default(), false)),
            }
        }
        TallyOp::Attempted { chunk_of, now_ms } => {
            // Whichever run or pass the tally counts now, it must be followed by one that
            // re-reads what the attempt may have written.
            let mut tally = load(store, chunk_of.direction).await?;
            tally.record_writes(1, now_ms);
            save(store, chunk_of.direction, &tally).await?;
            Ok(TallyAnswer::of(tally, true))
        }
        TallyOp::Hold { why, chunk, now_ms } => hold(store, why, chunk, now_ms).await,
        TallyOp::Release {
            direction,
            why,
            limit,
            now_ms,
        } => release(store, direction, why, limit, now_ms).await,
        TallyOp::Control {
            direction,
            paused,
            max_in_flight,
        } => {
            let mut tally = load(store, direction).await?;
            tally.paused = paused.unwrap_or(tally.paused);
            tally.max_in_flight = max_in_flight.unwrap_or(tally.max_in_flight);
            save(store, direction, &tally).await?;
            Ok(TallyAnswer::of(tally, true))
        }
    }
}

async fn done<T: TallyStore>(
    store: &T,
    chunk_of: ChunkRef,
    counts: CopyCounts,
    writes: u64,
    now_ms: u64,
) -> StoreResult<TallyAnswer> {
    let direction = chunk_of.direction;
    let mut tally = load(store, direction).await?;
    if !tally.is(chunk_of.run, chunk_of.pass) || chunk_of.seq >= tally.queued {
        // A late copy of an earlier pass or run: the pass running now must not be the
        // last, or nothing re-reads what that copy wrote.
        if writes > 0 {
            tally.record_writes(writes, now_ms);
            save(store, direction, &tally).await?;
        }
        return Ok(TallyAnswer::of(tally, false));
    }
    // The `mutant-tally-counts-twice` build counts a chunk delivered twice twice: a pass
    // can then end with chunks never copied.
    let counted = done_bit(store, direction, chunk_of.seq, true).await?;
    if counted && !cfg!(feature = "mutant-tally-counts-twice") {
        // Delivered twice: counted once, but the second copy's writes need settling
        // as much as the first's.
        if writes > 0 {
            tally.record_writes(writes, now_ms);
            save(store, direction, &tally).await?;
        }
        return Ok(TallyAnswer::of(tally, false));
    }
    let wanted_before = tally.wants_planning();
    let key = held_key(direction, chunk_of.seq);
    if let Some(text) = store.get(&key).await? {
        let held: HeldChunk = serde_json::from_str(&text).map_err(|_| corrupt("held chunk"))?;
        match held.why {
            Held::Failed => tally.failed = tally.failed.saturating_sub(1),
            Held::Parked => tally.parked = tally.parked.saturating_sub(1),
        }
        store.delete(&key).await?;
    }
    tally.done += 1;
    tally.counts.add(&counts);
    tally.record_writes(writes, now_ms);
    tally.first_done_at.get_or_insert(now_ms);
    tally.last_done_at = Some(tally.last_done_at.unwrap_or(0).max(now_ms));
    save(store, direction, &tally).await?;
    let nudge = tally.finished() || (!wanted_before && tally.wants_planning());
    let mut answer = TallyAnswer::of(tally, true);
    answer.nudge = nudge;
    Ok(answer)
}

async fn hold<T: TallyStore>(
    store: &T,
    why: Held,
    chunk: Chunk,
    now_ms: u64,
) -> StoreResult<TallyAnswer> {
    let direction = chunk.direction;
    let mut tally = load(store, direction).await?;
    let stale = !tally.is(chunk.run, chunk.pass) || chunk.seq >= tally.queued;
    if stale {
        return Ok(TallyAnswer::of(tally, false));
    }
    if why == Held::Failed {
        // Its attempts may have copied keys on stale reads: the pass needs a successor.
        tally.record_writes(1, now_ms);
    }
    if done_bit(store, direction, chunk.seq, false).await? {
        save(store, direction, &tally).await?;
        return Ok(TallyAnswer::of(tally, false));
    }
    let key = held_key(direction, chunk.seq);
    let before = match store.get(&key).await? {
        Some(text) => {
            Some(serde_json::from_str::<HeldChunk>(&text).map_err(|_| corrupt("held chunk"))?)
        }
        None => None,
    };
    // A chunk is counted under one reason; failing outranks being parked. Held again
    // after a release, it may be released again at once.
    match (before.map(|h| h.why), why) {
        (Some(counted @ Held::Failed), _) | (Some(counted @ Held::Parked), Held::Parked) => {
            let entry = HeldChunk {
                why: counted,
                chunk,
                sent_at: None,
            };
            let text = serde_json::to_string(&entry).map_err(|_| corrupt("held chunk"))?;
            store.put(&key, text).await?;
            save(store, direction, &tally).await?;
            return Ok(TallyAnswer::of(tally, false));
        }
        (Some(Held::Parked), Held::Failed) => tally.parked = tally.parked.saturating_sub(1),
        (None, _) => {}
    }
    match why {
        Held::Failed => {
            tally.failed += 1;
            let room = SAMPLE_KEYS.saturating_sub(tally.failed_keys.len());
            let names = chunk.keys.iter().take(room).map(|k| k.name.clone());
            tally.failed_keys.extend(names);
        }
        Held::Parked => tally.parked += 1,
    }
    let entry = HeldChunk {
        why,
        chunk,
        sent_at: None,
    };
    let text = serde_json::to_string(&entry).map_err(|_| corrupt("held chunk"))?;
    store.put(&key, text).await?;
    save(store, direction, &tally).await?;
    Ok(TallyAnswer::of(tally, true))
}

async fn release<T: TallyStore>(
    store: &T,
    direction: Direction,
    why: Held,
    limit: u32,
    now_ms: u64,
) -> StoreResult<TallyAnswer> {
    let mut tally = load(store, direction).await?;
    let mut released = Vec::new();
    let entries = store.list(&held_prefix(direction), u32::MAX).await?;
    for (key, text) in entries {
        if released.len() >= limit as usize {
            break;
        }
        let mut held: HeldChunk = serde_json::from_str(&text).map_err(|_| corrupt("held chunk"))?;
        let recently_sent = held
            .sent_at
            .is_some_and(|at| now_ms.saturating_sub(at) < RESEND_AFTER_MS);
        if held.why != why || recently_sent {
            continue;
        }
        held.sent_at = Some(now_ms);
        released.push(held.chunk.clone());
        let text = serde_json::to_string(&held).map_err(|_| corrupt("held chunk"))?;
        store.put(&key, text).await?;
    }
    if why == Held::Failed && !released.is_empty() {
        tally.failed_keys.clear();
        save(store, direction, &tally).await?;
    }
    let mut answer = TallyAnswer::of(tally, true);
    answer.released = released;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;

    fn queue(expected_queued: u64, chunks: u64, page: &str) -> TallyOp {
        TallyOp::Queue {
            direction: Direction::Forward,
            run: 1,
            pass: 1,
            expected_queued,
            chunks,
            page: Some(page.to_owned()),
            now_ms: 5,
        }
    }

    #[test]
    fn a_reservation_made_again_keeps_its_numbers_and_never_holds_fewer() {
        let store = MemoryTally::default();
        let start = TallyOp::Start {
            direction: Direction::Forward,
            run: 1,
            pass: 1,
            absorbed_writes: 0,
        };
        block_on(apply(&store, start)).unwrap();
        let first = block_on(apply(&store, queue(0, 3, "customer_a"))).unwrap();
        assert_eq!((first.first_seq, first.reserved), (Some(0), Some(3)));
        assert_eq!(first.tally.writes, 0);
        // The same page again, listed with a key fewer: the same numbers, all three, and
        // the pass counts as having written.
        let again = block_on(apply(&store, queue(3, 2, "customer_a"))).unwrap();
        assert!(again.accepted);
        assert_eq!((again.first_seq, again.reserved), (Some(0), Some(3)));
        assert_eq!((again.tally.queued, again.tally.writes), (3, 1));
        // The next page; then the first one can no longer be made again.
        let next = block_on(apply(&store, queue(3, 2, "customer_m"))).unwrap();
        assert_eq!((next.first_seq, next.tally.queued), (Some(3), 5));
        let stale = block_on(apply(&store, queue(3, 3, "customer_a"))).unwrap();
        assert!(!stale.accepted);
        assert_eq!(stale.tally.queued, 5);
    }
}
