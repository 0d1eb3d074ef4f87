//! The background backfill (docs/design.md §8): pages through the old store's two key
//! families, copies what the new store lacks or holds older (see [`copy`]), and keeps a
//! checkpoint in the new store after every chunk, so a run cut off anywhere loses nothing
//! and the next resumes. The reverse sync after a rollback is the same engine run the
//! other way ([`Direction::Reverse`]), with its own checkpoint. Copies are idempotent,
//! so two overlapping runs do no harm (a lease makes them rare; counters may then count
//! a chunk twice).
//!
//! A pass that wrote anything is followed by another once its copies are visible
//! everywhere (`RunOptions::pass_delay_ms`); the run is complete only after a pass that
//! wrote nothing (§5).

use serde::{Deserialize, Serialize};

use crate::domain::{CUSTOMER_PREFIX, EMAIL_PREFIX};
use crate::error::Error;
use crate::migration::copying::copy::{self, CopyCounts, Direction};
use crate::migration::copying::fanout::{self, ChunkQueue, Fanout, Held, QueueMessage, TallyOp};
use crate::migration::keys;
use crate::migration::state::audit::{self, AuditEntry};
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::gates::{self, GateSettings};
use crate::migration::state::ledger::{Lease, LEASE_HELD};
use crate::migration::state::phase_record::CurrentPhase;
use crate::migration::stored::{self, Listing};
use crate::phase::Phase;
use crate::store::budget::{metered, Budget};
use crate::store::{KvStore, ListedKey, StoreResult, Stores, MAX_BULK_KEYS};

/// How long a run may hold the lease; cron fires every minute.
const LEASE_MS: u64 = 50_000;
pub(crate) const LIST_PAGE: u32 = 1_000;
/// Operations a chunk may need beyond its reads and copies: its checkpoint and a few
/// corrections of copies whose source changed.
const CHUNK_SLACK: u32 = 6;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Counting the keys to copy, so progress can show a percentage and an ETA.
    #[default]
    CountCustomers,
    CountMappings,
    CopyCustomers,
    CopyMappings,
    /// Fanned out: every key of the pass is listed and queued; consumers are copying.
    Draining,
    Done,
}

impl Stage {
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Stage::CountCustomers | Stage::CopyCustomers => CUSTOMER_PREFIX,
            Stage::CountMappings | Stage::CopyMappings => EMAIL_PREFIX,
            Stage::Draining | Stage::Done => "",
        }
    }

    fn next(self) -> Stage {
        match self {
            Stage::CountCustomers => Stage::CountMappings,
            Stage::CountMappings => Stage::CopyCustomers,
            Stage::CopyCustomers => Stage::CopyMappings,
            Stage::CopyMappings | Stage::Draining | Stage::Done => Stage::Done,
        }
    }

    pub(crate) fn counting(self) -> bool {
        matches!(self, Stage::CountCustomers | Stage::CountMappings)
    }

    /// Its name as the API and the metrics show it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::CountCustomers => "count_customers",
            Stage::CountMappings => "count_mappings",
            Stage::CopyCustomers => "copy_customers",
            Stage::CopyMappings => "copy_mappings",
            Stage::Draining => "draining",
            Stage::Done => "done",
        }
    }
}

/// Where a backfill stands, as the stall watch compares it from one cron run to the
/// next: any listing, scan, pass or chunk done moves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Position {
    pub stage: Stage,
    pub pass: u32,
    pub page_cursor: Option<String>,
    pub after_key: Option<String>,
    pub total: u64,
    pub scanned: u64,
    /// Fanned out: chunks of the pass the consumers have done.
    pub chunks_done: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Checkpoint {
    pub stage: Stage,
    /// The cursor that lists the page being worked on (`None`: the first page).
    pub page_cursor: Option<String>,
    /// The last key of that page already done.
    pub after_key: Option<String>,
    /// Keys in the old store's two families, as counted before copying.
    pub total: u64,
    /// What the first pass found; later passes add the keys they scanned and the
    /// writes they made (their findings repeat the first pass's).
    pub counts: CopyCounts,
    pub started_at: Option<u64>,
    pub updated_at: u64,
    pub completed_at: Option<u64>,
    pub runs: u64,
    pub paused: bool,
    /// Time spent in pauses that have ended, and when the current one began: the ETA
    /// counts working time only.
    #[serde(skip_serializing_if = "is_zero")]
    pub paused_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_since: Option<u64>,
    /// The pass over the keys, from 1; a pass that wrote is followed by another.
    pub pass: u32,
    /// Writes the current pass made or attempted (copies, deletes, corrections).
    pub pass_writes: u64,
    /// Keys scanned before the current pass began.
    pub scanned_before_pass: u64,
    /// When the current pass last wrote.
    pub last_write_at: Option<u64>,
    /// The current pass may not start before this instant.
    pub pass_not_before: Option<u64>,
    /// Whether the run queues its chunks for consumers rather than copying them itself
    /// (docs/design.md §13); its current pass's findings are in the coordinator's tally.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fanned_out: bool,
    /// Where the last cron run left the backfill, and how many cron runs in a row have
    /// left it there since (`alerts`' `backfill_stalled`). Kept here, in the run state
    /// each run saves anyway, rather than in a KV key of its own written every minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen: Option<Position>,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub idle_runs: u32,
}

impl Checkpoint {
    pub fn complete(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Percent of the counted keys the current pass scanned; 100 only when done.
    pub fn percent(&self) -> f64 {
        if self.complete() {
            return 100.0;
        }
        if self.total == 0 || self.stage.counting() {
            return 0.0;
        }
        let scanned = self.counts.scanned.saturating_sub(self.scanned_before_pass);
        (scanned as f64 * 100.0 / self.total as f64).min(99.9)
    }

    /// Whether copies were made that no later pass has re-read yet: until one has, a
    /// copy decided on a stale read may hide a newer value in the target. A fanned-out
    /// run counts until it is complete: its current pass's writes are in the
    /// coordinator's tally, which the checkpoint takes in only when the pass ends, and
    /// its consumers may be copying now (docs/design.md §13).
    pub fn unsettled_copies(&self) -> bool {
        !self.complete() && (self.pass_writes > 0 || self.pass > 1 || self.fanned_out)
    }

    /// How long the next pass must still wait for KV's consistency window.
    pub fn waiting_ms(&self, now_ms: u64) -> u64 {
        self.pass_not_before
            .map_or(0, |at| at.saturating_sub(now_ms))
    }

    /// Ends the current pass: done if it wrote nothing, else another pass, once the
    /// writes it made are visible everywhere.
    pub(crate) fn end_pass(&mut self, direction: Direction, now_ms: u64, pass_delay_ms: u64) {
        // The `mutant-reverse-one-pass` build lets the reverse sync finish, and vouch for
        // the old store, after a pass that wrote: no pass re-reads its copies.
        let unsettled_is_done =
            cfg!(feature = "mutant-reverse-one-pass") && direction == Direction::Reverse;
        if self.pass_writes == 0 || unsettled_is_done {
            self.stage = Stage::Done;
            self.completed_at.get_or_insert(now_ms);
            return;
        }
        self.stage = Stage::CopyCustomers;
        self.page_cursor = None;
        self.after_key = None;
        self.pass = self.pass.max(1) + 1;
        self.pass_writes = 0;
        self.scanned_before_pass = self.counts.scanned;
        self.pass_not_before = Some(self.last_write_at.unwrap_or(now_ms) + pass_delay_ms);
    }

    /// The keys of the page being worked on that are not done yet.
    pub(crate) fn not_done(&self, page: Vec<ListedKey>) -> Vec<ListedKey> {
        let after = self.after_key.as_deref();
        page.into_iter()
            .filter(|k| after.is_none_or(|after| k.name.as_str() > after))
            .collect()
    }

    /// Milliseconds left at the rate seen so far, once there is a rate.
    pub fn eta_ms(&self) -> Option<u64> {
        let started = self.started_at?;
        if self.complete() {
            return Some(0);
        }
        let working = self
            .updated_at
            .checked_sub(started)?
            .saturating_sub(self.paused_ms_until(self.updated_at));
        if self.counts.scanned == 0 || working == 0 || self.stage.counting() {
            return None;
        }
        // `counts.scanned` adds up every pass, so it gives the rate; what is left is
        // what the current pass has not scanned yet.
        let scanned_in_pass = self.counts.scanned.saturating_sub(self.scanned_before_pass);
        let left = self.total.saturating_sub(scanned_in_pass);
        Some(left.saturating_mul(working) / self.counts.scanned)
    }

    /// Notes where a cron run leaves the backfill (`chunks_done`: the consumers' count,
    /// fanned out): one that leaves it where the last one did is one more idle run, one
    /// that moved it starts the count over. Returns the count.
    pub(crate) fn note_cron_run(&mut self, chunks_done: u64) -> u32 {
        let position = Position {
            stage: self.stage,
            pass: self.pass,
            page_cursor: self.page_cursor.clone(),
            after_key: self.after_key.clone(),
            total: self.total,
            scanned: self.counts.scanned,
            chunks_done,
        };
        if self.seen.as_ref() == Some(&position) {
            self.idle_runs = self.idle_runs.saturating_add(1);
        } else {
            self.idle_runs = 0;
            self.seen = Some(position);
        }
        self.idle_runs
    }

    /// Time spent paused up to `at`, the current pause included.
    pub fn paused_ms_until(&self, at: u64) -> u64 {
        let current = self
            .paused_since
            .map_or(0, |since| at.saturating_sub(since));
        self.paused_ms.saturating_add(current)
    }
}

pub async fn load_checkpoint<S: KvStore>(new_store: &S) -> StoreResult<Checkpoint> {
    load_checkpoint_of(new_store, Direction::Forward).await
}

pub async fn load_checkpoint_of<S: KvStore>(
    new_store: &S,
    direction: Direction,
) -> StoreResult<Checkpoint> {
    Ok(stored::get(new_store, keys::checkpoint(direction))
        .await?
        .unwrap_or_default())
}

pub async fn save_checkpoint<S: KvStore>(
    new_store: &S,
    direction: Direction,
    checkpoint: &Checkpoint,
) -> StoreResult<()> {
    let key = keys::checkpoint(direction);
    stored::put(new_store, key, checkpoint, Listing::ValueOnly).await
}

#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub direction: Direction,
    pub dry_run: bool,
    /// Stop after scanning this many keys (`None`: as many as the budget allows).
    pub max_records: Option<u64>,
    /// A checkpoint started before this instant no longer counts and is started over
    /// (the reverse sync restarts when the old store diverges again).
    pub fresh_after_ms: u64,
    /// How long after a pass's last write the next pass may start: KV's consistency
    /// window plus the longest a request that raced the write may still run.
    pub pass_delay_ms: u64,
    /// The cron's runs: note where the run leaves the backfill, for the stall alert
    /// (admin batches and consumers' plans leave the count alone).
    pub watch_stall: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            direction: Direction::Forward,
            dry_run: false,
            max_records: None,
            fresh_after_ms: 0,
            pass_delay_ms: 0,
            watch_stall: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunReport {
    pub ran: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_because: Option<String>,
    pub dry_run: bool,
    pub stage: Stage,
    pub counted: u64,
    /// Chunks a fanned-out run queued for consumers.
    #[serde(skip_serializing_if = "is_zero")]
    pub queued: u64,
    pub counts: CopyCounts,
    pub operations: u32,
    pub complete: bool,
    /// How long the next pass must wait before it may start (see the module's notes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// Cron runs in a row, this one included, that left the backfill where it stood
    /// (see [`Checkpoint::note_cron_run`]); 0 for a run that moved it or was not watched.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub idle_runs: u32,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// One run: as many chunks as `budget` affords, from the stored checkpoint on.
/// `stores` should be metered by `budget` (see [`crate::store::budget::metered`]).
pub async fn run<S: KvStore>(
    stores: &Stores<S>,
    budget: &Budget,
    options: RunOptions,
    now_ms: u64,
) -> StoreResult<RunReport> {
    let start_ops = budget.used();
    let mut report = RunReport {
        dry_run: options.dry_run,
        ..Default::default()
    };
    if !options.dry_run {
        if let Some(reason) =
            take_lease(&stores.new, keys::lease(options.direction), now_ms).await?
        {
            report.skipped_because = Some(reason);
            return Ok(report);
        }
    }
    let mut checkpoint = load_checkpoint_of(&stores.new, options.direction).await?;
    if checkpoint
        .started_at
        .is_some_and(|started| started < options.fresh_after_ms)
    {
        checkpoint = Checkpoint::default();
    }
    checkpoint.started_at.get_or_insert(now_ms);
    let waiting_ms = checkpoint.waiting_ms(now_ms);
    if waiting_ms > 0 && !checkpoint.complete() {
        report.skipped_because = Some(format!(
            "pass {} waits {waiting_ms} ms more for the last pass's copies to reach every KV location",
            checkpoint.pass
        ));
        if !options.dry_run {
            stores.new.delete(keys::lease(options.direction)).await?;
        }
        report.wait_ms = Some(waiting_ms);
        report.stage = checkpoint.stage;
        report.operations = budget.used() - start_ops;
        return Ok(report);
    }
    checkpoint.pass = checkpoint.pass.max(1);
    checkpoint.runs += 1;
    report.ran = true;

    let result = advance(
        stores,
        budget,
        options,
        now_ms,
        &mut checkpoint,
        &mut report,
    )
    .await;
    if options.watch_stall && result.is_ok() {
        report.idle_runs = checkpoint.note_cron_run(0);
    }
    checkpoint.updated_at = now_ms;
    if !options.dry_run {
        // Whatever happened, keep what was done, then free the lease.
        save_checkpoint(&stores.new, options.direction, &checkpoint).await?;
        stores.new.delete(keys::lease(options.direction)).await?;
    }
    result?;
    report.stage = checkpoint.stage;
    report.complete = checkpoint.complete();
    report.wait_ms = Some(checkpoint.waiting_ms(now_ms)).filter(|ms| *ms > 0);
    report.operations = budget.used() - start_ops;
    Ok(report)
}

async fn advance<S: KvStore>(
    stores: &Stores<S>,
    budget: &Budget,
    options: RunOptions,
    now_ms: u64,
    checkpoint: &mut Checkpoint,
    report: &mut RunReport,
) -> StoreResult<()> {
    while checkpoint.stage != Stage::Done && budget.affords(1) {
        let stage = checkpoint.stage;
        let page = stores
            .get(options.direction.source())
            .list(stage.prefix(), checkpoint.page_cursor.as_deref(), LIST_PAGE)
            .await?;
        if stage.counting() {
            checkpoint.total += page.keys.len() as u64;
            report.counted += page.keys.len() as u64;
            move_past_page(checkpoint, page.cursor, page.complete);
            continue;
        }
        let pending = checkpoint.not_done(page.keys);
        for whole_chunk in pending.chunks(MAX_BULK_KEYS) {
            let room = options
                .max_records
                .map_or(u64::MAX, |max| max.saturating_sub(report.counts.scanned))
                // A chunk costs three bulk reads, a write per key at worst and its slack;
                // the run's last chunk takes what the budget still affords.
                .min(u64::from(budget.affordable(3 + CHUNK_SLACK)));
            let chunk = &whole_chunk[..whole_chunk.len().min(room as usize)];
            if chunk.is_empty() {
                return Ok(());
            }
            let counts =
                match copy::copy_chunk(stores, options.direction, chunk, now_ms, options.dry_run)
                    .await
                {
                    Ok(counts) => counts,
                    Err(err) => {
                        // The chunk may have written before it failed (its re-read, say):
                        // its copies need the settling pass as much as counted ones.
                        if !options.dry_run {
                            checkpoint.pass_writes += 1;
                            checkpoint.last_write_at = Some(now_ms);
                        }
                        return Err(err);
                    }
                };
            report.counts.add(&counts);
            checkpoint.counts.add(&if checkpoint.pass > 1 {
                counts.scanned_and_writes()
            } else {
                counts.clone()
            });
            let writes = counts.copied + counts.corrected + counts.errors;
            if writes > 0 {
                checkpoint.pass_writes += writes;
                checkpoint.last_write_at = Some(now_ms);
            }
            checkpoint.after_key = chunk.last().map(|k| k.name.clone());
            if !options.dry_run {
                save_checkpoint(&stores.new, options.direction, checkpoint).await?;
            }
            if chunk.len() < whole_chunk.len() {
                return Ok(()); // maxRecords or the budget reached inside this page
            }
        }
        move_past_page(checkpoint, page.cursor, page.complete);
        if checkpoint.stage == Stage::Done && !options.dry_run {
            checkpoint.end_pass(options.direction, now_ms, options.pass_delay_ms);
            if checkpoint.waiting_ms(now_ms) > 0 {
                return Ok(()); // the next pass waits for the consistency window
            }
        }
    }
    Ok(())
}

pub(crate) fn move_past_page(checkpoint: &mut Checkpoint, cursor: Option<String>, complete: bool) {
    checkpoint.after_key = None;
    if complete {
        checkpoint.stage = checkpoint.stage.next();
        checkpoint.page_cursor = None;
    } else {
        checkpoint.page_cursor = cursor;
    }
}

/// Takes the run lease unless another run holds it; returns why not, if not.
pub(crate) async fn take_lease<S: KvStore>(
    new_store: &S,
    key: &str,
    now_ms: u64,
) -> StoreResult<Option<String>> {
    let held: Option<Lease> = stored::get(new_store, key).await?;
    if let Some(until) = held.map(|l| l.until).filter(|until| *until > now_ms) {
        return Ok(Some(format!(
            "another run holds the lease for {} more ms",
            until - now_ms
        )));
    }
    let lease = Lease {
        until: now_ms + LEASE_MS,
    };
    // The ledger grants a lease to one run at a time (docs/design.md §11): a run that
    // read the lease free may still lose it to one that took it meanwhile.
    match stored::put(new_store, key, &lease, Listing::ValueOnly).await {
        Err(err) if err.operation == LEASE_HELD => {
            Ok(Some("another run took the lease first".to_owned()))
        }
        other => other.map(|_| None),
    }
}

/// Pauses or resumes the backfill: the cron skips a paused one.
pub async fn set_paused<S: KvStore>(
    new_store: &S,
    paused: bool,
    now_ms: u64,
) -> StoreResult<Checkpoint> {
    let mut checkpoint = load_checkpoint(new_store).await?;
    // A stall is counted afresh once the operator has stepped in.
    checkpoint.idle_runs = 0;
    checkpoint.seen = None;
    if paused && checkpoint.paused_since.is_none() {
        checkpoint.paused_since = Some(now_ms);
    }
    if !paused {
        if let Some(since) = checkpoint.paused_since.take() {
            checkpoint.paused_ms += now_ms.saturating_sub(since);
        }
    }
    checkpoint.paused = paused;
    save_checkpoint(new_store, Direction::Forward, &checkpoint).await?;
    Ok(checkpoint)
}

/// Starts the backfill over: the next run counts and copies from the start. Copies
/// already made stay, and are skipped as in sync.
pub async fn reset<S: KvStore>(new_store: &S) -> StoreResult<()> {
    new_store
        .delete(keys::checkpoint(Direction::Forward))
        .await?;
    new_store.delete(keys::lease(Direction::Forward)).await
}

/// Why a backfill batch may not run now, if it may not (docs/design.md §8): only in
/// phases 1 to 3 ([`Phase::backfill_allowed`]), not while the old store is behind the new
/// one (copying old to new could carry back a value those writes replaced), and not
/// while isolates may still run the previous phase (a copy could be outdated by a
/// phase-0 write nothing notices).
pub fn may_run(current: &CurrentPhase, settle_ms: u64, now_ms: u64) -> Result<(), Error> {
    if !current.every_phase(Phase::backfill_allowed) {
        return Err(Error::BackfillNotAllowed(format!(
            "backfill batches run in phases 1 to 3; the phase is {}{}",
            current.phase.number(),
            current.cohort_phase().map_or(String::new(), |p| format!(
                " and a cohort is in phase {}",
                p.number()
            ))
        )));
    }
    if current.state.old_store_diverged {
        return Err(Error::BackfillNotAllowed(
            "writes since phase 4 reached only the new store; the reverse sync must finish before the backfill may run again".to_owned(),
        ));
    }
    let unsettled_ms = gates::unsettled_ms(&current.state, settle_ms, now_ms);
    if unsettled_ms > 0 {
        return Err(Error::BackfillNotAllowed(format!(
            "the phase changed moments ago; isolates may run the previous phase for {unsettled_ms} ms more"
        )));
    }
    Ok(())
}

/// KV operations an admin request has made before its batch starts (the phase may have
/// been read); the batch's budget is what is left of the invocation's.
const REQUEST_OVERHEAD_OPS: u32 = 4;

/// A batch run on an admin's request, and where the backfill stands after it.
pub struct Batch {
    pub report: RunReport,
    pub checkpoint: Checkpoint,
}

/// Runs one batch now, if [`may_run`] allows, and audits it unless it was a dry run.
/// With `fanout` (and unless a dry run), the batch queues chunks for consumers.
pub async fn run_batch<S: KvStore, R: PhaseRegister>(
    stores: &Stores<S>,
    fanout: Option<Fanout<'_, R>>,
    current: &CurrentPhase,
    settings: GateSettings,
    options: RunOptions,
    who: &str,
    now_ms: u64,
) -> Result<Batch, Error> {
    may_run(current, settings.settle_ms, now_ms)?;
    let budget = Budget::per_invocation(REQUEST_OVERHEAD_OPS);
    let options = RunOptions {
        pass_delay_ms: settings.pass_delay_ms,
        ..options
    };
    let metered = metered(stores, &budget);
    let report = match fanout.filter(|_| !options.dry_run) {
        Some(fanout) => fanout::plan(&metered, fanout, &budget, options, now_ms).await?,
        None => run(&metered, &budget, options, now_ms).await?,
    };
    if !options.dry_run && report.ran {
        let detail = if fanout.is_some() {
            format!("queued {} chunks", report.queued)
        } else {
            format!(
                "scanned {}, copied {}",
                report.counts.scanned, report.counts.copied
            )
        };
        let entry = AuditEntry::action(who, "backfill_batch", now_ms, Some(detail));
        audit::append(&stores.new, &entry).await?;
    }
    let checkpoint = load_checkpoint(&stores.new).await?;
    Ok(Batch { report, checkpoint })
}

/// What an admin may do to the backfill besides running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Reset,
    /// Sends the chunks that reached the dead-letter queue again, the backfill's and the
    /// reverse sync's (docs/design.md §13).
    RetryFailed,
}

impl Control {
    fn audit_name(self) -> &'static str {
        match self {
            Control::Pause => "backfill_pause",
            Control::Resume => "backfill_resume",
            Control::Reset => "backfill_reset",
            Control::RetryFailed => "backfill_retry_failed",
        }
    }
}

/// Sets how many chunks a fanned-out backfill may have in flight (docs/design.md §13),
/// audited; returns where the backfill stands.
pub async fn throttle<S: KvStore, R: PhaseRegister>(
    new_store: &S,
    register: &R,
    max_in_flight: u64,
    who: &str,
    now_ms: u64,
) -> Result<Checkpoint, Error> {
    let detail = Some(format!("at most {max_in_flight} chunks in flight"));
    let entry = AuditEntry::action(who, "backfill_throttle", now_ms, detail);
    audit::append(new_store, &entry).await?;
    let op = TallyOp::Control {
        direction: Direction::Forward,
        paused: None,
        max_in_flight: Some(max_in_flight),
    };
    register.tally(op).await?;
    Ok(load_checkpoint(new_store).await?)
}

/// Pauses, resumes or resets the backfill, or sends its failed chunks again, audited
/// first; returns where it stands. A pause reaches the coordinator's tally too, which
/// consumers ask before copying (docs/design.md §13).
pub async fn control<S: KvStore, R: PhaseRegister>(
    new_store: &S,
    (register, queue): (&R, Option<&dyn ChunkQueue>),
    action: Control,
    who: &str,
    now_ms: u64,
) -> Result<Checkpoint, Error> {
    let direction = Direction::Forward;
    if action == Control::RetryFailed && queue.is_none() {
        return Err(Error::BackfillNotAllowed(
            "only a backfill fanned out on a queue has failed chunks to retry".to_owned(),
        ));
    }
    let entry = AuditEntry::action(who, action.audit_name(), now_ms, None);
    audit::append(new_store, &entry).await?;
    match action {
        Control::Pause | Control::Resume => {
            let paused = action == Control::Pause;
            let op = TallyOp::Control {
                direction,
                paused: Some(paused),
                max_in_flight: None,
            };
            register.tally(op).await?;
            set_paused(new_store, paused, now_ms).await?;
            if let Some(queue) = queue.filter(|_| !paused) {
                // The planner sends the chunks set aside while paused; if this fails,
                // the cron runs it within a minute.
                let _ = queue.send(vec![QueueMessage::Plan { direction }]).await;
            }
        }
        Control::Reset => reset(new_store).await?,
        Control::RetryFailed => {
            if let Some(queue) = queue {
                let fanout = Fanout { register, queue };
                for direction in [Direction::Forward, Direction::Reverse] {
                    while fanout::plan::send_held(fanout, direction, Held::Failed, now_ms).await?
                        > 0
                    {}
                }
            }
        }
    }
    Ok(load_checkpoint(new_store).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1,000 keys, started at 0, scanning 100 keys a second of working time.
    fn running(scanned: u64, updated_at: u64) -> Checkpoint {
        Checkpoint {
            stage: Stage::CopyCustomers,
            total: 1_000,
            counts: CopyCounts {
                scanned,
                ..CopyCounts::default()
            },
            started_at: Some(0),
            updated_at,
            pass: 1,
            ..Checkpoint::default()
        }
    }

    #[test]
    fn the_first_pass_estimates_from_its_rate() {
        assert_eq!(running(250, 2_500).eta_ms(), Some(7_500));
    }

    #[test]
    fn a_later_pass_estimates_what_it_has_left_not_zero() {
        // Pass 1 scanned all 1,000 keys in 10 s; pass 2 has scanned 200 of them in 2 s.
        let checkpoint = Checkpoint {
            pass: 2,
            scanned_before_pass: 1_000,
            ..running(1_200, 12_000)
        };
        assert_eq!(checkpoint.percent(), 20.0);
        assert_eq!(checkpoint.eta_ms(), Some(8_000));
    }

    #[test]
    fn time_spent_paused_does_not_slow_the_estimate() {
        // 250 keys in 2.5 s of work, with a 60 s pause that ended and a 10 s one going on.
        let paused = Checkpoint {
            paused_ms: 60_000,
            ..running(250, 62_500)
        };
        assert_eq!(paused.eta_ms(), Some(7_500));
        let pausing = Checkpoint {
            paused_since: Some(62_500),
            paused_ms: 60_000,
            ..running(250, 72_500)
        };
        assert_eq!(pausing.paused_ms_until(72_500), 70_000);
        assert_eq!(pausing.eta_ms(), Some(7_500));
    }

    #[test]
    fn a_cron_run_that_leaves_the_backfill_in_place_counts_as_idle() {
        let mut checkpoint = running(250, 2_500);
        assert_eq!(checkpoint.note_cron_run(0), 0, "the first look only notes");
        assert_eq!(checkpoint.note_cron_run(0), 1);
        assert_eq!(checkpoint.note_cron_run(0), 2);
        checkpoint.counts.scanned += 100; // a chunk copied
        assert_eq!(checkpoint.note_cron_run(0), 0);
        assert_eq!(checkpoint.note_cron_run(0), 1);
        checkpoint.after_key = Some("customer_c9".into()); // an empty chunk moved past
        assert_eq!(checkpoint.note_cron_run(0), 0);
        assert_eq!(checkpoint.note_cron_run(3), 0, "fanned out: chunks done");
        assert_eq!(checkpoint.note_cron_run(3), 1);
        assert_eq!(Stage::Draining.name(), "draining");
        for stage in [Stage::CountCustomers, Stage::CopyMappings, Stage::Done] {
            assert_eq!(serde_json::to_value(stage).unwrap(), stage.name());
        }
    }

    #[test]
    fn no_estimate_while_counting_and_zero_when_done() {
        let counting = Checkpoint {
            stage: Stage::CountMappings,
            ..running(0, 1_000)
        };
        assert_eq!(counting.eta_ms(), None);
        let done = Checkpoint {
            stage: Stage::Done,
            ..running(1_000, 10_000)
        };
        assert_eq!(done.eta_ms(), Some(0));
    }
}
