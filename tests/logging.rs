//! The log line of a request names its route template, status, code, phase and KV
//! operations, never the path, the body or the token (`logging`); `/admin/migrate/ready`
//! touches each binding and reports it.

mod common;

use common::*;
use customer_kv_migration::http::{ApiRequest, Method};
use customer_kv_migration::logging::{line, Level};
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::Fault;
use serde_json::{json, Value};

const EMAIL: &str = "private.person@example.com";

fn request(method: Method, path: &str, token: &str, body: Option<Value>) -> ApiRequest {
    let mut request = ApiRequest::new(method, path);
    request.authorization = Some(format!("Bearer {token}"));
    request.body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    request
}

#[test]
fn a_lookup_by_email_logs_its_route_template_and_no_email() {
    let world = World::in_phase(Phase::ReadNew);
    let create = request(
        Method::Post,
        "/customer",
        &service(),
        Some(json!({ "customerId": "logged", "email": EMAIL, "name": "Private Person" })),
    );
    let created = world.handle(&create);
    assert_eq!(created.response.status, 201);
    for path in [
        "/customer/by-email/private.person%40example.com",
        "/customer/by-email/nobody%40example.com",
    ] {
        let outcome = world.handle(&request(Method::Get, path, &service(), None));
        let text = line(
            Level::Debug,
            outcome.log.level(),
            "request",
            &outcome.log,
            Some(5),
        )
        .unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["route"], "/customer/by-email/{email}", "{text}");
        assert_eq!(parsed["phase"], 2);
        assert!(parsed["kvOperations"].as_u64().unwrap() >= 1, "{text}");
        for private in ["@", "private", "nobody", "example", "Bearer"] {
            assert!(!text.contains(private), "{private} in {text}");
        }
    }
    let text = line(
        Level::Info,
        created.log.level(),
        "request",
        &created.log,
        None,
    )
    .unwrap();
    assert!(!text.contains("Private") && !text.contains('@'), "{text}");
    let missing = world.handle(&request(Method::Get, "/customer/nobody", &service(), None));
    assert_eq!(
        (
            missing.log.status,
            missing.log.code.as_deref(),
            missing.log.route
        ),
        (404, Some("customer_not_found"), "/customer/{id}")
    );
    assert_eq!(missing.log.level(), Level::Warn);
}

#[test]
fn readiness_reports_each_binding() {
    let world = World::in_phase(Phase::DualWrite);
    let ready = world.send("GET", "/admin/migrate/ready", Some(&admin()), None);
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["ready"], true);
    assert_eq!(ready.body["queue"]["bound"], false);
    world.stores.old.fail(Fault::Get("__ready".into()));
    let failing = world.send("GET", "/admin/migrate/ready", Some(&admin()), None);
    assert_eq!(failing.status, 503, "{}", failing.body);
    assert_eq!(
        (
            failing.body["oldStore"]["ok"].as_bool(),
            failing.body["newStore"]["ok"].as_bool()
        ),
        (Some(false), Some(true))
    );
    let refused = world.send("GET", "/admin/migrate/ready", Some(&service()), None);
    assert_eq!(refused.status, 403);
}
