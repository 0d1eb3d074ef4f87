//! The backfill fanned out on a queue (docs/design.md §13): the planner queues chunks,
//! consumers copy them within their own budgets, and duplicated, reordered, failed or
//! stale deliveries, a pause and a reset leave every key copied exactly as the cron
//! would.

mod common;

use common::*;
use customer_kv_migration::error::Error;
use customer_kv_migration::migration::checking::comparisons::{CompareAnswer, CompareOp};
use customer_kv_migration::migration::checking::emails_fanout::{AuditAnswer, AuditOp};
use customer_kv_migration::migration::copying::backfill::{self, Checkpoint, RunOptions};
use customer_kv_migration::migration::copying::copy::Direction;
use customer_kv_migration::migration::copying::fanout;
use customer_kv_migration::migration::copying::fanout::local::LocalQueue;
use customer_kv_migration::migration::copying::fanout::{
    ChunkQueue, Disposition, Fanout, QueueMessage, TallyAnswer, TallyOp,
};
use customer_kv_migration::migration::state::coordinator::{
    PhaseRegister, RecordOp, RecordOutcome,
};
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::budget::Budget;
use customer_kv_migration::store::budget::PLATFORM_OPERATION_CAP;
use customer_kv_migration::store::{Fault, StoreError, StoreResult};

/// Consumers take this many chunks a batch (wrangler.toml's `max_batch_size`).
const BATCH: usize = 8;

fn world_with_queue(records: usize) -> World {
    let mut world = World::in_phase(Phase::Backfill);
    world.queue = Some(LocalQueue::default());
    seed_legacy(&world, records);
    world
}

fn queue(world: &World) -> &LocalQueue {
    world.queue.as_ref().unwrap()
}

fn checkpoint(world: &World) -> Checkpoint {
    block_on(backfill::load_checkpoint(&world.stores.new)).unwrap()
}

/// Every live key of the old store's two families is in the new store, identical.
fn assert_new_mirrors_old(world: &World) {
    for key in world.stores.old.keys() {
        assert_eq!(
            world.stores.new.peek(&key),
            world.stores.old.peek(&key),
            "{key}"
        );
    }
}

/// Cron runs (each planning) and consumers until the backfill completes; returns the
/// cron runs it took.
fn run_to_completion(world: &mut World) -> usize {
    for run in 1..=50 {
        let report = world.run_cron();
        assert!(report.operations <= PLATFORM_OPERATION_CAP, "{report:?}");
        world.drain_queue(BATCH);
        if checkpoint(world).complete() {
            return run;
        }
        world.now_ms += 60_000;
    }
    panic!("the backfill did not complete: {:?}", checkpoint(world));
}

#[test]
fn a_fanned_out_backfill_copies_every_key_and_counts_each_once() {
    let mut world = world_with_queue(3_000);
    run_to_completion(&mut world);
    assert_new_mirrors_old(&world);
    let done = checkpoint(&world);
    assert!(done.fanned_out && done.complete());
    assert_eq!((done.total, done.counts.copied), (6_000, 6_000));
    // The first pass copied, so a second re-read everything and found it in sync.
    assert_eq!(done.pass, 2);
    assert_eq!(done.counts.scanned, 12_000);
    // The status shows the same: the last pass's tally is not added twice.
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(status.body["backfill"]["counts"]["scanned"], 12_000);
    assert_eq!(status.body["backfill"]["fanout"]["done"], 60);
}

#[test]
fn every_consumer_invocation_stays_within_its_budget() {
    let world = world_with_queue(2_000);
    world.run_cron();
    let register = world.register();
    let fanout = Fanout {
        register: &register,
        queue: queue(&world),
    };
    let mut most = 0;
    while queue(&world).waiting() > 0 {
        world.stores.old.reset_counts();
        world.stores.new.reset_counts();
        let batch: Vec<QueueMessage> = queue(&world)
            .take(BATCH)
            .into_iter()
            .map(|d| d.message)
            .collect();
        let consumed = world.consume_batch(fanout, &batch);
        assert!(consumed.dispositions.iter().all(|d| *d == Disposition::Ack));
        let used = world.stores.old.counts().total() + world.stores.new.counts().total();
        // The invocation's own report, which its log line carries, counts the same.
        assert_eq!(consumed.operations, used);
        assert_eq!(consumed.messages, batch.len());
        most = most.max(used);
    }
    // Eight chunks of 100 copies: 800 writes and 25 reads.
    assert!((800..=PLATFORM_OPERATION_CAP).contains(&most), "{most}");
}

#[test]
fn duplicated_and_reordered_chunks_count_once() {
    let mut world = world_with_queue(1_000);
    world.run_cron();
    // Every message twice, in reverse order.
    let mut all = queue(&world).take(usize::MAX);
    all.extend(all.clone());
    all.reverse();
    let messages: Vec<QueueMessage> = all.into_iter().map(|d| d.message).collect();
    block_on(queue(&world).send(messages)).unwrap();
    world.drain_queue(BATCH);
    run_to_completion(&mut world);
    assert_new_mirrors_old(&world);
    let done = checkpoint(&world);
    assert_eq!((done.total, done.counts.copied), (2_000, 2_000));
    // Two passes over 2,000 keys, each chunk counted once however often it came.
    assert_eq!(done.counts.scanned, 4_000);
}

#[test]
fn a_pause_sets_chunks_aside_and_a_resume_copies_them() {
    let mut world = world_with_queue(1_000);
    world.run_cron();
    let pause = world.send(
        "POST",
        "/admin/migrate/backfill/pause",
        Some(&admin()),
        None,
    );
    assert_eq!(pause.status, 200, "{}", pause.body);
    world.drain_queue(BATCH);
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    let fanout = &status.body["backfill"]["fanout"];
    assert_eq!(fanout["parked"], 20, "{}", status.body["backfill"]);
    assert_eq!(status.body["backfill"]["paused"], true);
    assert!(world.stores.new.peek("customer_cust_000000").is_none());
    // Paused, the cron queues nothing more.
    world.run_cron();
    assert_eq!(queue(&world).waiting(), 0);
    let resume = world.send(
        "POST",
        "/admin/migrate/backfill/resume",
        Some(&admin()),
        None,
    );
    assert_eq!(resume.status, 200, "{}", resume.body);
    run_to_completion(&mut world);
    assert_new_mirrors_old(&world);
    assert_eq!(checkpoint(&world).counts.copied, 2_000);
}

#[test]
fn chunks_of_a_reset_run_are_ignored() {
    let mut world = world_with_queue(500);
    world.run_cron();
    let stale = queue(&world).take(usize::MAX);
    let reset = world.send(
        "POST",
        "/admin/migrate/backfill/reset",
        Some(&admin()),
        None,
    );
    assert_eq!(reset.status, 200, "{}", reset.body);
    world.now_ms += 1;
    world.run_cron();
    let messages: Vec<QueueMessage> = stale.into_iter().map(|d| d.message).collect();
    block_on(queue(&world).send(messages)).unwrap();
    run_to_completion(&mut world);
    assert_new_mirrors_old(&world);
    // Only the new run's chunks counted: 1,000 keys copied once, scanned in two passes.
    let done = checkpoint(&world);
    assert_eq!((done.counts.copied, done.counts.scanned), (1_000, 2_000));
}

#[test]
fn a_chunk_that_keeps_failing_is_reported_and_retried_on_request() {
    let mut world = world_with_queue(300);
    world.run_cron();
    world.stores.new.fail(Fault::Get("customer_".into()));
    world.drain_queue(BATCH);
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    let fanout = &status.body["backfill"]["fanout"];
    assert_eq!(fanout["failed"], 3, "{}", status.body["backfill"]);
    assert!(!fanout["failedKeys"].as_array().unwrap().is_empty());
    // Failed chunks hold the pass open: nothing is complete.
    world.stores.new.heal();
    world.run_cron();
    world.drain_queue(BATCH);
    assert!(!checkpoint(&world).complete());
    let retry = world.send(
        "POST",
        "/admin/migrate/backfill/retry-failed",
        Some(&admin()),
        None,
    );
    assert_eq!(retry.status, 200, "{}", retry.body);
    run_to_completion(&mut world);
    assert_new_mirrors_old(&world);
}

#[test]
fn a_queue_that_refuses_sends_holds_the_chunks_as_failed() {
    let mut world = world_with_queue(200);
    queue(&world).refuse_sends.set(true);
    world.run_cron();
    queue(&world).refuse_sends.set(false);
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(status.body["backfill"]["fanout"]["failed"], 4);
    world.send(
        "POST",
        "/admin/migrate/backfill/retry-failed",
        Some(&admin()),
        None,
    );
    run_to_completion(&mut world);
    assert_new_mirrors_old(&world);
}

#[test]
fn retry_failed_without_a_queue_is_refused() {
    let world = World::in_phase(Phase::Backfill);
    let r = world.send(
        "POST",
        "/admin/migrate/backfill/retry-failed",
        Some(&admin()),
        None,
    );
    assert_eq!(r.status, 409, "{}", r.body);
}

#[test]
fn a_throttle_bounds_the_chunks_in_flight() {
    let mut world = world_with_queue(1_000);
    let bad = world.send(
        "POST",
        "/admin/migrate/backfill/throttle",
        Some(&admin()),
        Some(serde_json::json!({ "maxInFlight": 0 })),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    let set = world.send(
        "POST",
        "/admin/migrate/backfill/throttle",
        Some(&admin()),
        Some(serde_json::json!({ "maxInFlight": 5 })),
    );
    assert_eq!(set.status, 200, "{}", set.body);
    world.run_cron();
    assert_eq!(queue(&world).waiting(), 5, "20 chunks, 5 at a time");
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(status.body["backfill"]["fanout"]["maxInFlight"], 5);
    assert_eq!(status.body["backfill"]["fanout"]["inFlight"], 5);
    run_to_completion(&mut world);
    assert_new_mirrors_old(&world);
}

/// A planner may work from a checkpoint the tally has moved past: one saved by an
/// overlapping planner of an earlier run, or a run started over while another's copies
/// were unsettled. It must neither close that earlier run's pass as having written
/// nothing nor let a new run forget the copies the replaced one made: each needs a pass
/// that re-reads them once KV has spread them.
#[test]
fn a_planner_behind_the_tally_neither_reopens_an_earlier_run_nor_forgets_its_copies() {
    use customer_kv_migration::migration::copying::copy::Direction;
    use customer_kv_migration::migration::keys;
    use customer_kv_migration::store::PutOptions;

    let mut world = world_with_queue(150);
    world.config.consistency_window_ms = 60_000;
    let delay = world.config.pass_delay_ms();
    let key = keys::checkpoint(Direction::Forward);

    // Run 1 queues its chunks; its consumers copy every key.
    world.run_cron();
    let first_run = world.stores.new.peek(key).expect("a checkpoint");
    world.drain_queue(BATCH);

    // The run starts over (its checkpoint gone), while run 1's copies are unsettled:
    // the new run's first pass finds everything in sync, but must not be the last.
    world.stores.new.remove(key);
    world.now_ms += 1;
    world.run_cron();
    world.drain_queue(BATCH);
    world.run_cron();
    world.drain_queue(BATCH);
    assert!(
        !checkpoint(&world).complete(),
        "a new run completed before run 1's copies were re-read: {:?}",
        checkpoint(&world)
    );

    // An overlapping planner of run 1 saves its checkpoint last: the next planner must
    // not reopen run 1's pass, whose chunks the tally no longer counts.
    world
        .stores
        .new
        .insert(key, &first_run, PutOptions::default());
    world.now_ms += 1;
    world.run_cron();
    world.drain_queue(BATCH);
    assert!(
        !checkpoint(&world).complete(),
        "run 1's pass was closed on an empty tally: {:?}",
        checkpoint(&world)
    );
    let run_1: Checkpoint = serde_json::from_slice(&first_run).unwrap();
    assert!(
        checkpoint(&world).started_at > run_1.started_at,
        "run 1 was reopened: {:?}",
        checkpoint(&world)
    );

    // Once the copies have spread, a pass re-reads them and the backfill completes.
    world.now_ms += delay;
    run_to_completion(&mut world);
    assert_new_mirrors_old(&world);
}

/// A fanned-out pass keeps its writes in the coordinator's tally until the planner ends
/// it, and its consumers may copy at any moment before then: until the run is complete,
/// a copy decided on a stale read may hide a newer value in the new store, so the gate
/// `backfill_settled` must hold a move of reads to the new store, as it does for a run
/// the cron copies itself.
#[test]
fn copies_the_tally_holds_keep_reads_off_the_new_store_until_a_pass_rereads_them() {
    let mut world = World::in_phase(Phase::DualWrite);
    world.queue = Some(LocalQueue::default());
    seed_legacy(&world, 150);
    let batch = world.send(
        "POST",
        "/admin/migrate/backfill",
        Some(&admin()),
        Some(serde_json::json!({})),
    );
    assert_eq!(batch.status, 200, "{}", batch.body);
    // Consumers copy every chunk; the planner has not run since (the plan messages they
    // send when the tally shows the pass done wait in the queue).
    let register = world.register();
    let fanout = Fanout {
        register: &register,
        queue: queue(&world),
    };
    let chunks: Vec<QueueMessage> = queue(&world)
        .take(usize::MAX)
        .into_iter()
        .map(|d| d.message)
        .collect();
    assert!(chunks.iter().all(|m| matches!(m, QueueMessage::Chunk(_))));
    let consumed = world.consume_batch(fanout, &chunks);
    assert_eq!(consumed.written, 300);
    assert!(!checkpoint(&world).complete());
    assert!(world.stores.new.peek("customer_cust_000000").is_some());
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(
        status.body["backfill"]["unsettledCopies"], true,
        "{}",
        status.body["backfill"]
    );
    let refused = world.send(
        "POST",
        "/admin/migrate/phase",
        Some(&admin()),
        Some(serde_json::json!({ "phase": 2 })),
    );
    assert_eq!(
        (refused.status, error_code(&refused)),
        (409, "phase_change_refused"),
        "{}",
        refused.body
    );
    assert!(
        refused.body.to_string().contains("backfill_settled"),
        "{}",
        refused.body
    );

    // Batches end the pass that wrote and run one that re-reads every copy: then the
    // move is allowed.
    for _ in 0..10 {
        if checkpoint(&world).complete() {
            break;
        }
        world.now_ms += 1;
        world.send(
            "POST",
            "/admin/migrate/backfill",
            Some(&admin()),
            Some(serde_json::json!({})),
        );
        world.drain_queue(BATCH);
    }
    assert!(checkpoint(&world).complete(), "{:?}", checkpoint(&world));
    assert_new_mirrors_old(&world);
    let moved = world.send(
        "POST",
        "/admin/migrate/phase",
        Some(&admin()),
        Some(serde_json::json!({ "phase": 2 })),
    );
    assert_eq!(moved.status, 200, "{}", moved.body);
}

/// The coordinator as a consumer sees it, counting the tally ops it is sent and failing
/// `DoneMany` while `refuse_reports` is set.
struct CountingRegister<'a, R> {
    inner: &'a R,
    ops: std::cell::RefCell<Vec<String>>,
    refuse_reports: std::cell::Cell<bool>,
    /// Applies the next `Queue` op, then fails as a lost answer would.
    lose_queue_answer: std::cell::Cell<bool>,
}

impl<R: PhaseRegister> PhaseRegister for CountingRegister<'_, R> {
    async fn apply(&self, op: RecordOp) -> Result<RecordOutcome, Error> {
        self.inner.apply(op).await
    }

    async fn tally(&self, op: TallyOp) -> StoreResult<TallyAnswer> {
        let name = serde_json::to_value(&op).unwrap()["op"]
            .as_str()
            .unwrap()
            .to_owned();
        self.ops.borrow_mut().push(name);
        if self.refuse_reports.get() && matches!(op, TallyOp::DoneMany { .. }) {
            return Err(StoreError::new("coordinator", "unreachable"));
        }
        if matches!(op, TallyOp::Queue { .. }) && self.lose_queue_answer.replace(false) {
            self.inner.tally(op).await?;
            return Err(StoreError::new("coordinator", "the answer was lost"));
        }
        self.inner.tally(op).await
    }

    async fn compare(&self, op: CompareOp) -> StoreResult<CompareAnswer> {
        self.inner.compare(op).await
    }

    async fn audit(&self, dry_run: bool, op: AuditOp) -> StoreResult<AuditAnswer> {
        self.inner.audit(dry_run, op).await
    }
}

/// Consumers report a batch's copies in one request to the coordinator, and a batch
/// whose report is lost is delivered again and counted once.
#[test]
fn a_batch_reports_its_copies_in_one_request_and_a_lost_report_is_delivered_again() {
    let mut world = world_with_queue(1_600);
    world.run_cron();
    let inner = world.register();
    let register = CountingRegister {
        inner: &inner,
        ops: Default::default(),
        refuse_reports: std::cell::Cell::new(true),
        lose_queue_answer: Default::default(),
    };
    let fanout = Fanout {
        register: &register,
        queue: queue(&world),
    };
    let take = |world: &World| -> Vec<QueueMessage> {
        let batch = queue(world).take(BATCH).into_iter().map(|d| d.message);
        batch
            .filter(|m| matches!(m, QueueMessage::Chunk(_)))
            .collect()
    };
    let batch = take(&world);
    assert_eq!(batch.len(), BATCH);
    let lost = world.consume_batch(fanout, &batch);
    assert!(lost.dispositions.iter().all(|d| *d == Disposition::Retry));
    assert_eq!((lost.chunks, lost.retried), (0, BATCH));
    assert_eq!(
        *register.ops.borrow(),
        ["admit", "done_many", "attempted"],
        "one admission, one report, and the copies' writes recorded when it fails"
    );

    register.refuse_reports.set(false);
    register.ops.borrow_mut().clear();
    let again = world.consume_batch(fanout, &batch);
    assert!(again.dispositions.iter().all(|d| *d == Disposition::Ack));
    assert_eq!(again.chunks, BATCH);
    assert_eq!(*register.ops.borrow(), ["admit", "done_many"]);
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(
        status.body["backfill"]["fanout"]["done"], BATCH,
        "counted once"
    );

    world.drain_queue(BATCH);
    run_to_completion(&mut world);
    assert_new_mirrors_old(&world);
    let done = checkpoint(&world);
    // The 800 copies whose report was lost are found in sync when delivered again.
    assert_eq!((done.total, done.counts.copied), (3_200, 2_400));
}

/// A rollback's reverse sync fans out like the backfill: its chunks show in the status
/// and in the rollback's answer while consumers copy the writes made since phase 4 back
/// to the old store.
#[test]
fn a_fanned_out_reverse_sync_shows_its_chunks_and_copies_phase_4_writes_back() {
    let post = |world: &World, path: &str, body: serde_json::Value| {
        world.send("POST", path, Some(&admin()), Some(body))
    };
    let mut world = world_with_queue(250);
    run_to_completion(&mut world);
    // Fanned out too: the values are compared by consumers, then a call answers.
    for _ in 0..2 {
        let verified = post(
            &world,
            "/admin/migrate/verify",
            serde_json::json!({ "mode": "full" }),
        );
        assert_eq!(verified.status, 200, "{}", verified.body);
        world.drain_queue(BATCH);
    }
    let moved = post(
        &world,
        "/admin/migrate/phase",
        serde_json::json!({ "phase": 4 }),
    );
    assert_eq!(moved.status, 200, "{}", moved.body);
    for i in 0..5 {
        let path = format!("/customer/cust_{i:06}");
        let body = serde_json::json!({ "name": format!("Phase 4 #{i}") });
        let patched = world.send("PATCH", &path, Some(&service()), Some(body));
        assert_eq!(patched.status, 200, "{}", patched.body);
    }
    assert_ne!(
        world.stores.old.peek("customer_cust_000000"),
        world.stores.new.peek("customer_cust_000000"),
        "phase 4 writes the new store alone"
    );

    let rollback = |world: &World| {
        post(
            world,
            "/admin/migrate/rollback",
            serde_json::json!({ "toPhase": 1 }),
        )
    };
    let waiting = rollback(&world);
    assert_eq!(waiting.status, 409, "{}", waiting.body);
    world.now_ms += 1;
    world.run_cron();
    assert!(
        queue(&world).waiting() > 0,
        "the cron planned the reverse sync's chunks"
    );
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    let reverse = &status.body["reverseSync"];
    assert_eq!(reverse["needed"], true, "{reverse}");
    assert!(
        reverse["fanout"]["queued"].as_u64().unwrap() > 0,
        "{reverse}"
    );
    assert_eq!(reverse["fanout"]["done"], 0, "{reverse}");
    world.drain_queue(BATCH);
    let answer = rollback(&world);
    assert!(
        answer.body["rollback"]["reverseSync"]["fanout"]["done"]
            .as_u64()
            .unwrap()
            > 0,
        "{}",
        answer.body
    );

    let mut done = answer.status == 200;
    for _ in 0..20 {
        if done {
            break;
        }
        world.now_ms += 60_000;
        world.run_cron();
        world.drain_queue(BATCH);
        done = rollback(&world).status == 200;
    }
    assert!(done, "the rollback to phase 1 finished");
    for i in 0..5 {
        let key = format!("customer_cust_{i:06}");
        assert_eq!(
            world.stores.old.peek(&key),
            world.stores.new.peek(&key),
            "{key}"
        );
    }
}

/// A planner whose reservation of chunk numbers reached the coordinator but whose answer
/// was lost sends nothing for them; the next planner lists the same page (from the same
/// position, though its keys changed) and makes that reservation again, so no number
/// stays undone and the pass ends.
#[test]
fn a_reservation_whose_answer_was_lost_is_made_again_and_the_pass_ends() {
    let mut world = world_with_queue(450);
    let inner = world.register();
    let register = CountingRegister {
        inner: &inner,
        ops: Default::default(),
        refuse_reports: Default::default(),
        lose_queue_answer: std::cell::Cell::new(true),
    };
    let fanout = Fanout {
        register: &register,
        queue: queue(&world),
    };
    let plan = |now_ms| {
        let budget = Budget::per_invocation(0);
        let options = RunOptions::default();
        block_on(fanout::plan(
            &world.stores,
            fanout,
            &budget,
            options,
            now_ms,
        ))
    };
    assert!(
        plan(world.now_ms).is_err(),
        "the lost answer fails the planner"
    );
    assert_eq!(
        queue(&world).waiting(),
        0,
        "nothing was sent for the lost reservation"
    );
    let reserved = block_on(register.tally(TallyOp::Read {
        direction: Direction::Forward,
    }))
    .unwrap()
    .tally;
    assert_eq!(
        reserved.queued, 5,
        "the coordinator applied the reservation"
    );

    // Meanwhile a customer is created whose key sorts first: the page listed again
    // starts with another key, and is still the page the lost reservation was for.
    world.stores.old.insert(
        "customer_aaa",
        br#"{"customerId":"aaa","updatedAt":"2024-01-01T00:00:00Z"}"#,
        Default::default(),
    );
    plan(world.now_ms + 1).unwrap();
    let tally = block_on(register.tally(TallyOp::Read {
        direction: Direction::Forward,
    }))
    .unwrap()
    .tally;
    // The customers' page made again (5 chunks), then the mappings' (5 more): not 15.
    assert_eq!(
        tally.queued, 10,
        "made again, not reserved twice: {tally:?}"
    );
    assert_eq!(queue(&world).waiting(), 10);
    drop(register);
    world.drain_queue(BATCH);
    run_to_completion(&mut world);
    assert_new_mirrors_old(&world);
    assert_eq!(checkpoint(&world).total, 901);
}
