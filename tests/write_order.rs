//! The write-order rules under injected store failures: the authoritative write first and
//! alone decides success; a failed second write is journaled; a write that can be neither
//! completed nor journaled is not acknowledged.

mod common;

use common::*;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::{Fault, StoreName};
use serde_json::json;

fn body() -> serde_json::Value {
    json!({ "customerId": "c1", "email": "ada@example.com", "name": "Ada" })
}

fn stores_for(
    world: &World,
    phase: Phase,
) -> (
    &customer_kv_migration::store::MemoryStore,
    Option<&customer_kv_migration::store::MemoryStore>,
) {
    // A create writes the old store first wherever it is written (see
    // `DataPlane::apply_to_absent_key`).
    let mut writes = phase.routing().writes.to_vec();
    writes.sort_by_key(|s| *s != StoreName::Old);
    (
        world.stores.get(writes[0]),
        writes.get(1).map(|s| world.stores.get(*s)),
    )
}

/// A customer both stores already hold, as after the backfill.
fn seed_both(world: &World) {
    for store in [&world.stores.old, &world.stores.new] {
        store.insert(
            "customer_c1",
            body().to_string().as_bytes(),
            Default::default(),
        );
        store.insert(&mapping_key("ada@example.com"), b"c1", Default::default());
    }
}

#[test]
fn a_failed_authoritative_write_fails_the_request_and_writes_nothing_else() {
    for phase in Phase::ALL {
        let mut world = World::in_phase(phase);
        let (authoritative, secondary) = stores_for(&world, phase);
        authoritative.fail(Fault::Put("customer_".into()));
        let response = world.send("POST", "/customer", Some(&service()), Some(body()));
        assert_eq!(response.status, 503, "{phase:?}");
        assert_eq!(error_code(&response), "store_unavailable");
        if let Some(secondary) = secondary {
            assert!(
                secondary.peek("customer_c1").is_none(),
                "{phase:?}: second store written after a failed first write"
            );
            // The email's claim wrote its mapping before the record (docs/design.md
            // §12); a mapping whose record does not hold the email counts for nothing.
        }
        authoritative.heal();
        world.now_ms += 1_000; // KV takes one write a second to one key
                               // The retry succeeds: the mapping left behind by the failed attempt is harmless.
        let retry = world.send("POST", "/customer", Some(&service()), Some(body()));
        assert_eq!(retry.status, 201, "{phase:?} retry {}", retry.body);
    }
}

/// In phase 3 no isolate reads the second store (the old one) first, so a failed second
/// write is journaled and the request succeeds. In phases 1 and 2 an isolate in the
/// adjacent phase may read that store first, so the write is journaled but not
/// acknowledged.
#[test]
fn a_failed_second_write_is_journaled_and_acknowledged_only_where_no_isolate_reads_it_first() {
    for phase in [Phase::DualWrite, Phase::ReadNew, Phase::Backfill] {
        let world = World::in_phase(phase);
        seed_both(&world);
        let lagging = phase.routing().writes[1];
        world
            .stores
            .get(lagging)
            .fail(Fault::Put("customer_".into()));
        let response = world.send(
            "PATCH",
            "/customer/c1",
            Some(&service()),
            Some(json!({ "name": "Ada" })),
        );
        let acknowledged = phase == Phase::Backfill;
        assert_eq!(
            response.status,
            if acknowledged { 200 } else { 503 },
            "{phase:?} {}",
            response.body
        );
        let entry = world
            .new_value("__migration/journal/customer_c1")
            .expect("journal entry");
        assert_eq!(entry["lagging"], lagging.as_str(), "{phase:?}");
        // The mapping was not written, so it is not journaled.
        assert!(world
            .stores
            .new
            .peek(&format!(
                "__migration/journal/{}",
                mapping_key("ada@example.com")
            ))
            .is_none());
        // The acknowledged write is what the read path returns.
        let read = world.send("GET", "/customer/c1", Some(&service()), None);
        assert_eq!(read.body["name"], "Ada", "{phase:?}");
        let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
        assert_eq!(status.body["repairJournal"]["count"], 1, "{phase:?}");
    }
}

#[test]
fn a_second_write_that_cannot_be_journaled_is_not_acknowledged() {
    // In phase 1 the second store is the new one, which also holds the journal.
    let world = World::in_phase(Phase::DualWrite);
    world.stores.new.fail(Fault::Put(String::new()));
    let response = world.send("POST", "/customer", Some(&service()), Some(body()));
    assert_eq!(response.status, 503);
    assert!(response.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("repair journal"));
}

#[test]
fn deletes_follow_the_same_order() {
    for phase in [Phase::DualWrite, Phase::ReadNew, Phase::Backfill] {
        let mut world = World::in_phase(phase);
        assert_eq!(
            world
                .send("POST", "/customer", Some(&service()), Some(body()))
                .status,
            201
        );
        world.now_ms += 1_000; // KV takes one write a second to one key
                               // The record is in both stores now, so the delete writes the phase's first store first.
        let authoritative = world.stores.get(phase.routing().writes[0]);
        let fault = if phase.routing().writes[0] == StoreName::New {
            Fault::Put("customer_".into()) // the new store takes a tombstone
        } else {
            Fault::Delete("customer_".into())
        };
        authoritative.fail(fault.clone());
        let refused = world.send("DELETE", "/customer/c1", Some(&service()), None);
        assert_eq!(refused.status, 503, "{phase:?}");
        assert_eq!(
            world
                .send("GET", "/customer/c1", Some(&service()), None)
                .status,
            200,
            "{phase:?}: a failed delete changed nothing"
        );
        authoritative.heal();

        let lagging = phase.routing().writes[1];
        let lagging_fault = if lagging == StoreName::New {
            Fault::Put("customer_".into())
        } else {
            Fault::Delete("customer_".into())
        };
        world.stores.get(lagging).fail(lagging_fault);
        let deleted = world.send("DELETE", "/customer/c1", Some(&service()), None);
        let acknowledged = phase == Phase::Backfill;
        assert_eq!(
            deleted.status,
            if acknowledged { 200 } else { 503 },
            "{phase:?} {}",
            deleted.body
        );
        assert!(
            world
                .stores
                .new
                .peek("__migration/journal/customer_c1")
                .is_some(),
            "{phase:?}"
        );
        world.stores.get(lagging).heal();
        assert_eq!(
            world
                .send("GET", "/customer/c1", Some(&service()), None)
                .status,
            404,
            "{phase:?}"
        );
    }
}

#[test]
fn a_failed_new_store_read_fails_the_request_instead_of_serving_stale_old_data() {
    let world = World::in_phase(Phase::ReadNew);
    world.stores.old.insert(
        "customer_c1",
        br#"{"customerId":"c1","name":"stale"}"#,
        Default::default(),
    );
    world.stores.new.fail(Fault::Get("customer_".into()));
    let response = world.send("GET", "/customer/c1", Some(&service()), None);
    assert_eq!(response.status, 503);
}
