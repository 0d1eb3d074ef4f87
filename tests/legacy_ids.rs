//! Legacy customers whose ids are outside the new ids' alphabet (docs/design.md §2,
//! "Customer ids"): an address, a space and a slash, another script, a route's word.
//! They migrate like any other key and stay reachable through the API, percent-encoded
//! in the path, by their own tokens and by email; new customers still get the alphabet.

mod common;

use common::*;
use customer_kv_migration::phase::Phase;
use serde_json::json;

/// (id, the path segment that reaches it)
const ODD_IDS: [(&str, &str); 4] = [
    ("ann@example.com", "ann%40example.com"),
    ("a/b c", "a%2Fb%20c"),
    ("josé_ñ", "jos%C3%A9_%C3%B1"),
    ("me", "%6De"),
];

fn email_of(i: usize) -> String {
    format!("odd{i}@legacy.example.com")
}

fn world_with_odd_legacy_ids(phase: Phase) -> World {
    let world = World::in_phase(phase);
    for (i, (id, _)) in ODD_IDS.iter().enumerate() {
        let record = json!({
            "customerId": id, "email": email_of(i), "name": format!("Odd {i}"),
            "updatedAt": "2024-01-01T00:00:00Z",
        });
        world.stores.old.insert(
            &format!("customer_{id}"),
            record.to_string().as_bytes(),
            Default::default(),
        );
        world.stores.old.insert(
            &mapping_key(&email_of(i)),
            id.as_bytes(),
            Default::default(),
        );
    }
    world
}

fn assert_each_is_served(world: &World, phase: Phase, name_of: impl Fn(usize) -> String) {
    for (i, (id, segment)) in ODD_IDS.iter().enumerate() {
        let by_id = world.send(
            "GET",
            &format!("/customer/{segment}"),
            Some(&service()),
            None,
        );
        assert_eq!(by_id.status, 200, "{phase:?} {id:?}: {}", by_id.body);
        assert_eq!(by_id.body["customerId"], *id);
        assert_eq!(by_id.body["name"], name_of(i), "{phase:?} {id:?}");
        let own = token("customer", id);
        let me = world.send("GET", "/customer/me", Some(&own), None);
        assert_eq!(me.status, 200, "{phase:?} {id:?}: {}", me.body);
        assert_eq!(me.body["customerId"], *id);
        let owner = world.send("GET", &format!("/customer/{segment}"), Some(&own), None);
        assert_eq!(owner.status, 200, "{phase:?} {id:?}: {}", owner.body);
        let path = format!("/customer/by-email/odd{i}%40legacy.example.com");
        let by_email = world.send("GET", &path, Some(&service()), None);
        assert_eq!(by_email.body["customerId"], *id, "{phase:?}");
    }
}

#[test]
fn odd_legacy_ids_are_read_written_and_deleted_in_every_phase() {
    for phase in Phase::ALL {
        let world = world_with_odd_legacy_ids(Phase::Legacy);
        if phase >= Phase::NewPrimary {
            world.set_phase(Phase::Backfill);
            world.run_cron_until_backfill_stops();
        }
        if phase != Phase::Legacy {
            world.set_phase(phase);
        }
        assert_each_is_served(&world, phase, |i| format!("Odd {i}"));
        for (i, (id, segment)) in ODD_IDS.iter().enumerate() {
            let path = format!("/customer/{segment}");
            let patch = json!({ "name": format!("Renamed {i}") });
            let patched = world.send("PATCH", &path, Some(&service()), Some(patch));
            assert_eq!(patched.status, 200, "{phase:?} {id:?}: {}", patched.body);
        }
        assert_each_is_served(&world, phase, |i| format!("Renamed {i}"));
        let (id, segment) = ODD_IDS[0];
        let path = format!("/customer/{segment}");
        let deleted = world.send("DELETE", &path, Some(&service()), None);
        assert!(deleted.status < 300, "{phase:?}: {}", deleted.body);
        let gone = world.send("GET", &path, Some(&service()), None);
        assert_eq!(
            (gone.status, error_code(&gone)),
            (404, "customer_not_found")
        );
        assert!(
            !gone.body.to_string().contains(id),
            "the error repeats a legacy id, which may be an address: {}",
            gone.body
        );
    }
}

#[test]
fn the_backfill_copies_odd_ids_and_verification_finds_them_equal() {
    let world = world_with_odd_legacy_ids(Phase::Legacy);
    world.set_phase(Phase::Backfill);
    world.run_cron_until_backfill_stops();
    for (id, _) in ODD_IDS {
        let key = format!("customer_{id}");
        assert_eq!(world.new_value(&key), world.old_value(&key), "{id:?}");
        assert!(world.new_value(&key).is_some(), "{id:?} not copied");
    }
    let verified = world.send(
        "POST",
        "/admin/migrate/verify",
        Some(&admin()),
        Some(json!({ "mode": "full" })),
    );
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert_eq!(verified.body["clean"], true, "{}", verified.body);
}

#[test]
fn new_customers_still_get_the_alphabet() {
    let world = World::in_phase(Phase::Backfill);
    for id in ["ann@example.com", "a b", "josé", "me"] {
        let created = world.send(
            "POST",
            "/customer",
            Some(&service()),
            Some(json!({ "customerId": id, "email": "new@example.com" })),
        );
        assert_eq!(created.status, 400, "{id:?}: {}", created.body);
    }
}

#[test]
fn ids_that_cannot_be_a_key_are_refused_with_a_clear_error() {
    let world = World::in_phase(Phase::Legacy);
    let too_long = "a".repeat(471);
    for segment in [too_long.as_str(), "a%0Ab", "%7F"] {
        let response = world.send(
            "GET",
            &format!("/customer/{segment}"),
            Some(&service()),
            None,
        );
        assert_eq!(
            (response.status, error_code(&response)),
            (400, "invalid_customer_id"),
            "{segment:?}: {}",
            response.body
        );
    }
    let control = token("customer", "a\nb");
    let refused = world.send("GET", "/customer/me", Some(&control), None);
    assert_eq!(refused.status, 401, "{}", refused.body);
}
