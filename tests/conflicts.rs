//! Every conflict the backfill leaves is listed, not only the report's samples, with both
//! stores' values side by side (docs/design.md §6, "Conflicts"): keys whose versions
//! cannot be ordered, mappings naming two customers, and customers the new store held
//! before the migration (§16). A conflict written through the API shows as settled.

mod common;

use std::collections::BTreeMap;

use common::*;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::PutOptions;
use serde_json::{json, Value};

const UNORDERED: usize = 130;

fn put(store: &customer_kv_migration::store::MemoryStore, key: &str, value: &Value) {
    let bytes = match value {
        Value::String(text) => text.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    };
    store.insert(key, &bytes, PutOptions::default());
}

/// Old and new stores that disagree where versions cannot decide: records without
/// `updatedAt` on one side, and one mapping naming two customers.
fn world_with_conflicts() -> World {
    let world = World::in_phase(Phase::Legacy);
    seed_legacy(&world, 10);
    for i in 0..UNORDERED {
        let id = format!("unordered_{i:03}");
        let key = format!("customer_{id}");
        put(
            &world.stores.old,
            &key,
            &json!({ "customerId": id, "name": "old side" }),
        );
        put(
            &world.stores.new,
            &key,
            &json!({ "customerId": id, "name": "new side", "updatedAt": "2025-01-01T00:00:00Z" }),
        );
    }
    let mapping = mapping_key("shared@example.com");
    put(&world.stores.old, &mapping, &json!("cust_000001"));
    put(&world.stores.new, &mapping, &json!("cust_000002"));
    world
}

fn all_conflicts(world: &World, limit: u32) -> (Vec<Value>, usize) {
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/admin/migrate/conflicts?limit={limit}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", urlencoding(cursor)));
        }
        let page = world.send("GET", &path, Some(&admin()), None);
        assert_eq!(page.status, 200, "{}", page.body);
        pages += 1;
        found.extend(page.body["conflicts"].as_array().unwrap().iter().cloned());
        if page.body["complete"] == true {
            assert!(page.body.get("cursor").is_none());
            return (found, pages);
        }
        cursor = Some(page.body["cursor"].as_str().unwrap().to_owned());
    }
}

fn urlencoding(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn every_conflict_is_listed_with_both_values_a_page_at_a_time() {
    let world = world_with_conflicts();
    world.set_phase(Phase::Backfill);
    world.run_cron_until_backfill_stops();
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    let reported = status.body["backfill"]["counts"]["conflicts"].as_u64();
    let (found, pages) = all_conflicts(&world, 40);
    assert_eq!(found.len(), UNORDERED + 1, "listed: {found:?}");
    assert_eq!(pages, 4);
    assert_eq!(
        reported,
        Some(UNORDERED as u64 + 1),
        "the report counts what is listed: {}",
        status.body["backfill"]
    );
    let by_key: BTreeMap<&str, &Value> = found
        .iter()
        .map(|c| (c["key"].as_str().unwrap(), c))
        .collect();
    let record = by_key["customer_unordered_007"];
    assert_eq!(record["kind"], "unordered");
    assert_eq!(record["settled"], false);
    assert_eq!(record["old"]["value"]["name"], "old side");
    assert_eq!(record["new"]["value"]["name"], "new side");
    let mapping = by_key[mapping_key("shared@example.com").as_str()];
    assert_eq!(mapping["old"]["value"], "cust_000001");
    assert_eq!(mapping["new"]["value"], "cust_000002");
    // Neither side was overwritten.
    assert_eq!(
        world.new_value("customer_unordered_007").unwrap()["name"],
        "new side"
    );
}

#[test]
fn a_conflict_written_through_the_api_shows_as_settled_and_is_pruned() {
    let world = world_with_conflicts();
    world.set_phase(Phase::Backfill);
    world.run_cron_until_backfill_stops();
    let patched = world.send(
        "PATCH",
        "/customer/unordered_007",
        Some(&service()),
        Some(json!({ "name": "decided" })),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    let (found, _) = all_conflicts(&world, 100);
    let settled: Vec<&str> = found
        .iter()
        .filter(|c| c["settled"] == true)
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert_eq!(settled, ["customer_unordered_007"]);

    let mut removed = 0;
    let mut cursor = json!(null);
    loop {
        let pruned = world.send(
            "POST",
            "/admin/migrate/conflicts/prune",
            Some(&admin()),
            Some(json!({ "cursor": cursor })),
        );
        assert_eq!(pruned.status, 200, "{}", pruned.body);
        removed += pruned.body["removed"].as_u64().unwrap();
        if pruned.body["complete"] == true {
            break;
        }
        cursor = pruned.body["cursor"].clone();
    }
    assert_eq!(removed, 1);
    let (left, _) = all_conflicts(&world, 100);
    assert_eq!(left.len(), UNORDERED, "only the settled entry is gone");
    assert!(left.iter().all(|c| c["settled"] == false));
    let audit = world.send("GET", "/admin/migrate/audit", Some(&admin()), None);
    let actions: Vec<&Value> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["action"])
        .collect();
    assert!(actions.contains(&&json!("conflicts_pruned")), "{actions:?}");
}

#[test]
fn a_customer_the_new_store_held_before_is_listed_as_preexisting() {
    let world = World::in_phase(Phase::Legacy);
    seed_legacy(&world, 3);
    put(
        &world.stores.new,
        "customer_cust_000002",
        &json!({ "customerId": "cust_000002", "name": "Edited in the customer API",
                 "updatedAt": "2023-01-01T00:00:00Z" }),
    );
    let inventory = world.send(
        "POST",
        "/admin/migrate/inventory",
        Some(&admin()),
        Some(json!({})),
    );
    assert_eq!(inventory.status, 200, "{}", inventory.body);
    world.set_phase(Phase::Backfill);
    world.run_cron_until_backfill_stops();
    let (found, _) = all_conflicts(&world, 100);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["key"], "customer_cust_000002");
    assert_eq!(found[0]["kind"], "preexisting");
    assert_eq!(
        found[0]["new"]["value"]["name"],
        "Edited in the customer API"
    );
    assert_eq!(found[0]["old"]["value"]["name"], "User 2");
}

#[test]
fn a_migration_without_conflicts_lists_none_and_bad_limits_are_refused() {
    let world = World::in_phase(Phase::Legacy);
    seed_legacy(&world, 5);
    world.set_phase(Phase::Backfill);
    world.run_cron_until_backfill_stops();
    let (found, pages) = all_conflicts(&world, 100);
    assert!(found.is_empty());
    assert_eq!(pages, 1);
    for limit in ["0", "101", "x"] {
        let path = format!("/admin/migrate/conflicts?limit={limit}");
        let refused = world.send("GET", &path, Some(&admin()), None);
        assert_eq!(
            (refused.status, error_code(&refused)),
            (400, "invalid_query")
        );
    }
    let customer = world.send("GET", "/admin/migrate/conflicts", Some(&service()), None);
    assert_eq!(customer.status, 403, "{}", customer.body);
}
