//! Bad input gets a JSON error with the right status and code, never a panic.

mod common;

use common::*;
use std::cell::Cell;

use customer_kv_migration::http::{ApiRequest, BodyError, Method, RequestBody};
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::Fault;
use serde_json::json;

fn raw(
    world: &World,
    method: &str,
    path: &str,
    body: &[u8],
) -> customer_kv_migration::http::ApiResponse {
    let mut request = ApiRequest::new(Method::parse(method), path);
    request.authorization = Some(format!("Bearer {}", service()));
    request.body = body.to_vec();
    world.send_request(&request)
}

#[test]
fn malformed_and_mistyped_bodies() {
    let world = World::at_real_time();
    let cases: &[(&[u8], u16, &str)] = &[
        (b"{not json", 400, "invalid_json"),
        (b"[1,2]", 400, "invalid_body"),
        (br#"{"customerId": 5}"#, 400, "invalid_body"),
        (br#"{"customerId": "c1", "name": 3}"#, 400, "invalid_body"),
        (
            br#"{"customerId": "c1", "subscriptions": "x"}"#,
            400,
            "invalid_body",
        ),
        (
            br#"{"customerId": "c1", "updatedAt": "yesterday"}"#,
            400,
            "invalid_body",
        ),
        (br#"{"customerId": "bad id"}"#, 400, "invalid_customer_id"),
        // Ids the routes /customer/me and /customer/ensure would shadow.
        (br#"{"customerId": "me"}"#, 400, "invalid_customer_id"),
        (br#"{"customerId": "ensure"}"#, 400, "invalid_customer_id"),
        (
            br#"{"customerId": "c1", "email": "nope"}"#,
            400,
            "invalid_email",
        ),
        (br#"{"name": "no id, no email"}"#, 400, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let response = raw(&world, "POST", "/customer", body);
        assert_eq!(
            (response.status, error_code(&response)),
            (*status, *code),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let huge = vec![b' '; 64 * 1024 + 1];
    let response = raw(&world, "POST", "/customer", &huge);
    assert_eq!(
        (response.status, error_code(&response)),
        (413, "payload_too_large")
    );
}

/// A body too large for any limit, as a stream that would never end: it records the
/// limit it was read up to, and refuses.
struct EndlessBody<'a> {
    read_up_to: &'a Cell<Option<usize>>,
}

impl RequestBody for EndlessBody<'_> {
    async fn read_up_to(self, limit: usize) -> Result<Vec<u8>, BodyError> {
        self.read_up_to.set(Some(limit));
        Err(BodyError::TooLarge)
    }
}

#[test]
fn an_oversized_body_is_refused_on_every_route_before_the_token_is_checked() {
    let world = World::at_real_time();
    for (method, path) in [
        ("POST", "/customer"),
        ("PATCH", "/customer/c1"),
        ("GET", "/customer/me"),
        ("GET", "/health"),
        ("POST", "/admin/migrate/phase"),
        ("POST", "/admin/migrate/import"),
        ("POST", "/nowhere"),
        ("PUT", "/customer/c1"),
    ] {
        let limit = Cell::new(None);
        let head = ApiRequest::new(Method::parse(method), path);
        let response = world.send_body(head, EndlessBody { read_up_to: &limit });
        assert_eq!(
            (response.status, error_code(&response)),
            (413, "payload_too_large"),
            "{method} {path}"
        );
        assert_eq!(limit.get(), Some(64 * 1024), "{method} {path}");
    }
}

#[test]
fn invalid_path_segments() {
    let world = World::at_real_time();
    // Legacy ids may be anything a key holds (tests/legacy_ids.rs); these cannot be.
    let long = "a".repeat(471);
    for path in [
        "/customer/bad%0Aid",
        "/customer/%7F",
        &format!("/customer/{long}"),
    ] {
        let response = world.send("GET", path, Some(&service()), None);
        assert_eq!(
            (response.status, error_code(&response)),
            (400, "invalid_customer_id"),
            "{path}"
        );
    }
    let response = world.send(
        "GET",
        "/customer/by-email/not-an-email",
        Some(&service()),
        None,
    );
    assert_eq!(
        (response.status, error_code(&response)),
        (400, "invalid_email")
    );
}

#[test]
fn routes_and_methods() {
    let world = World::at_real_time();
    let response = world.send("GET", "/nowhere", Some(&service()), None);
    assert_eq!(
        (response.status, error_code(&response)),
        (404, "route_not_found")
    );
    let response = world.send("PUT", "/customer/c1", Some(&service()), None);
    assert_eq!(
        (response.status, error_code(&response)),
        (405, "method_not_allowed")
    );
    assert!(response
        .headers
        .contains(&("Allow", "GET, PATCH, DELETE".into())));
}

#[test]
fn tokens_and_roles() {
    let world = World::at_real_time();
    let response = world.send("GET", "/customer/c1", None, None);
    assert_eq!(
        (response.status, error_code(&response)),
        (401, "missing_token")
    );
    let customer = token("customer", "c1");
    for (method, path) in [
        ("POST", "/customer"),
        ("POST", "/customer/ensure"),
        ("DELETE", "/customer/c1"),
        ("GET", "/admin/migrate/status"),
        ("POST", "/admin/migrate/phase"),
    ] {
        let response = world.send(method, path, Some(&customer), Some(json!({})));
        assert_eq!(
            (response.status, error_code(&response)),
            (403, "forbidden"),
            "{method} {path}"
        );
    }
    let response = world.send("GET", "/admin/migrate/status", Some(&service()), None);
    assert_eq!(response.status, 403);
}

#[test]
fn owners_see_and_change_only_their_own_record() {
    let mut world = World::in_phase(Phase::ReadNew);
    for id in ["c1", "c2"] {
        let body =
            json!({ "customerId": id, "email": format!("{id}@example.com"), "plan": "free" });
        assert_eq!(
            world
                .send("POST", "/customer", Some(&service()), Some(body))
                .status,
            201
        );
    }
    // KV takes one write a second to a key: the records were just written.
    world.now_ms += 1_000;
    let owner = token("customer", "c1");
    assert_eq!(
        world.send("GET", "/customer/me", Some(&owner), None).body["customerId"],
        "c1"
    );
    assert_eq!(
        world.send("GET", "/customer/c1", Some(&owner), None).status,
        200
    );
    assert_eq!(
        world.send("GET", "/customer/c2", Some(&owner), None).status,
        403
    );
    assert_eq!(
        world
            .send(
                "GET",
                "/customer/by-email/c2@example.com",
                Some(&owner),
                None
            )
            .status,
        404
    );
    assert_eq!(
        world
            .send(
                "PATCH",
                "/customer/c1",
                Some(&owner),
                Some(json!({ "name": "Me" }))
            )
            .status,
        200
    );
    let upgrade = world.send(
        "PATCH",
        "/customer/c1",
        Some(&owner),
        Some(json!({ "plan": "enterprise" })),
    );
    assert_eq!((upgrade.status, error_code(&upgrade)), (403, "forbidden"));
    assert_eq!(
        world
            .send(
                "PATCH",
                "/customer/c2",
                Some(&owner),
                Some(json!({ "name": "x" }))
            )
            .status,
        403
    );
}

#[test]
fn conflicts() {
    let world = World::in_phase(Phase::Backfill);
    let body = json!({ "customerId": "c1", "email": "ada@example.com" });
    assert_eq!(
        world
            .send("POST", "/customer", Some(&service()), Some(body.clone()))
            .status,
        201
    );
    let again = world.send("POST", "/customer", Some(&service()), Some(body));
    assert_eq!((again.status, error_code(&again)), (409, "customer_exists"));
    let same_email = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "c2", "email": " ADA@example.com" })),
    );
    assert_eq!(
        (same_email.status, error_code(&same_email)),
        (409, "email_taken")
    );
    world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "c3", "email": "c3@example.com" })),
    );
    let steal = world.send(
        "PATCH",
        "/customer/c3",
        Some(&service()),
        Some(json!({ "email": "ada@example.com" })),
    );
    assert_eq!((steal.status, error_code(&steal)), (409, "email_taken"));
}

#[test]
fn ensure_is_idempotent() {
    let mut world = World::in_phase(Phase::ReadNew);
    let first = world.send(
        "POST",
        "/customer/ensure",
        Some(&service()),
        Some(json!({ "email": "New@Example.com", "name": "N" })),
    );
    assert_eq!(first.status, 201, "{}", first.body);
    let second = world.send(
        "POST",
        "/customer/ensure",
        Some(&service()),
        Some(json!({ "email": "new@example.com" })),
    );
    assert_eq!(second.status, 200);
    assert_eq!(first.body["customerId"], second.body["customerId"]);
    // The mapping lost, as after a crash between the writes: ensure finds the record again.
    let key = mapping_key("new@example.com");
    world.stores.old.remove(&key);
    world.stores.new.remove(&key);
    // KV takes one write a second to the mapping, which the first ensure wrote.
    world.now_ms += 1_000;
    let third = world.send(
        "POST",
        "/customer/ensure",
        Some(&service()),
        Some(json!({ "email": "new@example.com" })),
    );
    assert_eq!(
        (third.status, &third.body["customerId"]),
        (200, &first.body["customerId"])
    );
    assert!(
        world.stores.new.peek(&key).is_some(),
        "the mapping is restored"
    );
}

#[test]
fn corrupt_stored_values_are_a_clear_error_and_the_worker_keeps_serving() {
    let world = World::in_phase(Phase::Legacy);
    world.stores.old.insert(
        "customer_bad",
        b"{\"customerId\": \"bad\", trailing",
        Default::default(),
    );
    world.stores.old.insert(
        "customer_other",
        br#"{"customerId":"someone-else"}"#,
        Default::default(),
    );
    let response = world.send("GET", "/customer/bad", Some(&service()), None);
    assert_eq!(
        (response.status, error_code(&response)),
        (500, "corrupt_record")
    );
    let response = world.send("GET", "/customer/other", Some(&service()), None);
    assert_eq!(
        (response.status, error_code(&response)),
        (500, "corrupt_record")
    );
    // Nested deeper than records are read: corrupt, whichever way a read hit answers.
    let deep = format!(
        r#"{{"customerId":"deep","a":{}{}}}"#,
        "[".repeat(130),
        "]".repeat(130)
    );
    world
        .stores
        .old
        .insert("customer_deep", deep.as_bytes(), Default::default());
    let response = world.send("GET", "/customer/deep", Some(&service()), None);
    assert_eq!(
        (response.status, error_code(&response)),
        (500, "corrupt_record")
    );
    assert_eq!(world.send("GET", "/health", None, None).status, 200);
    // A corrupt record can still be deleted.
    assert_eq!(
        world
            .send("DELETE", "/customer/bad", Some(&service()), None)
            .status,
        200
    );
}

#[test]
fn a_stale_mapping_never_returns_the_wrong_customer() {
    let world = World::in_phase(Phase::NewPrimary);
    // The old store still maps the email to c1, whose record in the new store moved on.
    world
        .stores
        .old
        .insert(&mapping_key("gone@example.com"), b"c1", Default::default());
    world.stores.new.insert(
        "customer_c1",
        br#"{"customerId":"c1","email":"now@example.com"}"#,
        Default::default(),
    );
    let response = world.send(
        "GET",
        "/customer/by-email/gone@example.com",
        Some(&service()),
        None,
    );
    assert_eq!(response.status, 404);
    let taken = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "c2", "email": "gone@example.com" })),
    );
    assert_eq!(taken.status, 201, "a stale mapping does not hold the email");
}

#[test]
fn a_failing_store_is_reported_without_the_platform_s_words() {
    let world = World::in_phase(Phase::DualWrite);
    world.stores.old.fail(Fault::Get("customer_".into()));
    let response = world.send("GET", "/customer/c1", Some(&service()), None);
    assert_eq!(response.status, 503);
    assert_eq!(error_code(&response), "store_unavailable");
    let message = response.body["error"]["message"].as_str().unwrap();
    assert_eq!(message, "a store is unavailable (get failed); retry");
    // The log gets the platform's first line, never its stack.
    let detail = response.detail.as_deref().unwrap();
    assert!(detail.contains("413 Total size"), "{detail}");
    assert!(!detail.contains("KvNamespace.get"), "{detail}");
}
