//! The consumer (docs/design.md §13): copies each chunk it is handed with the copy rules
//! every path shares, inside its own invocation's budget, and reports it to the tally.
//! Delivery is at least once: a chunk of an earlier run or pass is dropped, one of a
//! paused backfill is set aside, a chunk reported twice counts once, and a failed copy
//! is retried by the queue and, when it keeps failing, held as failed by
//! [`dead_letters`].

use std::collections::BTreeMap;

use serde::Serialize;

use crate::migration::checking::comparisons::{self, CompareChunk, CompareOp, Compared};
use crate::migration::checking::emails::{self, AuditCounts, ChunkOf};
use crate::migration::checking::emails_fanout::{AuditChunk, AuditOp};
use crate::migration::checking::fanned_out::Report;
use crate::migration::copying::backfill::{self, RunOptions};
use crate::migration::copying::copy::{self, Direction};
use crate::migration::copying::fanout::plan::plan;
use crate::migration::copying::fanout::tally::{Admission, Chunk, DoneReport, Held, TallyOp};
use crate::migration::copying::fanout::{Fanout, QueueMessage};
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::gates::{self, GateSettings};
use crate::migration::state::phase_record::{self, CurrentPhase};
use crate::phase::Phase;
use crate::store::budget::{metered, Budget};
use crate::store::{KvStore, ListedKey, StoreError, StoreResult, Stores};
use crate::writes::claims::{ClaimSender, Claims};

/// What the queue should do with a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    /// Deliver it again later (after the queue's retries, to the dead-letter queue).
    Retry,
}

/// What one consumer invocation did, for its log line: counts only, never keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Consumed {
    #[serde(skip)]
    pub dispositions: Vec<Disposition>,
    pub messages: usize,
    /// Chunks copied and reported done.
    pub chunks: usize,
    /// Records the copies wrote (copied and corrected).
    pub written: u64,
    pub skipped: u64,
    pub conflicts: u64,
    pub errors: u64,
    /// Chunks of an earlier run or pass, dropped.
    pub stale: usize,
    /// Chunks set aside while paused or while the phase forbids copying.
    pub parked: usize,
    pub retried: usize,
    pub planned: usize,
    /// Values compared for a fanned-out verification, and those that differ.
    pub compared: u64,
    pub differing: u64,
    /// Records and mappings checked for a fanned-out email audit.
    pub audited: u64,
    /// KV operations the invocation made (the platform's cap is 1,000).
    pub operations: u32,
}

impl Consumed {
    fn tick(&mut self, disposition: Disposition) {
        if disposition == Disposition::Retry {
            self.retried += 1;
        }
        self.dispositions.push(disposition);
    }
}

/// What a chunk came to, for the report.
enum Outcome {
    /// Copied; reported to the tally with the invocation's other copies ([`report_done`]).
    Copied(DoneReport),
    Stale,
    Parked,
}

/// Operations a chunk may need beyond one write per key: three bulk reads and a few
/// corrections.
const CHUNK_OVERHEAD: u32 = 9;

/// Handles one batch of deliveries; returns a disposition for each, in order, and what
/// the invocation did.
pub async fn consume<S: KvStore, R: PhaseRegister, T: ClaimSender>(
    (stores, emails): (&Stores<S>, &T),
    fanout: Fanout<'_, R>,
    (default_phase, timings): (Phase, GateSettings),
    messages: &[QueueMessage],
    now_ms: u64,
) -> Consumed {
    let budget = Budget::per_invocation(0);
    let stores = metered(stores, &budget);
    let mut report = Consumed {
        messages: messages.len(),
        ..Consumed::default()
    };
    let Ok(current) = phase_record::load(&stores.new, default_phase).await else {
        messages
            .iter()
            .for_each(|_| report.tick(Disposition::Retry));
        report.operations = budget.used();
        return report;
    };
    let mut admissions = BTreeMap::new();
    let mut copied = Vec::new();
    let mut compared = Vec::new();
    let mut audited = Vec::new();
    for message in messages {
        let disposition = match message {
            QueueMessage::Plan { direction } => {
                if may_copy(*direction, &current, timings, now_ms) {
                    let options = RunOptions {
                        direction: *direction,
                        pass_delay_ms: timings.pass_delay_ms,
                        fresh_after_ms: fresh_after(*direction, &current),
                        ..RunOptions::default()
                    };
                    // A failed plan is the cron's to retry: it plans every minute.
                    let _ = plan(&stores, fanout, &budget, options, now_ms).await;
                    report.planned += 1;
                }
                Disposition::Ack
            }
            QueueMessage::Compare(chunk) => match compare(&stores, &budget, chunk).await {
                Ok(found) => {
                    compared.push((report.dispositions.len(), found));
                    Disposition::Ack
                }
                Err(_) => Disposition::Retry,
            },
            QueueMessage::Audit(chunk) => {
                match audit((&stores, emails), &budget, &current, chunk, now_ms).await {
                    Ok(found) => {
                        audited.push((report.dispositions.len(), chunk.dry_run, found));
                        Disposition::Ack
                    }
                    Err(_) => Disposition::Retry,
                }
            }
            QueueMessage::Chunk(chunk) => {
                let step = Step {
                    stores: &stores,
                    fanout,
                    budget: &budget,
                    now_ms,
                };
                let allowed = may_copy(chunk.direction, &current, timings, now_ms);
                match step.chunk(chunk, allowed, &mut admissions).await {
                    Ok(Outcome::Copied(done)) => {
                        copied.push((report.dispositions.len(), done));
                        Disposition::Ack
                    }
                    Ok(Outcome::Stale) => {
                        report.stale += 1;
                        Disposition::Ack
                    }
                    Ok(Outcome::Parked) => {
                        report.parked += 1;
                        Disposition::Ack
                    }
                    Err(_) => Disposition::Retry,
                }
            }
        };
        report.tick(disposition);
    }
    report_compared(fanout, compared, &mut report, now_ms).await;
    report_audited(fanout, audited, &mut report, now_ms).await;
    let nudged = report_done(fanout, copied, &mut report, now_ms).await;
    if !nudged.is_empty() {
        let plans = nudged
            .into_iter()
            .map(|direction| QueueMessage::Plan { direction })
            .collect();
        // If this fails, the cron plans within a minute.
        let _ = fanout.queue.send(plans).await;
    }
    report.operations = budget.used();
    report
}

/// Reports the chunks copied, one request per direction; a chunk whose report failed is
/// delivered again (the copy is idempotent), after its writes are recorded if the
/// coordinator can still be reached. Returns the directions whose planner should run.
async fn report_done<R: PhaseRegister>(
    fanout: Fanout<'_, R>,
    copied: Vec<(usize, DoneReport)>,
    report: &mut Consumed,
    now_ms: u64,
) -> Vec<Direction> {
    let mut nudged = Vec::new();
    for direction in [Direction::Forward, Direction::Reverse] {
        let (indices, reports): (Vec<usize>, Vec<DoneReport>) = copied
            .iter()
            .filter(|(_, done)| done.chunk_of.direction == direction)
            .cloned()
            .unzip();
        let Some(first) = reports.first().map(|done| done.chunk_of) else {
            continue;
        };
        let op = TallyOp::DoneMany {
            reports: reports.clone(),
            now_ms,
        };
        match fanout.tally(op).await {
            Ok(answer) => {
                if answer.nudge {
                    nudged.push(direction);
                }
                for done in &reports {
                    let counts = &done.counts;
                    report.chunks += 1;
                    report.written += counts.copied + counts.corrected;
                    report.skipped += counts.skipped;
                    report.conflicts += counts.conflicts;
                    report.errors += counts.errors;
                }
            }
            Err(_) => {
                // The copies may have written: whichever pass the tally counts must have
                // a successor that re-reads them (docs/design.md §13).
                let op = TallyOp::Attempted {
                    chunk_of: first,
                    now_ms,
                };
                let _ = fanout.tally(op).await;
                for index in indices {
                    report.dispositions[index] = Disposition::Retry;
                    report.retried += 1;
                }
            }
        }
    }
    nudged
}

/// Compares one chunk's values, if the invocation's budget still affords its two bulk
/// reads.
async fn compare<S: KvStore>(
    stores: &Stores<S>,
    budget: &Budget,
    chunk: &CompareChunk,
) -> StoreResult<Compared> {
    if !budget.affords(2) {
        return Err(spent());
    }
    comparisons::compare_chunk(stores, chunk).await
}

/// Reports the chunks compared in one request; if it fails they are delivered again
/// (a chunk reported twice counts once).
async fn report_compared<R: PhaseRegister>(
    fanout: Fanout<'_, R>,
    compared: Vec<(usize, Compared)>,
    report: &mut Consumed,
    now_ms: u64,
) {
    if compared.is_empty() {
        return;
    }
    let (indices, reports): (Vec<usize>, Vec<Compared>) = compared.into_iter().unzip();
    let (values, differing) = reports.iter().fold((0, 0), |(values, differing), found| {
        (
            values + found.found.compared,
            differing + found.found.mismatched.len() as u64,
        )
    });
    let op = CompareOp::Done { reports, now_ms };
    if fanout.register.compare(op).await.is_ok() {
        report.compared += values;
        report.differing += differing;
        return;
    }
    for index in indices {
        report.dispositions[index] = Disposition::Retry;
        report.retried += 1;
    }
}

/// Audits one chunk of records or mappings, if the invocation's budget still affords it
/// with a repair for every key; the repairs go through the emails' objects.
async fn audit<S: KvStore, T: ClaimSender>(
    (stores, emails): (&Stores<S>, &T),
    budget: &Budget,
    current: &CurrentPhase,
    chunk: &AuditChunk,
    now_ms: u64,
) -> Result<Report<AuditCounts>, crate::error::Error> {
    let cost = emails::chunk_cost(chunk.keys.len(), current.phase.stores_written());
    if !budget.affords(cost) {
        return Err(spent().into());
    }
    let plane = emails::plane_of(stores, current, now_ms);
    let claims = Claims {
        sender: emails,
        record: current.state.clone(),
    };
    let of = ChunkOf {
        dry_run: chunk.dry_run,
        started_at: chunk.run,
    };
    let found = emails::audit_chunk((&plane, &claims), of, &chunk.keys, &chunk.planned).await?;
    Ok(Report {
        run: chunk.run,
        seq: chunk.seq,
        found,
    })
}

fn spent() -> StoreError {
    StoreError::new(
        "consume",
        "the invocation's budget is spent; the chunk waits for redelivery",
    )
}

/// Reports the chunks audited, one request per kind of audit; if it fails they are
/// delivered again (a chunk reported twice counts once; its repairs are idempotent).
async fn report_audited<R: PhaseRegister>(
    fanout: Fanout<'_, R>,
    audited: Vec<(usize, bool, Report<AuditCounts>)>,
    report: &mut Consumed,
    now_ms: u64,
) {
    for dry_run in [false, true] {
        let (indices, reports): (Vec<usize>, Vec<Report<AuditCounts>>) = audited
            .iter()
            .filter(|(_, dry, _)| *dry == dry_run)
            .map(|(index, _, found)| (*index, found.clone()))
            .unzip();
        if reports.is_empty() {
            continue;
        }
        let checked: u64 = reports
            .iter()
            .map(|r| r.found.records_scanned + r.found.mappings_scanned)
            .sum();
        let op = AuditOp::Done { reports, now_ms };
        if fanout.register.audit(dry_run, op).await.is_ok() {
            report.audited += checked;
            continue;
        }
        for index in indices {
            report.dispositions[index] = Disposition::Retry;
            report.retried += 1;
        }
    }
}

/// Handles messages that reached the dead-letter queue: a chunk is held as failed, to be
/// reported by key and sent again by `retry-failed`.
pub async fn dead_letters<R: PhaseRegister>(
    fanout: Fanout<'_, R>,
    messages: &[QueueMessage],
    now_ms: u64,
) -> Vec<Disposition> {
    let mut dispositions = Vec::with_capacity(messages.len());
    for message in messages {
        let disposition = match message {
            QueueMessage::Plan { .. } => Disposition::Ack,
            QueueMessage::Compare(chunk) => {
                let op = CompareOp::Failed {
                    chunk: chunk.clone(),
                };
                match fanout.register.compare(op).await {
                    Ok(_) => Disposition::Ack,
                    Err(_) => Disposition::Retry,
                }
            }
            QueueMessage::Audit(chunk) => {
                let op = AuditOp::Failed {
                    chunk: chunk.key_chunk(),
                };
                match fanout.register.audit(chunk.dry_run, op).await {
                    Ok(_) => Disposition::Ack,
                    Err(_) => Disposition::Retry,
                }
            }
            QueueMessage::Chunk(chunk) => {
                let op = TallyOp::Hold {
                    why: Held::Failed,
                    chunk: chunk.clone(),
                    now_ms,
                };
                match fanout.tally(op).await {
                    Ok(_) => Disposition::Ack,
                    Err(_) => Disposition::Retry,
                }
            }
        };
        dispositions.push(disposition);
    }
    dispositions
}

/// Whether copies in `direction` may run now, as the cron would judge it.
fn may_copy(
    direction: Direction,
    current: &CurrentPhase,
    timings: GateSettings,
    now_ms: u64,
) -> bool {
    match direction {
        Direction::Forward => backfill::may_run(current, timings.settle_ms, now_ms).is_ok(),
        Direction::Reverse => {
            current.state.old_store_diverged
                && current.every_phase(Phase::reverse_sync_allowed)
                && gates::unsettled_ms(&current.state, timings.settle_ms, now_ms) == 0
        }
    }
}

fn fresh_after(direction: Direction, current: &CurrentPhase) -> u64 {
    match direction {
        Direction::Forward => 0,
        Direction::Reverse => current.state.left_old_store_at,
    }
}

struct Step<'a, S, R> {
    stores: &'a Stores<S>,
    fanout: Fanout<'a, R>,
    budget: &'a Budget,
    now_ms: u64,
}

impl<S: KvStore, R: PhaseRegister> Step<'_, S, R> {
    /// Copies one chunk if the tally admits it; a copied chunk says whether the planner
    /// should run.
    async fn chunk(
        &self,
        chunk: &Chunk,
        allowed: bool,
        admissions: &mut BTreeMap<(u8, u64, u32), Admission>,
    ) -> StoreResult<Outcome> {
        let direction = chunk.direction;
        let pass_key = (direction as u8, chunk.run, chunk.pass);
        let admission = match admissions.get(&pass_key) {
            Some(admission) => *admission,
            None => {
                let op = TallyOp::Admit {
                    direction,
                    run: chunk.run,
                    pass: chunk.pass,
                };
                let answer = self.fanout.tally(op).await?;
                let admission = answer.admission.unwrap_or(Admission::Stale);
                admissions.insert(pass_key, admission);
                admission
            }
        };
        match admission {
            Admission::Stale => return Ok(Outcome::Stale),
            Admission::Paused => return self.park(chunk).await,
            Admission::Copy if !allowed => return self.park(chunk).await,
            Admission::Copy => {}
        }
        let needed = chunk.keys.len() as u32 + CHUNK_OVERHEAD;
        if !self.budget.affords(needed) {
            return Err(crate::store::StoreError::new(
                "consume",
                "the invocation's budget is spent; the chunk waits for redelivery",
            ));
        }
        let keys: Vec<ListedKey> = chunk
            .keys
            .iter()
            .map(|k| ListedKey {
                name: k.name.clone(),
                expiration: k.expiration,
                metadata: None,
            })
            .collect();
        let counts = match copy::copy_chunk(self.stores, direction, &keys, self.now_ms, false).await
        {
            Ok(counts) => counts,
            Err(err) => {
                // The queue retries the chunk; what this attempt wrote before it failed
                // needs the next pass as much as any copy (if this report is lost too,
                // see docs/design.md §13).
                let op = TallyOp::Attempted {
                    chunk_of: chunk.reference(),
                    now_ms: self.now_ms,
                };
                let _ = self.fanout.tally(op).await;
                return Err(err);
            }
        };
        Ok(Outcome::Copied(DoneReport {
            chunk_of: chunk.reference(),
            writes: counts.copied + counts.corrected + counts.errors,
            counts,
        }))
    }

    async fn park(&self, chunk: &Chunk) -> StoreResult<Outcome> {
        let op = TallyOp::Hold {
            why: Held::Parked,
            chunk: chunk.clone(),
            now_ms: self.now_ms,
        };
        self.fanout.tally(op).await.map(|_| Outcome::Parked)
    }
}
