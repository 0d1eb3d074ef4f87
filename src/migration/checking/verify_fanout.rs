//! The planner of a verification fanned out on the queue (docs/design.md §13,
//! "Verification fanned out"): each admin call walks both listings from where the
//! coordinator's record stands, hands the keys whose values are to be compared to
//! consumers in chunks, and saves the verification as it stands, consumers' findings
//! included. Listings cost one operation per 1,000 keys, so one call walks up to the
//! window of chunks (90,000 keys) where comparing values itself it walks about 45,000.

use crate::migration::checking::comparisons::{
    CompareAnswer, CompareChunk, CompareFindings, CompareOp, CHUNKS_PER_PLAN,
};
use crate::migration::checking::fanned_out::{self, Coordinated};
use crate::migration::checking::inventory;
use crate::migration::checking::verify::{self, Deferred, Mode, Verification};
use crate::migration::copying::fanout::{Fanout, QueueMessage};
use crate::migration::keys;
use crate::migration::state::coordinator::PhaseRegister;
use crate::store::budget::Budget;
use crate::store::{KvStore, StoreError, StoreResult, Stores};

/// Plans one call commits at most: each is a request to the coordinator and a few
/// `sendBatch` calls, which count against the invocation's subrequests with its KV
/// operations.
const MAX_PLANS_PER_CALL: usize = 10;
/// Subrequests a plan is charged to the budget: its coordinator op and its sends (up to
/// 100 chunks of up to 100 keys of up to 512 bytes, in batches under 256 KB).
const SUBREQUESTS_PER_PLAN: u32 = 25;

/// Starts or continues a fanned-out verification within `budget`; `stores` should be
/// metered by it.
pub async fn run<S: KvStore, R: PhaseRegister>(
    stores: &Stores<S>,
    fanout: Fanout<'_, R>,
    budget: &Budget,
    (mode, rate): (Mode, u64),
    restart: bool,
    now_ms: u64,
) -> StoreResult<Verification> {
    let register = fanout.register;
    let coordinator = Verifications(register);
    let read = register.compare(CompareOp::Read { now_ms }).await?;
    // A verification whose completion no call has answered yet is this call's to
    // answer, though its consumers finished it.
    let resumable = !restart
        && !read.state.answered_complete
        && read
            .state
            .walk
            .as_ref()
            .is_some_and(|v| v.mode == mode && v.rate == rate.max(1));
    let mut comparisons = if resumable {
        if let Some(run) = read.state.run() {
            let due = read.resend.into_iter();
            let due = due.map(|c| (c.seq, QueueMessage::Compare(c))).collect();
            fanned_out::resend(&coordinator, fanout.queue, run, due, now_ms).await?;
        }
        read.state
    } else {
        let walk = Verification {
            consult_marks: inventory::load(&stores.new)
                .await?
                .is_some_and(|taken| taken.preexisting() > 0),
            ..Verification::new(mode, rate, now_ms)
        };
        register.compare(CompareOp::Start { walk }).await?.state
    };
    let run = comparisons.run().ok_or_else(unstarted)?;
    for _ in 0..MAX_PLANS_PER_CALL {
        let mut walk = comparisons.walk.clone().ok_or_else(unstarted)?;
        let room = comparisons.room().min(CHUNKS_PER_PLAN as u64) as usize;
        if walk.listed_all() || room == 0 || !budget.affords(7 + SUBREQUESTS_PER_PLAN) {
            break;
        }
        budget.charge(SUBREQUESTS_PER_PLAN);
        let mut deferred = Deferred::new(room);
        verify::walk(stores, budget, &mut walk, now_ms, Some(&mut deferred)).await?;
        let chunks = deferred.chunks;
        let op = CompareOp::Plan {
            run,
            version: comparisons.version,
            walk,
            chunks: chunks.clone(),
            now_ms,
        };
        let planned = register.compare(op).await?;
        comparisons = planned.state;
        let (true, Some(first_seq)) = (planned.accepted, planned.first_seq) else {
            // Another call advanced the walk since this one read it: it answers with the
            // verification as that call left it.
            break;
        };
        let sent = (first_seq..)
            .zip(chunks)
            .map(|(seq, keys)| (seq, QueueMessage::Compare(CompareChunk { run, seq, keys })))
            .collect();
        fanned_out::send(&coordinator, fanout.queue, run, sent).await?;
    }
    let verification = comparisons.verification().ok_or_else(unstarted)?;
    if verification.complete() {
        // The first call to answer it complete alone saves it for the gates, and never
        // over a later verification's result.
        let first = register
            .compare(CompareOp::AnsweredComplete { run })
            .await?
            .accepted;
        if first && verification.mode == Mode::Full {
            let last = verify::load(&stores.new, keys::LAST_FULL_VERIFICATION).await?;
            if last.is_none_or(|last| last.started_at <= verification.started_at) {
                verify::save(&stores.new, keys::LAST_FULL_VERIFICATION, &verification).await?;
            }
        }
    }
    verify::save(&stores.new, keys::VERIFICATION, &verification).await?;
    Ok(verification)
}

fn unstarted() -> StoreError {
    StoreError::new("verify", "the coordinator holds no verification")
}

/// The coordinator's record of the verification in progress, as the planner reaches it.
struct Verifications<'a, R>(&'a R);

impl<R: PhaseRegister> Coordinated<Verification, CompareFindings> for Verifications<'_, R> {
    async fn apply(&self, op: CompareOp) -> StoreResult<CompareAnswer> {
        self.0.compare(op).await
    }
}
