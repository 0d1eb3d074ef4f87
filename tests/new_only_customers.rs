//! Customers another service created in the new store before the migration, which the
//! inventory found only there (docs/design.md §16): found in every phase, written where
//! they live in phase 0, never copied into the old store by a reverse sync.

mod common;

use common::*;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::Fault;
use serde_json::{json, Value};

const ID: &str = "from_api";
const EMAIL: &str = "from_api@example.com";

fn inventoried() -> World {
    let world = world_with_a_populated_new_store();
    let (status, body) = inventory(&world, json!({}));
    assert_eq!((status, &body["complete"]), (200, &json!(true)), "{body}");
    world
}

fn get(world: &World, path: &str) -> (u16, Value) {
    let response = world.send("GET", path, Some(&service()), None);
    (response.status, response.body)
}

fn patch(world: &World, body: Value) -> u16 {
    let path = format!("/customer/{ID}");
    let response = world.send("PATCH", &path, Some(&service()), Some(body));
    assert!(response.status < 500, "{}", response.body);
    response.status
}

#[test]
fn is_found_by_id_and_by_email_in_every_phase() {
    let world = inventoried();
    for phase in 0..=5 {
        if phase > 0 {
            world.set_phase(Phase::from_number(phase).unwrap());
        }
        let (status, body) = get(&world, &format!("/customer/{ID}"));
        assert_eq!(status, 200, "phase {phase}: {body}");
        assert_eq!(body["name"], "Made by the customer API");
        let (status, body) = get(&world, &format!("/customer/by-email/{EMAIL}"));
        assert_eq!(status, 200, "phase {phase}, by email: {body}");
        assert_eq!(body["customerId"], ID);
    }
}

#[test]
fn without_an_inventory_phase_0_does_not_serve_what_only_the_new_store_holds() {
    // Unmarked, the value may be one the old store deleted after a rollback.
    let world = world_with_a_populated_new_store();
    assert_eq!(get(&world, &format!("/customer/{ID}")).0, 404);
    world.set_phase(Phase::DualWrite);
    assert_eq!(get(&world, &format!("/customer/{ID}")).0, 404);
}

#[test]
fn phase_0_writes_it_where_it_lives_and_phase_1_to_both_stores() {
    let world = inventoried();
    assert_eq!(patch(&world, json!({ "name": "Renamed in phase 0" })), 200);
    assert!(!world.old_has(&format!("customer_{ID}")));
    assert_eq!(
        world.new_value(&format!("customer_{ID}")).unwrap()["name"],
        "Renamed in phase 0"
    );
    assert_eq!(
        get(&world, &format!("/customer/{ID}")).1["name"],
        "Renamed in phase 0"
    );

    world.set_phase(Phase::DualWrite);
    assert_eq!(patch(&world, json!({ "name": "Renamed in phase 1" })), 200);
    for value in [
        world.old_value(&format!("customer_{ID}")),
        world.new_value(&format!("customer_{ID}")),
    ] {
        assert_eq!(value.unwrap()["name"], "Renamed in phase 1");
    }
    world.set_phase(Phase::ReadNew);
    assert_eq!(
        get(&world, &format!("/customer/{ID}")).1["name"],
        "Renamed in phase 1"
    );
}

#[test]
fn a_delete_in_phase_0_removes_it_and_a_create_again_is_found_in_later_phases() {
    let world = inventoried();
    let path = format!("/customer/{ID}");
    let deleted = world.send("DELETE", &path, Some(&service()), None);
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(get(&world, &path).0, 404);
    assert_eq!(
        world.new_value(&format!("customer_{ID}")),
        None,
        "no tombstone"
    );
    world.set_phase(Phase::ReadNew);
    assert_eq!(get(&world, &path).0, 404, "gone in the phases after too");

    // Created again in phase 0, in the old store: a tombstone left in the new store
    // would hide it from phase 2 on.
    world.set_phase(Phase::Legacy);
    let created = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": ID, "email": "again@example.com", "name": "Again" })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(world.old_has(&format!("customer_{ID}")));
    world.set_phase(Phase::ReadNew);
    assert_eq!(get(&world, &path).1["name"], "Again");
}

#[test]
fn its_email_is_taken_in_phase_0() {
    let world = inventoried();
    let created = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "email": EMAIL, "name": "Someone else" })),
    );
    assert_eq!(created.status, 409, "{}", created.body);
    assert_eq!(error_code(&created), "email_taken");
}

#[test]
fn a_reverse_sync_leaves_it_in_the_new_store_and_phase_0_still_finds_it() {
    let world = inventoried();
    let move_to = |phase: u8| {
        let moved = world.send(
            "POST",
            "/admin/migrate/phase",
            Some(&admin()),
            Some(json!({ "phase": phase })),
        );
        assert_eq!(moved.status, 200, "to {phase}: {}", moved.body);
    };
    for phase in 1..=3 {
        move_to(phase);
    }
    world.run_cron_until_backfill_stops();
    // The customer API's edit of cust_000002 is a conflict an operator settles first.
    let settled = world.send(
        "POST",
        "/admin/migrate/conflicts/settle",
        Some(&admin()),
        Some(json!({ "rule": "keep_new" })),
    );
    assert_eq!(settled.status, 200, "{}", settled.body);
    let verified = world.send(
        "POST",
        "/admin/migrate/verify",
        Some(&admin()),
        Some(json!({ "mode": "full" })),
    );
    assert_eq!(verified.body["clean"], true, "{}", verified.body);
    move_to(4);
    assert_eq!(patch(&world, json!({ "name": "Renamed in phase 4" })), 200);

    for _ in 0..50 {
        let answer = world.send(
            "POST",
            "/admin/migrate/rollback",
            Some(&admin()),
            Some(json!({ "toPhase": 0 })),
        );
        if answer.status == 200 {
            break;
        }
        assert_eq!(
            error_code(&answer),
            "rollback_in_progress",
            "{}",
            answer.body
        );
    }
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(
        status.body["phase"]["current"], 0,
        "{}",
        status.body["phase"]
    );
    assert!(
        !world.old_has(&format!("customer_{ID}")),
        "the reverse sync copied a customer that lives in the new store"
    );
    assert_eq!(
        get(&world, &format!("/customer/{ID}")).1["name"],
        "Renamed in phase 4"
    );
}

#[test]
fn a_repair_in_phase_1_copies_it_from_where_it_lives_instead_of_deleting_it() {
    let world = inventoried();
    world.set_phase(Phase::DualWrite);
    world.stores.old.fail(Fault::Put("customer_".into()));
    assert_eq!(
        patch(&world, json!({ "name": "Renamed in phase 1" })),
        200,
        "the old store lacked it, so its reads still fall through to the new store"
    );
    world.stores.old.heal();
    let repaired = world.send("POST", "/admin/migrate/repair", Some(&admin()), None);
    assert_eq!(repaired.status, 200, "{}", repaired.body);
    for value in [
        world.new_value(&format!("customer_{ID}")),
        world.old_value(&format!("customer_{ID}")),
    ] {
        assert_eq!(value.unwrap()["name"], "Renamed in phase 1");
    }
}

#[test]
fn a_delete_in_phase_0_after_a_rollback_removes_its_copy_from_the_new_store_too() {
    let world = inventoried();
    world.set_phase(Phase::DualWrite);
    assert_eq!(patch(&world, json!({ "name": "In both stores now" })), 200);
    assert!(world.old_has(&format!("customer_{ID}")));
    world.set_phase(Phase::Legacy);
    let path = format!("/customer/{ID}");
    let deleted = world.send("DELETE", &path, Some(&service()), None);
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(
        get(&world, &path).0,
        404,
        "the new store's copy must not answer once the old store lacks it"
    );
    assert_eq!(world.new_value(&format!("customer_{ID}")), None);
}

#[test]
fn a_customer_both_stores_held_deleted_in_phase_0_stays_deleted_in_phase_2() {
    let world = inventoried();
    // cust_000001 is equal in both stores, cust_000002 differs (the inventory's marks).
    for id in ["cust_000001", "cust_000002"] {
        let deleted = world.send("DELETE", &format!("/customer/{id}"), Some(&service()), None);
        assert_eq!(deleted.status, 200, "{}", deleted.body);
    }
    world.set_phase(Phase::DualWrite);
    world.set_phase(Phase::ReadNew);
    for id in ["cust_000001", "cust_000002"] {
        assert_eq!(
            get(&world, &format!("/customer/{id}")).0,
            404,
            "{id} came back"
        );
    }
}

#[test]
fn an_email_it_gave_up_in_phase_0_finds_its_next_holder_in_phase_2() {
    let world = inventoried();
    let path = format!("/customer/{ID}");
    assert_eq!(
        world.send("DELETE", &path, Some(&service()), None).status,
        200
    );
    let created = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "someone_else", "email": EMAIL, "name": "Next" })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    world.set_phase(Phase::DualWrite);
    world.set_phase(Phase::ReadNew);
    let (status, body) = get(&world, &format!("/customer/by-email/{EMAIL}"));
    assert_eq!(
        status, 200,
        "the new store's stale mapping hides it: {body}"
    );
    assert_eq!(body["customerId"], "someone_else");
}

#[test]
fn a_phase_0_write_after_a_repair_copied_it_into_the_old_store_is_not_held_back() {
    let world = inventoried();
    world.set_phase(Phase::DualWrite);
    world.stores.new.fail(Fault::Put("customer_".into()));
    let failed = world.send(
        "PATCH",
        &format!("/customer/{ID}"),
        Some(&service()),
        Some(json!({ "name": "Never acknowledged" })),
    );
    assert_eq!(failed.status, 503, "{}", failed.body);
    world.stores.new.heal();
    let repaired = world.send("POST", "/admin/migrate/repair", Some(&admin()), None);
    assert_eq!(repaired.status, 200, "{}", repaired.body);
    world.set_phase(Phase::Legacy);
    assert_eq!(patch(&world, json!({ "name": "Written in phase 0" })), 200);
    world.set_phase(Phase::DualWrite);
    for _ in 0..10 {
        let batch = world.send(
            "POST",
            "/admin/migrate/backfill",
            Some(&admin()),
            Some(json!({})),
        );
        assert_eq!(batch.status, 200, "{}", batch.body);
        if batch.body["progress"]["complete"] == true {
            break;
        }
    }
    assert_eq!(
        world.new_value(&format!("customer_{ID}")).unwrap()["name"],
        "Written in phase 0",
        "the mark held the newer copy back"
    );
}

#[test]
fn back_in_phase_0_a_write_to_it_in_both_stores_drops_the_new_stores_copy() {
    let world = inventoried();
    world.set_phase(Phase::DualWrite);
    assert_eq!(patch(&world, json!({ "name": "In both stores" })), 200);
    world.set_phase(Phase::Legacy);
    assert_eq!(patch(&world, json!({ "name": "Back in phase 0" })), 200);
    assert_eq!(
        world.new_value(&format!("customer_{ID}")),
        None,
        "a copy that no longer follows the old store would answer once the old store \
         deletes the key"
    );
    assert_eq!(
        get(&world, &format!("/customer/{ID}")).1["name"],
        "Back in phase 0"
    );
}

#[test]
fn a_repair_finishes_a_phase_1_delete_whose_tombstone_failed() {
    let mut world = inventoried();
    world.set_phase(Phase::DualWrite);
    assert_eq!(patch(&world, json!({ "name": "In both stores" })), 200);
    world.stores.new.fail(Fault::Put("customer_".into()));
    let path = format!("/customer/{ID}");
    let failed = world.send("DELETE", &path, Some(&service()), None);
    world.stores.new.heal();
    world.now_ms += 60_000; // past the entry's wait
    let repaired = world.send("POST", "/admin/migrate/repair", Some(&admin()), None);
    assert_eq!(repaired.status, 200, "{}", repaired.body);
    if failed.status == 200 {
        assert_eq!(get(&world, &path).0, 404);
    }
    // The journal says the new store missed the delete: the repair finishes it rather
    // than copying the record back from the store that missed it.
    assert!(
        !world.old_has(&format!("customer_{ID}")),
        "the repair brought the record back ({} on the delete)",
        failed.status
    );
    let tombstone = world.new_value(&format!("customer_{ID}"));
    assert_eq!(
        get(&world, &path).0,
        404,
        "{} {tombstone:?} {}",
        failed.body,
        repaired.body
    );
}
