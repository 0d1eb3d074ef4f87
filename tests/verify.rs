//! Verification finds every kind of difference, resumes across budget-bound requests,
//! samples values on request, and opens gate 3→4 only when clean.

mod common;

use common::*;
use customer_kv_migration::migration::checking::verify::{self, Mode};
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::budget::{metered, Budget};
use customer_kv_migration::store::PutOptions;
use serde_json::json;

fn backfilled(n: usize) -> World {
    let world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, n);
    world.run_cron_until_backfill_stops();
    world
}

fn verify_full(world: &World) -> serde_json::Value {
    let response = world.send(
        "POST",
        "/admin/migrate/verify",
        Some(&admin()),
        Some(json!({ "mode": "full" })),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

#[test]
fn a_complete_backfill_verifies_clean() {
    let world = backfilled(300);
    let report = verify_full(&world);
    assert_eq!(report["complete"], true);
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(
        (report["listed"].as_u64(), report["valuesCompared"].as_u64()),
        (Some(600), Some(600))
    );
}

#[test]
fn every_kind_of_difference_is_found() {
    let world = backfilled(50);
    let new = &world.stores.new;
    new.remove("customer_cust_000001");
    new.insert(
        "customer_cust_000002",
        br#"{"customerId":"cust_000002","name":"changed"}"#,
        PutOptions::default(),
    );
    let value = new.peek("customer_cust_000003").unwrap();
    new.insert(
        "customer_cust_000003",
        &value,
        PutOptions {
            expiration: None,
            metadata: Some(json!({ "x": 1 })),
        },
    );
    new.insert(
        "customer_only_new",
        br#"{"customerId":"only_new"}"#,
        PutOptions::default(),
    );
    new.insert(
        "customer_deleted",
        br#"{"__tombstone":{"deletedAt":"2026-01-01T00:00:00Z"}}"#,
        PutOptions::default(),
    );
    let past = world.now_ms / 1000 - 1;
    world.stores.old.insert(
        "customer_expired",
        br#"{"customerId":"expired"}"#,
        PutOptions {
            expiration: Some(past),
            metadata: None,
        },
    );

    let report = verify_full(&world);
    assert_eq!(
        report["missing"],
        json!({ "count": 1, "keys": ["customer_cust_000001"] })
    );
    let mut mismatched: Vec<_> = report["mismatched"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    mismatched.sort_unstable();
    assert_eq!(mismatched, ["customer_cust_000002", "customer_cust_000003"]);
    assert_eq!(
        report["extra"],
        json!({ "count": 1, "keys": ["customer_only_new"] })
    );
    assert_eq!(report["clean"], false);
}

#[test]
fn a_verification_resumes_across_small_budgets_with_the_same_result() {
    let world = backfilled(2_000);
    world.stores.new.remove("email_to_customer_0"); // not a real key: no effect
    world
        .stores
        .new
        .remove(&mapping_key("user7@legacy.example.com"));
    world
        .stores
        .new
        .insert("customer_cust_000300", b"{}", PutOptions::default());
    let one_shot = {
        let budget = Budget::new(1_000);
        block_on(verify::run(
            &metered(&world.stores, &budget),
            &budget,
            Mode::Full,
            1,
            true,
            world.now_ms,
        ))
        .unwrap()
    };
    assert!(one_shot.complete());
    let mut requests = 0;
    let resumed = loop {
        requests += 1;
        let budget = Budget::new(30);
        let v = block_on(verify::run(
            &metered(&world.stores, &budget),
            &budget,
            Mode::Full,
            1,
            requests == 1,
            world.now_ms,
        ))
        .unwrap();
        if v.complete() {
            break v;
        }
        assert!(requests < 200, "no progress");
    };
    assert!(
        requests > 3,
        "the small budget should need several requests, took {requests}"
    );
    assert_eq!(
        (
            resumed.listed,
            resumed.missing,
            resumed.mismatched,
            resumed.extra
        ),
        (
            one_shot.listed,
            one_shot.missing,
            one_shot.mismatched,
            one_shot.extra
        )
    );
    assert_eq!((resumed.missing, resumed.mismatched), (1, 1));
}

#[test]
fn a_sample_compares_fewer_values_but_lists_every_key() {
    let world = backfilled(500);
    world.stores.new.remove("customer_cust_000010");
    let response = world.send(
        "POST",
        "/admin/migrate/verify",
        Some(&admin()),
        Some(json!({ "mode": "sample", "sample": 100 })),
    );
    let report = response.body;
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["listed"], 1000);
    let compared = report["valuesCompared"].as_u64().unwrap();
    assert!((40..=200).contains(&compared), "compared {compared}");
    assert_eq!(report["missing"]["count"], 1);
}

#[test]
fn gate_3_to_4_opens_after_a_finished_backfill_and_a_clean_full_verification() {
    let world = backfilled(100);
    let refused = world.send(
        "POST",
        "/admin/migrate/phase",
        Some(&admin()),
        Some(json!({ "phase": 4 })),
    );
    assert_eq!(refused.status, 409);
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("verification_clean") && !message.contains("backfill_complete"),
        "{message}"
    );

    world.stores.new.remove("customer_cust_000005");
    assert_eq!(verify_full(&world)["clean"], false);
    let refused = world.send(
        "POST",
        "/admin/migrate/phase",
        Some(&admin()),
        Some(json!({ "phase": 4 })),
    );
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1 missing"));

    let fixed = world.send(
        "POST",
        "/admin/migrate/backfill/reset",
        Some(&admin()),
        None,
    );
    assert_eq!(fixed.status, 200);
    world.run_cron_until_backfill_stops();
    let report = world
        .send(
            "POST",
            "/admin/migrate/verify",
            Some(&admin()),
            Some(json!({ "mode": "full", "restart": true })),
        )
        .body;
    assert_eq!(report["clean"], true, "{report}");
    let status = world
        .send("GET", "/admin/migrate/status", Some(&admin()), None)
        .body;
    assert_eq!(
        status["gates"]["forward"]["met"], true,
        "{}",
        status["gates"]
    );
    let moved = world.send(
        "POST",
        "/admin/migrate/phase",
        Some(&admin()),
        Some(json!({ "phase": 4 })),
    );
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(moved.body["forced"], false);
}

#[test]
fn a_clean_full_verification_clears_the_new_store_divergence() {
    let world = World::at_real_time();
    for phase in [1, 0, 1] {
        world.send(
            "POST",
            "/admin/migrate/phase",
            Some(&admin()),
            Some(json!({ "phase": phase })),
        );
    }
    assert_eq!(
        world
            .send(
                "POST",
                "/admin/migrate/phase",
                Some(&admin()),
                Some(json!({ "phase": 2 }))
            )
            .status,
        409
    );
    assert_eq!(verify_full(&world)["clean"], true);
    let moved = world.send(
        "POST",
        "/admin/migrate/phase",
        Some(&admin()),
        Some(json!({ "phase": 2 })),
    );
    assert_eq!(moved.status, 200, "{}", moved.body);
}
