//! The planner (docs/design.md §13): under the run's lease, lists the source from the
//! checkpoint on and queues chunks of up to 100 keys while the throttle's window has
//! room; ends a pass once the tally shows every chunk of it done, and starts the next
//! once the pass's copies are visible everywhere, as the cron's engine does.

use crate::migration::copying::backfill::{
    load_checkpoint_of, move_past_page, save_checkpoint, take_lease, Checkpoint, RunOptions,
    RunReport, Stage, LIST_PAGE,
};
use crate::migration::copying::copy::Direction;
use crate::migration::copying::fanout::tally::{Chunk, ChunkKey, Held, Tally, TallyOp};
use crate::migration::copying::fanout::{Fanout, QueueMessage};
use crate::migration::keys;
use crate::migration::state::coordinator::PhaseRegister;
use crate::store::budget::Budget;
use crate::store::{KvStore, ListedKey, StoreResult, Stores, MAX_BULK_KEYS};

/// Held chunks sent again per planner run.
const RELEASE_PER_RUN: u32 = 100;

/// One planner run within `budget` (which `stores` should be metered by).
pub async fn plan<S: KvStore, R: PhaseRegister>(
    stores: &Stores<S>,
    fanout: Fanout<'_, R>,
    budget: &Budget,
    options: RunOptions,
    now_ms: u64,
) -> StoreResult<RunReport> {
    let start_ops = budget.used();
    let lease = keys::lease(options.direction);
    if let Some(reason) = take_lease(&stores.new, lease, now_ms).await? {
        return Ok(RunReport {
            skipped_because: Some(reason),
            ..RunReport::default()
        });
    }
    let mut checkpoint = load_checkpoint_of(&stores.new, options.direction).await?;
    let result = under_lease(stores, fanout, budget, options, now_ms, &mut checkpoint).await;
    // Consumers copy, so the chunks they have done are progress too. A paused backfill
    // is not expected to move.
    let idle_runs = match &result {
        Ok((_, Some(tally))) if options.watch_stall && !tally.paused => {
            checkpoint.note_cron_run(tally.done)
        }
        _ => 0,
    };
    checkpoint.updated_at = now_ms;
    save_checkpoint(&stores.new, options.direction, &checkpoint).await?;
    stores.new.delete(lease).await?;
    let (mut report, _) = result?;
    report.idle_runs = idle_runs;
    report.stage = checkpoint.stage;
    report.complete = checkpoint.complete();
    report.operations = budget.used() - start_ops;
    Ok(report)
}

/// The planner's work under the lease: its report and, once it got as far as asking
/// the coordinator, the tally as the run left it.
async fn under_lease<S: KvStore, R: PhaseRegister>(
    stores: &Stores<S>,
    fanout: Fanout<'_, R>,
    budget: &Budget,
    options: RunOptions,
    now_ms: u64,
    checkpoint: &mut Checkpoint,
) -> StoreResult<(RunReport, Option<Tally>)> {
    let direction = options.direction;
    let mut report = RunReport::default();
    if checkpoint
        .started_at
        .is_some_and(|started| started < options.fresh_after_ms)
    {
        *checkpoint = Checkpoint::default();
    }
    if checkpoint.complete() {
        return Ok((report, None));
    }
    let mut run = *checkpoint.started_at.get_or_insert(now_ms);
    checkpoint.pass = checkpoint.pass.max(1);
    checkpoint.fanned_out = true;
    if checkpoint.stage.counting() {
        // The first pass's listing counts the keys: a separate count would list them all
        // once more before the first copy.
        checkpoint.stage = Stage::CopyCustomers;
    }
    let waiting_ms = checkpoint.waiting_ms(now_ms);
    if waiting_ms > 0 {
        report.skipped_because = Some(format!(
            "pass {} waits {waiting_ms} ms more for the last pass's copies to reach every KV location",
            checkpoint.pass
        ));
        report.wait_ms = Some(waiting_ms);
        return Ok((report, None));
    }
    report.ran = true;
    checkpoint.runs += 1;
    let mut tally = start(fanout, direction, run, checkpoint.pass, 0).await?;
    if !(tally.run == run && tally.pass == checkpoint.pass) {
        // The tally has moved past this checkpoint (another planner's run or pass, which
        // this one cannot see): carrying on from it would close a pass on findings that
        // are not all in. A new run scans every key again, after the writes it carries.
        run = now_ms.max(tally.run + 1);
        *checkpoint = Checkpoint {
            started_at: Some(run),
            pass: 1,
            stage: Stage::CopyCustomers,
            fanned_out: true,
            runs: 1,
            ..Checkpoint::default()
        };
        tally = start(fanout, direction, run, checkpoint.pass, 0).await?;
        if !(tally.run == run && tally.pass == checkpoint.pass) {
            report.skipped_because = Some("another planner moved the tally on".to_owned());
            return Ok((report, None));
        }
    }
    loop {
        if tally.paused {
            report.skipped_because = Some("the backfill is paused".to_owned());
            return Ok((report, Some(tally)));
        }
        if tally.finished() {
            let absorbed = absorb(checkpoint, &tally);
            checkpoint.end_pass(direction, now_ms, options.pass_delay_ms);
            save_checkpoint(&stores.new, direction, checkpoint).await?;
            let waiting_ms = checkpoint.waiting_ms(now_ms);
            if checkpoint.complete() || waiting_ms > 0 {
                report.wait_ms = Some(waiting_ms).filter(|ms| *ms > 0);
                return Ok((report, Some(tally)));
            }
            tally = start(fanout, direction, run, checkpoint.pass, absorbed).await?;
            continue;
        }
        if checkpoint.stage == Stage::Draining {
            if !tally.listed_all {
                let op = TallyOp::Listed {
                    direction,
                    run,
                    pass: checkpoint.pass,
                };
                tally = fanout.tally(op).await?.tally;
                continue;
            }
            break;
        }
        if tally.room() == 0 || !budget.affords(2) {
            break;
        }
        match queue_page(stores, fanout, checkpoint, &tally, (direction, now_ms)).await? {
            Some(after) => {
                report.queued += after.queued - tally.queued;
                tally = after;
            }
            None => break, // another planner numbered chunks meanwhile
        }
        save_checkpoint(&stores.new, direction, checkpoint).await?;
    }
    if tally.parked > 0 {
        report.queued += send_held(fanout, direction, Held::Parked, now_ms).await?;
    }
    Ok((report, Some(tally)))
}

/// Starts tallying `pass` (a no-op if the tally already does) and returns the tally.
async fn start<R: PhaseRegister>(
    fanout: Fanout<'_, R>,
    direction: Direction,
    run: u64,
    pass: u32,
    absorbed_writes: u64,
) -> StoreResult<Tally> {
    let op = TallyOp::Start {
        direction,
        run,
        pass,
        absorbed_writes,
    };
    Ok(fanout.tally(op).await?.tally)
}

/// The checkpoint as it would stand with the current pass's findings so far: what
/// progress, percentages and ETAs are shown from.
pub fn with_tally(checkpoint: &Checkpoint, tally: &Tally) -> Checkpoint {
    let mut shown = checkpoint.clone();
    // A complete run took its last pass's findings in already.
    let current = tally.run == checkpoint.started_at.unwrap_or(0) && tally.pass == checkpoint.pass;
    if current && !checkpoint.complete() {
        add_findings(&mut shown, tally);
    }
    shown.paused = tally.paused;
    shown
}

/// Takes a finished pass's findings into the checkpoint; returns the writes it took.
fn absorb(checkpoint: &mut Checkpoint, tally: &Tally) -> u64 {
    add_findings(checkpoint, tally);
    checkpoint.stage = Stage::Done;
    tally.writes
}

fn add_findings(checkpoint: &mut Checkpoint, tally: &Tally) {
    // Later passes repeat the first pass's findings: only their scans and writes count.
    let counts = if checkpoint.pass > 1 {
        tally.counts.scanned_and_writes()
    } else {
        tally.counts.clone()
    };
    checkpoint.counts.add(&counts);
    checkpoint.pass_writes += tally.writes;
    checkpoint.last_write_at = checkpoint.last_write_at.max(tally.last_write_at);
}

/// Lists one page (or what of it the window has room for) and queues it; returns the
/// tally after, or `None` if another planner reserved chunks meanwhile.
async fn queue_page<S: KvStore, R: PhaseRegister>(
    stores: &Stores<S>,
    fanout: Fanout<'_, R>,
    checkpoint: &mut Checkpoint,
    tally: &Tally,
    (direction, now_ms): (Direction, u64),
) -> StoreResult<Option<Tally>> {
    let stage = checkpoint.stage;
    let page = stores
        .get(direction.source())
        .list(stage.prefix(), checkpoint.page_cursor.as_deref(), LIST_PAGE)
        .await?;
    let pending = checkpoint.not_done(page.keys);
    let all_chunks = pending.len().div_ceil(MAX_BULK_KEYS) as u64;
    let chunks = all_chunks.min(tally.room());
    let whole_page = chunks == all_chunks;
    let answer = if chunks == 0 {
        None
    } else {
        let op = TallyOp::Queue {
            direction,
            run: tally.run,
            pass: tally.pass,
            expected_queued: tally.queued,
            chunks,
            page: Some(page_position(checkpoint)),
            now_ms,
        };
        let answer = fanout.tally(op).await?;
        if !answer.accepted {
            return Ok(None);
        }
        Some(answer)
    };
    let taken = &pending[..(chunks as usize * MAX_BULK_KEYS).min(pending.len())];
    if let Some(answer) = &answer {
        let first_seq = answer.first_seq.unwrap_or(tally.queued);
        let reserved = answer.reserved.unwrap_or(chunks);
        let numbered = (first_seq, reserved, now_ms);
        send_chunks(fanout, direction, tally, numbered, taken).await?;
    }
    if checkpoint.pass == 1 {
        checkpoint.total += taken.len() as u64;
    }
    if whole_page {
        move_past_page(checkpoint, page.cursor, page.complete);
        if checkpoint.stage == Stage::Done {
            checkpoint.stage = Stage::Draining;
        }
    } else {
        checkpoint.after_key = taken.last().map(|k| k.name.clone());
    }
    Ok(Some(answer.map_or_else(|| tally.clone(), |a| a.tally)))
}

/// Where the checkpoint lists its next page from: its stage, the list cursor and the
/// last key taken of a page begun. Two listings from one position are the same page,
/// though keys may have come or gone between them.
fn page_position(checkpoint: &Checkpoint) -> String {
    format!(
        "{}\u{0}{}\u{0}{}",
        checkpoint.stage.prefix(),
        checkpoint.page_cursor.as_deref().unwrap_or(""),
        checkpoint.after_key.as_deref().unwrap_or("")
    )
}

/// Sends the `reserved` chunks numbered from `first_seq`: the keys' chunks, then empty
/// ones for numbers a reservation made again holds beyond them. Chunks whose sending
/// failed are held as failed, so they show in the status and `retry-failed` sends them
/// again.
async fn send_chunks<R: PhaseRegister>(
    fanout: Fanout<'_, R>,
    direction: Direction,
    tally: &Tally,
    (first_seq, reserved, now_ms): (u64, u64, u64),
    keys: &[ListedKey],
) -> StoreResult<()> {
    let padding = std::iter::repeat(&[][..]);
    let chunks: Vec<Chunk> = keys
        .chunks(MAX_BULK_KEYS)
        .chain(padding)
        .take(reserved as usize)
        .zip(first_seq..)
        .map(|(keys, seq)| Chunk {
            direction,
            run: tally.run,
            pass: tally.pass,
            seq,
            keys: keys
                .iter()
                .map(|k| ChunkKey {
                    name: k.name.clone(),
                    expiration: k.expiration,
                })
                .collect(),
        })
        .collect();
    let messages = chunks.iter().cloned().map(QueueMessage::Chunk).collect();
    if fanout.queue.send(messages).await.is_err() {
        for chunk in chunks {
            let op = TallyOp::Hold {
                why: Held::Failed,
                chunk,
                now_ms,
            };
            fanout.tally(op).await?;
        }
    }
    Ok(())
}

/// Sends held chunks again; returns how many.
pub(crate) async fn send_held<R: PhaseRegister>(
    fanout: Fanout<'_, R>,
    direction: Direction,
    why: Held,
    now_ms: u64,
) -> StoreResult<u64> {
    let op = TallyOp::Release {
        direction,
        why,
        limit: RELEASE_PER_RUN,
        now_ms,
    };
    let released = fanout.tally(op).await?.released;
    let count = released.len() as u64;
    if count > 0 {
        let messages = released.into_iter().map(QueueMessage::Chunk).collect();
        fanout.queue.send(messages).await?;
    }
    Ok(count)
}
