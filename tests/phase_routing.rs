//! Where each customer operation lands in each phase (docs/design.md §3), seen in both stores.

mod common;

use common::*;
use customer_kv_migration::phase::Phase;
use serde_json::json;

fn create(world: &World, id: &str, email: &str) {
    let body =
        json!({ "customerId": id, "email": email, "name": "Ada", "extra": { "kept": true } });
    let response = world.send("POST", "/customer", Some(&service()), Some(body));
    assert_eq!(response.status, 201, "{}", response.body);
}

#[test]
fn create_lands_in_the_stores_the_phase_writes() {
    for phase in Phase::ALL {
        let world = World::in_phase(phase);
        create(&world, "c1", "ada@example.com");
        let writes = phase.routing().writes;
        let in_old = writes.contains(&customer_kv_migration::store::StoreName::Old);
        let in_new = writes.contains(&customer_kv_migration::store::StoreName::New);
        for key in ["customer_c1".to_owned(), mapping_key("ada@example.com")] {
            assert_eq!(world.old_has(&key), in_old, "{phase:?} old {key}");
            assert_eq!(
                world.stores.new.peek(&key).is_some(),
                in_new,
                "{phase:?} new {key}"
            );
        }
        let record = world.send("GET", "/customer/c1", Some(&service()), None);
        assert_eq!(record.status, 200, "{phase:?}");
        assert_eq!(record.body["extra"], json!({ "kept": true }));
    }
}

#[test]
fn update_with_email_change_moves_the_mapping_in_every_written_store() {
    for phase in Phase::ALL {
        let mut world = World::in_phase(phase);
        create(&world, "c1", "ada@example.com");
        world.now_ms += 1_000; // KV takes one write a second to one key
        let patched = world.send(
            "PATCH",
            "/customer/c1",
            Some(&service()),
            Some(json!({ "email": "Ada.L@Example.com", "name": "Ada L" })),
        );
        assert_eq!(patched.status, 200, "{phase:?} {}", patched.body);
        for store in phase.routing().writes {
            let kv = world.stores.get(*store);
            assert!(
                kv.peek(&mapping_key("ada@example.com")).is_none(),
                "{phase:?} {store:?} old mapping"
            );
            assert_eq!(
                kv.peek(&mapping_key("ada.l@example.com")).as_deref(),
                Some(&b"c1"[..]),
                "{phase:?} {store:?} new mapping"
            );
        }
        let by_new = world.send(
            "GET",
            "/customer/by-email/ada.l%40example.com",
            Some(&service()),
            None,
        );
        assert_eq!(by_new.body["name"], "Ada L", "{phase:?}");
        let by_old = world.send(
            "GET",
            "/customer/by-email/ada%40example.com",
            Some(&service()),
            None,
        );
        assert_eq!(by_old.status, 404, "{phase:?}");
    }
}

#[test]
fn reads_fall_back_to_the_old_store_only_in_phases_2_to_4() {
    for phase in Phase::ALL {
        let world = World::in_phase(phase);
        let legacy = br#"{"customerId":"legacy1","email":"old@example.com","updatedAt":"2024-01-01T00:00:00Z"}"#;
        world
            .stores
            .old
            .insert("customer_legacy1", legacy, Default::default());
        world.stores.old.insert(
            &mapping_key("old@example.com"),
            b"legacy1",
            Default::default(),
        );
        let by_id = world.send("GET", "/customer/legacy1", Some(&service()), None);
        let by_email = world.send(
            "GET",
            "/customer/by-email/old@example.com",
            Some(&service()),
            None,
        );
        let served = phase
            .routing()
            .reads
            .contains(&customer_kv_migration::store::StoreName::Old);
        assert_eq!(by_id.status, if served { 200 } else { 404 }, "{phase:?}");
        assert_eq!(by_email.status, if served { 200 } else { 404 }, "{phase:?}");
        let recorded = world
            .stores
            .new
            .peek("__migration/fallback/customer_legacy1")
            .is_some();
        assert_eq!(
            recorded,
            phase.falls_back(),
            "{phase:?} fallback hit recorded"
        );
    }
}

#[test]
fn a_delete_never_comes_back_through_a_fallback_read() {
    for phase in Phase::ALL {
        // Created while both stores are written, as if the backfill had copied it.
        let mut world = World::in_phase(Phase::DualWrite);
        create(&world, "c1", "ada@example.com");
        world.set_phase(phase);
        world.now_ms += 1_000; // KV takes one write a second to one key

        let deleted = world.send("DELETE", "/customer/c1", Some(&service()), None);
        assert_eq!(deleted.status, 200, "{phase:?} {}", deleted.body);
        for read_phase in Phase::ALL
            .into_iter()
            .filter(|p| p.number().abs_diff(phase.number()) <= 1)
        {
            // An isolate still on an adjacent phase must not see it either.
            world.set_phase(read_phase);
            let read = world.send("GET", "/customer/c1", Some(&service()), None);
            assert_eq!(
                read.status, 404,
                "deleted in {phase:?}, read in {read_phase:?}"
            );
            assert_eq!(error_code(&read), "customer_not_found");
            world.set_phase(phase);
        }
        let tombstoned = world
            .new_value("customer_c1")
            .is_some_and(|v| v.get("__tombstone").is_some());
        assert_eq!(tombstoned, phase != Phase::Legacy, "{phase:?} tombstone");
        let old_kept = world.old_has("customer_c1");
        assert_eq!(old_kept, phase >= Phase::NewPrimary, "{phase:?} old key");
    }
}

#[test]
fn a_record_can_be_created_again_after_its_delete() {
    let mut world = World::in_phase(Phase::Backfill);
    create(&world, "c1", "ada@example.com");
    world.now_ms += 1_000; // KV takes one write a second to one key
    assert_eq!(
        world
            .send("DELETE", "/customer/c1", Some(&service()), None)
            .status,
        200
    );
    world.now_ms += 1_000; // KV takes one write a second to one key
    create(&world, "c1", "ada@example.com");
    assert_eq!(
        world
            .send("GET", "/customer/c1", Some(&service()), None)
            .status,
        200
    );
}
