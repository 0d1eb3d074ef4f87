//! Rollback: the walk down from phase 5, the reverse sync that must precede reads
//! returning to the old store, writes racing that sync, injected store failures, and
//! the gate 4→5.

mod common;

use std::cell::{Cell, RefCell};

use common::*;
use customer_kv_migration::migration::copying::reverse;
use customer_kv_migration::migration::state::phase_record;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::budget::{metered, Budget, PLATFORM_OPERATION_CAP};
use customer_kv_migration::store::Fault;
use serde_json::{json, Value};

fn move_to(world: &World, phase: u8) -> customer_kv_migration::http::ApiResponse {
    world.send(
        "POST",
        "/admin/migrate/phase",
        Some(&admin()),
        Some(json!({ "phase": phase })),
    )
}

/// Seeds `n` legacy customers and migrates them through the gates to phase 5.
fn migrated_to_phase_5(n: usize) -> World {
    let world = World::at_real_time();
    seed_legacy(&world, n);
    for phase in 1..=3 {
        assert_eq!(move_to(&world, phase).status, 200);
    }
    world.run_cron_until_backfill_stops();
    let verify = world.send(
        "POST",
        "/admin/migrate/verify",
        Some(&admin()),
        Some(json!({ "mode": "full" })),
    );
    assert_eq!(verify.status, 200, "{}", verify.body);
    for phase in 4..=5 {
        let moved = move_to(&world, phase);
        assert_eq!(moved.status, 200, "to {phase}: {}", moved.body);
    }
    world
}

fn rollback(world: &World, to: u8) -> customer_kv_migration::http::ApiResponse {
    world.send(
        "POST",
        "/admin/migrate/rollback",
        Some(&admin()),
        Some(json!({ "toPhase": to })),
    )
}

/// Calls the rollback until it is done, as the command-line client does.
fn roll_back_fully(world: &World, to: u8) -> Vec<Value> {
    let mut answers = Vec::new();
    for _ in 0..100 {
        let answer = rollback(world, to);
        answers.push(answer.body.clone());
        match answer.status {
            200 => return answers,
            409 => assert_eq!(
                error_code(&answer),
                "rollback_in_progress",
                "{}",
                answer.body
            ),
            other => panic!("rollback answered {other}: {}", answer.body),
        }
    }
    panic!("the rollback did not finish: {answers:?}");
}

fn patch(world: &World, id: &str, body: Value) {
    let answer = world.send(
        "PATCH",
        &format!("/customer/{id}"),
        Some(&service()),
        Some(body),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
}

fn read(world: &World, id: &str) -> customer_kv_migration::http::ApiResponse {
    world.send("GET", &format!("/customer/{id}"), Some(&service()), None)
}

fn stored_phase(world: &World) -> phase_record::CurrentPhase {
    block_on(phase_record::load(&world.stores.new, Phase::Legacy)).unwrap()
}

#[test]
fn a_rollback_from_phase_5_to_0_keeps_every_write_made_since_phase_4() {
    let world = migrated_to_phase_5(250);
    // Phase 5 writes reach the new store only.
    patch(
        &world,
        "cust_000001",
        json!({ "name": "renamed in phase 5" }),
    );
    patch(
        &world,
        "cust_000002",
        json!({ "email": "moved@example.com" }),
    );
    let deleted = world.send("DELETE", "/customer/cust_000003", Some(&service()), None);
    assert_eq!(deleted.status, 200);
    let created = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "cust_new", "email": "new@example.com", "name": "New" })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(!world.old_has("customer_cust_new"));

    let answers = roll_back_fully(&world, 0);
    let current = stored_phase(&world);
    assert_eq!(current.phase, Phase::Legacy);
    assert!(
        !current.state.old_store_diverged,
        "the sync vouched for the old store"
    );
    // Reads moved back to the old store (2→1) only after the sync.
    let steps: Vec<String> = answers
        .iter()
        .flat_map(|a| {
            a["rollback"]["steps"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|s| format!("{}{}", s["step"].as_str().unwrap(), s["to"]))
        .collect();
    assert_eq!(
        steps,
        ["move2", "syncnull", "move1", "move0"],
        "{answers:?}"
    );

    // Phase 0 reads the old store alone: everything acknowledged since phase 4 is there.
    assert_eq!(
        read(&world, "cust_000001").body["name"],
        "renamed in phase 5"
    );
    assert_eq!(read(&world, "cust_000003").status, 404);
    assert_eq!(read(&world, "cust_new").body["name"], "New");
    let by_new_email = world.send(
        "GET",
        "/customer/by-email/moved@example.com",
        Some(&service()),
        None,
    );
    assert_eq!(
        by_new_email.body["customerId"], "cust_000002",
        "{}",
        by_new_email.body
    );
    let by_old_email = world.send(
        "GET",
        "/customer/by-email/user2@legacy.example.com",
        Some(&service()),
        None,
    );
    assert_eq!(by_old_email.status, 404);

    let audit = world.send("GET", "/admin/migrate/audit?limit=20", Some(&admin()), None);
    let rollbacks = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "rollback")
        .count();
    assert_eq!(rollbacks, 3, "5→2, 2→1 and 1→0: {}", audit.body);
}

#[test]
fn reads_do_not_return_to_the_old_store_before_the_sync_finishes() {
    let world = migrated_to_phase_5(20);
    patch(&world, "cust_000001", json!({ "name": "after phase 4" }));
    // A sync that cannot write the old store never completes.
    world.stores.old.fail(Fault::Put("customer_".into()));
    for _ in 0..5 {
        let answer = rollback(&world, 1);
        assert_eq!(answer.status, 409, "{}", answer.body);
        assert_eq!(answer.body["rollback"]["phase"], 2);
        world.run_cron();
    }
    let refused = move_to(&world, 1);
    assert_eq!(refused.status, 409);
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("old_store_in_sync"));

    world.stores.old.heal();
    roll_back_fully(&world, 1);
    assert_eq!(stored_phase(&world).phase, Phase::DualWrite);
    assert_eq!(read(&world, "cust_000001").body["name"], "after phase 4");
}

#[test]
fn a_forced_rollback_moves_at_once_is_audited_and_leaves_the_old_store_marked_behind() {
    let world = migrated_to_phase_5(5);
    let refused = world.send(
        "POST",
        "/admin/migrate/rollback",
        Some(&admin()),
        Some(json!({ "toPhase": 0, "force": true })),
    );
    assert_eq!(refused.status, 400);
    assert_eq!(error_code(&refused), "reason_required");
    let forced = world.send(
        "POST",
        "/admin/migrate/rollback",
        Some(&admin()),
        Some(json!({ "toPhase": 0, "force": true, "reason": "new store corrupt" })),
    );
    assert_eq!(forced.status, 200, "{}", forced.body);
    let current = stored_phase(&world);
    assert_eq!(current.phase, Phase::Legacy);
    assert!(current.state.old_store_diverged);
    let audit = world.send("GET", "/admin/migrate/audit", Some(&admin()), None);
    let entries = audit.body["entries"].as_array().unwrap();
    let rollback = entries.iter().find(|e| e["action"] == "rollback").unwrap();
    assert_eq!(rollback["forced"], true);
    assert_eq!(rollback["from"], 5);
    assert_eq!(rollback["to"], 0);
    assert_eq!(rollback["reason"], "new store corrupt");
}

#[test]
fn a_rollback_upwards_is_refused() {
    let world = World::in_phase(Phase::DualWrite);
    let answer = rollback(&world, 3);
    assert_eq!(answer.status, 400);
    assert_eq!(error_code(&answer), "invalid_rollback");
    let garbage = world.send(
        "POST",
        "/admin/migrate/rollback",
        Some(&admin()),
        Some(json!({ "toPhase": "x" })),
    );
    assert_eq!(garbage.status, 400);
    let customer = world.send(
        "POST",
        "/admin/migrate/rollback",
        Some(&service()),
        Some(json!({ "toPhase": 0 })),
    );
    assert_eq!(customer.status, 403);
}

/// Operations of one reverse-sync run over a world of `customers` keys.
fn operations_of_one_sync(customers: usize) -> u32 {
    let world = migrated_to_phase_5(customers);
    patch(&world, "cust_000001", json!({ "name": "x" }));
    assert_eq!(rollback(&world, 2).status, 200);
    world.reset_counts();
    let state = stored_phase(&world).state;
    let budget = Budget::new(PLATFORM_OPERATION_CAP);
    block_on(reverse::advance(
        &metered(&world.stores, &budget),
        NoFanout::None,
        &budget,
        &state,
        0,
        world.now_ms,
    ))
    .unwrap();
    budget.used()
}

#[test]
fn a_write_racing_the_reverse_sync_is_never_undone_in_the_old_store() {
    let runs = operations_of_one_sync(3) + 1;
    for action in ["update", "delete", "email", "recreate"] {
        for at in 1..=runs {
            let mut world = migrated_to_phase_5(3);
            patch(&world, "cust_000001", json!({ "name": "phase 5" }));
            // KV takes one write a second to one key.
            world.now_ms += 1_000;
            if action == "recreate" {
                let deleted = world.send("DELETE", "/customer/cust_000001", Some(&service()), None);
                assert_eq!(deleted.status, 200);
                world.now_ms += 1_000;
            }
            assert_eq!(rollback(&world, 2).status, 200);
            let state = stored_phase(&world).state;
            let counter = Cell::new(0);
            let told = Cell::new(false);
            let hook: RefCell<Option<Box<dyn FnOnce() + '_>>> =
                RefCell::new(Some(Box::new(|| {
                    let answer = match action {
                        "update" => world.send(
                            "PATCH",
                            "/customer/cust_000001",
                            Some(&service()),
                            Some(json!({ "name": "during the sync" })),
                        ),
                        "email" => world.send(
                            "PATCH",
                            "/customer/cust_000001",
                            Some(&service()),
                            Some(json!({ "email": "racer@example.com" })),
                        ),
                        "recreate" => world.send(
                            "POST",
                            "/customer",
                            Some(&service()),
                            Some(json!({
                                "customerId": "cust_000001",
                                "email": "racer@example.com",
                                "name": "reborn"
                            })),
                        ),
                        _ => world.send("DELETE", "/customer/cust_000001", Some(&service()), None),
                    };
                    assert!(answer.status < 300, "{}", answer.body);
                    told.set(true);
                })));
            let hooked = world.hooked(&counter, at, &hook);
            let budget = Budget::new(PLATFORM_OPERATION_CAP);
            block_on(reverse::advance(
                &metered(&hooked, &budget),
                NoFanout::None,
                &budget,
                &state,
                0,
                world.now_ms,
            ))
            .unwrap();
            if !told.get() {
                continue;
            }
            // Whatever the sync still has to do, it finishes; then reads go back to old.
            roll_back_fully(&world, 1);
            let answer = read(&world, "cust_000001");
            match action {
                "update" => assert_eq!(
                    answer.body["name"], "during the sync",
                    "{action} at op {at}"
                ),
                "recreate" => {
                    assert_eq!(answer.body["name"], "reborn", "{action} at op {at}");
                }
                "email" => {
                    assert_eq!(
                        answer.body["email"], "racer@example.com",
                        "{action} at op {at}"
                    );
                    let by_email = world.send(
                        "GET",
                        "/customer/by-email/racer@example.com",
                        Some(&service()),
                        None,
                    );
                    assert_eq!(
                        by_email.status, 200,
                        "{action} at op {at}: {}",
                        by_email.body
                    );
                }
                _ => assert_eq!(
                    answer.status, 404,
                    "{action} at op {at}: the delete was undone"
                ),
            }
        }
    }
}

#[test]
fn gate_4_to_5_waits_out_the_verification_period_without_fallback_hits() {
    let mut world = World::at_real_time();
    world.config.verification_period_ms = 60_000;
    seed_legacy(&world, 3);
    for phase in 1..=3 {
        assert_eq!(move_to(&world, phase).status, 200);
    }
    world.run_cron_until_backfill_stops();
    world.send(
        "POST",
        "/admin/migrate/verify",
        Some(&admin()),
        Some(json!({ "mode": "full" })),
    );
    assert_eq!(move_to(&world, 4).status, 200);

    let early = move_to(&world, 5);
    assert_eq!(early.status, 409);
    let message = early.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("verification_period") && message.contains("60 s"),
        "{message}"
    );

    // A key only the old store holds is read in phase 4: a fallback hit.
    world.stores.old.insert(
        "customer_straggler",
        br#"{"customerId":"straggler","email":"s@example.com","updatedAt":"2024-01-01T00:00:00Z"}"#,
        Default::default(),
    );
    assert_eq!(read(&world, "straggler").status, 200);
    world.now_ms += 61_000;
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(status.body["verificationPeriod"]["leftMs"], 0);
    assert_eq!(
        status.body["verificationPeriod"]["fallbackHits"]["count"],
        1
    );
    let hit = move_to(&world, 5);
    assert_eq!(hit.status, 409);
    let message = hit.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no_fallback_hits") && message.contains("customer_straggler"),
        "{message}"
    );
    assert!(!message.contains("verification_period:"), "{message}");
}
