//! Alerts (`ALERT_WEBHOOK_URL`): a phase change, a forced move, a rollback, a
//! verification with differences, copies that fail, a journal that outgrows a run and a
//! backfill that stops moving each call for one; ordinary traffic calls for none.

mod common;

use common::*;
use customer_kv_migration::alerts::{self, Alert};
use customer_kv_migration::http::{ApiRequest, Method};
use customer_kv_migration::migration::copying::fanout::local::LocalQueue;
use customer_kv_migration::migration::copying::fanout::Fanout;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::PutOptions;
use serde_json::{json, Value};

fn admin_post(world: &World, path: &str, body: Value) -> Vec<Alert> {
    let mut request = ApiRequest::new(Method::Post, path);
    request.authorization = Some(format!("Bearer {}", admin()));
    request.body = body.to_string().into_bytes();
    let outcome = world.handle(&request);
    assert_eq!(outcome.response.status, 200, "{}", outcome.response.body);
    outcome.alerts
}

fn kinds(alerts: &[Alert]) -> Vec<&str> {
    alerts.iter().map(|a| a.kind).collect()
}

#[test]
fn moves_forced_moves_and_rollbacks_alert() {
    let world = World::in_phase(Phase::Legacy);
    let moved = admin_post(&world, "/admin/migrate/phase", json!({ "phase": 1 }));
    assert_eq!(kinds(&moved), ["phase_changed"]);
    assert_eq!(moved[0].text, "phase moved 0 → 1");
    let forced = admin_post(
        &world,
        "/admin/migrate/phase",
        json!({ "phase": 4, "force": true, "reason": "drill" }),
    );
    assert_eq!(kinds(&forced), ["phase_forced"], "{forced:?}");
    let rollback = admin_post(&world, "/admin/migrate/rollback", json!({ "toPhase": 3 }));
    assert_eq!(kinds(&rollback), ["rollback"], "{rollback:?}");
    // Ordinary traffic alerts nobody.
    let mut create = ApiRequest::new(Method::Post, "/customer");
    create.authorization = Some(format!("Bearer {}", service()));
    create.body = json!({ "customerId": "quiet" }).to_string().into_bytes();
    assert!(world.handle(&create).alerts.is_empty());
}

#[test]
fn a_verification_with_differences_alerts_and_a_clean_one_does_not() {
    let world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 20);
    world.run_cron_until_backfill_stops();
    let clean = admin_post(&world, "/admin/migrate/verify", json!({ "mode": "full" }));
    assert!(clean.is_empty(), "{clean:?}");
    world.stores.new.insert(
        "customer_cust_000003",
        b"{\"customerId\":\"cust_000003\"}",
        PutOptions::default(),
    );
    let differing = admin_post(
        &world,
        "/admin/migrate/verify",
        json!({ "mode": "full", "restart": true }),
    );
    assert_eq!(kinds(&differing), ["verification_differences"]);
    assert!(
        differing[0].text.contains("1 mismatched"),
        "{}",
        differing[0].text
    );
}

#[test]
fn failing_copies_and_a_failed_run_alert() {
    let world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 30);
    world
        .stores
        .new
        .fail(customer_kv_migration::store::Fault::Put(
            "customer_cust_00001".into(),
        ));
    let report = world.run_cron();
    let alerts = alerts::of_cron(&report);
    assert!(
        kinds(&alerts).contains(&"copy_errors"),
        "{alerts:?} from {report:?}"
    );
    assert_eq!(
        alerts::of_cron_failure("store_unavailable").kind,
        "cron_failed"
    );
    let body = alerts::webhook_body("customer-kv-migration", &alerts[0]);
    assert!(body["text"]
        .as_str()
        .unwrap()
        .starts_with("[customer-kv-migration] backfill: "));
}

/// A backfill fanned out on a queue whose consumers do not run: after the planner has
/// queued the chunks, no cron run finds any of them done.
fn stalling_world() -> World {
    let mut world = World::in_phase(Phase::Backfill);
    world.queue = Some(LocalQueue::default());
    seed_legacy(&world, 20);
    world
}

/// Runs the cron `runs` times, a minute apart; returns the runs (from 1) that raised
/// `backfill_stalled`.
fn stall_alerts(world: &mut World, runs: usize) -> Vec<usize> {
    let mut raised = Vec::new();
    for run in 1..=runs {
        let report = world.run_cron();
        let alerts = alerts::of_cron(&report);
        if kinds(&alerts).contains(&"backfill_stalled") {
            raised.push(run);
        }
        world.now_ms += 60_000;
    }
    raised
}

/// Hands one queued chunk to a consumer, which copies it.
fn consume_one_chunk(world: &World) {
    let queue = world.queue.as_ref().unwrap();
    let register = world.register();
    let fanout = Fanout {
        register: &register,
        queue,
    };
    let deliveries = queue.take(1);
    let messages: Vec<_> = deliveries.iter().map(|d| d.message.clone()).collect();
    let consumed = world.consume_batch(fanout, &messages);
    assert_eq!(consumed.chunks, 1, "{consumed:?}");
}

#[test]
fn a_stalled_backfill_alerts_once_and_again_after_progress_then_a_new_stall() {
    let mut world = stalling_world();
    // Run 1 queues the chunks (progress); runs 2 to 6 find none done: the fifth idle
    // run raises it, and the ten after it do not.
    let threshold = alerts::BACKFILL_STALL_RUNS as usize;
    assert_eq!(stall_alerts(&mut world, threshold + 11), [threshold + 1]);
    // A consumer copies one of the two chunks: progress, and the count starts over; the
    // other chunk stays queued, and the new stall is raised again.
    consume_one_chunk(&world);
    assert_eq!(stall_alerts(&mut world, threshold + 5), [threshold + 1]);

    let mut world = stalling_world();
    let mut last = world.run_cron();
    for _ in 0..threshold {
        world.now_ms += 60_000;
        last = world.run_cron();
    }
    let raised = alerts::of_cron(&last);
    assert_eq!(kinds(&raised), ["backfill_stalled"]);
    assert_eq!(
        raised[0].text,
        "the backfill has not moved in 5 cron runs in a row (stage draining)"
    );
}

#[test]
fn a_paused_backfill_does_not_alert_and_a_resumed_one_counts_afresh() {
    let mut world = stalling_world();
    assert!(stall_alerts(&mut world, 4).is_empty());
    admin_post(&world, "/admin/migrate/backfill/pause", json!({}));
    assert!(stall_alerts(&mut world, 20).is_empty());
    admin_post(&world, "/admin/migrate/backfill/resume", json!({}));
    // The idle runs before the pause do not count: the first run after it notes where
    // the backfill stands, and the fifth idle one after that raises it.
    assert_eq!(
        stall_alerts(&mut world, 10),
        [alerts::BACKFILL_STALL_RUNS as usize + 1]
    );
}

#[test]
fn a_backfill_that_moves_every_run_or_is_done_does_not_alert() {
    let mut world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 2_000);
    // About 900 records a run: every run moves until the backfill is done, and a done
    // backfill is not run at all.
    assert!(stall_alerts(&mut world, 20).is_empty());
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(status.body["backfill"]["complete"], true, "{}", status.body);
    assert!(world.run_cron().backfill.is_none());
}
