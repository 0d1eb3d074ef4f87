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
