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

fn run_to_the_end(world: &World, body: Value) -> (u64, u64, usize) {
    let (mut removed, mut kept, mut calls) = (0, 0, 0);
    let mut cursor: Option<String> = None;
    loop {
        let mut body = body.clone();
        body["cursor"] = json!(cursor);
        let (status, answer) = purge(world, body);
        assert_eq!(status, 200, "{answer}");
        calls += 1;
        removed += answer["removed"].as_u64().unwrap();
        kept += answer["kept"].as_u64().unwrap();
        if answer["complete"] == true {
            assert!(answer.get("cursor").is_none());
            return (removed, kept, calls);
        }
        cursor = answer["cursor"].as_str().map(str::to_owned);
    }
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

    let (would_remove, would_keep, _) = run_to_the_end(&world, json!({ "dryRun": true }));
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
    let (removed, kept, _) = run_to_the_end(&world, json!({}));
    assert_eq!((removed, kept), (would_remove, would_keep));
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
        audit.body.to_string().contains("purge complete"),
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
    let (status, body) = purge(&world, json!({ "cursor": "9:x" }));
    assert_eq!(status, 400, "{body}");
    let (status, body) = purge(&world, json!({ "surprise": 1 }));
    assert_eq!(status, 400, "{body}");

    let reason = "CUSTOMER_KV was created for this migration and held nothing";
    let (removed, kept, _) = run_to_the_end(&world, json!({ "force": true, "reason": reason }));
    assert_eq!(kept, 0);
    assert!(removed > 80);
    assert!(customer_keys(&world).is_empty());
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
