//! `POST /admin/migrate/rollback {"dryRun": true}`: the plan a rollback would follow,
//! from the coordinator's record, with nothing moved, synced or audited.

mod common;

use common::*;
use customer_kv_migration::phase::Phase;
use serde_json::{json, Value};

fn rollback(world: &World, body: Value) -> customer_kv_migration::http::ApiResponse {
    world.send(
        "POST",
        "/admin/migrate/rollback",
        Some(&admin()),
        Some(body),
    )
}

fn audit_size(world: &World) -> usize {
    let audit = world.send("GET", "/admin/migrate/audit", Some(&admin()), None);
    audit.body["entries"].as_array().unwrap().len()
}

fn phase(world: &World) -> u64 {
    world.send("GET", "/health", None, None).body["phase"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_dry_run_lists_the_walk_and_changes_nothing() {
    let world = World::at_real_time();
    seed_legacy(&world, 20);
    for to in 1..=3 {
        let moved = world.send(
            "POST",
            "/admin/migrate/phase",
            Some(&admin()),
            Some(json!({ "phase": to })),
        );
        assert_eq!(moved.status, 200, "{}", moved.body);
    }
    let audited = audit_size(&world);
    let plan = rollback(&world, json!({ "toPhase": 0, "dryRun": true }));
    assert_eq!(plan.status, 200, "{}", plan.body);
    assert_eq!(plan.body["dryRun"], true);
    assert_eq!(
        (plan.body["from"].clone(), plan.body["to"].clone()),
        (json!(3), json!(0))
    );
    assert_eq!(plan.body["allowed"], true);
    assert_eq!(
        plan.body["steps"],
        json!([{"step": "move", "to": 2}, {"step": "move", "to": 1}, {"step": "move", "to": 0}])
    );
    assert_eq!(phase(&world), 3);
    assert_eq!(audit_size(&world), audited, "a dry run is not audited");

    // From phase 5 the walk jumps into phase 2 and syncs back before reads return.
    world.set_phase(Phase::Complete);
    let audited = audit_size(&world);
    let plan = rollback(&world, json!({ "toPhase": 0, "dryRun": true }));
    assert_eq!(plan.status, 200, "{}", plan.body);
    let steps = plan.body["steps"].as_array().unwrap().clone();
    assert_eq!(
        steps.first(),
        Some(&json!({"step": "move", "to": 2})),
        "{steps:?}"
    );
    assert!(steps.contains(&json!({"step": "sync"})), "{steps:?}");
    assert_eq!(
        steps.last(),
        Some(&json!({"step": "move", "to": 0})),
        "{steps:?}"
    );
    assert_eq!(phase(&world), 5);
    assert_eq!(audit_size(&world), audited);

    // Forced, it is one move past the gates it names.
    let forced = rollback(
        &world,
        json!({ "toPhase": 1, "dryRun": true, "force": true, "reason": "drill" }),
    );
    assert_eq!(forced.status, 200, "{}", forced.body);
    assert_eq!(forced.body["forced"], true);
    assert_eq!(forced.body["steps"], json!([{"step": "move", "to": 1}]));
    assert!(!forced.body["unmet"].as_array().unwrap().is_empty());
    assert_eq!(phase(&world), 5);

    // The real call takes the plan's first step.
    let taken = rollback(&world, json!({ "toPhase": 0 }));
    assert_eq!(
        taken.body["rollback"]["steps"][0]["to"], 2,
        "{}",
        taken.body
    );
}

#[test]
fn a_dry_run_upwards_is_refused_as_the_rollback_is() {
    let world = World::at_real_time();
    let refused = rollback(&world, json!({ "toPhase": 2, "dryRun": true }));
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["error"]["code"], "invalid_rollback");
    let wrong = rollback(&world, json!({ "toPhase": 0, "dryRun": "yes" }));
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.body["error"]["code"], "invalid_body");
}
