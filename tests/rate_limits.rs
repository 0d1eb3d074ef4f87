//! KV refuses a second write to one key within a second (429). The worker answers such a
//! refusal with 429 `rate_limited` and `Retry-After`, never a 503, and loses nothing: a
//! refused authoritative write writes nothing else; a refused second write is journaled,
//! and acknowledged only where the phase acknowledges any failed second write.

mod common;

use common::*;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::{Fault, StoreName};
use serde_json::json;

/// A customer both stores already hold, as after the backfill.
fn seed_both(world: &World) {
    let record = json!({ "customerId": "c1", "email": "ada@example.com", "name": "Ada" });
    for store in [&world.stores.old, &world.stores.new] {
        store.insert(
            "customer_c1",
            record.to_string().as_bytes(),
            Default::default(),
        );
        store.insert(&mapping_key("ada@example.com"), b"c1", Default::default());
    }
}

fn rename(world: &World) -> customer_kv_migration::http::ApiResponse {
    world.send(
        "PATCH",
        "/customer/c1",
        Some(&service()),
        Some(json!({ "name": "Grace" })),
    )
}

#[test]
fn a_refused_authoritative_write_answers_429_with_retry_after_and_writes_nothing() {
    for phase in Phase::ALL {
        let world = World::in_phase(phase);
        seed_both(&world);
        let authoritative = world.stores.get(phase.authoritative_store());
        authoritative.fail(Fault::PutRateLimited("customer_".into()));
        let response = rename(&world);
        assert_eq!(
            (response.status, error_code(&response)),
            (429, "rate_limited"),
            "{phase:?}: {}",
            response.body
        );
        let retry_after = response
            .headers
            .iter()
            .find(|(name, _)| *name == "Retry-After")
            .map(|(_, v)| v.as_str());
        assert_eq!(retry_after, Some("1"), "{phase:?}");
        for store in [StoreName::Old, StoreName::New] {
            let value = world.stores.get(store).peek("customer_c1").unwrap();
            assert!(
                String::from_utf8_lossy(&value).contains("Ada"),
                "{phase:?}: the {} store changed after a refused write",
                store.as_str()
            );
        }
    }
}

#[test]
fn a_refused_second_write_is_journaled_and_never_a_503() {
    for phase in Phase::ALL.into_iter().filter(|p| p.writes_both()) {
        let world = World::in_phase(phase);
        seed_both(&world);
        let second = phase.secondary_store().unwrap();
        world
            .stores
            .get(second)
            .fail(Fault::PutRateLimited("customer_".into()));
        let response = rename(&world);
        // Where no adjacent phase reads the second store first (phase 3), the write is
        // acknowledged and repaired later; elsewhere the client is told to retry.
        let expected = if phase.read_first_nearby(second) {
            429
        } else {
            200
        };
        assert_eq!(response.status, expected, "{phase:?}: {}", response.body);
        assert!(
            world
                .stores
                .new
                .peek("__migration/journal/customer_c1")
                .is_some(),
            "{phase:?}: the lagging key is journaled"
        );
    }
}

/// A key read from the old store many times a second (phase 4 does not copy it) records
/// its fallback hit once a minute, not once a read: KV would refuse the rest, and every
/// write is billed.
#[test]
fn a_hot_fallback_key_records_its_hit_once_a_minute() {
    let mut world = World::in_phase(Phase::NewPrimary);
    world.stores.old.insert(
        "customer_hot",
        br#"{"customerId":"hot","name":"Legacy"}"#,
        Default::default(),
    );
    let writes_of_the_entry = |world: &World| {
        world.reset_counts();
        for _ in 0..20 {
            let read = world.send("GET", "/customer/hot", Some(&service()), None);
            assert_eq!(read.status, 200);
        }
        world.stores.new.counts().puts
    };
    assert_eq!(writes_of_the_entry(&world), 1, "the first hit is recorded");
    world.now_ms += 30_000;
    assert_eq!(writes_of_the_entry(&world), 0, "within the minute");
    world.now_ms += 30_000;
    assert_eq!(writes_of_the_entry(&world), 1, "a minute on");
    assert!(world
        .stores
        .new
        .peek("__migration/fallback/customer_hot")
        .is_some());
}
