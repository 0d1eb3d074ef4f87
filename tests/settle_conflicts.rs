//! Conflicts the backfill left, settled by an operator's rule (docs/design.md §6,
//! "Settling"): per key or a page at a time, in each customer's object, dry run first,
//! refused where the values changed since the operator looked, audited.

mod common;

use common::*;
use customer_kv_migration::http::ApiResponse;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::PutOptions;
use serde_json::{json, Value};

const PAIRS: usize = 30;

fn put(store: &customer_kv_migration::store::MemoryStore, key: &str, value: &Value) {
    let bytes = match value {
        Value::String(text) => text.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    };
    store.insert(key, &bytes, PutOptions::default());
}

fn key(i: usize) -> String {
    format!("customer_pair_{i:03}")
}

/// Pairs the backfill cannot order (no `updatedAt` in the old store), one whose sides
/// hold different emails, and one mapping naming two customers; backfilled in phase 3 so
/// each has its conflict entry.
fn world_with_conflicts() -> World {
    let world = World::in_phase(Phase::Backfill);
    for i in 0..PAIRS {
        let id = format!("pair_{i:03}");
        let old = json!({ "customerId": id, "email": format!("{id}@example.com"), "name": "old side", "plan": "gold" });
        let new = json!({ "customerId": id, "email": format!("{id}@example.com"), "name": "new side", "updatedAt": "2025-01-01T00:00:00Z" });
        put(&world.stores.old, &key(i), &old);
        put(&world.stores.new, &key(i), &new);
    }
    let moved =
        json!({ "customerId": "pair_000", "email": "moved@example.com", "name": "old side" });
    put(&world.stores.old, &key(0), &moved);
    put(
        &world.stores.old,
        &mapping_key("moved@example.com"),
        &json!("pair_000"),
    );
    put(
        &world.stores.old,
        &mapping_key("shared@example.com"),
        &json!("pair_001"),
    );
    put(
        &world.stores.new,
        &mapping_key("shared@example.com"),
        &json!("pair_002"),
    );
    world.run_cron_until_backfill_stops();
    assert_eq!(
        entries(&world),
        PAIRS + 1,
        "a conflict entry per pair and the mapping"
    );
    world
}

fn entries(world: &World) -> usize {
    let listed = world.send(
        "GET",
        "/admin/migrate/conflicts?limit=100",
        Some(&admin()),
        None,
    );
    listed.body["conflicts"].as_array().unwrap().len()
}

fn settle(world: &World, body: Value) -> ApiResponse {
    world.send(
        "POST",
        "/admin/migrate/conflicts/settle",
        Some(&admin()),
        Some(body),
    )
}

fn stored(store: &customer_kv_migration::store::MemoryStore, key: &str) -> Value {
    serde_json::from_slice(&store.peek(key).unwrap()).unwrap()
}

fn outcome(answer: &ApiResponse, key: &str) -> Value {
    answer.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .cloned()
        .unwrap_or_else(|| panic!("no result for {key}: {}", answer.body))
}

#[test]
fn a_dry_run_says_what_each_rule_would_write_and_writes_nothing() {
    let world = world_with_conflicts();
    let before = (
        world.stores.old.peek(&key(3)),
        world.stores.new.peek(&key(3)),
    );
    for (rule, expected) in [
        (
            "keep_old",
            json!({ "outcome": "would_write", "chose": "old" }),
        ),
        (
            "keep_new",
            json!({ "outcome": "would_write", "chose": "new" }),
        ),
        ("newer", json!({ "outcome": "undecidable" })),
        (
            "merge",
            json!({ "outcome": "would_write", "chose": "merged" }),
        ),
    ] {
        let answer = settle(
            &world,
            json!({ "rule": rule, "keys": [key(3)], "dryRun": true }),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        let result = outcome(&answer, &key(3));
        assert_eq!(result["outcome"], expected["outcome"], "{rule}: {result}");
        if let Some(chose) = expected.get("chose") {
            assert_eq!(&result["chose"], chose, "{rule}");
        } else {
            assert!(
                result["reason"].as_str().unwrap().contains("updatedAt"),
                "{result}"
            );
        }
    }
    assert_eq!(
        (
            world.stores.old.peek(&key(3)),
            world.stores.new.peek(&key(3))
        ),
        before
    );
    assert_eq!(entries(&world), PAIRS + 1);
    let audit = world.send("GET", "/admin/migrate/audit", Some(&admin()), None);
    assert!(
        !audit.body.to_string().contains("conflicts_settled"),
        "a dry run is not audited"
    );
}

#[test]
fn keep_old_makes_both_stores_hold_the_old_value_and_is_audited() {
    let world = world_with_conflicts();
    let answer = settle(&world, json!({ "rule": "keep_old", "keys": [key(3)] }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(outcome(&answer, &key(3))["outcome"], "written");
    assert_eq!(
        world.stores.new.peek(&key(3)),
        world.stores.old.peek(&key(3))
    );
    assert_eq!(stored(&world.stores.new, &key(3))["name"], "old side");
    let read = world.send("GET", "/customer/pair_003", Some(&service()), None);
    assert_eq!(read.body["name"], "old side");
    assert_eq!(entries(&world), PAIRS, "the settled entry is removed");
    let audit = world.send("GET", "/admin/migrate/audit", Some(&admin()), None);
    let text = audit.body.to_string();
    assert!(
        text.contains("conflicts_settled") && text.contains("customer_pair_003 (old)"),
        "{text}"
    );
}

#[test]
fn merge_keeps_every_field_and_stamps_a_later_version() {
    let world = world_with_conflicts();
    let answer = settle(&world, json!({ "rule": "merge", "keys": [key(4)] }));
    assert_eq!(
        outcome(&answer, &key(4))["chose"],
        "merged",
        "{}",
        answer.body
    );
    let merged = stored(&world.stores.new, &key(4));
    assert_eq!(
        (merged["name"].as_str(), merged["plan"].as_str()),
        (Some("new side"), Some("gold"))
    );
    assert_eq!(stored(&world.stores.old, &key(4)), merged);
    assert!(merged["updatedAt"].as_str().is_some());
}

#[test]
fn a_page_at_a_time_settles_every_entry_and_leaves_mappings_to_the_email_audit() {
    let world = world_with_conflicts();
    let mut cursor: Option<String> = None;
    let (mut written, mut undecidable) = (0, 0);
    loop {
        let mut body = json!({ "rule": "keep_new", "limit": 7 });
        if let Some(cursor) = &cursor {
            body["cursor"] = json!(cursor);
        }
        let answer = settle(&world, body);
        assert_eq!(answer.status, 200, "{}", answer.body);
        written += answer.body["counts"]["written"].as_u64().unwrap_or(0);
        undecidable += answer.body["counts"]["undecidable"].as_u64().unwrap_or(0);
        if answer.body["complete"] == true {
            break;
        }
        cursor = answer.body["cursor"].as_str().map(str::to_owned);
    }
    assert_eq!((written, undecidable), (PAIRS as u64, 1));
    assert_eq!(entries(&world), 1, "only the mapping's entry is left");
    for i in 0..PAIRS {
        assert_eq!(
            world.stores.old.peek(&key(i)),
            world.stores.new.peek(&key(i)),
            "{}",
            key(i)
        );
    }
    let mapping = settle(
        &world,
        json!({ "rule": "keep_new", "keys": [mapping_key("shared@example.com")] }),
    );
    let result = outcome(&mapping, &mapping_key("shared@example.com"));
    assert_eq!(result["outcome"], "undecidable");
    assert!(
        result["reason"].as_str().unwrap().contains("email audit"),
        "{result}"
    );
}

#[test]
fn a_settle_given_what_the_operator_saw_refuses_values_that_changed_since() {
    let world = world_with_conflicts();
    let listed = world.send(
        "GET",
        "/admin/migrate/conflicts?limit=100",
        Some(&admin()),
        None,
    );
    let seen = |k: &str| {
        listed.body["conflicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key"] == k)
            .map(|c| c["fingerprint"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let (five, six) = (key(5), key(6));
    let (seen5, seen6) = (seen(&five), seen(&six));
    // A client writes pair_005 after the operator looked.
    let patched = world.send(
        "PATCH",
        "/customer/pair_005",
        Some(&service()),
        Some(json!({ "name": "client" })),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    let answer = settle(
        &world,
        json!({ "rule": "keep_old", "keys": [five, six], "expect": { five.clone(): seen5, six.clone(): seen6 } }),
    );
    assert_eq!(
        outcome(&answer, &five)["outcome"],
        "agreed",
        "the client's write settled it: {}",
        answer.body
    );
    assert_eq!(
        stored(&world.stores.new, &five)["name"],
        "client",
        "the client's write stands"
    );
    assert_eq!(outcome(&answer, &six)["outcome"], "written");

    let stale = settle(
        &world,
        json!({ "rule": "keep_old", "keys": [key(7)], "expect": { key(7): "0".repeat(24) } }),
    );
    assert_eq!(
        outcome(&stale, &key(7))["outcome"],
        "changed",
        "{}",
        stale.body
    );
    assert_eq!(
        stored(&world.stores.new, &key(7))["name"],
        "new side",
        "nothing written"
    );
}

#[test]
fn keeping_a_side_with_another_email_moves_the_email_with_it() {
    let world = world_with_conflicts();
    let answer = settle(&world, json!({ "rule": "keep_old", "keys": [key(0)] }));
    assert_eq!(
        outcome(&answer, &key(0))["outcome"],
        "written",
        "{}",
        answer.body
    );
    let by_new = world.send(
        "GET",
        "/customer/by-email/moved@example.com",
        Some(&service()),
        None,
    );
    assert_eq!(by_new.status, 200, "{}", by_new.body);
    assert_eq!(by_new.body["customerId"], "pair_000");
    let mapping = world.stores.new.peek(&mapping_key("moved@example.com"));
    assert_eq!(mapping.as_deref(), Some(&b"pair_000"[..]));
}

#[test]
fn keys_without_an_entry_and_phases_that_write_one_store_are_refused() {
    let world = world_with_conflicts();
    let answer = settle(
        &world,
        json!({ "rule": "keep_old", "keys": ["customer_nobody"] }),
    );
    assert_eq!(
        outcome(&answer, "customer_nobody")["outcome"],
        "not_a_conflict"
    );
    world.set_phase(Phase::NewPrimary);
    let refused = settle(&world, json!({ "rule": "keep_old", "keys": [key(1)] }));
    assert_eq!(
        (refused.status, error_code(&refused)),
        (409, "settle_not_allowed"),
        "{}",
        refused.body
    );
}

#[test]
fn bad_bodies_and_callers_are_refused() {
    let world = world_with_conflicts();
    let too_many: Vec<String> = (0..101).map(key).collect();
    for body in [
        json!({ "rule": "keep_both" }),
        json!({}),
        json!({ "rule": "keep_old", "keys": [] }),
        json!({ "rule": "keep_old", "keys": too_many }),
        json!({ "rule": "keep_old", "keys": [key(1)], "cursor": "x" }),
        json!({ "rule": "keep_old", "limit": 0 }),
        json!({ "rule": "keep_old", "limit": 101 }),
        json!({ "rule": "keep_old", "surprise": true }),
    ] {
        let answer = settle(&world, body.clone());
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
    }
    let not_admin = world.send(
        "POST",
        "/admin/migrate/conflicts/settle",
        Some(&service()),
        Some(json!({ "rule": "keep_old" })),
    );
    assert_eq!(not_admin.status, 403);
}

/// Puts a pair and its conflict entry, as the backfill would have left them.
fn conflict(world: &World, key: &str, old: Option<Value>, new: Option<Value>) {
    if let Some(old) = old {
        put(&world.stores.old, key, &old);
    }
    if let Some(new) = new {
        put(&world.stores.new, key, &new);
    }
    let entry = json!({ "key": key, "kind": "unordered", "foundAt": world.now_ms });
    put(
        &world.stores.new,
        &format!("__migration/conflict/{key}"),
        &entry,
    );
}

#[test]
fn no_rule_writes_a_deleted_customer_back() {
    let world = world_with_conflicts();
    let tombstone: Value = serde_json::from_slice(
        &customer_kv_migration::domain::Tombstone::bytes("2026-01-01T00:00:00Z"),
    )
    .unwrap();
    let old = json!({ "customerId": "gone", "name": "deleted since" });
    conflict(&world, "customer_gone", Some(old), Some(tombstone));
    for rule in ["keep_old", "keep_new", "newer", "merge"] {
        let answer = settle(&world, json!({ "rule": rule, "keys": ["customer_gone"] }));
        let result = outcome(&answer, "customer_gone");
        assert_eq!(result["outcome"], "undecidable", "{rule}: {result}");
        assert!(
            result["reason"].as_str().unwrap().contains("deleted"),
            "{result}"
        );
    }
    let read = world.send("GET", "/customer/gone", Some(&service()), None);
    assert_eq!(read.status, 404, "{}", read.body);
}

#[test]
fn a_value_naming_an_email_another_customer_holds_is_refused_in_every_phase() {
    let world = world_with_conflicts();
    let taken = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "holder", "email": "taken@example.com" })),
    );
    assert_eq!(taken.status, 201, "{}", taken.body);
    let old = json!({ "customerId": "claimant", "email": "mine@example.com", "name": "old" });
    let new = json!({ "customerId": "claimant", "email": "taken@example.com", "name": "new" });
    conflict(&world, "customer_claimant", Some(old), Some(new));
    for rule in ["keep_new", "merge"] {
        let answer = settle(
            &world,
            json!({ "rule": rule, "keys": ["customer_claimant"] }),
        );
        let result = outcome(&answer, "customer_claimant");
        assert_eq!(
            (result["outcome"].as_str(), result["code"].as_str()),
            (Some("failed"), Some("email_taken")),
            "{rule}: {result}"
        );
    }
    assert_eq!(
        stored(&world.stores.old, "customer_claimant")["email"],
        "mine@example.com"
    );
}

#[test]
fn a_merge_too_large_for_a_record_is_refused() {
    let mut world = world_with_conflicts();
    world.config.max_record_bytes = 400;
    let old = json!({ "customerId": "big", "a": "x".repeat(250) });
    let new =
        json!({ "customerId": "big", "b": "y".repeat(250), "updatedAt": "2025-01-01T00:00:00Z" });
    conflict(&world, "customer_big", Some(old), Some(new));
    let answer = settle(&world, json!({ "rule": "merge", "keys": ["customer_big"] }));
    let result = outcome(&answer, "customer_big");
    assert_eq!(result["code"], "record_too_large", "{result}");
    assert!(
        stored(&world.stores.new, "customer_big").get("a").is_none(),
        "nothing written"
    );
}

#[test]
fn a_dry_run_keeps_every_entry_and_a_real_one_is_audited_before_it_writes() {
    let world = world_with_conflicts();
    let patched = world.send(
        "PATCH",
        "/customer/pair_008",
        Some(&service()),
        Some(json!({ "name": "client" })),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    let dry = settle(
        &world,
        json!({ "rule": "keep_old", "keys": [key(8)], "dryRun": true }),
    );
    assert_eq!(outcome(&dry, &key(8))["outcome"], "agreed");
    assert_eq!(entries(&world), PAIRS + 1, "a dry run removes no entry");

    let repeated = settle(
        &world,
        json!({ "rule": "keep_old", "keys": [key(9), key(9)] }),
    );
    assert_eq!(repeated.status, 400, "{}", repeated.body);

    let odd = "customer_ann@example.com";
    let old = json!({ "customerId": "ann@example.com", "name": "old" });
    let new = json!({ "customerId": "ann@example.com", "name": "new", "updatedAt": "2025-01-01T00:00:00Z" });
    conflict(&world, odd, Some(old), Some(new));
    let answer = settle(&world, json!({ "rule": "keep_old", "keys": [odd, key(9)] }));
    assert_eq!(
        outcome(&answer, odd)["outcome"],
        "written",
        "{}",
        answer.body
    );
    let audit = world.send("GET", "/admin/migrate/audit", Some(&admin()), None);
    let text = audit.body.to_string();
    assert!(
        text.contains("\"conflicts_settle\"") && text.contains("\"conflicts_settled\""),
        "{text}"
    );
    assert!(
        !text.contains("ann@example.com"),
        "a legacy id that is an address stays out of the audit: {text}"
    );
    assert!(text.contains("customer_#"), "{text}");
}

#[test]
fn while_a_reverse_sync_is_due_nothing_is_settled() {
    let world = world_with_conflicts();
    world.set_phase(Phase::NewPrimary);
    world.set_phase(Phase::Backfill);
    let refused = settle(&world, json!({ "rule": "keep_old", "keys": [key(1)] }));
    assert_eq!(
        (refused.status, error_code(&refused)),
        (409, "settle_not_allowed"),
        "{}",
        refused.body
    );
}
