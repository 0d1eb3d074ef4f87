//! Purging the new store after a rollback that is final (docs/design.md §9, "Purging the
//! new store"): everything the migration put into `CUSTOMER_KV` goes, everything the
//! inventory found there before it stays; phase 0 only, dry run first, audited.

mod common;

use common::*;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::{KvStore, PutOptions};
use serde_json::{json, Value};

/// Customers the new store held before the migration: one only there (it has a
/// mapping too), one equal to the old store's, one that differs.
const PREEXISTING: [&str; 3] = [
    "customer_from_api",
    "customer_cust_000001",
    "customer_cust_000002",
];

fn post(world: &World, path: &str, body: Value) -> (u16, Value) {
    let response = world.send("POST", path, Some(&admin()), Some(body));
    (response.status, response.body)
}

fn purge(world: &World, body: Value) -> (u16, Value) {
    post(world, "/admin/migrate/purge-new", body)
}

fn customer_keys(world: &World) -> Vec<String> {
    let mut keys = Vec::new();
    for prefix in ["customer_", "email_to_customer_"] {
        let page = block_on(world.stores.new.list(prefix, None, 1000)).unwrap();
        keys.extend(page.keys.into_iter().map(|k| k.name));
    }
    keys
}

/// A migration that ran to phase 3 over a new store another service had written, then
/// was rolled back to phase 0 for good.
fn rolled_back_world(inventory: bool) -> World {
    let world = World::in_phase(Phase::Legacy);
    seed_legacy(&world, 40);
    let new = &world.stores.new;
    let record = json!({ "customerId": "from_api", "email": "from_api@example.com", "name": "API", "updatedAt": "2025-06-01T00:00:00Z" });
    new.insert(
        "customer_from_api",
        record.to_string().as_bytes(),
        PutOptions::default(),
    );
    new.insert(
        &mapping_key("from_api@example.com"),
        b"from_api",
        PutOptions::default(),
    );
    let same = world.stores.old.peek("customer_cust_000001").unwrap();
    new.insert("customer_cust_000001", &same, PutOptions::default());
    let edited = json!({ "customerId": "cust_000002", "name": "Edited", "updatedAt": "2023-01-01T00:00:00Z" });
    new.insert(
        "customer_cust_000002",
        edited.to_string().as_bytes(),
        PutOptions::default(),
    );
    if inventory {
        for _ in 0..20 {
            let (status, body) = post(&world, "/admin/migrate/inventory", json!({}));
            assert_eq!(status, 200, "{body}");
            if body["complete"] == true {
                break;
            }
        }
    }
    for phase in [Phase::DualWrite, Phase::ReadNew, Phase::Backfill] {
        world.set_phase(phase);
    }
    world.run_cron_until_backfill_stops();
    let created = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "made_in_phase_3", "email": "p3@example.com" })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let deleted = world.send("DELETE", "/customer/cust_000005", Some(&service()), None);
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    for phase in [Phase::ReadNew, Phase::DualWrite, Phase::Legacy] {
        world.set_phase(phase);
    }
    world
}

fn run_to_the_end(world: &World, body: Value) -> Value {
    let mut body = body.clone();
    body["restart"] = json!(true);
    for _ in 0..100 {
        let (status, answer) = purge(world, body.clone());
        assert_eq!(status, 200, "{answer}");
        if answer["completedAt"].is_u64() {
            return answer;
        }
        body["restart"] = json!(false);
    }
    panic!("the purge never completed");
}

fn count(answer: &Value, field: &str) -> u64 {
    answer[field].as_u64().unwrap()
}

#[test]
fn a_purge_removes_what_the_migration_wrote_and_keeps_what_was_there_before() {
    let world = rolled_back_world(true);
    let before = customer_keys(&world);
    assert!(
        before.len() > 80,
        "copies, dual writes and a tombstone: {}",
        before.len()
    );

    let dry = run_to_the_end(&world, json!({ "dryRun": true }));
    let (would_remove, would_keep) = (count(&dry, "removed"), count(&dry, "kept"));
    assert_eq!(customer_keys(&world), before, "a dry run removes nothing");
    assert_eq!(
        would_keep, 4,
        "the three customers and the mapping the inventory found"
    );
    assert_eq!(would_remove as usize, before.len() - 4);

    let old_before = block_on(world.stores.old.list("customer_", None, 1000))
        .unwrap()
        .keys
        .len();
    let done = run_to_the_end(&world, json!({}));
    assert_eq!(
        (count(&done, "removed"), count(&done, "kept")),
        (would_remove, would_keep)
    );
    assert_eq!(count(&done, "unexplained"), 0, "{done}");
    let mut left = customer_keys(&world);
    left.sort();
    let expected: Vec<String> = {
        let mut keys: Vec<String> = PREEXISTING.iter().map(|k| k.to_string()).collect();
        keys.push(mapping_key("from_api@example.com"));
        keys.sort();
        keys
    };
    assert_eq!(left, expected);
    let old_after = block_on(world.stores.old.list("customer_", None, 1000))
        .unwrap()
        .keys
        .len();
    assert_eq!(old_after, old_before, "the old store is untouched");
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(
        status.body["backfill"]["complete"], false,
        "the backfill starts over: {}",
        status.body["backfill"]
    );
    let audit = world.send("GET", "/admin/migrate/audit", Some(&admin()), None);
    assert!(
        audit.body.to_string().contains("new_store_purged"),
        "{}",
        audit.body
    );
    assert!(
        audit.body.to_string().contains("new_store_purged"),
        "{}",
        audit.body
    );
}

#[test]
fn a_purge_runs_only_in_a_settled_phase_0_and_only_knowing_what_was_there_before() {
    let world = rolled_back_world(false);
    let (status, body) = purge(&world, json!({ "dryRun": true }));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("purge_not_allowed")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no inventory"),
        "{body}"
    );
    let (status, body) = purge(&world, json!({ "force": true }));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("reason_required")),
        "{body}"
    );
    let (status, body) = purge(&world, json!({ "cursor": "1:" }));
    assert_eq!(
        status, 400,
        "where a purge stands is the worker's to say: {body}"
    );
    let (status, body) = purge(&world, json!({ "surprise": 1 }));
    assert_eq!(status, 400, "{body}");

    let reason = "CUSTOMER_KV was created for this migration and held nothing";
    let done = run_to_the_end(&world, json!({ "force": true, "reason": reason }));
    assert_eq!(count(&done, "kept"), 0);
    assert!(count(&done, "removed") > 80);
    // With no marks, only what the migration cannot account for is left: the customer
    // only the new store held, and its mapping (the edited one the backfill overwrote
    // with the old store's newer value, having no mark to hold it back).
    assert_eq!(count(&done, "unexplained"), 2, "{done}");
    let mut left = customer_keys(&world);
    left.sort();
    let mut expected = vec![
        "customer_from_api".to_owned(),
        mapping_key("from_api@example.com"),
    ];
    expected.sort();
    assert_eq!(left, expected);
    let audit = world.send("GET", "/admin/migrate/audit", Some(&admin()), None);
    let text = audit.body.to_string();
    assert!(
        text.contains(reason) && text.contains("\"forced\":true"),
        "{text}"
    );

    world.set_phase(Phase::DualWrite);
    let (status, body) = purge(&world, json!({ "dryRun": true }));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("purge_not_allowed")),
        "{body}"
    );
    let not_admin = world.send(
        "POST",
        "/admin/migrate/purge-new",
        Some(&service()),
        Some(json!({})),
    );
    assert_eq!(not_admin.status, 403);
}

#[test]
fn an_inventory_from_before_marks_of_equal_keys_cannot_vouch_for_a_purge() {
    let world = rolled_back_world(true);
    let mut taken: Value = world.new_value("__migration/inventory").unwrap();
    taken["marksSame"] = json!(false);
    world.stores.new.insert(
        "__migration/inventory",
        taken.to_string().as_bytes(),
        PutOptions::default(),
    );
    let (status, body) = purge(&world, json!({ "dryRun": true }));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("predates"),
        "{body}"
    );
}

#[test]
fn a_value_the_migration_cannot_account_for_is_kept_and_named() {
    let world = rolled_back_world(true);
    // The other service wrote a customer after the inventory: not a copy of anything.
    let later = json!({ "customerId": "api_later", "name": "after the inventory" });
    world.stores.new.insert(
        "customer_api_later",
        later.to_string().as_bytes(),
        PutOptions::default(),
    );
    // A copy that no longer matches the old store's value.
    let drifted = json!({ "customerId": "cust_000007", "name": "drifted" });
    world.stores.new.insert(
        "customer_cust_000007",
        drifted.to_string().as_bytes(),
        PutOptions::default(),
    );
    let done = run_to_the_end(&world, json!({}));
    assert_eq!(count(&done, "unexplained"), 2, "{done}");
    let named = done["unexplainedKeys"].to_string();
    assert!(
        named.contains("customer_api_later") && named.contains("customer_cust_000007"),
        "{named}"
    );
    assert!(world.stores.new.peek("customer_api_later").is_some());
    assert!(world.stores.new.peek("customer_cust_000007").is_some());
}

#[test]
fn a_key_whose_mark_cannot_be_read_is_kept() {
    let world = rolled_back_world(true);
    world.stores.new.insert(
        "__migration/preexisting/customer_cust_000009",
        b"not a mark",
        PutOptions::default(),
    );
    run_to_the_end(&world, json!({}));
    assert!(world.stores.new.peek("customer_cust_000009").is_some());
}

#[test]
fn writes_only_the_new_store_holds_or_a_pending_repair_stop_the_purge() {
    let world = rolled_back_world(true);
    world.set_phase(Phase::DualWrite);
    for phase in [
        Phase::ReadNew,
        Phase::Backfill,
        Phase::NewPrimary,
        Phase::Backfill,
        Phase::ReadNew,
        Phase::DualWrite,
        Phase::Legacy,
    ] {
        world.set_phase(phase);
    }
    let (status, body) = purge(&world, json!({ "dryRun": true }));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("since phase 4"),
        "{body}"
    );

    let world = rolled_back_world(true);
    world.stores.new.insert(
        "__migration/journal/customer_cust_000003",
        b"{}",
        PutOptions::default(),
    );
    let (status, body) = purge(&world, json!({ "dryRun": true }));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("repair journal"),
        "{body}"
    );
}

#[test]
fn a_purge_is_audited_before_its_first_delete_and_continues_where_it_stopped() {
    let world = rolled_back_world(true);
    let (status, first) = purge(&world, json!({ "restart": true }));
    assert_eq!(status, 200, "{first}");
    let audit = world.send("GET", "/admin/migrate/audit", Some(&admin()), None);
    assert!(
        audit.body.to_string().contains("\"new_store_purge\""),
        "{}",
        audit.body
    );
    let listed = count(&first, "listed");
    let (_, second) = purge(&world, json!({}));
    assert!(
        count(&second, "listed") > listed,
        "the next call goes on from the first: {second}"
    );
}
