//! Admins signed in through Cloudflare Access (docs/design.md §14), through the real
//! pipeline: assertions signed with RS256 by test keys the fake team publishes.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use common::{admin, service, World, SECRET};
use customer_kv_migration::auth::access::AccessRules;
use customer_kv_migration::auth::keys::{AccessKeys, KeyFetcher, REFETCH_AFTER_MS};
use customer_kv_migration::auth::AdminSignIn;
use customer_kv_migration::http::{ApiRequest, ApiResponse, Method};
use futures::future::LocalBoxFuture;
use jwt_simple::prelude::*;
use serde_json::{json, Value};

const TEAM: &str = "https://team.cloudflareaccess.com";
const AUD: &str = "4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2";
const KEY_A: &str = include_str!("fixtures/access/key-a.pem");
const KEY_B: &str = include_str!("fixtures/access/key-b.pem");
const ADMIN_SECRET: &[u8] = b"an-admin-only-secret-of-32-bytes-or-more";

/// The team's key endpoint: the keys it publishes now, and how often it was asked.
#[derive(Clone, Default)]
struct Team {
    published: Rc<RefCell<Vec<Value>>>,
    fetches: Rc<Cell<u32>>,
}

impl KeyFetcher for Team {
    fn get(&self, url: &str) -> LocalBoxFuture<'_, Result<String, String>> {
        assert_eq!(url, format!("{TEAM}/cdn-cgi/access/certs"));
        self.fetches.set(self.fetches.get() + 1);
        let body = json!({ "keys": *self.published.borrow() }).to_string();
        Box::pin(async move { Ok(body) })
    }
}

fn signer(pem: &str, kid: &str) -> RS256KeyPair {
    RS256KeyPair::from_pem(pem).unwrap().with_key_id(kid)
}

impl Team {
    fn publish(&self, keys: &[(&str, &str)]) {
        *self.published.borrow_mut() = keys
            .iter()
            .map(|(pem, kid)| {
                let public = signer(pem, kid).public_key().with_key_id(kid);
                serde_json::from_str(&public.to_jwk()).unwrap()
            })
            .collect();
    }
}

/// An application token as Access issues it, `now_ms` being the worker's clock.
struct Assertion {
    key: RS256KeyPair,
    issuer: String,
    audience: String,
    identity: Value,
    issued_ms: u64,
    lifetime_secs: u64,
}

impl Assertion {
    fn for_user(email: &str, now_ms: u64) -> Self {
        Self {
            key: signer(KEY_A, "k1"),
            issuer: TEAM.into(),
            audience: AUD.into(),
            identity: json!({ "email": email, "type": "app", "country": "US" }),
            issued_ms: now_ms,
            lifetime_secs: 600,
        }
    }

    fn sign(&self) -> String {
        let mut claims = Claims::with_custom_claims(
            self.identity.clone(),
            Duration::from_secs(self.lifetime_secs),
        )
        .with_issuer(&self.issuer)
        .with_audiences([self.audience.clone()].into())
        .with_subject("7335d417-61da-459d-899c-0a01c76a2f94");
        let issued = self.issued_ms / 1000;
        claims.issued_at = Some(UnixTimeStamp::from_secs(issued));
        claims.invalid_before = Some(UnixTimeStamp::from_secs(issued));
        claims.expires_at = Some(UnixTimeStamp::from_secs(issued + self.lifetime_secs));
        self.key.sign(claims).unwrap()
    }
}

fn access_world(admins: &str, groups: &str) -> (World, Team) {
    let mut world = World::at_real_time();
    let team = Team::default();
    team.publish(&[(KEY_A, "k1")]);
    world.access_keys = AccessKeys::new(Box::new(team.clone()));
    world.config.admin_sign_in = AdminSignIn {
        access: AccessRules::from_settings(Some(TEAM), Some(AUD), Some(admins), Some(groups))
            .unwrap(),
        admin_secret: None,
    };
    (world, team)
}

fn with_assertion(world: &World, path: &str, assertion: &str) -> ApiResponse {
    let mut request = ApiRequest::new(Method::Get, path);
    request.access_assertion = Some(assertion.to_owned());
    world.send_request(&request)
}

fn status_with(world: &World, assertion: &str) -> (u16, String) {
    let response = with_assertion(world, "/admin/migrate/status", assertion);
    let code = response.body["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    (response.status, code)
}

#[test]
fn a_valid_assertion_of_a_listed_admin_opens_admin_routes_and_names_them() {
    let (world, _) = access_world("ops@example.com", "");
    let assertion = Assertion::for_user("Ops@Example.com", world.now_ms).sign();
    assert_eq!(status_with(&world, &assertion), (200, String::new()));
    // The admin's identity is who the audit trail names.
    let mut request = ApiRequest::new(Method::Post, "/admin/migrate/phase");
    request.access_assertion = Some(assertion);
    request.body = json!({ "phase": 1, "reason": "drill" })
        .to_string()
        .into_bytes();
    let moved = world.send_request(&request);
    assert_eq!(moved.status, 200, "{}", moved.body);
    let audit = with_assertion(
        &world,
        "/admin/migrate/audit",
        &Assertion::for_user("ops@example.com", world.now_ms).sign(),
    );
    assert_eq!(audit.status, 200, "{}", audit.body);
    assert!(
        audit.body.to_string().contains("Ops@Example.com"),
        "{}",
        audit.body
    );
}

#[test]
fn forged_foreign_expired_and_confused_assertions_are_refused() {
    let (world, _) = access_world("ops@example.com", "");
    let now = world.now_ms;
    let valid = || Assertion::for_user("ops@example.com", now);
    // Signed by a key the team never published, under the team's key id.
    let forged = Assertion {
        key: signer(KEY_B, "k1"),
        ..valid()
    };
    assert_eq!(
        status_with(&world, &forged.sign()),
        (401, "invalid_access_token".into())
    );
    // A valid signature whose payload was then edited.
    let token = valid().sign();
    let parts: Vec<&str> = token.split('.').collect();
    let edited = Assertion {
        identity: json!({ "email": "ops@example.com", "type": "app", "country": "FR" }),
        ..valid()
    }
    .sign();
    let spliced = format!(
        "{}.{}.{}",
        parts[0],
        edited.split('.').nth(1).unwrap(),
        parts[2]
    );
    assert_eq!(
        status_with(&world, &spliced),
        (401, "invalid_access_token".into())
    );
    // Another Access application of the same team, and another team.
    let other_app = Assertion {
        audience: "another-application-tag".into(),
        ..valid()
    };
    assert_eq!(
        status_with(&world, &other_app.sign()),
        (401, "invalid_access_token".into())
    );
    let other_team = Assertion {
        issuer: "https://elsewhere.cloudflareaccess.com".into(),
        ..valid()
    };
    assert_eq!(
        status_with(&world, &other_team.sign()),
        (401, "invalid_access_token".into())
    );
    // Expired ten minutes ago.
    let expired = Assertion {
        issued_ms: now - 20 * 60 * 1000,
        ..valid()
    };
    assert_eq!(
        status_with(&world, &expired.sign()),
        (401, "access_token_expired".into())
    );
    // HS256 "signed" with the published public key: the classic algorithm confusion.
    let public_pem = signer(KEY_A, "k1").public_key().to_pem().unwrap();
    let mut claims = Claims::with_custom_claims(valid().identity, Duration::from_secs(600))
        .with_issuer(TEAM)
        .with_audience(AUD);
    claims.issued_at = Some(UnixTimeStamp::from_secs(now / 1000));
    let confused = HS256Key::from_bytes(public_pem.as_bytes())
        .with_key_id("k1")
        .authenticate(claims)
        .unwrap();
    assert_eq!(
        status_with(&world, &confused),
        (401, "invalid_access_token".into())
    );
    assert_eq!(
        status_with(&world, "not-a-jwt"),
        (401, "invalid_access_token".into())
    );
    // A global session token (`type: org`) is not an application's.
    let org = Assertion {
        identity: json!({ "email": "ops@example.com", "type": "org" }),
        ..valid()
    };
    assert_eq!(
        status_with(&world, &org.sign()),
        (401, "invalid_access_token".into())
    );
}

#[test]
fn only_listed_identities_domains_groups_and_service_tokens_are_admins() {
    let (world, _) = access_world(
        "ops@example.com, *@sre.example, 1a2b3c.access",
        "migration-admins",
    );
    let now = world.now_ms;
    let as_identity = |identity: Value| {
        let assertion = Assertion {
            identity,
            ..Assertion::for_user("unused", now)
        };
        status_with(&world, &assertion.sign()).0
    };
    assert_eq!(
        as_identity(json!({ "email": "ops@example.com", "type": "app" })),
        200
    );
    assert_eq!(
        as_identity(json!({ "email": "kim@sre.example", "type": "app" })),
        200
    );
    assert_eq!(
        as_identity(json!({ "common_name": "1a2b3c.access", "type": "app" })),
        200
    );
    let in_group = json!({ "email": "lee@example.com", "type": "app",
                           "custom": { "groups": ["staff", "migration-admins"] } });
    assert_eq!(as_identity(in_group), 200);
    assert_eq!(
        as_identity(json!({ "email": "lee@example.com", "type": "app" })),
        403
    );
    assert_eq!(
        as_identity(json!({ "common_name": "9z9z.access", "type": "app" })),
        403
    );
    assert_eq!(as_identity(json!({ "type": "app" })), 401);
}

#[test]
fn a_rotated_key_is_fetched_when_an_assertion_first_names_it() {
    let (mut world, team) = access_world("ops@example.com", "");
    let by_new_key = |world: &World| Assertion {
        key: signer(KEY_B, "k2"),
        ..Assertion::for_user("ops@example.com", world.now_ms)
    };
    assert_eq!(
        status_with(
            &world,
            &Assertion::for_user("ops@example.com", world.now_ms).sign()
        )
        .0,
        200
    );
    assert_eq!(team.fetches.get(), 1);
    // The team rotates: k2 signs from now on, k1 stays published for a while.
    team.publish(&[(KEY_B, "k2"), (KEY_A, "k1")]);
    world.now_ms += REFETCH_AFTER_MS;
    assert_eq!(status_with(&world, &by_new_key(&world).sign()).0, 200);
    assert_eq!(team.fetches.get(), 2);
    // k1 retired: its assertions fail once the copy is refreshed.
    team.publish(&[(KEY_B, "k2")]);
    world.now_ms += 3600 * 1000;
    assert_eq!(status_with(&world, &by_new_key(&world).sign()).0, 200);
    let old = Assertion::for_user("ops@example.com", world.now_ms).sign();
    assert_eq!(
        status_with(&world, &old),
        (401, "invalid_access_token".into())
    );
}

#[test]
fn once_access_is_configured_the_otp_secret_no_longer_opens_admin_routes() {
    let (mut world, _) = access_world("ops@example.com", "");
    let shared = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(shared.status, 401);
    assert_eq!(shared.body["error"]["code"], "access_required");
    // Customer routes keep their tokens; an assertion there is no credential.
    let create = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "email": "a@example.com" })),
    );
    assert_eq!(create.status, 201, "{}", create.body);
    let assertion = Assertion::for_user("ops@example.com", world.now_ms).sign();
    let me = with_assertion(&world, "/customer/me", &assertion);
    assert_eq!(me.body["error"]["code"], "missing_token");

    // With an admin secret besides, tokens signed by it work and the OTP secret's not.
    world.config.admin_sign_in.admin_secret = Some(ADMIN_SECRET.to_vec());
    let own = sign_hs256(ADMIN_SECRET, "admin");
    let answer = world.send("GET", "/admin/migrate/status", Some(&own), None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let refused = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.body["error"]["code"], "invalid_token");
    // A customer token signed with the admin secret is still not an admin's.
    let customer = sign_hs256(ADMIN_SECRET, "customer");
    let forbidden = world.send("GET", "/admin/migrate/status", Some(&customer), None);
    assert_eq!(forbidden.status, 403);
}

#[test]
fn without_access_the_assertion_header_is_ignored_and_local_tokens_work() {
    let world = World::at_real_time();
    let assertion = Assertion::for_user("ops@example.com", world.now_ms).sign();
    let answer = with_assertion(&world, "/admin/migrate/status", &assertion);
    assert_eq!(answer.body["error"]["code"], "missing_token");
    let local = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(local.status, 200);
}

#[test]
fn when_the_team_keys_cannot_be_fetched_admins_get_a_503() {
    let (mut world, _) = access_world("ops@example.com", "");
    world.access_keys = AccessKeys::default();
    let assertion = Assertion::for_user("ops@example.com", world.now_ms).sign();
    assert_eq!(
        status_with(&world, &assertion),
        (503, "access_keys_unavailable".into())
    );
}

fn sign_hs256(secret: &[u8], role: &str) -> String {
    let claims = Claims::with_custom_claims(json!({ "role": role }), Duration::from_mins(10))
        .with_subject("ops-admin");
    HS256Key::from_bytes(secret).authenticate(claims).unwrap()
}

#[test]
fn the_admin_secret_must_be_long_and_not_the_otp_secret() {
    let env = |admin_secret: &'static str| {
        move |name: &str| match name {
            "JWT_SECRET" => Some(String::from_utf8(SECRET.to_vec()).unwrap()),
            "ADMIN_JWT_SECRET" => Some(admin_secret.to_owned()),
            _ => None,
        }
    };
    use customer_kv_migration::app::Config;
    assert!(Config::from_env(env("short")).is_err());
    let same = std::str::from_utf8(SECRET).unwrap();
    assert!(Config::from_env(env(Box::leak(same.to_owned().into_boxed_str()))).is_err());
    let good = Config::from_env(env("an-admin-only-secret-of-32-bytes-or-more")).unwrap();
    assert_eq!(good.admin_sign_in.describe(), "admin-secret");
}

#[test]
fn another_sites_page_cannot_act_through_the_access_cookie() {
    use customer_kv_migration::http::Provenance;
    let (world, _) = access_world("ops@example.com", "");
    let move_from = |provenance: Provenance, phase: u8| {
        let mut request = ApiRequest::new(Method::Post, "/admin/migrate/phase");
        request.access_assertion =
            Some(Assertion::for_user("ops@example.com", world.now_ms).sign());
        request.provenance = provenance;
        request.body = json!({ "phase": phase, "force": true, "reason": "drill" })
            .to_string()
            .into_bytes();
        world.send_request(&request)
    };
    let site = |fetch_site: Option<&str>, origin: Option<&str>| Provenance {
        fetch_site: fetch_site.map(str::to_owned),
        origin: origin.map(str::to_owned),
        host: Some("customers.example.com".into()),
    };
    for (cross, why) in [
        (
            site(Some("cross-site"), Some("https://evil.example")),
            "another site",
        ),
        (
            site(Some("same-site"), Some("https://blog.example.com")),
            "a sibling subdomain",
        ),
        (
            site(None, Some("https://evil.example")),
            "an old browser's Origin",
        ),
        (site(None, Some("null")), "a sandboxed page"),
    ] {
        let refused = move_from(cross, 1);
        assert_eq!(refused.status, 403, "{why}: {}", refused.body);
    }
    assert_eq!(world.send("GET", "/health", None, None).body["phase"], 0);
    // The dashboard's own pages, and clients that are not browsers (the CLI through a
    // service token), act.
    let own = move_from(
        site(Some("same-origin"), Some("https://customers.example.com")),
        1,
    );
    assert_eq!(own.status, 200, "{}", own.body);
    let cli = move_from(Provenance::default(), 2);
    assert_eq!(cli.status, 200, "{}", cli.body);
    // Reads are harmless from anywhere.
    let mut read = ApiRequest::new(Method::Get, "/admin/migrate/status");
    read.access_assertion = Some(Assertion::for_user("ops@example.com", world.now_ms).sign());
    read.provenance = site(Some("cross-site"), None);
    assert_eq!(world.send_request(&read).status, 200);
}
