//! The operator dashboard's routes through the real pipeline (docs/design.md §15): its
//! files and their headers, the methods it takes, that it costs no KV operation, and
//! that with Cloudflare Access configured only a signed-in admin gets the page.

mod common;

use common::{admin, service, World};
use customer_kv_migration::auth::access::AccessRules;
use customer_kv_migration::auth::keys::{AccessKeys, KeyFetcher};
use customer_kv_migration::auth::AdminSignIn;
use customer_kv_migration::http::{ApiRequest, ApiResponse, Method};
use futures::future::LocalBoxFuture;
use jwt_simple::prelude::*;
use serde_json::{json, Value};

const TEAM: &str = "https://team.cloudflareaccess.com";
const AUD: &str = "4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2";
const KEY_A: &str = include_str!("fixtures/access/key-a.pem");

fn header<'a>(response: &'a ApiResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn get(world: &World, path: &str) -> ApiResponse {
    world.send("GET", path, None, None)
}

fn body_text(response: &ApiResponse) -> String {
    let (_, bytes) = response.raw.as_ref().expect("a file, not JSON");
    String::from_utf8(bytes.clone()).unwrap()
}

#[test]
fn the_page_and_its_files_are_served_with_a_strict_policy() {
    let world = World::new();
    for (path, content_type, marker) in [
        (
            "/admin/",
            "text/html; charset=utf-8",
            "<script src=\"/admin/app.js\"",
        ),
        (
            "/admin/app.js",
            "text/javascript; charset=utf-8",
            "/admin/migrate",
        ),
        (
            "/admin/style.css",
            "text/css; charset=utf-8",
            ":focus-visible",
        ),
    ] {
        let response = get(&world, path);
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        let (sent_type, _) = response.raw.as_ref().unwrap();
        assert_eq!(*sent_type, content_type, "{path}");
        assert!(body_text(&response).contains(marker), "{path}");
        let csp = header(&response, "Content-Security-Policy").expect("a CSP");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header(&response, "X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(header(&response, "Referrer-Policy"), Some("no-referrer"));
        assert_eq!(
            header(&response, "Cache-Control"),
            Some("no-cache, private")
        );
    }
}

#[test]
fn the_page_holds_no_inline_script_or_style_and_loads_nothing_from_elsewhere() {
    let world = World::new();
    let page = body_text(&get(&world, "/admin/"));
    assert!(!page.contains("<style"), "no inline style element");
    assert!(!page.contains(" style="), "no style attribute");
    let handler = page.split(" on").skip(1).any(|rest| {
        let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    });
    assert!(!handler, "no inline event handler");
    let scripts: Vec<&str> = page.split("<script").skip(1).collect();
    assert_eq!(scripts.len(), 1);
    assert!(scripts[0].starts_with(" src=\"/admin/app.js\""));
    for file in ["/admin/", "/admin/app.js", "/admin/style.css"] {
        let text = body_text(&get(&world, file));
        assert!(!text.contains("http://"), "{file} names no other origin");
        assert!(!text.contains("https://"), "{file} names no other origin");
        assert!(
            !text.contains("localStorage"),
            "{file}: the token stays in the tab"
        );
    }
}

#[test]
fn admin_redirects_to_the_page_and_other_methods_are_refused() {
    let world = World::at_real_time();
    let moved = get(&world, "/admin");
    assert_eq!(moved.status, 308);
    assert_eq!(header(&moved, "Location"), Some("/admin/"));
    for path in ["/admin", "/admin/", "/admin/app.js", "/admin/style.css"] {
        for method in ["POST", "PATCH", "DELETE", "PUT"] {
            let refused = world.send(method, path, Some(&admin()), Some(json!({})));
            assert_eq!(refused.status, 405, "{method} {path}");
            assert_eq!(refused.body["error"]["code"], "method_not_allowed");
            assert_eq!(header(&refused, "Allow"), Some("GET"));
        }
    }
    assert_eq!(get(&world, "/admin/index.html").status, 404);
    assert_eq!(get(&world, "/admin/migrate").status, 404);
    // The API beside it keeps its sign-in.
    let status = get(&world, "/admin/migrate/status");
    assert_eq!(status.status, 401, "{}", status.body);
    let by_service = world.send("GET", "/admin/migrate/status", Some(&service()), None);
    assert_eq!(by_service.status, 403);
}

#[test]
fn the_files_cost_no_kv_operation_and_log_their_route_only() {
    let world = World::new();
    world.reset_counts();
    for path in ["/admin/", "/admin/app.js", "/admin/style.css", "/admin"] {
        let outcome = world.handle(&ApiRequest::new(Method::Get, path));
        assert_eq!(outcome.log.kv_operations, 0, "{path}");
        assert_eq!(outcome.log.phase, None, "{path}");
        assert_eq!(outcome.log.route, path, "{path}");
    }
    let unknown = world.handle(&ApiRequest::new(Method::Get, "/admin/x.js"));
    assert_eq!(unknown.log.route, "unmatched");
    // /health is untouched by the dashboard's routes.
    let health = get(&world, "/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
}

// ---------- with Cloudflare Access ----------

#[derive(Clone)]
struct Team;

impl KeyFetcher for Team {
    fn get(&self, _url: &str) -> LocalBoxFuture<'_, Result<String, String>> {
        let key = RS256KeyPair::from_pem(KEY_A).unwrap().with_key_id("k1");
        let jwk: Value =
            serde_json::from_str(&key.public_key().with_key_id("k1").to_jwk()).unwrap();
        let body = json!({ "keys": [jwk] }).to_string();
        Box::pin(async move { Ok(body) })
    }
}

fn access_world(admin_secret: Option<&[u8]>) -> World {
    let mut world = World::at_real_time();
    world.access_keys = AccessKeys::new(Box::new(Team));
    world.config.admin_sign_in = AdminSignIn {
        access: AccessRules::from_settings(Some(TEAM), Some(AUD), Some("ops@example.com"), None)
            .unwrap(),
        admin_secret: admin_secret.map(<[u8]>::to_vec),
    };
    world
}

fn assertion(email: &str, now_ms: u64) -> String {
    let identity = json!({ "email": email, "type": "app" });
    let mut claims = Claims::with_custom_claims(identity, Duration::from_secs(600))
        .with_issuer(TEAM)
        .with_audiences([AUD.to_owned()].into())
        .with_subject("7335d417-61da-459d-899c-0a01c76a2f94");
    let issued = now_ms / 1000;
    claims.issued_at = Some(UnixTimeStamp::from_secs(issued));
    claims.invalid_before = Some(UnixTimeStamp::from_secs(issued));
    claims.expires_at = Some(UnixTimeStamp::from_secs(issued + 600));
    let key = RS256KeyPair::from_pem(KEY_A).unwrap().with_key_id("k1");
    key.sign(claims).unwrap()
}

fn get_signed(world: &World, path: &str, signed: Option<String>) -> ApiResponse {
    let mut request = ApiRequest::new(Method::Get, path);
    request.access_assertion = signed;
    world.send_request(&request)
}

#[test]
fn with_access_only_a_signed_in_admin_gets_the_page() {
    for secret in [None, Some(&b"an-admin-only-secret-of-32-bytes-or-more"[..])] {
        let world = access_world(secret);
        for path in ["/admin/", "/admin/app.js", "/admin/style.css"] {
            let anonymous = get_signed(&world, path, None);
            assert_eq!(anonymous.status, 401, "{path}: {}", anonymous.body);
            assert!(anonymous.raw.is_none(), "{path}: no file without a sign-in");
            let stranger = get_signed(
                &world,
                path,
                Some(assertion("someone@elsewhere.example", world.now_ms)),
            );
            assert_eq!(stranger.status, 403, "{path}: {}", stranger.body);
            let forged = get_signed(&world, path, Some("e30.e30.sig".into()));
            assert_eq!(forged.status, 401, "{path}");
            let ops = get_signed(
                &world,
                path,
                Some(assertion("ops@example.com", world.now_ms)),
            );
            assert_eq!(ops.status, 200, "{path}: {}", ops.body);
            assert!(header(&ops, "Content-Security-Policy").is_some());
        }
        // The redirect holds nothing and is sent on to the page, which asks.
        assert_eq!(get_signed(&world, "/admin", None).status, 308);
    }
}

#[test]
fn without_access_the_page_is_served_openly_and_the_api_still_asks() {
    let mut world = World::at_real_time();
    world.config.admin_sign_in = AdminSignIn {
        access: None,
        admin_secret: Some(b"an-admin-only-secret-of-32-bytes-or-more".to_vec()),
    };
    assert_eq!(get(&world, "/admin/").status, 200);
    let status = get(&world, "/admin/migrate/status");
    assert_eq!(status.status, 401);
    // A JWT_SECRET admin token no longer opens the API once an admin secret is set.
    let shared = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(shared.status, 401, "{}", shared.body);
}
