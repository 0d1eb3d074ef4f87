//! Moving the phase: adjacent moves, gates, forcing with a reason, the audit trail.

mod common;

use common::*;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::Fault;
use serde_json::{json, Value};

fn change(world: &World, body: Value) -> customer_kv_migration::http::ApiResponse {
    world.send("POST", "/admin/migrate/phase", Some(&admin()), Some(body))
}

#[test]
fn adjacent_moves_pass_and_jumps_need_force_with_a_reason() {
    let mut world = World::at_real_time();
    assert_eq!(change(&world, json!({ "phase": 1 })).status, 200);
    world.now_ms += 1; // audit entries of one millisecond have no defined order
    let jump = change(&world, json!({ "phase": 3 }));
    assert_eq!(
        (jump.status, error_code(&jump)),
        (409, "phase_change_refused")
    );
    let no_reason = change(&world, json!({ "phase": 3, "force": true }));
    assert_eq!(
        (no_reason.status, error_code(&no_reason)),
        (400, "reason_required")
    );
    let forced = change(
        &world,
        json!({ "phase": 3, "force": true, "reason": "drill" }),
    );
    assert_eq!(forced.status, 200, "{}", forced.body);
    assert_eq!(forced.body["forced"], true);

    let health = world.send("GET", "/health", None, None);
    assert_eq!(health.body["phase"], 3);
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(status.body["phase"]["current"], 3);
    let history = status.body["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["to"], 3, "newest first");
    assert_eq!(history[0]["who"], "ops-admin");
    assert_eq!(history[0]["reason"], "drill");
    assert_eq!(history[0]["forced"], true);
    assert_eq!(history[1]["from"], 0);
}

#[test]
fn invalid_phase_requests() {
    let world = World::at_real_time();
    for body in [
        json!({}),
        json!({ "phase": 6 }),
        json!({ "phase": "2" }),
        json!({ "phase": 1, "force": "yes" }),
    ] {
        let response = change(&world, body.clone());
        assert_eq!(
            (response.status, error_code(&response)),
            (400, "invalid_body"),
            "{body}"
        );
    }
}

#[test]
fn reads_do_not_move_to_the_new_store_while_the_journal_is_not_empty() {
    let world = World::in_phase(Phase::DualWrite);
    world.stores.new.fail(Fault::Put("customer_".into()));
    let created = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "c1" })),
    );
    // Not acknowledged (isolates in phase 2 read the new store first), but journaled.
    assert_eq!(created.status, 503);
    world.stores.new.heal();
    let refused = change(&world, json!({ "phase": 2 }));
    assert_eq!(refused.status, 409);
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("repair_journal_empty"));
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(status.body["gates"]["forward"]["met"], false);
}

#[test]
fn a_rollback_to_phase_0_marks_the_new_store_stale_until_verified() {
    let world = World::at_real_time();
    assert_eq!(change(&world, json!({ "phase": 1 })).status, 200);
    assert_eq!(change(&world, json!({ "phase": 0 })).status, 200);
    assert_eq!(change(&world, json!({ "phase": 1 })).status, 200);
    let refused = change(&world, json!({ "phase": 2 }));
    assert_eq!(refused.status, 409);
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("new_store_in_sync"));
}

#[test]
fn leaving_the_old_store_behind_needs_force_until_the_backfill_can_attest_it() {
    let world = World::in_phase(Phase::Backfill);
    let refused = change(&world, json!({ "phase": 4 }));
    assert_eq!(refused.status, 409);
    assert_eq!(
        change(
            &world,
            json!({ "phase": 4, "force": true, "reason": "verified by hand" })
        )
        .status,
        200
    );
    // Back to 3 is safe (reads stay on the new store); back to 1 needs the reverse sync.
    assert_eq!(change(&world, json!({ "phase": 3 })).status, 200);
    assert_eq!(change(&world, json!({ "phase": 2 })).status, 200);
    let refused = change(&world, json!({ "phase": 1 }));
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("old_store_in_sync"));
}

#[test]
fn a_phase_change_that_cannot_be_audited_does_not_happen() {
    let world = World::at_real_time();
    world
        .stores
        .new
        .fail(Fault::Put("__migration/audit/".into()));
    assert_eq!(change(&world, json!({ "phase": 1 })).status, 503);
    world.stores.new.heal();
    assert_eq!(world.send("GET", "/health", None, None).body["phase"], 0);
}
