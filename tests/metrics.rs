//! The data points written to Analytics Engine (`metrics`), built from what the real
//! pipeline logged and reported: route templates, codes and counts, never an email.

mod common;

use common::*;
use customer_kv_migration::http::{ApiRequest, Method};
use customer_kv_migration::metrics::{self, Blob, Double};
use customer_kv_migration::phase::Phase;
use serde_json::json;

const EMAIL: &str = "private.person@example.com";

fn get(path: &str) -> ApiRequest {
    let mut request = ApiRequest::new(Method::Get, path);
    request.authorization = Some(format!("Bearer {}", service()));
    request
}

#[test]
fn a_lookup_by_email_writes_its_route_template_and_no_email() {
    let world = World::in_phase(Phase::ReadNew);
    let created = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "measured", "email": EMAIL, "name": "Private Person" })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let hash = mapping_key(EMAIL);
    let hash = hash.trim_start_matches("email_to_customer_");
    for (path, status) in [
        ("/customer/by-email/private.person%40example.com", 200),
        ("/customer/by-email/nobody%40example.com", 404),
    ] {
        let outcome = world.handle(&get(path));
        assert_eq!(outcome.response.status, status, "{}", outcome.response.body);
        let point = metrics::of_request(&outcome.log, 3);
        let written = serde_json::to_string(&point).unwrap();
        assert_eq!(point.blob(Blob::Route), "/customer/by-email/{email}");
        assert_eq!(point.index, "/customer/by-email/{email}");
        assert_eq!(point.blob(Blob::Status), status.to_string());
        assert_eq!(point.blob(Blob::Phase), "2");
        for private in ["@", "private", "nobody", "example", "%40", "Bearer", hash] {
            assert!(!written.contains(private), "{private} in {written}");
        }
    }
}

#[test]
fn a_read_served_by_the_old_store_counts_a_fallback_hit() {
    let world = World::in_phase(Phase::ReadNew);
    seed_legacy(&world, 1);
    let first = world.handle(&get("/customer/cust_000000"));
    assert_eq!(first.response.status, 200, "{}", first.response.body);
    assert_eq!(first.log.fallback_hits, 1);
    let point = metrics::of_request(&first.log, 3);
    assert_eq!(point.double(Double::FallbackHits), 1.0);
    assert!(point.double(Double::KvOperations) >= 2.0);
    // The read copied the record into the new store: the next one does not fall back.
    let second = world.handle(&get("/customer/cust_000000"));
    assert_eq!(second.log.fallback_hits, 0);
    assert_eq!(
        metrics::of_request(&second.log, 3).double(Double::FallbackHits),
        0.0
    );
}

#[test]
fn a_cron_run_writes_what_its_backfill_copied() {
    let world = World::in_phase(Phase::Backfill);
    seed_legacy(&world, 20);
    let mut copied = 0.0;
    for _ in 0..6 {
        let report = world.run_cron();
        let point = metrics::of_cron(&report, 10);
        assert_eq!(
            (point.blob(Blob::Kind), point.blob(Blob::Phase)),
            ("cron", "3")
        );
        assert_eq!(
            point.double(Double::KvOperations),
            f64::from(report.operations)
        );
        match &report.backfill {
            Some(run) => {
                assert_eq!(point.blob(Blob::Work), "backfill");
                assert_eq!(point.blob(Blob::Stage), run.stage.name());
            }
            None => assert_eq!(point.blob(Blob::Work), "none"),
        }
        copied += point.double(Double::RecordsCopied);
    }
    // 20 customers and their 20 mappings, copied once; the second pass copies nothing,
    // and a done backfill is not run.
    assert_eq!(copied, 40.0);
    assert!(world.run_cron().backfill.is_none());
}
