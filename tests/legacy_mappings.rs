//! Account pre-hijacking and duplicate accounts through emails (docs/design.md §2,
//! "Legacy mappings"): owners may not change their email, and a legacy customer whose
//! mapping was hashed from an un-normalised email is found before the email is judged
//! free, by ensure, create, an email change and a lookup by email.

mod common;

use common::*;
use customer_kv_migration::domain::EmailHash;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::PutOptions;
use serde_json::json;

const RAW: &str = "  Mixed.Case@Example.COM ";
const LEGACY_ID: &str = "legacy_unnormalised_email";

/// The legacy customer as the old OTP service left it: the record holds the email as
/// typed (trimmed), the mapping is the hash of the untrimmed, mixed-case text.
fn world_with_unnormalised_legacy_mapping(phase: Phase) -> World {
    let world = World::in_phase(phase);
    let record = json!({
        "customerId": LEGACY_ID,
        "email": RAW.trim(),
        "updatedAt": "2024-01-01T00:00:00Z",
    });
    world.stores.old.insert(
        &format!("customer_{LEGACY_ID}"),
        record.to_string().as_bytes(),
        PutOptions::default(),
    );
    let legacy_key = format!(
        "email_to_customer_{}",
        EmailHash::of_normalised(RAW).as_str()
    );
    world
        .stores
        .old
        .insert(&legacy_key, LEGACY_ID.as_bytes(), PutOptions::default());
    world
}

#[test]
fn owners_may_not_change_their_email_and_services_may() {
    let world = World::in_phase(Phase::DualWrite);
    let created = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "victim_to_be", "email": "me@example.com" })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let owner = token("customer", "victim_to_be");
    let refused = world.send(
        "PATCH",
        "/customer/victim_to_be",
        Some(&owner),
        Some(json!({ "email": "ceo@bigcorp.example" })),
    );
    assert_eq!((refused.status, error_code(&refused)), (403, "forbidden"));
    // Nobody claimed the address: its real owner's ensure creates their own account.
    let ensure = world.send(
        "POST",
        "/customer/ensure",
        Some(&service()),
        Some(json!({ "email": "ceo@bigcorp.example" })),
    );
    assert_eq!(ensure.status, 201, "{}", ensure.body);
    assert_ne!(ensure.body["customerId"], "victim_to_be");
    let by_service = world.send(
        "PATCH",
        "/customer/victim_to_be",
        Some(&service()),
        Some(json!({ "email": "verified@example.com" })),
    );
    assert_eq!(by_service.status, 200, "{}", by_service.body);
}

#[test]
fn ensure_finds_the_legacy_customer_instead_of_creating_a_second() {
    for phase in [Phase::Legacy, Phase::ReadNew] {
        let world = world_with_unnormalised_legacy_mapping(phase);
        let ensure = world.send(
            "POST",
            "/customer/ensure",
            Some(&service()),
            Some(json!({ "email": RAW })),
        );
        assert_eq!(ensure.status, 200, "{phase:?}: {}", ensure.body);
        assert_eq!(ensure.body["customerId"], LEGACY_ID);
        let by_email = world.send(
            "GET",
            "/customer/by-email/%20%20Mixed.Case%40Example.COM%20",
            Some(&service()),
            None,
        );
        assert_eq!(by_email.body["customerId"], LEGACY_ID, "{phase:?}");
    }
}

#[test]
fn create_and_email_change_cannot_take_a_legacy_customer_s_email() {
    let world = world_with_unnormalised_legacy_mapping(Phase::DualWrite);
    let create = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "squatter", "email": RAW })),
    );
    assert_eq!((create.status, error_code(&create)), (409, "email_taken"));
    let other = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "other", "email": "other@example.com" })),
    );
    assert_eq!(other.status, 201, "{}", other.body);
    let change = world.send(
        "PATCH",
        "/customer/other",
        Some(&service()),
        Some(json!({ "email": RAW })),
    );
    assert_eq!((change.status, error_code(&change)), (409, "email_taken"));
}

#[test]
fn after_the_email_audit_every_form_of_the_email_finds_the_legacy_customer() {
    let world = world_with_unnormalised_legacy_mapping(Phase::Legacy);
    let audit = world.send(
        "POST",
        "/admin/migrate/emails",
        Some(&admin()),
        Some(json!({ "dryRun": false })),
    );
    assert_eq!(audit.status, 200, "{}", audit.body);
    let ensure = world.send(
        "POST",
        "/customer/ensure",
        Some(&service()),
        Some(json!({ "email": "mixed.case@example.com" })),
    );
    assert_eq!(ensure.status, 200, "{}", ensure.body);
    assert_eq!(ensure.body["customerId"], LEGACY_ID);
}
