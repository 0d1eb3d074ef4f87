//! Property-based fuzzing of every input surface: request bodies, path segments, tokens
//! and values found in either store. Whatever comes in, the worker answers with a
//! well-formed JSON success or error and never panics.
//!
//! `PROPTEST_CASES=100000 cargo test --release --test fuzz_inputs` runs longer.

mod common;

use common::*;
use customer_kv_migration::http::{ApiRequest, ApiResponse, Method};
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::PutOptions;
use proptest::prelude::*;
use serde_json::Value;

/// A status the API documents, with the body shape that goes with it.
fn well_formed(response: &ApiResponse) -> Result<(), TestCaseError> {
    // The dashboard's files (docs/design.md §15) and `/admin`'s redirect to them.
    if response.status == 200 && matches!(&response.raw, Some((t, _)) if t.starts_with("text/")) {
        return Ok(());
    }
    let documented = [200, 201, 308, 400, 401, 403, 404, 405, 409, 413, 500, 503];
    prop_assert!(
        documented.contains(&response.status),
        "status {}",
        response.status
    );
    prop_assert!(response.body.is_object(), "body {}", response.body);
    if response.status >= 400 {
        let error = &response.body["error"];
        prop_assert!(
            error["code"].is_string() && error["message"].is_string(),
            "error body {}",
            response.body
        );
    }
    // A 500 only ever means corrupt stored data (or a corrupt phase record).
    if response.status == 500 {
        let code = response.body["error"]["code"].as_str().unwrap_or_default();
        prop_assert!(
            code == "corrupt_record" || code == "corrupt_phase_state",
            "500 {}",
            response.body
        );
    }
    Ok(())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        prop_oneof![
            Just("c1"),
            Just("a@b.io"),
            Just("2024-01-01T00:00:00Z"),
            Just("bad id")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("customerId".to_owned()),
                    Just("email".to_owned()),
                    Just("name".to_owned()),
                    Just("plan".to_owned()),
                    Just("subscriptions".to_owned()),
                    Just("updatedAt".to_owned()),
                    Just("phase".to_owned()),
                    Just("force".to_owned()),
                    Just("reason".to_owned()),
                    Just("dryRun".to_owned()),
                    Just("maxRecords".to_owned()),
                    Just("mode".to_owned()),
                    Just("sample".to_owned()),
                    ".{0,8}".prop_map(String::from),
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/customer"),
    ("POST", "/customer/ensure"),
    ("PATCH", "/customer/c1"),
    ("POST", "/admin/migrate/phase"),
    ("POST", "/admin/migrate/backfill"),
    ("POST", "/admin/migrate/verify"),
    ("POST", "/admin/migrate/emails"),
];

fn send_raw(
    world: &World,
    method: &str,
    path: &str,
    authorization: Option<String>,
    body: Vec<u8>,
) -> ApiResponse {
    let mut request = ApiRequest::new(Method::parse(method), path);
    request.authorization = authorization;
    request.body = body;
    world.send_request(&request)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // 512 cases a property by default; PROPTEST_CASES asks for more.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_bytes_as_a_body(route in 0..ROUTES.len(), body in prop::collection::vec(any::<u8>(), 0..300)) {
        let world = World::in_phase(Phase::ReadNew);
        let (method, path) = ROUTES[route];
        let response = send_raw(&world, method, path, Some(format!("Bearer {}", admin())), body);
        well_formed(&response)?;
    }

    #[test]
    fn any_json_as_a_body(route in 0..ROUTES.len(), body in json_value(), phase in 0u64..6) {
        let world = World::in_phase(Phase::from_number(phase).unwrap());
        world.stores.old.insert("customer_c1", br#"{"customerId":"c1","email":"a@b.io"}"#, PutOptions::default());
        let (method, path) = ROUTES[route];
        let response = send_raw(&world, method, path, Some(format!("Bearer {}", admin())), body.to_string().into_bytes());
        well_formed(&response)?;
    }

    #[test]
    fn any_path_and_method(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PATCH"), Just("DELETE"), Just("PUT"), Just("OPTIONS")],
        segments in prop::collection::vec(prop_oneof![
            Just("customer".to_owned()), Just("admin".to_owned()), Just("migrate".to_owned()),
            Just("by-email".to_owned()), Just("me".to_owned()), Just("%FF".to_owned()), Just("%40".to_owned()),
            Just("a%2Fb".to_owned()), ".{0,12}".prop_map(String::from),
        ], 0..5),
    ) {
        let world = World::at_real_time();
        let path = format!("/{}", segments.join("/"));
        let response = send_raw(&world, method, &path, Some(format!("Bearer {}", service())), Vec::new());
        well_formed(&response)?;
    }

    #[test]
    fn any_token(header in prop_oneof![
        ".{0,60}".prop_map(String::from),
        ".{0,60}".prop_map(|t| format!("Bearer {t}")),
        (0usize..200, any::<u8>()).prop_map(|(at, byte)| {
            // A valid token with one byte changed.
            let mut token = admin().into_bytes();
            let at = at % token.len();
            token[at] = byte;
            format!("Bearer {}", String::from_utf8_lossy(&token))
        }),
    ]) {
        let world = World::at_real_time();
        let response = send_raw(&world, "GET", "/admin/migrate/status", Some(header), Vec::new());
        well_formed(&response)?;
        prop_assert!(response.status == 200 || response.status == 401, "{}", response.status);
    }

    #[test]
    fn any_stored_value(
        value in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            json_value().prop_map(|v| v.to_string().into_bytes()),
            Just(vec![b'x'; 100_000]),
        ],
        metadata in prop_oneof![Just(None), json_value().prop_map(Some)],
        in_new in any::<bool>(),
        phase in 0u64..6,
        action in 0..6usize,
    ) {
        let world = World::in_phase(Phase::from_number(phase).unwrap());
        let store = if in_new { &world.stores.new } else { &world.stores.old };
        store.insert("customer_c1", &value, PutOptions { expiration: None, metadata: metadata.clone() });
        store.insert(&mapping_key("a@b.io"), &value, PutOptions { expiration: None, metadata });
        let response = match action {
            0 => world.send("GET", "/customer/c1", Some(&service()), None),
            1 => world.send("GET", "/customer/by-email/a@b.io", Some(&service()), None),
            2 => world.send("PATCH", "/customer/c1", Some(&service()), Some(serde_json::json!({ "name": "n", "email": "z@b.io" }))),
            3 => world.send("DELETE", "/customer/c1", Some(&service()), None),
            4 => world.send("POST", "/customer/ensure", Some(&service()), Some(serde_json::json!({ "email": "a@b.io" }))),
            _ => world.send("POST", "/admin/migrate/verify", Some(&admin()), Some(serde_json::json!({ "mode": "full" }))),
        };
        well_formed(&response)?;
    }
}
