//! Cohorts (docs/design.md §17): a phase move that reaches a share of the customers, or
//! named ones, first; widened, completed by the move of the phase, or cancelled — each
//! through the gates of the move it makes for the customers it moves, and audited.

mod common;

use common::*;
use customer_kv_migration::migration::state::cohort;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::KvStore;
use serde_json::{json, Value};

fn post(world: &World, path: &str, body: Value) -> (u16, Value) {
    let response = world.send("POST", path, Some(&admin()), Some(body));
    (response.status, response.body)
}

fn open(world: &World, body: Value) -> (u16, Value) {
    post(world, "/admin/migrate/cohort", body)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// The name a customer's GET answers with.
fn name_of(world: &World, id: &str) -> String {
    let response = world.send("GET", &format!("/customer/{id}"), Some(&admin()), None);
    assert_eq!(response.status, 200, "{}", response.body);
    response.body["name"].as_str().unwrap().to_owned()
}

/// `n` customers whose new-store copy says `new` and old-store copy `old`: phase 1 reads
/// the old store alone, phase 2 the new one first, so the answer tells the phase.
fn seed_split(world: &World, n: usize) -> Vec<String> {
    seed_legacy(world, n);
    (0..n)
        .map(|i| {
            let id = format!("cust_{i:06}");
            let record = json!({
                "customerId": id, "email": format!("user{i}@legacy.example.com"),
                "name": "new", "updatedAt": "2024-01-01T00:00:00Z"
            });
            world.stores.new.insert(
                &format!("customer_{id}"),
                record.to_string().as_bytes(),
                Default::default(),
            );
            let mut old = world.old_value(&format!("customer_{id}")).unwrap();
            old["name"] = json!("old");
            world.stores.old.insert(
                &format!("customer_{id}"),
                old.to_string().as_bytes(),
                Default::default(),
            );
            id
        })
        .collect()
}

fn status(world: &World) -> Value {
    world
        .send("GET", "/admin/migrate/status", Some(&admin()), None)
        .body
}

#[test]
fn named_customers_and_a_share_are_served_by_the_cohorts_phase_and_no_one_else() {
    let world = World::in_phase(Phase::DualWrite);
    let ids = seed_split(&world, 60);
    let (status_code, body) = open(
        &world,
        json!({ "to": 2, "customers": [ids[0]], "reason": "canary" }),
    );
    assert_eq!(status_code, 200, "{body}");
    assert_eq!(body["done"], "opened");
    assert_eq!(body["phase"]["cohort"]["to"], 2);
    assert_eq!(
        name_of(&world, &ids[0]),
        "new",
        "the named customer reads phase 2"
    );
    assert_eq!(
        name_of(&world, &ids[1]),
        "old",
        "the others stay in phase 1"
    );

    let (status_code, body) = open(&world, json!({ "to": 2, "percent": 50 }));
    assert_eq!(
        (status_code, body["done"].as_str()),
        (200, Some("widened")),
        "{body}"
    );
    let mut moved = 0;
    for id in &ids {
        let expected = id == &ids[0] || cohort::slot(id) < 5_000;
        let served = name_of(&world, id);
        assert_eq!(served == "new", expected, "{id}");
        moved += usize::from(expected);
    }
    assert!((15..=45).contains(&moved), "about half moved: {moved}");
    assert_eq!(
        status(&world)["phase"]["cohort"]["customers"],
        json!([ids[0]]),
        "widening keeps the named customers"
    );

    // The move of the phase to the cohort's completes it: everyone reads phase 2.
    world.set_phase(Phase::ReadNew);
    assert!(ids.iter().all(|id| name_of(&world, id) == "new"));
    let after = status(&world);
    assert!(after["phase"].get("cohort").is_none(), "{after}");
    assert_eq!(after["phase"]["current"], 2);
}

#[test]
fn a_cohorts_writes_follow_its_phase() {
    let world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 2);
    world.run_cron_until_backfill_stops();
    // Verified clean, so the gates of 3 → 4 are met.
    let (code_, body) = post(&world, "/admin/migrate/verify", json!({ "mode": "full" }));
    assert_eq!(code_, 200, "{body}");
    let (status_code, body) = open(&world, json!({ "to": 4, "customers": ["cust_000000"] }));
    assert_eq!(status_code, 200, "{body}");
    assert_eq!(
        status(&world)["oldStoreDiverged"],
        true,
        "the cohort stops writing the old store"
    );
    for id in ["cust_000000", "cust_000001"] {
        let response = world.send(
            "PATCH",
            &format!("/customer/{id}"),
            Some(&admin()),
            Some(json!({ "name": "patched" })),
        );
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let old_name = |id: &str| world.old_value(&format!("customer_{id}")).unwrap()["name"].clone();
    assert_eq!(
        old_name("cust_000000"),
        json!("User 0"),
        "phase 4: the new store alone"
    );
    assert_eq!(
        old_name("cust_000001"),
        json!("patched"),
        "phase 3: both stores"
    );
    assert_eq!(
        world.new_value("customer_cust_000000").unwrap()["name"],
        "patched"
    );
}

#[test]
fn opening_passes_the_moves_gates_and_the_settle_time_widening_and_completing_do_not_wait() {
    let mut world = World::in_phase(Phase::Legacy);
    world.config.request_margin_ms = 30_000;
    seed_legacy(&world, 3);
    world.set_phase(Phase::DualWrite);
    let (status_code, body) = open(&world, json!({ "to": 2, "percent": 10 }));
    assert_eq!(
        (status_code, code(&body)),
        (409, "phase_change_refused"),
        "{body}"
    );
    assert!(body.to_string().contains("settled"), "{body}");

    world.now_ms += 30_001;
    assert_eq!(open(&world, json!({ "to": 2, "percent": 10 })).0, 200);
    let (status_code, body) = open(&world, json!({ "to": 2, "percent": 20 }));
    assert_eq!(status_code, 200, "widening keeps the span: {body}");
    let gates = &status(&world)["gates"];
    assert_eq!(gates["forward"]["to"], 2, "{gates}");
    assert_eq!(gates["cancel"]["to"], 1, "{gates}");
    let moved = world.send(
        "POST",
        "/admin/migrate/phase",
        Some(&admin()),
        Some(json!({ "phase": 2 })),
    );
    assert_eq!(
        moved.status, 200,
        "completing waits for no settle: {}",
        moved.body
    );
    let next = world.send(
        "POST",
        "/admin/migrate/phase",
        Some(&admin()),
        Some(json!({ "phase": 3 })),
    );
    assert_eq!(
        next.status, 409,
        "the next move waits for the completion to settle"
    );
}

#[test]
fn an_unmet_gate_refuses_opening_unless_forced_with_a_reason_and_the_audit_keeps_it() {
    let world = World::in_phase(Phase::DualWrite);
    world.stores.new.insert(
        "__migration/journal/customer_x",
        br#"{"store":"new","at":1}"#,
        Default::default(),
    );
    let (status_code, body) = open(&world, json!({ "to": 2, "percent": 5 }));
    assert_eq!(
        (status_code, code(&body)),
        (409, "phase_change_refused"),
        "{body}"
    );
    assert!(body.to_string().contains("repair_journal_empty"), "{body}");
    let (status_code, body) = open(&world, json!({ "to": 2, "percent": 5, "force": true }));
    assert_eq!(
        (status_code, code(&body)),
        (400, "reason_required"),
        "{body}"
    );
    let (status_code, body) = open(
        &world,
        json!({ "to": 2, "percent": 5, "force": true, "reason": "journal checked by hand" }),
    );
    assert_eq!(status_code, 200, "{body}");
    assert_eq!(body["forced"], true);

    let audit = world
        .send("GET", "/admin/migrate/audit", Some(&admin()), None)
        .body;
    let entry = &audit["entries"][0];
    assert_eq!(entry["action"], "cohort_opened", "{audit}");
    assert_eq!(entry["forced"], true);
    assert_eq!(entry["unmetGates"], json!(["repair_journal_empty"]));
    let reason = entry["reason"].as_str().unwrap();
    assert!(
        reason.contains("5% of customers") && reason.contains("journal checked"),
        "{reason}"
    );
}

#[test]
fn a_cohort_spans_two_adjacent_phases_and_nothing_else_moves_while_it_is_open() {
    let world = World::in_phase(Phase::ReadNew);
    let refused = |body: Value| {
        let (status_code, answer) = open(&world, body);
        assert_eq!(
            (status_code, code(&answer)),
            (409, "cohort_refused"),
            "{answer}"
        );
    };
    refused(json!({ "to": 0, "percent": 5 }));
    refused(json!({ "to": 4, "percent": 5 }));
    let (status_code, body) = post(&world, "/admin/migrate/cohort/cancel", json!({}));
    assert_eq!(
        (status_code, code(&body)),
        (409, "cohort_refused"),
        "nothing to cancel"
    );

    assert_eq!(open(&world, json!({ "to": 3, "percent": 30 })).0, 200);
    refused(json!({ "to": 1, "percent": 5 }));
    refused(json!({ "to": 3, "percent": 10 }));
    let unchanged = open(&world, json!({ "to": 3, "percent": 30 }));
    assert_eq!(unchanged.1["done"], "unchanged", "{}", unchanged.1);
    for (path, body) in [
        (
            "/admin/migrate/phase",
            json!({ "phase": 1, "force": true, "reason": "r" }),
        ),
        ("/admin/migrate/rollback", json!({ "toPhase": 1 })),
    ] {
        let (status_code, answer) = post(&world, path, body);
        assert_eq!(
            (status_code, code(&answer)),
            (409, "cohort_refused"),
            "{path}: {answer}"
        );
    }

    let (status_code, body) = post(&world, "/admin/migrate/cohort/cancel", json!({}));
    assert_eq!(
        (status_code, body["done"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
    assert!(body["phase"].get("cohort").is_none(), "{body}");
    let history = status(&world)["history"].clone();
    // Both in one millisecond here: their order in the log is the keys' tiebreak.
    let mut actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    actions.sort_unstable();
    assert_eq!(actions, ["cohort_cancelled", "cohort_opened"], "{history}");
}

#[test]
fn a_cancel_takes_the_cohorts_customers_back() {
    let world = World::in_phase(Phase::DualWrite);
    let ids = seed_split(&world, 3);
    open(&world, json!({ "to": 2, "customers": [ids[1]] }));
    assert_eq!(name_of(&world, &ids[1]), "new");
    let (status_code, body) = post(&world, "/admin/migrate/cohort/cancel", json!({}));
    assert_eq!(status_code, 200, "{body}");
    assert_eq!(name_of(&world, &ids[1]), "old");
}

#[test]
fn background_work_runs_only_where_every_phase_in_use_allows_it() {
    // A cohort in phase 3 starts the cron's backfill from phase 2.
    let world = World::in_phase(Phase::ReadNew);
    seed_legacy(&world, 5);
    open(&world, json!({ "to": 3, "percent": 1 }));
    world.run_cron();
    assert!(world.new_value("customer_cust_000004").is_some(), "copied");

    // The inventory, the purge and the finalize wait for no cohort.
    let world = World::in_phase(Phase::Legacy);
    open(&world, json!({ "to": 1, "percent": 1 }));
    let (status_code, body) = post(&world, "/admin/migrate/inventory", json!({}));
    assert_eq!(
        (status_code, code(&body)),
        (409, "inventory_not_allowed"),
        "{body}"
    );
    let (status_code, body) = post(
        &world,
        "/admin/migrate/purge-new",
        json!({ "dryRun": true }),
    );
    assert_eq!(status_code, 409, "{body}");
    assert!(body.to_string().contains("cohort"), "{body}");
}

#[test]
fn bad_cohort_requests_get_a_clear_400_that_names_no_id() {
    let world = World::in_phase(Phase::DualWrite);
    let bad = |body: Value, words: &str| {
        let (status_code, answer) = open(&world, body);
        assert_eq!(status_code, 400, "{answer}");
        let text = answer.to_string();
        assert!(text.contains(words), "{text}");
        assert!(!text.contains("secret@"), "{text}");
    };
    bad(json!({ "to": 2, "percent": 101 }), "percent");
    bad(json!({ "to": 2, "percent": 0.001 }), "two decimals");
    bad(json!({ "to": 2 }), "percent above 0");
    bad(json!({ "to": 9, "percent": 5 }), "0 to 5");
    bad(
        json!({ "to": 2, "customers": ["secret@x\n"] }),
        "customers[0]",
    );
    bad(
        json!({ "to": 2, "percent": 5, "everyone": true }),
        "everyone",
    );
    // serde's own message would quote the value sent.
    bad(json!({ "to": 2, "customers": "secret@x.io" }), "not shown");
    let many: Vec<String> = (0..101).map(|n| format!("c{n}")).collect();
    bad(json!({ "to": 2, "customers": many }), "at most 100");
    let customer = world.send(
        "POST",
        "/admin/migrate/cohort",
        Some(&token("customer", "c1")),
        Some(json!({ "to": 2, "percent": 5 })),
    );
    assert_eq!(customer.status, 403);
}

#[test]
fn fallback_hits_of_a_cohort_in_phase_4_hold_the_gate_to_phase_5() {
    let mut world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 2);
    world.run_cron_until_backfill_stops();
    let (code_, body) = post(&world, "/admin/migrate/verify", json!({ "mode": "full" }));
    assert_eq!(code_, 200, "{body}");
    assert_eq!(
        open(&world, json!({ "to": 4, "customers": ["cust_000000"] })).0,
        200
    );
    // A record the new store lacks: the cohort's phase-4 read falls back to the old one.
    block_on(world.stores.new.delete("customer_cust_000000")).unwrap();
    assert_eq!(name_of(&world, "cust_000000"), "User 0");
    world.now_ms += 1_000;
    world.set_phase(Phase::NewPrimary);
    let refused = world.send(
        "POST",
        "/admin/migrate/phase",
        Some(&admin()),
        Some(json!({ "phase": 5 })),
    );
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(
        refused.body.to_string().contains("no_fallback_hits"),
        "{}",
        refused.body
    );
}
