//! The email audit fanned out on the queue (docs/design.md §13, "Email audit fanned
//! out"): each admin call lists the pass's keys from where the coordinator's record
//! stands and hands them to consumers in chunks; consumers check and repair them as the
//! audit in one call does ([`emails::audit_chunk`]), and the coordinator sums what they
//! found ([`fanned_out`], under `audit/…`, or `audit-dry/…` for a dry run, so one does
//! not disturb the other).

use serde::{Deserialize, Serialize};

use crate::migration::checking::emails::{self, AuditCounts, EmailAudit, Pass};
use crate::migration::checking::fanned_out::{
    self, Coordinated, FanAnswer, FanOp, FannedOut, Findings, KeyChunk, Walk, CHUNKS_PER_PLAN,
};
use crate::migration::copying::fanout::{Fanout, QueueMessage};
use crate::migration::dataplane::DataPlane;
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::stored::{self, Listing};
use crate::store::budget::Budget;
use crate::store::{KvStore, StoreError, StoreResult};

/// Keys a consumer's chunk holds: eight chunks (a batch) fit one invocation's budget even
/// if every key needs a repair ([`emails::chunk_cost`]).
pub const CHUNK_KEYS: usize = 20;
/// Repoints a fanned-out dry run remembers (in the coordinator's record, read by every
/// op); past this its counts are estimates.
const MAX_PLANNED_REPOINTS: usize = 1_000;
/// Plans one call commits at most, and what each is charged as subrequests: its
/// coordinator op and its `sendBatch` calls.
const MAX_PLANS_PER_CALL: usize = 10;
const SUBREQUESTS_PER_PLAN: u32 = 25;

pub type AuditOp = FanOp<EmailAudit, AuditCounts>;
pub type AuditAnswer = FanAnswer<EmailAudit, AuditCounts>;
pub type Audits = FannedOut<EmailAudit, AuditCounts>;

/// Where the coordinator keeps an audit in progress.
pub fn space(dry_run: bool) -> &'static str {
    if dry_run {
        "audit-dry"
    } else {
        "audit"
    }
}

impl Walk for EmailAudit {
    fn started_at(&self) -> u64 {
        self.started_at
    }

    fn set_started_at(&mut self, at: u64) {
        self.started_at = at;
    }
}

impl Findings for AuditCounts {
    type Report = AuditCounts;

    fn add(&mut self, report: AuditCounts) {
        self.merge(report, MAX_PLANNED_REPOINTS);
    }
}

impl Audits {
    /// The audit as it stands: the walk and what consumers found.
    pub fn audit(&self) -> Option<EmailAudit> {
        let mut merged = self.walk.clone()?;
        merged
            .counts
            .merge(self.found.clone(), MAX_PLANNED_REPOINTS);
        merged.fanout = Some(self.progress());
        (merged.completed_at, merged.updated_at) =
            self.dates(merged.completed_at, merged.updated_at);
        Some(merged)
    }

    /// The repoints a dry run's records pass planned among `keys`.
    fn planned_among(&self, keys: &[String]) -> Vec<String> {
        self.found
            .planned_repoints
            .iter()
            .filter(|key| keys.contains(key))
            .cloned()
            .collect()
    }
}

/// Keys a consumer audits, as they travel on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditChunk {
    pub run: u64,
    pub seq: u64,
    /// Records (`customer_…`) or mappings, never both.
    pub keys: Vec<String>,
    pub dry_run: bool,
    /// Mappings among `keys` a dry run's records pass would have repointed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<String>,
}

impl AuditChunk {
    pub fn key_chunk(&self) -> KeyChunk {
        KeyChunk {
            run: self.run,
            seq: self.seq,
            keys: self.keys.clone(),
        }
    }

    fn of(audits: &Audits, dry_run: bool, chunk: KeyChunk) -> Self {
        let planned = if dry_run {
            audits.planned_among(&chunk.keys)
        } else {
            Vec::new()
        };
        Self {
            run: chunk.run,
            seq: chunk.seq,
            keys: chunk.keys,
            dry_run,
            planned,
        }
    }
}

/// Starts or continues a fanned-out audit within `budget`; `plane` should route over
/// stores metered by it.
pub async fn run<S: KvStore, R: PhaseRegister>(
    plane: &DataPlane<'_, S>,
    fanout: Fanout<'_, R>,
    budget: &Budget,
    (dry_run, restart): (bool, bool),
) -> StoreResult<EmailAudit> {
    let now_ms = plane.now_ms;
    let register = fanout.register;
    let coordinator = AuditsKept { register, dry_run };
    let read = register.audit(dry_run, AuditOp::Read { now_ms }).await?;
    // An audit whose completion no call has answered yet is this call's to answer,
    // though its consumers finished it.
    let mut audits = if !restart && !read.state.answered_complete && read.state.walk.is_some() {
        if let Some(run) = read.state.run() {
            let due = read.resend.into_iter().map(|chunk| {
                let message = AuditChunk::of(&read.state, dry_run, chunk);
                (message.seq, QueueMessage::Audit(message))
            });
            fanned_out::resend(&coordinator, fanout.queue, run, due.collect(), now_ms).await?;
        }
        read.state
    } else {
        let walk = EmailAudit::new(dry_run, now_ms);
        let op = AuditOp::Start { walk };
        register.audit(dry_run, op).await?.state
    };
    let run = audits.run().ok_or_else(unstarted)?;
    let source = plane.stores.get(plane.phase.primary_read_store());
    for _ in 0..MAX_PLANS_PER_CALL {
        let mut walk = audits.walk.clone().ok_or_else(unstarted)?;
        let room = audits.room().min(CHUNKS_PER_PLAN as u64) as usize;
        if walk.listed_all()
            || room == 0
            || records_draining(&audits, &walk)
            || !budget.affords(2 + SUBREQUESTS_PER_PLAN)
        {
            break;
        }
        budget.charge(SUBREQUESTS_PER_PLAN);
        let chunks = list_chunks(source, budget, &mut walk, room, now_ms).await?;
        walk.updated_at = now_ms;
        let op = AuditOp::Plan {
            run,
            version: audits.version,
            walk,
            chunks: chunks.clone(),
            now_ms,
        };
        let planned = register.audit(dry_run, op).await?;
        audits = planned.state;
        let (true, Some(first_seq)) = (planned.accepted, planned.first_seq) else {
            // Another call listed these keys since this one read the record.
            break;
        };
        let sent = (first_seq..)
            .zip(chunks)
            .map(|(seq, keys)| {
                let chunk = AuditChunk::of(&audits, dry_run, KeyChunk { run, seq, keys });
                (seq, QueueMessage::Audit(chunk))
            })
            .collect();
        fanned_out::send(&coordinator, fanout.queue, run, sent).await?;
    }
    let audit = audits.audit().ok_or_else(unstarted)?;
    let key = emails::progress_key(dry_run);
    let saved = emails::load(&plane.stores.new, key).await?;
    // A stalled call never saves over a later audit's progress.
    if saved.is_none_or(|saved| saved.started_at <= audit.started_at) {
        stored::put(
            &plane.stores.new,
            key,
            &as_saved(&audit),
            Listing::ValueOnly,
        )
        .await?;
    }
    if audit.complete() {
        // Marks it answered, so the next call starts a new audit: only once it is saved.
        let op = AuditOp::AnsweredComplete { run };
        register.audit(dry_run, op).await?;
    }
    Ok(audit)
}

/// The audit as it is saved where the finalize and the issues' listing read it. A version
/// from before the audit fanned out would continue a walk it finds unfinished, in one
/// call, and answer it complete while consumers still hold chunks: so the saved walk
/// always reads as ended, and the audit is saved as completed only once every chunk was
/// checked, none failed.
fn as_saved(audit: &EmailAudit) -> EmailAudit {
    let unchecked = audit
        .fanout
        .as_ref()
        .is_some_and(|chunks| chunks.failed > 0);
    EmailAudit {
        pass: Pass::Done,
        cursor: None,
        after_key: None,
        completed_at: audit
            .completed_at
            .filter(|_| audit.complete() && !unchecked),
        ..audit.clone()
    }
}

/// The mappings pass re-keys a mapping only once its customer is found by its own, which
/// the records pass derives: it lists nothing until every records chunk is reported.
fn records_draining(audits: &Audits, walk: &EmailAudit) -> bool {
    walk.pass == Pass::Mappings
        && walk.cursor.is_none()
        && walk.after_key.is_none()
        && audits.pending() > 0
}

/// Lists the pass from where the walk stands into at most `room` chunks, stopping at the
/// end of the pass.
async fn list_chunks<S: KvStore>(
    source: &S,
    budget: &Budget,
    walk: &mut EmailAudit,
    room: usize,
    now_ms: u64,
) -> StoreResult<Vec<Vec<String>>> {
    let pass = walk.pass;
    let mut chunks: Vec<Vec<String>> = Vec::new();
    while chunks.len() < room && walk.pass == pass && !walk.listed_all() && budget.affords(1) {
        let (pending, end) = emails::list_page(source, walk).await?;
        let mut taken = 0;
        for chunk in pending.chunks(CHUNK_KEYS) {
            if chunks.len() == room {
                break;
            }
            chunks.push(chunk.iter().map(|k| k.name.clone()).collect());
            taken += chunk.len();
        }
        if taken < pending.len() {
            walk.after_key = Some(pending[taken - 1].name.clone());
            break;
        }
        emails::end_page(walk, end, now_ms);
    }
    Ok(chunks)
}

fn unstarted() -> StoreError {
    StoreError::new("emails", "the coordinator holds no email audit")
}

/// The coordinator's record of an audit in progress, as the planner reaches it.
struct AuditsKept<'a, R> {
    register: &'a R,
    dry_run: bool,
}

impl<R: PhaseRegister> Coordinated<EmailAudit, AuditCounts> for AuditsKept<'_, R> {
    async fn apply(&self, op: AuditOp) -> StoreResult<AuditAnswer> {
        self.register.audit(self.dry_run, op).await
    }
}
