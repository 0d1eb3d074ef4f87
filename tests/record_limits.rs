//! A record written through the API may not outgrow `MAX_RECORD_BYTES` (docs/design.md
//! §2, "Record size"): one customer must not be able to make a value that no bulk read
//! of 100 keys can carry.

mod common;

use common::*;
use customer_kv_migration::phase::Phase;
use serde_json::json;

#[test]
fn patches_cannot_grow_a_record_past_the_cap() {
    let world = World::in_phase(Phase::ReadNew);
    let created = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "grower", "name": "Grower" })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let owner = token("customer", "grower");
    let chunk = "x".repeat(60 * 1024);
    let mut accepted = 0;
    let refused = loop {
        let field = format!("blob{accepted}");
        let response = world.send(
            "PATCH",
            "/customer/grower",
            Some(&owner),
            Some(json!({ field: chunk })),
        );
        if response.status != 200 {
            break response;
        }
        accepted += 1;
        assert!(accepted < 10, "the record grew past 600 KiB");
    };
    assert_eq!(
        accepted, 4,
        "four 60 KiB fields fit 256 KiB, a fifth does not"
    );
    assert_eq!(
        (refused.status, error_code(&refused)),
        (413, "record_too_large")
    );
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("262144"), "names the limit: {message}");
    // Nothing of the refused patch was stored, in either store.
    for stored in [
        world.new_value("customer_grower"),
        world.old_value("customer_grower"),
    ] {
        let stored = stored.expect("the record is still there");
        assert!(stored.get("blob3").is_some() && stored.get("blob4").is_none());
    }
    // Shrinking is always allowed.
    let shrink = world.send(
        "PATCH",
        "/customer/grower",
        Some(&owner),
        Some(json!({ "blob0": null, "blob1": null })),
    );
    assert_eq!(shrink.status, 200, "{}", shrink.body);
}

#[test]
fn the_cap_is_configurable_and_applies_to_create_and_ensure() {
    let mut world = World::in_phase(Phase::DualWrite);
    world.config.max_record_bytes = 2_048;
    let big = "y".repeat(3_000);
    let create = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "big", "notes": big })),
    );
    assert_eq!(
        (create.status, error_code(&create)),
        (413, "record_too_large")
    );
    let ensure = world.send(
        "POST",
        "/customer/ensure",
        Some(&service()),
        Some(json!({ "email": "big@example.com", "notes": big })),
    );
    assert_eq!(
        (ensure.status, error_code(&ensure)),
        (413, "record_too_large")
    );
    // Refused before the email was claimed: a smaller ensure of the same email works.
    let small = world.send(
        "POST",
        "/customer/ensure",
        Some(&service()),
        Some(json!({ "email": "big@example.com" })),
    );
    assert_eq!(small.status, 201, "{}", small.body);
    assert!(!world.old_has("customer_big"));
}

#[test]
fn the_cap_setting_is_checked() {
    use customer_kv_migration::app::Config;
    let env = |cap: &'static str| {
        move |name: &str| match name {
            "JWT_SECRET" => Some("s".to_owned()),
            "MAX_RECORD_BYTES" => Some(cap.to_owned()),
            _ => None,
        }
    };
    assert_eq!(
        Config::from_env(env("100000")).unwrap().max_record_bytes,
        100_000
    );
    for bad in ["0", "1023", "26214401", "lots"] {
        let err = Config::from_env(env(bad)).unwrap_err();
        assert!(err.contains("MAX_RECORD_BYTES"), "{bad}: {err}");
    }
    let default = Config::from_env(|n| (n == "JWT_SECRET").then(|| "s".to_owned())).unwrap();
    assert_eq!(default.max_record_bytes, 256 * 1024);
}
