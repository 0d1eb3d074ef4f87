//! Draining the repair journal brings the lagging store back in line and empties it.

mod common;

use common::*;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::Fault;
use serde_json::json;

fn repair(world: &World) -> serde_json::Value {
    let response = world.send("POST", "/admin/migrate/repair", Some(&admin()), None);
    assert_eq!(response.status, 200, "{}", response.body);
    response.body["repair"].clone()
}

#[test]
fn a_missed_new_store_write_is_repaired_and_unblocks_the_read_move() {
    let world = World::in_phase(Phase::DualWrite);
    world.stores.new.fail(Fault::Put("customer_".into()));
    let body = json!({ "customerId": "c1", "email": "ada@example.com", "name": "Ada" });
    assert_eq!(
        world
            .send("POST", "/customer", Some(&service()), Some(body))
            .status,
        503,
        "journaled, but not acknowledged: phase 2 isolates read the new store first"
    );
    world.stores.new.heal();
    assert!(world.new_value("customer_c1").is_none());

    let report = repair(&world);
    assert_eq!(
        (report["examined"].as_u64(), report["repaired"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        world.new_value("customer_c1"),
        world.old_value("customer_c1")
    );
    assert!(world
        .stores
        .new
        .peek("__migration/journal/customer_c1")
        .is_none());
    let moved = world.send(
        "POST",
        "/admin/migrate/phase",
        Some(&admin()),
        Some(json!({ "phase": 2 })),
    );
    assert_eq!(moved.status, 200, "{}", moved.body);
    let audit = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert!(audit.body["recentAudit"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "repair"));
}

#[test]
fn a_missed_old_store_delete_is_repaired_by_the_cron() {
    let mut world = World::in_phase(Phase::ReadNew);
    let body = json!({ "customerId": "c1", "email": "ada@example.com" });
    assert_eq!(
        world
            .send("POST", "/customer", Some(&service()), Some(body))
            .status,
        201
    );
    world.now_ms += 1_000; // KV takes one write a second to one key
    world.stores.old.fail(Fault::Delete("customer_".into()));
    assert_eq!(
        world
            .send("DELETE", "/customer/c1", Some(&service()), None)
            .status,
        503,
        "journaled, but not acknowledged: phase 1 isolates read the old store first"
    );
    world.stores.old.heal();
    assert!(
        world.old_has("customer_c1"),
        "the old store missed the delete"
    );

    let report = world.run_cron();
    assert_eq!(report.repair.repaired, 1);
    assert!(!world.old_has("customer_c1"));
    assert!(world
        .new_value("customer_c1")
        .unwrap()
        .get("__tombstone")
        .is_some());
}

#[test]
fn a_repair_that_cannot_read_its_source_keeps_the_entry() {
    let world = World::in_phase(Phase::Backfill);
    for store in [&world.stores.old, &world.stores.new] {
        store.insert("customer_c1", br#"{"customerId":"c1"}"#, Default::default());
    }
    world.stores.old.fail(Fault::Put("customer_".into()));
    let patch = json!({ "name": "Ada" });
    assert_eq!(
        world
            .send("PATCH", "/customer/c1", Some(&service()), Some(patch))
            .status,
        200,
        "phase 3 acknowledges a write the old store missed"
    );
    world.stores.old.heal();
    world.stores.new.fail(Fault::Get("customer_".into()));
    let report = repair(&world);
    assert_eq!(
        (report["repaired"].as_u64(), report["deferred"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(world
        .stores
        .new
        .peek("__migration/journal/customer_c1")
        .is_some());
    world.stores.new.heal();
    assert_eq!(repair(&world)["repaired"], 1);
    assert_eq!(
        world.old_value("customer_c1"),
        world.new_value("customer_c1")
    );
}
