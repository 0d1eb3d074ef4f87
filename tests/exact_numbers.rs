//! Numbers keep their text (README: records are returned exactly as stored). A record's
//! numbers — integers past u64, decimals with more digits than an f64 holds, exponents
//! in any spelling, `-0` — come back from a read, and stay in the store after a write of
//! another field, exactly as they were written.
//!
//! `PROPTEST_CASES=10000 cargo test --release --test exact_numbers` runs longer.

mod common;

use common::*;
use customer_kv_migration::domain::CustomerRecord;
use customer_kv_migration::http::{ApiRequest, ApiResponse, Method};
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::PutOptions;
use proptest::prelude::*;

/// Numbers as a writer may have spelled them: any JSON number, and the usual suspects.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?",
        prop::sample::select(vec![
            "12345678901234567890123",
            "18446744073709551616",
            "-9223372036854775809",
            "0.30000000000000000444",
            "1e2",
            "1E+2",
            "1e-02",
            "-0",
            "-0.0",
            "0.1e-5",
            "1.0",
            "1.00",
            "1e400",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Fields holding `numbers` at the top level, in an array and nested, as compact JSON
/// without the braces.
fn number_fields(numbers: &[String]) -> String {
    let fields: Vec<String> = numbers
        .iter()
        .enumerate()
        .map(|(i, n)| format!(r#""n{i}":{n}"#))
        .collect();
    format!(
        r#"{},"list":[{}],"nested":{{"deep":{{"n":{}}}}},"updatedAt":"2020-01-02T00:00:00Z""#,
        fields.join(","),
        numbers.join(","),
        numbers[0]
    )
}

/// A compact stored record of customer `c1` holding `numbers`.
fn record_with(numbers: &[String]) -> String {
    format!(r#"{{"customerId":"c1",{}}}"#, number_fields(numbers))
}

/// The body the worker sends for `response` (as `platform::to_response` builds it).
fn wire_body(response: &ApiResponse) -> Vec<u8> {
    match &response.raw {
        Some((_, bytes)) => bytes.clone(),
        None => serde_json::to_vec(&response.body).unwrap(),
    }
}

/// `text` with its `updatedAt` value blanked, which a write sets to the time.
fn without_updated_at(text: &str) -> String {
    let Some(start) = text.find(r#""updatedAt":""#) else {
        return text.to_owned();
    };
    let value = start + r#""updatedAt":""#.len();
    let end = value + text[value..].find('"').unwrap();
    format!("{}*{}", &text[..value], &text[end..])
}

fn send_bytes(world: &World, method: &str, path: &str, body: &[u8]) -> ApiResponse {
    let mut request = ApiRequest::new(Method::parse(method), path);
    request.authorization = Some(format!("Bearer {}", service()));
    request.body = body.to_vec();
    world.send_request(&request)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Every store that holds `key`, with its bytes.
fn stored(world: &World, key: &str) -> Vec<String> {
    [&world.stores.old, &world.stores.new]
        .iter()
        .filter_map(|store| store.peek(key).map(|b| text(&b)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_stored_record_serialises_to_its_own_bytes(
        numbers in prop::collection::vec(number_text(), 1..6),
    ) {
        let raw = record_with(&numbers);
        let record = CustomerRecord::from_stored(raw.as_bytes()).unwrap();
        prop_assert_eq!(text(&record.to_bytes()), raw);
    }

    #[test]
    fn reads_and_writes_through_the_api_keep_the_text(
        numbers in prop::collection::vec(number_text(), 1..6),
        patched in number_text(),
        phase in 0u64..6,
    ) {
        let world = World::in_phase(Phase::from_number(phase).unwrap());
        let raw = record_with(&numbers);
        world.stores.old.insert("customer_c1", raw.as_bytes(), PutOptions::default());
        world.stores.new.insert("customer_c1", raw.as_bytes(), PutOptions::default());

        let read = send_bytes(&world, "GET", "/customer/c1", b"");
        prop_assert_eq!(read.status, 200, "{}", read.body);
        prop_assert_eq!(text(&wire_body(&read)), raw.clone());

        // A patch of another field, and one that sets a number of its own.
        let patch = format!(r#"{{"name":"Patched","m":{patched}}}"#);
        let written = send_bytes(&world, "PATCH", "/customer/c1", patch.as_bytes());
        prop_assert_eq!(written.status, 200, "{}", written.body);
        let expected = format!(
            r#"{},"name":"Patched","m":{patched}}}"#,
            without_updated_at(raw.strip_suffix('}').unwrap())
        );
        prop_assert_eq!(without_updated_at(&text(&wire_body(&written))), expected.clone());
        let copies = stored(&world, "customer_c1");
        prop_assert!(!copies.is_empty());
        for copy in copies {
            // A store the phase did not write still holds the seeded bytes.
            if copy != raw {
                prop_assert_eq!(without_updated_at(&copy), expected.clone());
            }
        }
        let reread = send_bytes(&world, "GET", "/customer/c1", b"");
        prop_assert_eq!(without_updated_at(&text(&wire_body(&reread))), expected);
    }

    #[test]
    fn a_created_record_keeps_the_text_of_its_numbers(
        numbers in prop::collection::vec(number_text(), 1..6),
    ) {
        let world = World::in_phase(Phase::DualWrite);
        // The id last, where the record puts it: this checks the numbers, not key order.
        let body = format!(r#"{{{},"customerId":"c2"}}"#, number_fields(&numbers));
        let expected = format!(r#"{},"createdAt":"*"}}"#, body.strip_suffix('}').unwrap());
        // The create stamps `createdAt`, the last field, with the time.
        let blank_created_at = |t: &str| match t.find(r#""createdAt":""#) {
            Some(at) => format!(r#"{}"createdAt":"*"}}"#, &t[..at]),
            None => t.to_owned(),
        };
        let created = send_bytes(&world, "POST", "/customer", body.as_bytes());
        prop_assert_eq!(created.status, 201, "{}", created.body);
        prop_assert_eq!(blank_created_at(&text(&wire_body(&created))), expected.clone());
        let copies = stored(&world, "customer_c2");
        prop_assert_eq!(copies.len(), 2);
        for copy in copies {
            prop_assert_eq!(blank_created_at(&copy), expected.clone());
        }
    }
}
