//! A native test world: both stores in memory, the real request pipeline, real tokens.
#![allow(dead_code)]

use customer_kv_migration::app::{handle, App, Config};
use customer_kv_migration::http::{ApiRequest, ApiResponse, Method};
use customer_kv_migration::migration::control::PhaseCache;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::{MemoryStore, Stores};
use futures::executor::block_on;
use jwt_simple::prelude::*;
use serde_json::{json, Value};

pub const SECRET: &[u8] = b"native-test-secret-0123456789abcdef";
pub const START_MS: u64 = 1_800_000_000_000;

pub struct World {
    pub stores: Stores<MemoryStore>,
    pub config: Config,
    pub cache: PhaseCache,
    pub now_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct RoleClaim {
    role: String,
}

pub fn token(role: &str, sub: &str) -> String {
    let claims =
        Claims::with_custom_claims(RoleClaim { role: role.into() }, Duration::from_hours(1))
            .with_subject(sub);
    HS256Key::from_bytes(SECRET).authenticate(claims).unwrap()
}

pub fn admin() -> String {
    token("admin", "ops-admin")
}

pub fn service() -> String {
    token("service", "otp-auth")
}

impl World {
    /// A world whose phase cache is off, so a phase change applies to the next request.
    pub fn new() -> Self {
        Self {
            stores: Stores {
                old: MemoryStore::new(),
                new: MemoryStore::new(),
            },
            config: Config {
                jwt_secret: SECRET.to_vec(),
                default_phase: Phase::Legacy,
                phase_cache_ms: 0,
            },
            cache: PhaseCache::default(),
            now_ms: START_MS,
        }
    }

    /// The token's clock is real time; the worker's clock is `now_ms`. Keep them close.
    pub fn at_real_time() -> Self {
        let mut world = Self::new();
        world.now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        world
    }

    pub fn in_phase(phase: Phase) -> Self {
        let mut world = Self::at_real_time();
        world.config.default_phase = phase;
        world
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> ApiResponse {
        let mut request = ApiRequest::new(Method::parse(method), path);
        request.authorization = token.map(|t| format!("Bearer {t}"));
        request.body = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        self.send_request(&request)
    }

    pub fn send_request(&self, request: &ApiRequest) -> ApiResponse {
        let app = App {
            stores: &self.stores,
            config: &self.config,
            phase_cache: &self.cache,
            now_ms: self.now_ms,
        };
        block_on(handle(&app, request)).response
    }

    pub fn set_phase(&self, phase: Phase) {
        let response = self.send(
            "POST",
            "/admin/migrate/phase",
            Some(&admin()),
            Some(json!({ "phase": phase.number(), "force": true, "reason": "test setup" })),
        );
        assert_eq!(response.status, 200, "{}", response.body);
    }

    pub fn reset_counts(&self) {
        self.stores.old.reset_counts();
        self.stores.new.reset_counts();
    }

    pub fn old_has(&self, key: &str) -> bool {
        self.stores.old.peek(key).is_some()
    }

    pub fn new_value(&self, key: &str) -> Option<Value> {
        self.stores
            .new
            .peek(key)
            .map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    pub fn old_value(&self, key: &str) -> Option<Value> {
        self.stores
            .old
            .peek(key)
            .map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
}

pub fn error_code(response: &ApiResponse) -> &str {
    response.body["error"]["code"]
        .as_str()
        .unwrap_or("<no error code>")
}

/// The `email_to_customer_` key of an email, computed independently of the crate.
pub fn mapping_key(email: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "email_to_customer_{}",
        hex::encode(Sha256::digest(email.trim().to_lowercase()))
    )
}
