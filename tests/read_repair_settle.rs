//! Read-repair under KV's eventual consistency: each copy is checked once the window has
//! passed, corrected if it was decided on a stale read, and the gates that send reads to
//! the new store wait for those checks.

mod common;

use common::*;
use customer_kv_migration::migration::copying::copy;
use customer_kv_migration::migration::keys::READ_REPAIR_CHECK_PREFIX as SETTLE_PREFIX;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::{KvStore, StoredValue};
use serde_json::json;

const WINDOW_MS: u64 = 60_000;
const KEY: &str = "customer_c1";

fn record(name: &str, updated_at: &str) -> Vec<u8> {
    json!({ "customerId": "c1", "email": "c1@example.com", "name": name, "updatedAt": updated_at })
        .to_string()
        .into_bytes()
}

fn world(phase: Phase) -> World {
    let mut world = World::in_phase(phase);
    world.config.consistency_window_ms = WINDOW_MS;
    world
}

fn settle_entries(world: &World) -> usize {
    block_on(world.stores.new.list(SETTLE_PREFIX, None, 1000))
        .unwrap()
        .keys
        .len()
}

/// A read-repair whose reads, at its KV location, did not yet see a client's write made
/// elsewhere (old store first, then new): its copy lands the older value over that
/// write in the new store, and its re-read of the old store is just as stale. In
/// memory, the same outcome: the copy of the older value, then the newer one in the
/// old store alone.
fn stale_read_repair(world: &World) {
    let older = record("older", "2026-01-01T00:00:00Z");
    world.stores.old.insert(KEY, &older, Default::default());
    let stale = StoredValue {
        bytes: older,
        metadata: None,
    };
    let check_after = world.config.pass_delay_ms();
    block_on(copy::repair_on_read(
        &world.stores,
        KEY,
        &stale,
        check_after,
        world.now_ms,
    ))
    .unwrap();
    world.stores.old.insert(
        KEY,
        &record("newer", "2026-01-02T00:00:00Z"),
        Default::default(),
    );
    assert_eq!(world.new_value(KEY).unwrap()["name"], "older");
}

/// A read of a customer only the old store holds, in phase 2.
fn fallback_read(world: &World) {
    world.stores.old.insert(
        KEY,
        &record("ada", "2026-01-01T00:00:00Z"),
        Default::default(),
    );
    let read = world.send("GET", "/customer/c1", Some(&service()), None);
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(world.new_value(KEY).unwrap()["name"], "ada");
}

#[test]
fn a_fallback_read_leaves_a_check_for_its_copy() {
    let world = world(Phase::ReadNew);
    fallback_read(&world);
    assert_eq!(settle_entries(&world), 1);
    let entry = &block_on(world.stores.new.list(SETTLE_PREFIX, None, 10))
        .unwrap()
        .keys[0];
    let due = world.now_ms + world.config.pass_delay_ms();
    assert_eq!(entry.name, format!("{SETTLE_PREFIX}{KEY}/{due}"));

    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(status.body["readRepairsSettling"]["count"], 1);
}

#[test]
fn with_reads_always_current_the_copy_needs_no_later_check() {
    let world = World::in_phase(Phase::ReadNew);
    fallback_read(&world);
    assert_eq!(settle_entries(&world), 0);
}

#[test]
fn a_copy_decided_on_a_stale_read_is_corrected_after_the_window_and_checked_again() {
    let mut world = world(Phase::ReadNew);
    stale_read_repair(&world);

    let early = world.run_cron();
    assert_eq!(
        early.settle.waiting, 1,
        "not due before the window has passed"
    );
    assert_eq!(world.new_value(KEY).unwrap()["name"], "older");

    world.now_ms += world.config.pass_delay_ms();
    let due = world.run_cron();
    assert_eq!(due.settle.corrected, 1, "{:?}", due.settle);
    assert_eq!(world.new_value(KEY).unwrap()["name"], "newer");
    assert_eq!(
        settle_entries(&world),
        1,
        "the correction is checked in turn"
    );

    world.now_ms += world.config.pass_delay_ms();
    let again = world.run_cron();
    assert_eq!(again.settle.settled, 1, "{:?}", again.settle);
    assert_eq!(settle_entries(&world), 0);
}

#[test]
fn a_copy_a_client_replaced_since_is_left_alone() {
    let mut world = world(Phase::ReadNew);
    stale_read_repair(&world);
    let update = world.send(
        "PATCH",
        "/customer/c1",
        Some(&service()),
        Some(json!({ "name": "latest" })),
    );
    assert_eq!(update.status, 200, "{}", update.body);

    world.now_ms += world.config.pass_delay_ms();
    let report = world.run_cron();
    assert_eq!(report.settle.settled, 1, "{:?}", report.settle);
    assert_eq!(world.new_value(KEY).unwrap()["name"], "latest");
}

#[test]
fn a_copy_of_a_customer_deleted_meanwhile_becomes_a_tombstone() {
    let mut world = world(Phase::ReadNew);
    stale_read_repair(&world);
    world.stores.old.remove(KEY);

    world.now_ms += world.config.pass_delay_ms();
    assert_eq!(world.run_cron().settle.corrected, 1);
    let read = world.send("GET", "/customer/c1", Some(&service()), None);
    assert_eq!(read.status, 404, "{}", read.body);
}

#[test]
fn in_phase_4_the_old_store_is_no_source_and_the_check_waits() {
    let mut world = world(Phase::NewPrimary);
    stale_read_repair(&world);
    world.now_ms += world.config.pass_delay_ms();
    let report = world.run_cron();
    assert_eq!(report.settle.deferred, 1, "{:?}", report.settle);
    assert_eq!(world.new_value(KEY).unwrap()["name"], "older");
    assert_eq!(settle_entries(&world), 1);
}

#[test]
fn reads_move_to_the_new_store_and_phase_4_only_once_copies_are_checked() {
    for (from, to) in [
        (Phase::DualWrite, Phase::ReadNew),
        (Phase::Backfill, Phase::NewPrimary),
    ] {
        let mut world = world(from);
        world.now_ms += 10 * WINDOW_MS; // long after the phase was entered
        stale_read_repair(&world);
        let refused = world.send(
            "POST",
            "/admin/migrate/phase",
            Some(&admin()),
            Some(json!({ "phase": to.number() })),
        );
        assert_eq!(refused.status, 409, "{}", refused.body);
        assert!(
            refused.body.to_string().contains("read_repairs_settled"),
            "{}",
            refused.body
        );

        world.now_ms += world.config.pass_delay_ms();
        let repair = world.send("POST", "/admin/migrate/repair", Some(&admin()), None);
        assert_eq!(repair.status, 200, "{}", repair.body);
        assert_eq!(repair.body["settle"]["corrected"], 1, "{}", repair.body);
        world.now_ms += world.config.pass_delay_ms();
        let repair = world.send("POST", "/admin/migrate/repair", Some(&admin()), None);
        assert_eq!(repair.body["settle"]["settled"], 1, "{}", repair.body);
        assert_eq!(settle_entries(&world), 0);

        let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
        let gates = status.body["gates"]["forward"].to_string();
        assert!(!gates.contains("read_repairs_settled"), "{gates}");
    }
}

#[test]
fn a_write_that_raced_the_copy_where_it_is_visible_is_corrected_at_once() {
    let world = world(Phase::ReadNew);
    world.stores.old.insert(
        KEY,
        &record("newer", "2026-01-02T00:00:00Z"),
        Default::default(),
    );
    let served = StoredValue {
        bytes: record("older", "2026-01-01T00:00:00Z"),
        metadata: None,
    };
    let counts = block_on(copy::repair_on_read(
        &world.stores,
        KEY,
        &served,
        world.config.pass_delay_ms(),
        world.now_ms,
    ))
    .unwrap();
    assert_eq!(counts.corrected, 1);
    assert_eq!(world.new_value(KEY).unwrap()["name"], "newer");
    assert_eq!(
        settle_entries(&world),
        1,
        "the correction is checked in turn"
    );
}

#[test]
fn a_record_changed_within_the_window_is_served_but_not_copied() {
    let world = world(Phase::ReadNew);
    let just_now = customer_kv_migration::time::rfc3339(world.now_ms - 1_000);
    world
        .stores
        .old
        .insert(KEY, &record("fresh", &just_now), Default::default());
    let read = world.send("GET", "/customer/c1", Some(&service()), None);
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["name"], "fresh");
    assert_eq!(world.new_value(KEY), None);
    assert_eq!(settle_entries(&world), 0);
}
