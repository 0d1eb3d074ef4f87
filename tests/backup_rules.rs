//! Import and export keep to KV's rules and to the customer families: an import is
//! checked whole before anything is written, every import is audited, failed ones too,
//! and keys outside the two families need `allKeys=true` (docs/http-api.md, "Backups").

mod common;

use common::*;
use customer_kv_migration::http::{ApiRequest, ApiResponse, Method};

fn admin_request(world: &World, method: &str, path: &str, body: &str) -> ApiResponse {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut request = ApiRequest::new(Method::parse(method), path);
    request.query = query.to_owned();
    request.authorization = Some(format!("Bearer {}", admin()));
    request.body = body.as_bytes().to_vec();
    world.send_request(&request)
}

fn audited_actions(world: &World) -> Vec<String> {
    let answer = world.send("GET", "/admin/migrate/audit", Some(&admin()), None);
    assert_eq!(answer.status, 200);
    answer.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

fn line(key: &str, extra: &str) -> String {
    format!(r#"{{"key":"{key}","value":"{{\"customerId\":\"x\"}}"{extra}}}"#)
}

#[test]
fn an_import_with_one_bad_line_writes_nothing_and_is_audited() {
    let world = World::at_real_time();
    let past = line("customer_b", r#","expiration":1"#);
    for bad in [past.as_str(), &line("..", "")] {
        let body = [
            line("customer_a", ""),
            bad.to_owned(),
            line("customer_c", ""),
        ]
        .join("\n");
        let answer = admin_request(&world, "POST", "/admin/migrate/import?store=new", &body);
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
        assert_eq!(error_code(&answer), "invalid_body");
        assert!(answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 2:"));
        assert!(world.stores.new.peek("customer_a").is_none(), "{bad}");
        assert!(world.stores.new.peek("customer_c").is_none(), "{bad}");
    }
    assert_eq!(audited_actions(&world), ["import_failed", "import_failed"]);
}

#[test]
fn keys_outside_the_customer_families_need_all_keys() {
    let world = World::at_real_time();
    for key in [
        "otp_session_attacker",
        " __migration/phase",
        "__Migration/phase",
    ] {
        let body = line(key, "");
        let refused = admin_request(&world, "POST", "/admin/migrate/import?store=old", &body);
        assert_eq!(refused.status, 400, "{key:?}: {}", refused.body);
        assert!(world.stores.old.peek(key).is_none());
        let path = "/admin/migrate/import?store=old&allKeys=true";
        let allowed = admin_request(&world, "POST", path, &body);
        assert_eq!(allowed.status, 200, "{key:?}: {}", allowed.body);
        assert!(world.stores.old.peek(key).is_some());
    }

    // The export leaves them out too unless asked, and asking is audited.
    let body = line("customer_a", "");
    assert_eq!(
        admin_request(&world, "POST", "/admin/migrate/import?store=old", &body).status,
        200
    );
    let export = |path: &str| {
        let answer = admin_request(&world, "GET", path, "");
        assert_eq!(answer.status, 200);
        let (_, bytes) = answer.raw.expect("an NDJSON page");
        String::from_utf8(bytes).unwrap()
    };
    let page = export("/admin/migrate/export?store=old");
    assert!(page.contains("customer_a"));
    assert!(!page.contains("otp_session"), "{page}");
    let before = audited_actions(&world).len();
    let page = export("/admin/migrate/export?store=old&allKeys=true");
    assert!(page.contains("otp_session_attacker"));
    let actions = audited_actions(&world);
    assert_eq!(actions.len(), before + 1);
    assert!(
        actions.iter().any(|a| a == "export_all_keys"),
        "{actions:?}"
    );
}

// ---- values too large for an NDJSON request, and export pages bounded by bytes ----

use std::cell::Cell;

use customer_kv_migration::http::{BodyError, RequestBody};
use customer_kv_migration::migration::backup::EXPORT_PAGE_BYTES;
use customer_kv_migration::store::{KvStore, PutOptions};
use serde_json::json;

const MIB: usize = 1024 * 1024;

/// A raw value import of `body` with `query`, as an admin unless `token` says otherwise.
fn import_value(world: &World, query: &str, body: &[u8]) -> ApiResponse {
    let path = format!("/admin/migrate/import/value?{query}");
    admin_request_bytes(world, &path, body)
}

fn admin_request_bytes(world: &World, path: &str, body: &[u8]) -> ApiResponse {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut request = ApiRequest::new(Method::Post, path);
    request.query = query.to_owned();
    request.authorization = Some(format!("Bearer {}", admin()));
    request.body = body.to_vec();
    world.send_request(&request)
}

#[test]
fn a_raw_value_is_checked_as_a_backup_line_is() {
    let world = World::at_real_time();
    let now = world.now_ms / 1000;
    let big_metadata = format!(r#"{{"x":"{}"}}"#, "m".repeat(1_100));
    let cases = [
        "store=old".to_owned(),
        "store=old&key=".to_owned(),
        "store=old&key=..".to_owned(),
        "store=old&key=.".to_owned(),
        format!("store=old&key={}", "customer_".repeat(60)),
        "store=old&key=otp_session_1".to_owned(),
        format!("store=old&key=customer_a&expiration={}", now + 59),
        "store=old&key=customer_a&expiration=soon".to_owned(),
        "store=old&key=customer_a&metadata=%7Bnot".to_owned(),
        format!("store=old&key=customer_a&metadata={big_metadata}"),
        "store=old&key=customer_a&overwrite=yes".to_owned(),
        "store=middle&key=customer_a".to_owned(),
    ];
    for query in &cases {
        let answer = import_value(&world, query, b"value");
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        assert_eq!(error_code(&answer), "invalid_query", "{query}");
    }
    assert!(world.stores.old.keys().is_empty());
    // Refusals with the same message at the same instant are one entry.
    let actions = audited_actions(&world);
    assert!(actions.len() >= 8, "{actions:?}");
    assert!(actions.iter().all(|a| a == "import_failed"), "{actions:?}");
    let allowed = import_value(&world, "store=old&key=otp_session_1&allKeys=true", b"v");
    assert_eq!(allowed.status, 200, "{}", allowed.body);
}

#[test]
fn a_raw_value_is_written_exactly_and_only_where_missing_unless_overwritten() {
    let world = World::at_real_time();
    let expiration = world.now_ms / 1000 + 3_600;
    let value: Vec<u8> = (0..3 * MIB).map(|i| (i % 251) as u8).collect();
    let query =
        format!("store=new&key=customer_big&expiration={expiration}&metadata=%7B%22v%22%3A2%7D");
    let answer = import_value(&world, &query, &value);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body,
        json!({"store": "new", "written": 1, "alreadyPresent": 0, "skippedMigrationState": 0})
    );
    let stored = block_on(world.stores.new.get("customer_big"))
        .unwrap()
        .unwrap();
    assert!(stored.bytes == value, "the value's bytes differ");
    assert_eq!(stored.metadata, Some(json!({"v": 2})));
    let listed = block_on(world.stores.new.list("customer_big", None, 10)).unwrap();
    assert_eq!(listed.keys[0].expiration, Some(expiration));

    // A key the store holds is kept, even when a longer key it prefixes exists.
    world
        .stores
        .new
        .insert("customer_bigger", b"x", PutOptions::default());
    let kept = import_value(&world, "store=new&key=customer_big", b"other");
    assert_eq!(kept.body["alreadyPresent"], 1, "{}", kept.body);
    assert!(world.stores.new.peek("customer_big").unwrap() == value);
    let missing = import_value(&world, "store=new&key=customer_bi", b"new");
    assert_eq!(missing.body["written"], 1, "{}", missing.body);
    let replaced = import_value(
        &world,
        "store=new&key=customer_big&overwrite=true",
        b"other",
    );
    assert_eq!(replaced.body["written"], 1, "{}", replaced.body);
    assert_eq!(world.stores.new.peek("customer_big").unwrap(), b"other");
    let state = import_value(&world, "store=new&key=__migration/phase", b"{}");
    assert_eq!(state.body["skippedMigrationState"], 1, "{}", state.body);
    assert!(world.stores.new.peek("__migration/phase").is_none());
    assert!(audited_actions(&world).iter().all(|a| a == "import"));
}

/// A body that records whether, and how far, it was read.
struct WatchedBody<'a> {
    read_up_to: &'a Cell<Option<usize>>,
    bytes: Vec<u8>,
}

impl RequestBody for WatchedBody<'_> {
    async fn read_up_to(self, limit: usize) -> Result<Vec<u8>, BodyError> {
        self.read_up_to.set(Some(limit));
        self.bytes.read_up_to(limit).await
    }
}

#[test]
fn a_raw_value_body_is_read_only_for_an_admin_and_up_to_25_mib() {
    let world = World::at_real_time();
    let send = |token: Option<String>, bytes: Vec<u8>| {
        let read = Cell::new(None);
        let mut head = ApiRequest::new(Method::Post, "/admin/migrate/import/value");
        head.query = "store=old&key=customer_a".into();
        head.authorization = token.map(|t| format!("Bearer {t}"));
        let body = WatchedBody {
            read_up_to: &read,
            bytes,
        };
        let answer = world.send_body(head, body);
        (answer, read.get())
    };
    let (answer, read) = send(None, vec![b'x'; 100 * 1024]);
    assert_eq!((answer.status, read), (401, None), "{}", answer.body);
    let (answer, read) = send(Some(service()), vec![b'x'; 100 * 1024]);
    assert_eq!((answer.status, read), (403, None), "{}", answer.body);
    let (answer, read) = send(Some(admin()), vec![b'x'; 25 * MIB + 1]);
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(read, Some(25 * MIB));
    let (answer, _) = send(Some(admin()), vec![b'x'; 25 * MIB]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(world.stores.old.peek("customer_a").unwrap().len(), 25 * MIB);
}

/// Every page of an export of `store`, following the cursor, as its keys and the sizes
/// of their values.
fn export_pages(world: &World, store: &str) -> Vec<(Vec<String>, Vec<usize>)> {
    let mut pages = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/admin/migrate/export?store={store}&cursor={cursor}");
        let answer = admin_request(world, "GET", &path, "");
        assert_eq!(answer.status, 200, "{}", answer.body);
        let header = |name: &str| {
            answer
                .headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        let (_, ndjson) = answer.raw.clone().expect("an NDJSON page");
        let lines: Vec<serde_json::Value> = ndjson
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let keys = lines.iter().map(|l| l["key"].as_str().unwrap().to_owned());
        let bytes = lines
            .iter()
            .map(|l| l["value"].as_str().map_or(0, str::len));
        pages.push((keys.collect(), bytes.collect()));
        match header("X-Export-Cursor") {
            Some(next) if header("X-Export-Complete").as_deref() == Some("false") => {
                cursor =
                    percent_encoding::utf8_percent_encode(&next, percent_encoding::NON_ALPHANUMERIC)
                        .to_string()
            }
            _ => return pages,
        }
    }
}

#[test]
fn export_pages_stop_at_their_bytes_and_go_on_at_the_next_key() {
    let world = World::at_real_time();
    let mut expected = Vec::new();
    for i in 0..30 {
        // Mostly small records, a run of 1 MiB values, and one of 25 MiB.
        let size = match i {
            5..=20 => MIB,
            25 => 25 * MIB,
            _ => 100,
        };
        let key = format!("customer_{i:02}");
        world
            .stores
            .old
            .insert(&key, &vec![b'v'; size], PutOptions::default());
        expected.push(key);
    }
    world
        .stores
        .old
        .insert("otp_session_skipped", b"x", PutOptions::default());
    let pages = export_pages(&world, "old");
    let exported: Vec<String> = pages.iter().flat_map(|(keys, _)| keys.clone()).collect();
    assert_eq!(exported, expected, "every key once, in order");
    for (keys, sizes) in &pages {
        // A page passes the bound by at most its last bulk read, which is sized by the
        // largest value seen: by less than the largest value on the page.
        let total: usize = sizes.iter().sum();
        let largest = sizes.iter().max().copied().unwrap_or(0);
        assert!(
            total - largest < EXPORT_PAGE_BYTES,
            "{} keys, {total} bytes",
            keys.len()
        );
    }
    assert!(pages.len() >= 3, "{} pages", pages.len());

    // A store of one 25 MiB value: a page holding just that value.
    let world = World::at_real_time();
    let value = vec![b'w'; 25 * MIB];
    world
        .stores
        .new
        .insert("customer_max", &value, PutOptions::default());
    let pages = export_pages(&world, "new");
    assert_eq!(pages, [(vec!["customer_max".to_owned()], vec![25 * MIB])]);
}

#[test]
fn an_export_cursor_must_be_one_an_export_answered() {
    let world = World::at_real_time();
    for cursor in ["garbage", "eyJsaXN0IjoxfQ", "%FF"] {
        let path = format!("/admin/migrate/export?store=old&cursor={cursor}");
        let answer = admin_request(&world, "GET", &path, "");
        assert_eq!(answer.status, 400, "{cursor}: {}", answer.body);
    }
}
