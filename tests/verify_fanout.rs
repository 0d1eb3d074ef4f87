//! A verification fanned out on the queue (docs/design.md §13, "Verification fanned
//! out"): the planner walks both listings and consumers compare the values; it is
//! complete only once every chunk is reported, a chunk counts once however often it is
//! delivered, a lost sending is sent again, a chunk that keeps failing keeps gate 3→4
//! shut, and a restart ignores the chunks of the run it replaces.

mod common;

use common::*;
use customer_kv_migration::error::Error;
use customer_kv_migration::migration::checking::comparisons::{
    CompareAnswer, CompareChunk, CompareOp, RESEND_AFTER_MS,
};
use customer_kv_migration::migration::checking::emails_fanout::{AuditAnswer, AuditOp};
use customer_kv_migration::migration::checking::verify::Mode;
use customer_kv_migration::migration::checking::verify_fanout;
use customer_kv_migration::migration::copying::backfill;
use customer_kv_migration::migration::copying::fanout::local::LocalQueue;
use customer_kv_migration::migration::copying::fanout::{
    dead_letters, ChunkQueue, Fanout, QueueMessage,
};
use customer_kv_migration::migration::copying::fanout::{TallyAnswer, TallyOp};
use customer_kv_migration::migration::state::coordinator::{
    PhaseRegister, RecordOp, RecordOutcome,
};
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::budget::{metered, Budget, PLATFORM_OPERATION_CAP};
use customer_kv_migration::store::{PutOptions, StoreError, StoreResult};
use futures::future::LocalBoxFuture;
use serde_json::{json, Value};

const BATCH: usize = 8;

/// `records` legacy customers backfilled through the queue.
fn backfilled_through_the_queue(records: usize) -> World {
    let mut world = World::in_phase(Phase::Backfill);
    world.queue = Some(LocalQueue::default());
    seed_legacy(&world, records);
    for _ in 0..50 {
        world.run_cron();
        world.drain_queue(BATCH);
        let checkpoint = block_on(backfill::load_checkpoint(&world.stores.new)).unwrap();
        if checkpoint.complete() {
            return world;
        }
        world.now_ms += 60_000;
    }
    panic!("the backfill did not complete");
}

fn queue(world: &World) -> &LocalQueue {
    world.queue.as_ref().unwrap()
}

fn verify(world: &World, restart: bool) -> Value {
    let response = world.send(
        "POST",
        "/admin/migrate/verify",
        Some(&admin()),
        Some(json!({ "mode": "full", "restart": restart })),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// Calls until complete, draining the queue in between; returns the last answer.
fn verify_to_completion(world: &World) -> Value {
    let mut report = verify(world, true);
    for _ in 0..20 {
        if report["complete"] == true {
            return report;
        }
        world.drain_queue(BATCH);
        report = verify(world, false);
    }
    panic!("the verification did not complete: {report}");
}

fn compare_chunks_waiting(world: &World) -> usize {
    let deliveries = queue(world).take(usize::MAX);
    let count = deliveries
        .iter()
        .filter(|d| matches!(d.message, QueueMessage::Compare(_)))
        .count();
    for delivery in deliveries {
        queue(world).redeliver(delivery);
    }
    count
}

/// Hands `messages` to consumers, a batch at a time.
fn consume_in_batches(world: &World, messages: &[QueueMessage]) {
    let register = world.register();
    let fanout = Fanout {
        register: &register,
        queue: queue(world),
    };
    for batch in messages.chunks(BATCH) {
        world.consume_batch(fanout, batch);
    }
}

fn move_to_phase_4(world: &World) -> (u16, Value) {
    let response = world.send(
        "POST",
        "/admin/migrate/phase",
        Some(&admin()),
        Some(json!({ "phase": 4 })),
    );
    (response.status, response.body)
}

#[test]
fn consumers_compare_every_value_and_gate_3_to_4_opens_once_all_are_reported() {
    let world = backfilled_through_the_queue(1_500);
    let first = verify(&world, true);
    // The walk lists both stores in one call; the values wait for consumers.
    assert_eq!(first["listed"], 3_000, "{first}");
    assert_eq!(first["valuesCompared"], 0);
    assert_eq!(first["complete"], false);
    assert_eq!(first["fanout"]["queued"], 30);
    assert_eq!(first["fanout"]["inFlight"], 30);
    assert_eq!(compare_chunks_waiting(&world), 30);
    // Not complete, so it vouches for nothing yet.
    let (status, body) = move_to_phase_4(&world);
    assert_eq!(status, 409, "{body}");

    world.drain_queue(BATCH);
    let done = verify(&world, false);
    assert_eq!(done["complete"], true, "{done}");
    assert_eq!(done["clean"], true, "{done}");
    assert_eq!(done["valuesCompared"], 3_000);
    assert_eq!(done["fanout"]["done"], 30);
    assert!(done["completedAt"].as_u64().is_some());
    let (status, body) = move_to_phase_4(&world);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_value_that_differs_is_found_by_a_consumer_and_keeps_the_gate_shut() {
    let world = backfilled_through_the_queue(300);
    let key = "customer_cust_000007";
    let mut changed = world.stores.new.peek(key).unwrap();
    changed.extend_from_slice(b" ");
    world
        .stores
        .new
        .insert(key, &changed, PutOptions::default());
    let report = verify_to_completion(&world);
    assert_eq!(report["clean"], false);
    assert_eq!(report["mismatched"], json!({ "count": 1, "keys": [key] }));
    let (status, body) = move_to_phase_4(&world);
    assert_eq!(status, 409);
    assert!(body.to_string().contains("1 mismatched"), "{body}");
}

#[test]
fn a_chunk_delivered_twice_counts_once() {
    let world = backfilled_through_the_queue(500);
    verify(&world, true);
    let messages: Vec<QueueMessage> = queue(&world)
        .take(usize::MAX)
        .into_iter()
        .map(|d| d.message)
        .collect();
    for _ in 0..2 {
        consume_in_batches(&world, &messages);
    }
    let report = verify(&world, false);
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["valuesCompared"], 1_000);
    assert_eq!(report["fanout"]["done"], 10);
}

/// Nothing is sent again before the resend delay; then `chunks` are, and once compared
/// the verification is clean (300 customers: 600 values).
fn sent_again_once_overdue(world: &mut World, chunks: usize) {
    assert_eq!(compare_chunks_waiting(world), 0, "not overdue yet");
    world.now_ms += RESEND_AFTER_MS;
    verify(world, false);
    assert_eq!(compare_chunks_waiting(world), chunks);
    world.drain_queue(BATCH);
    let report = verify(world, false);
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["valuesCompared"], 600);
}

/// A queue whose sending fails.
struct Unreachable;

impl ChunkQueue for Unreachable {
    fn send(&self, _: Vec<QueueMessage>) -> LocalBoxFuture<'_, StoreResult<()>> {
        Box::pin(async { Err(StoreError::new("queue send", "unreachable")) })
    }
}

fn plan_with(world: &World, queue: &dyn ChunkQueue, restart: bool) -> StoreResult<Value> {
    let register = world.register();
    let fanout = Fanout {
        register: &register,
        queue,
    };
    let budget = Budget::new(PLATFORM_OPERATION_CAP);
    let stores = metered(&world.stores, &budget);
    let plan = verify_fanout::run(
        &stores,
        fanout,
        &budget,
        (Mode::Full, 1),
        restart,
        world.now_ms,
    );
    block_on(plan).map(|v| serde_json::to_value(v).unwrap())
}

#[test]
fn chunks_whose_sending_failed_are_sent_at_the_next_call() {
    let world = backfilled_through_the_queue(300);
    assert!(plan_with(&world, &Unreachable, true).is_err());
    assert_eq!(compare_chunks_waiting(&world), 0);
    // The next call sends what the first could not, and walks on.
    let report = plan_with(&world, queue(&world), false).unwrap();
    assert_eq!(report["fanout"]["queued"], 6, "{report}");
    assert_eq!(compare_chunks_waiting(&world), 6);
    world.drain_queue(BATCH);
    let report = verify(&world, false);
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["valuesCompared"], 600);
}

/// The coordinator, losing the answer to the first plan it applies.
struct LosesAPlansAnswer<'a, R> {
    inner: &'a R,
    lost: std::cell::Cell<bool>,
}

impl<R: PhaseRegister> PhaseRegister for LosesAPlansAnswer<'_, R> {
    async fn apply(&self, op: RecordOp) -> Result<RecordOutcome, Error> {
        self.inner.apply(op).await
    }

    async fn tally(&self, op: TallyOp) -> StoreResult<TallyAnswer> {
        self.inner.tally(op).await
    }

    async fn compare(&self, op: CompareOp) -> StoreResult<CompareAnswer> {
        let plan = matches!(op, CompareOp::Plan { .. });
        let answer = self.inner.compare(op).await?;
        if plan && !self.lost.replace(true) {
            return Err(StoreError::new("coordinator", "the answer was lost"));
        }
        Ok(answer)
    }

    async fn audit(&self, dry_run: bool, op: AuditOp) -> StoreResult<AuditAnswer> {
        self.inner.audit(dry_run, op).await
    }
}

#[test]
fn chunks_of_a_plan_whose_answer_was_lost_are_sent_once_overdue() {
    let mut world = backfilled_through_the_queue(300);
    let inner = world.register();
    let register = LosesAPlansAnswer {
        inner: &inner,
        lost: std::cell::Cell::new(false),
    };
    let fanout = Fanout {
        register: &register,
        queue: queue(&world),
    };
    let budget = Budget::new(PLATFORM_OPERATION_CAP);
    let stores = metered(&world.stores, &budget);
    let plan = verify_fanout::run(
        &stores,
        fanout,
        &budget,
        (Mode::Full, 1),
        true,
        world.now_ms,
    );
    assert!(block_on(plan).is_err());
    assert_eq!(compare_chunks_waiting(&world), 0, "nothing was sent");
    let waiting = verify(&world, false);
    assert_eq!(waiting["fanout"]["inFlight"], 6, "{waiting}");
    sent_again_once_overdue(&mut world, 6);
}

#[test]
fn a_chunk_lost_on_the_queue_is_sent_again_once_overdue() {
    let mut world = backfilled_through_the_queue(300);
    verify(&world, true);
    // Two chunks vanish: delivered to a consumer that never reported them.
    let lost = queue(&world).take(2);
    assert_eq!(lost.len(), 2);
    world.drain_queue(BATCH);
    let waiting = verify(&world, false);
    assert_eq!(waiting["complete"], false);
    assert_eq!(waiting["fanout"]["inFlight"], 2);
    sent_again_once_overdue(&mut world, 2);
}

#[test]
fn a_chunk_that_keeps_failing_leaves_the_verification_complete_but_not_clean() {
    let world = backfilled_through_the_queue(300);
    verify(&world, true);
    let dead = queue(&world).take(1).remove(0).message;
    let QueueMessage::Compare(chunk) = &dead else {
        panic!("not a comparison: {dead:?}");
    };
    let first_key = chunk.keys[0].clone();
    let register = world.register();
    let fanout = Fanout {
        register: &register,
        queue: queue(&world),
    };
    block_on(dead_letters(
        fanout,
        std::slice::from_ref(&dead),
        world.now_ms,
    ));
    world.drain_queue(BATCH);
    let report = verify(&world, false);
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["clean"], false);
    assert_eq!(report["fanout"]["failed"]["count"], 1);
    assert_eq!(report["fanout"]["failed"]["keys"][0], first_key.as_str());
    let (status, body) = move_to_phase_4(&world);
    assert_eq!(status, 409);
    assert!(body.to_string().contains("could not compare"), "{body}");
    // A new verification compares everything again.
    let report = verify_to_completion(&world);
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(move_to_phase_4(&world).0, 200);
}

#[test]
fn a_restart_ignores_the_chunks_of_the_run_it_replaces_even_within_a_millisecond() {
    let world = backfilled_through_the_queue(300);
    verify(&world, true);
    let old_run: Vec<QueueMessage> = queue(&world)
        .take(usize::MAX)
        .into_iter()
        .map(|d| d.message)
        .collect();
    // Same clock: the new run must still be told apart from the old one.
    let restarted = verify(&world, true);
    consume_in_batches(&world, &old_run);
    let report = verify(&world, false);
    assert_eq!(report["fanout"]["done"], 0, "{report}");
    assert_eq!(report["startedAt"], restarted["startedAt"]);
    world.drain_queue(BATCH);
    let report = verify(&world, false);
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["valuesCompared"], 600);
}

#[test]
fn one_call_walks_more_keys_than_comparing_values_itself_could() {
    // Backfilled by the cron, whose clock stands still; the queue added afterwards.
    let mut world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 30_000);
    world.run_cron_until_backfill_stops();
    world.queue = Some(LocalQueue::default());
    world.reset_counts();
    let report = verify(&world, true);
    // Comparing values itself, a call reads 2 bulk reads per 100 keys and walks about
    // 45,000 keys; handing them to consumers it walks every one of these 60,000.
    assert_eq!(report["listed"], 60_000, "{report}");
    let used = world.stores.old.counts().total() + world.stores.new.counts().total();
    assert!(used < 200, "{used} operations");
    let report = verify_to_completion(&world);
    assert_eq!(report["clean"], true);
    assert_eq!(report["valuesCompared"], 60_000);
}

#[test]
fn a_report_of_another_run_or_an_unknown_chunk_is_refused() {
    let world = backfilled_through_the_queue(100);
    let register = world.register();
    verify(&world, true);
    let stale = CompareOp::Failed {
        chunk: CompareChunk {
            run: 1,
            seq: 0,
            keys: vec!["customer_cust_000001".into()],
        },
    };
    let answer = block_on(register.compare(stale)).unwrap();
    assert!(!answer.accepted);
    assert_eq!(answer.state.failed, 0);
}
