//! The backfill: copy rules, the per-run budget, resumption after a cut at any point, and
//! a concurrent client writing while a copy is in flight.

mod common;

use std::cell::{Cell, RefCell};

use common::*;
use customer_kv_migration::migration::copying::backfill::{self, RunOptions};
use customer_kv_migration::migration::copying::copy::Direction;
use customer_kv_migration::migration::keys;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::budget::{metered, Budget, PLATFORM_OPERATION_CAP};
use customer_kv_migration::store::PutOptions;
use serde_json::{json, Value};

/// Every live key of the old store's two families is in the new store, identical.
fn assert_new_mirrors_old(world: &World) {
    for key in world.stores.old.keys() {
        if !(key.starts_with("customer_") || key.starts_with("email_to_customer_")) {
            continue;
        }
        assert_eq!(
            world.stores.new.peek(&key),
            world.stores.old.peek(&key),
            "{key}"
        );
    }
}

#[test]
fn ten_thousand_keys_migrate_within_the_budget_of_every_run() {
    let mut world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 5_000); // 5,000 records + 5,000 mappings
    let mut runs = Vec::new();
    for _ in 0..100 {
        let report = world.run_cron();
        assert!(report.operations <= PLATFORM_OPERATION_CAP, "{report:?}");
        let Some(run) = report.backfill else { break };
        runs.push((run.counts.copied, report.operations));
        world.now_ms += 60_000;
    }
    assert_new_mirrors_old(&world);
    let checkpoint = block_on(backfill::load_checkpoint(&world.stores.new)).unwrap();
    assert!(checkpoint.complete());
    assert_eq!(
        (checkpoint.total, checkpoint.counts.copied),
        (10_000, 10_000)
    );
    let copying: Vec<_> = runs.iter().filter(|(copied, _)| *copied > 0).collect();
    let full_runs = &copying[..copying.len() - 1]; // the last one copies what is left
                                                   // Nine whole chunks of 100 and a last one sized to what the budget still affords.
    assert!(
        full_runs.iter().all(|(copied, _)| *copied >= 920),
        "{runs:?}"
    );
    let ops: u32 = runs.iter().map(|(_, ops)| ops).sum();
    let per_record = f64::from(ops) / 10_000.0;
    println!(
        "runs {}, copied per full run {:?}, KV operations per copied record {per_record:.3}",
        runs.len(),
        full_runs.first()
    );
    assert!(per_record <= 1.1, "{per_record}");
}

#[test]
fn copies_keep_bytes_metadata_and_expiration_and_skip_what_they_must() {
    let world = World::in_phase(Phase::Backfill);
    let future = world.now_ms / 1000 + 86_400;
    let past = world.now_ms / 1000 - 10;
    let old = &world.stores.old;
    old.insert(
        "customer_ttl",
        br#"{"customerId":"ttl"}"#,
        PutOptions {
            expiration: Some(future),
            metadata: Some(json!({"v":1})),
        },
    );
    old.insert(
        "customer_expired",
        br#"{"customerId":"expired"}"#,
        PutOptions {
            expiration: Some(past),
            metadata: None,
        },
    );
    old.insert(
        "customer_corrupt",
        b"{\"customerId\":\"corrupt\", oops",
        PutOptions::default(),
    );
    old.insert(
        "customer_newer",
        br#"{"customerId":"newer","updatedAt":"2024-01-01T00:00:00Z"}"#,
        PutOptions::default(),
    );
    old.insert(
        "customer_older",
        br#"{"customerId":"older","updatedAt":"2025-01-01T00:00:00Z"}"#,
        PutOptions::default(),
    );
    old.insert(
        "customer_deleted",
        br#"{"customerId":"deleted"}"#,
        PutOptions::default(),
    );
    old.insert(
        "customer_clash",
        br#"{"customerId":"clash","name":"old"}"#,
        PutOptions::default(),
    );
    old.insert("otp_session_1", b"not ours", PutOptions::default());
    let new = &world.stores.new;
    new.insert(
        "customer_newer",
        br#"{"customerId":"newer","updatedAt":"2025-06-01T00:00:00Z"}"#,
        PutOptions::default(),
    );
    new.insert(
        "customer_older",
        br#"{"customerId":"older","updatedAt":"2024-06-01T00:00:00Z"}"#,
        PutOptions::default(),
    );
    new.insert(
        "customer_deleted",
        br#"{"__tombstone":{"deletedAt":"2025-01-01T00:00:00Z"}}"#,
        PutOptions::default(),
    );
    new.insert(
        "customer_clash",
        br#"{"customerId":"clash","name":"new"}"#,
        PutOptions::default(),
    );

    world.run_cron_until_backfill_stops();
    let listed = block_on(customer_kv_migration::store::KvStore::list(
        new,
        "customer_ttl",
        None,
        1,
    ))
    .unwrap();
    assert_eq!(
        (listed.keys[0].expiration, listed.keys[0].metadata.clone()),
        (Some(future), Some(json!({"v":1})))
    );
    assert_eq!(
        new.peek("customer_corrupt"),
        old.peek("customer_corrupt"),
        "corrupt bytes copied as they are"
    );
    assert!(new.peek("customer_expired").is_none());
    assert!(
        new.peek("otp_session_1").is_none(),
        "only the two key families move"
    );
    assert!(String::from_utf8(new.peek("customer_newer").unwrap())
        .unwrap()
        .contains("2025-06-01"));
    assert_eq!(
        new.peek("customer_older"),
        old.peek("customer_older"),
        "an older copy is replaced"
    );
    assert!(String::from_utf8(new.peek("customer_deleted").unwrap())
        .unwrap()
        .contains("__tombstone"));
    assert!(
        String::from_utf8(new.peek("customer_clash").unwrap())
            .unwrap()
            .contains("new"),
        "a conflict is not overwritten"
    );
    let checkpoint = block_on(backfill::load_checkpoint(new)).unwrap();
    assert_eq!(
        (
            checkpoint.counts.corrupt,
            checkpoint.counts.expired,
            checkpoint.counts.conflicts
        ),
        (1, 1, 1)
    );
    assert_eq!(
        checkpoint.counts.conflict_keys,
        vec!["customer_clash".to_owned()]
    );
    assert_eq!(
        checkpoint.counts.corrupt_keys,
        vec!["customer_corrupt".to_owned()],
        "corrupt values are named by key"
    );
}

/// KV operations one backfill run makes over `customers` legacy customers.
fn operations_of_one_run(customers: usize) -> u32 {
    let reference = World::in_phase(Phase::Backfill);
    seed_legacy(&reference, customers);
    let budget = Budget::new(PLATFORM_OPERATION_CAP);
    block_on(backfill::run(
        &metered(&reference.stores, &budget),
        &budget,
        RunOptions::default(),
        reference.now_ms,
    ))
    .unwrap();
    budget.used()
}

#[test]
fn a_run_cut_off_at_any_operation_loses_nothing() {
    let full_run_ops = operations_of_one_run(150);
    for cut in 0..full_run_ops {
        let world = World::in_phase(Phase::Backfill);
        seed_legacy(&world, 150);
        let budget = Budget::new(cut);
        // The run dies when its budget runs out, as an invocation past its limits would.
        let _ = block_on(backfill::run(
            &metered(&world.stores, &budget),
            &budget,
            RunOptions::default(),
            world.now_ms,
        ));
        world.stores.new.remove(keys::lease(Direction::Forward)); // a dead run's lease expires
        while world.run_cron().backfill.is_some() {
            world.stores.new.remove(keys::lease(Direction::Forward));
        }
        assert_new_mirrors_old(&world);
    }
}

#[test]
fn overlapping_runs_do_no_harm() {
    let world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 700);
    // Two runs start from the same checkpoint (the lease was not yet visible to the second).
    let before = world.stores.new.peek(keys::checkpoint(Direction::Forward));
    world.run_cron();
    match before {
        Some(bytes) => world.stores.new.insert(
            keys::checkpoint(Direction::Forward),
            &bytes,
            PutOptions::default(),
        ),
        None => world
            .stores
            .new
            .remove(keys::checkpoint(Direction::Forward)),
    }
    world.stores.new.remove(keys::lease(Direction::Forward));
    world.run_cron_until_backfill_stops();
    assert_new_mirrors_old(&world);
}

#[test]
fn a_second_run_while_the_lease_is_held_does_nothing() {
    let world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 10);
    world.stores.new.insert(
        keys::lease(Direction::Forward),
        json!({ "until": world.now_ms + 30_000 })
            .to_string()
            .as_bytes(),
        PutOptions::default(),
    );
    let report = world.run_cron().backfill.unwrap();
    assert!(!report.ran && report.skipped_because.is_some());
    assert!(world.stores.new.peek("customer_cust_000000").is_none());
}

/// A client updates or deletes a customer at every possible point of a backfill run
/// that is copying it; afterwards the read path returns what the client was told.
#[test]
fn a_write_during_a_copy_is_never_undone() {
    for action in ["update", "delete"] {
        for at in 1..=operations_of_one_run(3) + 1 {
            let world = World::in_phase(Phase::Backfill);
            seed_legacy(&world, 3);
            let counter = Cell::new(0);
            let told = RefCell::new(None::<Value>);
            let hook: RefCell<Option<Box<dyn FnOnce() + '_>>> =
                RefCell::new(Some(Box::new(|| {
                    let response = match action {
                        "update" => world.send(
                            "PATCH",
                            "/customer/cust_000001",
                            Some(&service()),
                            Some(json!({ "name": "changed" })),
                        ),
                        _ => world.send("DELETE", "/customer/cust_000001", Some(&service()), None),
                    };
                    assert_eq!(response.status, 200, "{}", response.body);
                    *told.borrow_mut() = Some(response.body);
                })));
            let hooked = world.hooked(&counter, at, &hook);
            let budget = Budget::new(PLATFORM_OPERATION_CAP);
            block_on(backfill::run(
                &metered(&hooked, &budget),
                &budget,
                RunOptions::default(),
                world.now_ms,
            ))
            .unwrap();
            if told.borrow().is_none() {
                continue; // the run ended before this point
            }
            let read = world.send("GET", "/customer/cust_000001", Some(&service()), None);
            match action {
                "update" => {
                    assert_eq!(read.status, 200, "{action} at op {at}");
                    assert_eq!(
                        read.body["name"], "changed",
                        "{action} at op {at}: the update was undone"
                    );
                    let in_new: Value = serde_json::from_slice(
                        &world.stores.new.peek("customer_cust_000001").unwrap(),
                    )
                    .unwrap();
                    assert_eq!(
                        in_new["name"], "changed",
                        "{action} at op {at}: the new store holds an old copy"
                    );
                }
                _ => assert_eq!(
                    read.status, 404,
                    "{action} at op {at}: the delete was undone"
                ),
            }
        }
    }
}

#[test]
fn the_cron_backfills_only_in_phase_3_and_not_when_paused() {
    for phase in Phase::ALL {
        let world = World::in_phase(phase);
        seed_legacy(&world, 5);
        let report = world.run_cron();
        assert_eq!(
            report.backfill.is_some(),
            phase == Phase::Backfill,
            "{phase:?}"
        );
    }
    let world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 5);
    assert_eq!(
        world
            .send(
                "POST",
                "/admin/migrate/backfill/pause",
                Some(&admin()),
                None
            )
            .status,
        200
    );
    assert!(world.run_cron().backfill.is_none());
    assert_eq!(
        world
            .send(
                "POST",
                "/admin/migrate/backfill/resume",
                Some(&admin()),
                None
            )
            .status,
        200
    );
    assert!(world.run_cron().backfill.is_some());
}

#[test]
fn admin_batches_dry_run_and_phase_limits() {
    let world = World::in_phase(Phase::DualWrite);
    seed_legacy(&world, 50);
    let dry = world.send(
        "POST",
        "/admin/migrate/backfill",
        Some(&admin()),
        Some(json!({ "dryRun": true })),
    );
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(dry.body["report"]["counts"]["copied"], 100);
    assert!(
        world.stores.new.peek("customer_cust_000000").is_none(),
        "a dry run writes nothing"
    );
    assert!(world
        .stores
        .new
        .peek(keys::checkpoint(Direction::Forward))
        .is_none());

    let some = world.send(
        "POST",
        "/admin/migrate/backfill",
        Some(&admin()),
        Some(json!({ "maxRecords": 10 })),
    );
    assert_eq!(
        some.body["report"]["counts"]["scanned"], 10,
        "{}",
        some.body
    );
    let rest = world.send(
        "POST",
        "/admin/migrate/backfill",
        Some(&admin()),
        Some(json!({})),
    );
    assert_eq!(rest.body["progress"]["complete"], true, "{}", rest.body);
    assert_new_mirrors_old(&world);

    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(status.body["backfill"]["percent"], 100.0);
    assert_eq!(status.body["backfill"]["counts"]["copied"], 100);

    for phase in [Phase::Legacy, Phase::NewPrimary, Phase::Complete] {
        world.set_phase(phase);
        let refused = world.send(
            "POST",
            "/admin/migrate/backfill",
            Some(&admin()),
            Some(json!({})),
        );
        assert_eq!(
            (refused.status, error_code(&refused)),
            (409, "backfill_not_allowed"),
            "{phase:?}"
        );
    }
    let bad = world.send(
        "POST",
        "/admin/migrate/backfill",
        Some(&admin()),
        Some(json!({ "maxRecords": 0 })),
    );
    assert_eq!(bad.status, 400);
}

#[test]
fn reset_starts_over_and_skips_what_is_in_sync() {
    let world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 20);
    world.run_cron_until_backfill_stops();
    assert_eq!(
        world
            .send(
                "POST",
                "/admin/migrate/backfill/reset",
                Some(&admin()),
                None
            )
            .status,
        200
    );
    let report = world.run_cron().backfill.unwrap();
    assert_eq!((report.counts.copied, report.counts.skipped), (0, 40));
}

#[test]
fn corrupt_values_are_named_in_the_status_and_again_after_a_reset() {
    let world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 5);
    world
        .stores
        .old
        .insert("customer_broken", b"not json", PutOptions::default());
    let named = |world: &World| {
        let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
        status.body["backfill"]["counts"].clone()
    };
    world.run_cron_until_backfill_stops();
    let counts = named(&world);
    assert_eq!(counts["corrupt"], 1, "{counts}");
    assert_eq!(
        counts["corruptKeys"],
        json!(["customer_broken"]),
        "{counts}"
    );

    let reset = world.send(
        "POST",
        "/admin/migrate/backfill/reset",
        Some(&admin()),
        None,
    );
    assert_eq!(reset.status, 200, "{}", reset.body);
    world.run_cron_until_backfill_stops();
    let counts = named(&world);
    assert_eq!(
        counts["corruptKeys"],
        json!(["customer_broken"]),
        "already copied, still corrupt: {counts}"
    );
}
