//! Alerts (`ALERT_WEBHOOK_URL`): a phase change, a forced move, a rollback, a
//! verification with differences, copies that fail and a journal that outgrows a run
//! each call for one; ordinary traffic calls for none.

mod common;

use common::*;
use customer_kv_migration::alerts::{self, Alert};
use customer_kv_migration::http::{ApiRequest, Method};
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::PutOptions;
use serde_json::{json, Value};

fn admin_post(world: &World, path: &str, body: Value) -> Vec<Alert> {
    let mut request = ApiRequest::new(Method::Post, path);
    request.authorization = Some(format!("Bearer {}", admin()));
    request.body = body.to_string().into_bytes();
    let outcome = world.handle(&request);
    assert_eq!(outcome.response.status, 200, "{}", outcome.response.body);
    outcome.alerts
}

fn kinds(alerts: &[Alert]) -> Vec<&str> {
    alerts.iter().map(|a| a.kind).collect()
}

#[test]
fn moves_forced_moves_and_rollbacks_alert() {
    let world = World::in_phase(Phase::Legacy);
    let moved = admin_post(&world, "/admin/migrate/phase", json!({ "phase": 1 }));
    assert_eq!(kinds(&moved), ["phase_changed"]);
    assert_eq!(moved[0].text, "phase moved 0 → 1");
    let forced = admin_post(
        &world,
        "/admin/migrate/phase",
        json!({ "phase": 4, "force": true, "reason": "drill" }),
    );
    assert_eq!(kinds(&forced), ["phase_forced"], "{forced:?}");
    let rollback = admin_post(&world, "/admin/migrate/rollback", json!({ "toPhase": 3 }));
    assert_eq!(kinds(&rollback), ["rollback"], "{rollback:?}");
    // Ordinary traffic alerts nobody.
    let mut create = ApiRequest::new(Method::Post, "/customer");
    create.authorization = Some(format!("Bearer {}", service()));
    create.body = json!({ "customerId": "quiet" }).to_string().into_bytes();
    assert!(world.handle(&create).alerts.is_empty());
}

#[test]
fn a_verification_with_differences_alerts_and_a_clean_one_does_not() {
    let world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 20);
    world.run_cron_until_backfill_stops();
    let clean = admin_post(&world, "/admin/migrate/verify", json!({ "mode": "full" }));
    assert!(clean.is_empty(), "{clean:?}");
    world.stores.new.insert(
        "customer_cust_000003",
        b"{\"customerId\":\"cust_000003\"}",
        PutOptions::default(),
    );
    let differing = admin_post(
        &world,
        "/admin/migrate/verify",
        json!({ "mode": "full", "restart": true }),
    );
    assert_eq!(kinds(&differing), ["verification_differences"]);
    assert!(
        differing[0].text.contains("1 mismatched"),
        "{}",
        differing[0].text
    );
}

#[test]
fn failing_copies_and_a_failed_run_alert() {
    let world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 30);
    world
        .stores
        .new
        .fail(customer_kv_migration::store::Fault::Put(
            "customer_cust_00001".into(),
        ));
    let report = world.run_cron();
    let alerts = alerts::of_cron(&report);
    assert!(
        kinds(&alerts).contains(&"copy_errors"),
        "{alerts:?} from {report:?}"
    );
    assert_eq!(
        alerts::of_cron_failure("store_unavailable").kind,
        "cron_failed"
    );
    let body = alerts::webhook_body("customer-kv-migration", &alerts[0]);
    assert!(body["text"]
        .as_str()
        .unwrap()
        .starts_with("[customer-kv-migration] backfill: "));
}
