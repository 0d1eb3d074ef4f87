//! A customer's object checks its delete once every copy decided on a read from before
//! it has landed (docs/design.md §12, "Deletes are checked"): a backfill copy decided on
//! stale reads can put the deleted record back over the tombstone, and no later pass
//! lists a key the old store no longer holds.

mod common;

use common::*;
use customer_kv_migration::phase::Phase;
use serde_json::json;

const WINDOW_MS: u64 = 60_000;
const ID: &str = "cust_000000";
const KEY: &str = "customer_cust_000000";

fn world(phase: Phase) -> World {
    let mut world = World::in_phase(phase);
    world.config.consistency_window_ms = WINDOW_MS;
    world.config.request_margin_ms = 30_000;
    seed_legacy(&world, 3);
    world
}

/// The copy a backfill chunk makes when both its reads, at its KV location, predate the
/// delete (the old store still shows the record, the new store not yet the tombstone),
/// and its re-read of the old store is as stale: the legacy record over the tombstone.
fn stale_backfill_copy(world: &World, legacy: &[u8]) {
    world.stores.new.insert(KEY, legacy, Default::default());
}

fn legacy_bytes(world: &World) -> Vec<u8> {
    world.stores.old.peek(KEY).expect("a legacy record")
}

fn read_status(world: &World) -> u16 {
    world
        .send("GET", &format!("/customer/{ID}"), Some(&service()), None)
        .status
}

fn backfill_complete(world: &World) -> bool {
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    status.body["backfill"]["complete"] == true
}

fn is_tombstone(value: Option<serde_json::Value>) -> bool {
    value.is_some_and(|v| v.get("__tombstone").is_some())
}

#[test]
fn a_deleted_customer_a_stale_copy_brought_back_is_deleted_again_when_the_object_checks() {
    let mut world = world(Phase::Backfill);
    let legacy = legacy_bytes(&world);
    let deleted = world.send("DELETE", &format!("/customer/{ID}"), Some(&service()), None);
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let alarms = world.objects.alarms();
    let due = world.now_ms + world.config.pass_delay_ms() + WINDOW_MS;
    assert_eq!(alarms, vec![(ID.to_owned(), due)]);

    stale_backfill_copy(&world, &legacy);
    // The backfill finishes without meeting the key again: the old store lacks it.
    while !backfill_complete(&world) {
        world.now_ms += 5_000;
        assert!(
            world.now_ms < due,
            "the backfill completes before the check"
        );
        world.run_cron();
    }
    assert_eq!(
        read_status(&world),
        200,
        "the stale copy is served until the check"
    );

    world.now_ms = due - 1;
    assert_eq!(world.ring_alarms(), 0, "not due yet");
    world.now_ms = due;
    assert_eq!(world.ring_alarms(), 1);
    assert!(
        is_tombstone(world.new_value(KEY)),
        "{:?}",
        world.new_value(KEY)
    );
    assert_eq!(read_status(&world), 404);
    assert!(world.objects.alarms().is_empty());
    assert_eq!(world.ring_alarms(), 0, "an alarm rings once");
}

#[test]
fn a_customer_created_again_after_the_delete_is_what_the_check_keeps() {
    let mut world = world(Phase::Backfill);
    let legacy = legacy_bytes(&world);
    let path = format!("/customer/{ID}");
    assert_eq!(
        world.send("DELETE", &path, Some(&service()), None).status,
        200
    );
    world.now_ms += 2_000;
    let body = json!({ "customerId": ID, "email": "again@example.com", "name": "Again" });
    let created = world.send("POST", "/customer", Some(&service()), Some(body));
    assert_eq!(created.status, 201, "{}", created.body);
    stale_backfill_copy(&world, &legacy);

    world.now_ms += world.config.pass_delay_ms() + WINDOW_MS;
    assert_eq!(world.ring_alarms(), 1);
    assert_eq!(world.new_value(KEY).unwrap()["name"], "Again");
    let read = world.send("GET", &path, Some(&service()), None);
    assert_eq!(read.body["name"], "Again", "{}", read.body);
}

#[test]
fn a_check_that_finds_the_delete_in_place_writes_nothing() {
    let mut world = world(Phase::ReadNew);
    let path = format!("/customer/{ID}");
    assert_eq!(
        world.send("DELETE", &path, Some(&service()), None).status,
        200
    );
    world.now_ms += world.config.pass_delay_ms() + WINDOW_MS;
    world.reset_counts();
    assert_eq!(world.ring_alarms(), 0);
    assert!(is_tombstone(world.new_value(KEY)));
    assert!(!world.old_has(KEY));
}

#[test]
fn deletes_are_checked_only_where_copies_into_the_new_store_run_and_reads_can_be_stale() {
    for (phase, checked) in [
        (Phase::Legacy, false),
        (Phase::DualWrite, true),
        (Phase::ReadNew, true),
        (Phase::Backfill, true),
        (Phase::NewPrimary, false),
    ] {
        let world = world(phase);
        if phase == Phase::NewPrimary {
            // Reads in phase 4 fall back to the old store; the delete finds the record.
            world.send("GET", &format!("/customer/{ID}"), Some(&service()), None);
        }
        let deleted = world.send("DELETE", &format!("/customer/{ID}"), Some(&service()), None);
        assert_eq!(deleted.status, 200, "phase {phase:?}: {}", deleted.body);
        assert_eq!(
            !world.objects.alarms().is_empty(),
            checked,
            "phase {phase:?}"
        );
    }
    let mut current = World::in_phase(Phase::Backfill);
    current.config.request_margin_ms = 30_000;
    seed_legacy(&current, 1);
    current.send("DELETE", &format!("/customer/{ID}"), Some(&service()), None);
    assert!(
        current.objects.alarms().is_empty(),
        "with reads never stale, the copy's re-read sees the delete"
    );
}
