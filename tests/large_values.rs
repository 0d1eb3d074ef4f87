//! Legacy values the API did not write may be large. KV refuses a bulk read whose values
//! add up to more than 25 MB (the in-memory store refuses it too), so every bulk reader
//! goes through `store::read_many`, which splits such a read (docs/design.md §2, "Record
//! size"): one large value never stops the backfill, the verification, the email audit,
//! the settle checks or an export.

mod common;

use common::*;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::{read_many, KvStore, MemoryStore, PutOptions};
use serde_json::{json, Value};

const BIG: usize = 13 * 1024 * 1024;

fn big_record(id: &str, email: &str) -> Vec<u8> {
    json!({
        "customerId": id,
        "email": email,
        "updatedAt": "2024-01-01T00:00:00Z",
        "attachment": "z".repeat(BIG),
    })
    .to_string()
    .into_bytes()
}

/// 150 ordinary legacy customers and two of 13 MiB each that sort into the first chunk.
fn world_with_large_legacy_values() -> World {
    let world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 150);
    for (id, email) in [
        ("big_a", "a@big.example.com"),
        ("big_b", "b@big.example.com"),
    ] {
        world.stores.old.insert(
            &format!("customer_{id}"),
            &big_record(id, email),
            PutOptions::default(),
        );
        world
            .stores
            .old
            .insert(&mapping_key(email), id.as_bytes(), PutOptions::default());
    }
    world
}

fn admin_post(world: &World, path: &str, body: Value) -> Value {
    let response = world.send("POST", path, Some(&admin()), Some(body));
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    response.body
}

#[test]
fn a_bulk_read_over_25_mb_is_split_and_keeps_the_order() {
    let store = MemoryStore::new();
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let size = if i == 3 || i == 7 { BIG } else { 10 };
        store.insert(key, &vec![b'0' + i as u8; size], PutOptions::default());
    }
    assert!(
        futures::executor::block_on(store.get_many(&keys)).is_err_and(|e| e.too_large),
        "the store refuses the whole read, as KV does"
    );
    store.reset_counts();
    let values = futures::executor::block_on(read_many(&store, &keys)).unwrap();
    for (i, value) in values.iter().enumerate() {
        let bytes = &value.as_ref().unwrap().bytes;
        assert_eq!(bytes[0], b'0' + i as u8, "value {i} in its place");
    }
    // The whole read, then its halves: each fits.
    assert_eq!(store.counts().gets, 3);
}

#[test]
fn large_legacy_values_stop_no_reader() {
    let world = world_with_large_legacy_values();
    world.run_cron_until_backfill_stops();
    for id in ["big_a", "big_b"] {
        let key = format!("customer_{id}");
        assert_eq!(
            world.stores.new.peek(&key),
            world.stores.old.peek(&key),
            "{id} copied byte for byte"
        );
    }
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(status.body["backfill"]["stage"], "done", "{}", status.body);

    let verified = admin_post(&world, "/admin/migrate/verify", json!({ "mode": "full" }));
    assert_eq!(
        (verified["complete"].as_bool(), verified["clean"].as_bool()),
        (Some(true), Some(true)),
        "{verified}"
    );
    let audit = admin_post(&world, "/admin/migrate/emails", json!({ "dryRun": true }));
    assert!(audit["recordsScanned"].as_u64() >= Some(152), "{audit}");
    admin_post(&world, "/admin/migrate/repair", json!({}));

    let export = world.send(
        "GET",
        "/admin/migrate/export?store=old",
        Some(&admin()),
        None,
    );
    assert_eq!(export.status, 200, "{}", export.body);

    let read = world.send("GET", "/customer/big_b", Some(&service()), None);
    assert_eq!(read.status, 200);
    let found = world.send(
        "GET",
        "/customer/by-email/b@big.example.com",
        Some(&service()),
        None,
    );
    assert_eq!(found.body["customerId"], "big_b");
}
