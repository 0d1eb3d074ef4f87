//! The inventory of a new store that already holds customers (docs/design.md §16): what
//! it finds, that it resumes across budget-bound requests, that it is refused once the
//! migration has written the new store, and that afterwards the backfill leaves those
//! customers alone and the verification does not count them as extra.

mod common;

use common::*;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::PutOptions;
use serde_json::{json, Value};

#[test]
fn sorts_the_new_stores_keys_and_shows_them_in_the_status() {
    let world = world_with_a_populated_new_store();
    let (status, body) = inventory(&world, json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["complete"], true);
    assert_eq!(body["listed"], 4);
    assert_eq!(body["newOnly"]["count"], 2);
    assert_eq!(body["same"], 1);
    assert_eq!(body["different"]["count"], 1);
    assert_eq!(body["different"]["keys"], json!(["customer_cust_000002"]));
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(
        status.body["inventory"]["newOnly"]["count"], 2,
        "{}",
        status.body
    );
    // Asked again, a complete inventory stays as it is; `restart` takes it afresh.
    let (_, again) = inventory(&world, json!({}));
    assert_eq!(again["startedAt"], body["startedAt"]);
    let (_, fresh) = inventory(&world, json!({ "restart": true }));
    assert_eq!(fresh["newOnly"]["count"], 2);
}

#[test]
fn is_refused_once_the_migration_writes_the_new_store() {
    let world = world_with_a_populated_new_store();
    world.set_phase(Phase::DualWrite);
    let (status, body) = inventory(&world, json!({}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("inventory_not_allowed"))
    );
    // Back in phase 0 the new store has copies in it: still refused.
    world.set_phase(Phase::Legacy);
    let (status, _) = inventory(&world, json!({}));
    assert_eq!(status, 409);
    let (status, body) = inventory(&World::in_phase(Phase::Legacy), json!({ "bogus": 1 }));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );
}

#[test]
fn resumes_across_requests_and_marks_each_key_once() {
    let world = World::in_phase(Phase::Legacy);
    for i in 0..2_500 {
        world.stores.new.insert(
            &format!("customer_api_{i:05}"),
            &record(&format!("api_{i:05}"), "api", "2025-01-01T00:00:00Z"),
            PutOptions::default(),
        );
    }
    let mut calls = 0;
    let body = loop {
        calls += 1;
        let (status, body) = inventory(&world, json!({}));
        assert_eq!(status, 200, "{body}");
        if body["complete"] == true {
            break body;
        }
        assert!(calls < 10, "the inventory makes progress");
    };
    assert!(calls >= 3, "one request cannot mark 2,500 keys: {calls}");
    assert_eq!(body["newOnly"]["count"], 2_500);
    assert_eq!(body["listed"], 2_500);
    let marks = world
        .stores
        .new
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("__migration/preexisting/"))
        .count();
    assert_eq!(marks, 2_500);
}

#[test]
fn the_backfill_keeps_them_and_the_verification_does_not_count_them_as_extra() {
    let world = world_with_a_populated_new_store();
    let (status, _) = inventory(&world, json!({}));
    assert_eq!(status, 200);
    world.set_phase(Phase::Backfill);
    world.run_cron_until_backfill_stops();
    // The old store's cust_000002 is newer, yet the one the customer API wrote stays.
    assert_eq!(
        world.new_value("customer_cust_000002").unwrap()["name"],
        "Edited in the customer API"
    );
    assert_eq!(
        world.new_value("customer_cust_000003").unwrap()["name"],
        "User 3",
        "the others are copied"
    );
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    let backfill = &status.body["backfill"];
    assert!(
        backfill.to_string().contains("customer_cust_000002"),
        "reported as a conflict: {backfill}"
    );

    let verified = world.send(
        "POST",
        "/admin/migrate/verify",
        Some(&admin()),
        Some(json!({ "mode": "full" })),
    );
    let report = &verified.body;
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["extra"]["count"], 0, "{report}");
    assert_eq!(report["preexisting"]["count"], 2, "{report}");
    assert_eq!(
        report["mismatched"]["keys"],
        json!(["customer_cust_000002"])
    );
}

#[test]
fn without_an_inventory_a_customer_only_in_the_new_store_is_extra() {
    let world = world_with_a_populated_new_store();
    world.set_phase(Phase::Backfill);
    world.run_cron_until_backfill_stops();
    assert_eq!(
        world.new_value("customer_cust_000002").unwrap()["name"],
        "User 2",
        "with nothing marked, the newer legacy record is copied over it"
    );
    let verified = world.send(
        "POST",
        "/admin/migrate/verify",
        Some(&admin()),
        Some(json!({ "mode": "full" })),
    );
    assert_eq!(verified.body["extra"]["count"], 2, "{}", verified.body);
    assert_eq!(verified.body["preexisting"]["count"], 0);
}

#[test]
fn a_mark_holds_back_only_the_value_it_found() {
    let world = world_with_a_populated_new_store();
    assert_eq!(inventory(&world, json!({})).0, 200);
    // The operator settles the difference by hand; the value is no longer the one found,
    // so when the old store's record is the newer one it is copied as any other.
    world.stores.new.insert(
        "customer_cust_000002",
        &record(
            "cust_000002",
            "Settled, then outdated",
            "2023-06-01T00:00:00Z",
        ),
        PutOptions::default(),
    );
    world.set_phase(Phase::Backfill);
    world.run_cron_until_backfill_stops();
    assert_eq!(
        world.new_value("customer_cust_000002").unwrap()["name"],
        "User 2"
    );
}

#[test]
fn a_key_too_long_to_prefix_is_marked_by_its_hash() {
    let world = World::in_phase(Phase::Legacy);
    let long = format!("customer_{}", "x".repeat(480));
    world.stores.new.insert(
        &long,
        &record("long", "long", "2025-01-01T00:00:00Z"),
        PutOptions::default(),
    );
    let (status, body) = inventory(&world, json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["newOnly"]["count"], 1);
    let marks: Vec<String> = world
        .stores
        .new
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("__migration/preexisting/"))
        .collect();
    assert_eq!(marks.len(), 1);
    assert!(marks[0].starts_with("__migration/preexisting/#") && marks[0].len() <= 512);
    world.set_phase(Phase::Backfill);
    world.run_cron_until_backfill_stops();
    let verified = world.send(
        "POST",
        "/admin/migrate/verify",
        Some(&admin()),
        Some(json!({ "mode": "full" })),
    );
    assert_eq!(
        verified.body["preexisting"]["count"], 1,
        "{}",
        verified.body
    );
}

#[test]
fn a_begun_inventory_holds_the_move_to_phase_1_until_it_is_finished() {
    let world = world_with_a_populated_new_store();
    let (status, body) = inventory(&world, json!({}));
    assert_eq!((status, &body["complete"]), (200, &json!(true)), "{body}");
    // As if a call had stopped at its budget: the family in progress is the first.
    let mut progress = world.new_value("__migration/inventory").unwrap();
    progress["family"] = json!(0);
    world.stores.new.insert(
        "__migration/inventory",
        progress.to_string().as_bytes(),
        PutOptions::default(),
    );
    let move_to =
        |body: Value| world.send("POST", "/admin/migrate/phase", Some(&admin()), Some(body));
    let refused = move_to(json!({ "phase": 1 }));
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(
        refused.body.to_string().contains("inventory_complete"),
        "{}",
        refused.body
    );
    let cohort = world.send(
        "POST",
        "/admin/migrate/cohort",
        Some(&admin()),
        Some(json!({ "to": 1, "percent": 1 })),
    );
    assert_eq!(
        cohort.status, 409,
        "a cohort in phase 1 writes the new store too"
    );

    let (status, body) = inventory(&world, json!({}));
    assert_eq!((status, &body["complete"]), (200, &json!(true)), "{body}");
    let moved = move_to(json!({ "phase": 1 }));
    assert_eq!(moved.status, 200, "{}", moved.body);
}
