//! One request from start to finish, free of the platform: route, body limit, token,
//! phase, handler. The worker's adapter only converts requests and responses.

use serde_json::json;

use crate::alerts::{self, Alert};
use crate::auth::access::AccessRules;
use crate::auth::keys::AccessKeys;
use crate::auth::{
    admin_caller, authenticate, AdminSignIn, RoleLimits, TokenRules, MIN_ADMIN_SECRET_BYTES,
};
use crate::domain::DEFAULT_MAX_RECORD_BYTES;
use crate::http::ApiError;
use crate::http::{ApiRequest, ApiResponse, BodyError, BodyLimit, Method, RequestBody};
use crate::logging::{Level, RequestLog};
use crate::migration::copying::fanout::ChunkQueue;
use crate::migration::dataplane::DataPlane;
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::gates::GateSettings;
use crate::migration::state::phase_cache::{self, PhaseCache};
use crate::migration::state::phase_record::CurrentPhase;
use crate::phase::Phase;
use crate::routes::{dashboard, dispatch, route, Ctx, Route};
use crate::store::budget::{metered, Budget};
use crate::store::{KvStore, Stores, MAX_VALUE_BYTES};
use crate::writes::Writers;

/// The smallest record cap an operator may set: room for a record's own fields.
const MIN_RECORD_CAP: usize = 1024;

/// Settings read from the worker's environment (`wrangler.toml` vars and secrets).
#[derive(Debug, Clone)]
pub struct Config {
    /// The secret and what else a token must hold.
    pub tokens: TokenRules,
    /// How admins sign in on `/admin` (Access, an admin secret, or `tokens`).
    pub admin_sign_in: AdminSignIn,
    /// The phase until an admin stores one.
    pub default_phase: Phase,
    /// How long an isolate trusts its copy of the phase.
    pub phase_cache_ms: u64,
    /// How long a request may still be running on the phase it started with.
    pub request_margin_ms: u64,
    /// How long a KV write may take to reach every location (reads elsewhere may return
    /// the previous value until then).
    pub consistency_window_ms: u64,
    /// How long phase 4 must run without fallback hits before phase 5.
    pub verification_period_ms: u64,
    /// The most bytes a record written through the API may take (`MAX_RECORD_BYTES`).
    pub max_record_bytes: usize,
    /// The least severe log line written (`LOG_LEVEL`).
    pub log_level: Level,
    /// Where alerts are posted (`ALERT_WEBHOOK_URL`, http or https), if anywhere.
    pub alert_webhook_url: Option<String>,
}

impl Config {
    pub const DEFAULT_PHASE_CACHE_SECONDS: u64 = 5;
    /// Workers requests rarely run longer; the margin covers one that started on the
    /// previous phase just before its isolate's cache expired.
    pub const DEFAULT_SETTLE_MARGIN_SECONDS: u64 = 30;
    /// Workers KV documents that a write can take up to 60 s to be visible everywhere.
    pub const DEFAULT_CONSISTENCY_WINDOW_SECONDS: u64 = 60;
    /// A week: long enough for weekly jobs and rarely active customers to show up.
    pub const DEFAULT_VERIFICATION_PERIOD_SECONDS: u64 = 7 * 24 * 3600;

    /// How long after a phase change something may still act on the previous phase:
    /// a location that still reads the previous phase from KV, an isolate's cached copy
    /// of it, plus a request that read it just before it expired.
    pub fn settle_ms(&self) -> u64 {
        self.consistency_window_ms + self.phase_cache_ms + self.request_margin_ms
    }

    /// How long after a copy its effect may still be hidden: until every location
    /// sees it, and until a request that raced it has finished.
    pub fn pass_delay_ms(&self) -> u64 {
        self.consistency_window_ms + self.request_margin_ms
    }

    pub fn gate_settings(&self) -> GateSettings {
        GateSettings {
            settle_ms: self.settle_ms(),
            verification_period_ms: self.verification_period_ms,
            pass_delay_ms: self.pass_delay_ms(),
        }
    }

    /// Builds the config from a lookup of environment values by name.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let secret = lookup("JWT_SECRET")
            .filter(|s| !s.is_empty())
            .ok_or("JWT_SECRET is not set")?
            .into_bytes();
        let set = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let default_phase = match lookup("DEFAULT_PHASE") {
            None => Phase::Legacy,
            Some(raw) => raw
                .trim()
                .parse::<u64>()
                .ok()
                .and_then(Phase::from_number)
                .ok_or("DEFAULT_PHASE must be a number from 0 to 5")?,
        };
        let seconds = |name: &'static str, default: u64| match lookup(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("{name} must be a whole number of seconds")),
        };
        let cache_seconds = seconds("PHASE_CACHE_SECONDS", Self::DEFAULT_PHASE_CACHE_SECONDS)?;
        let margin_seconds = seconds(
            "PHASE_SETTLE_MARGIN_SECONDS",
            Self::DEFAULT_SETTLE_MARGIN_SECONDS,
        )?;
        let window_seconds = seconds(
            "KV_CONSISTENCY_WINDOW_SECONDS",
            Self::DEFAULT_CONSISTENCY_WINDOW_SECONDS,
        )?;
        let period_seconds = seconds(
            "VERIFICATION_PERIOD_SECONDS",
            Self::DEFAULT_VERIFICATION_PERIOD_SECONDS,
        )?;
        let max_record_bytes = match lookup("MAX_RECORD_BYTES") {
            None => DEFAULT_MAX_RECORD_BYTES,
            Some(raw) => raw
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (MIN_RECORD_CAP..=MAX_VALUE_BYTES).contains(n))
                .ok_or(format!(
                    "MAX_RECORD_BYTES must be a number of bytes from {MIN_RECORD_CAP} to {MAX_VALUE_BYTES}"
                ))?,
        };
        let log_level = match lookup("LOG_LEVEL") {
            None => Level::Info,
            Some(raw) => {
                Level::parse(&raw).ok_or("LOG_LEVEL must be debug, info, warn or error")?
            }
        };
        let alert_webhook_url = match set("ALERT_WEBHOOK_URL") {
            Some(url) if !url.starts_with("https://") && !url.starts_with("http://") => {
                return Err("ALERT_WEBHOOK_URL must be an http(s) URL".into())
            }
            url => url,
        };
        let access = AccessRules::from_settings(
            set("ACCESS_TEAM_DOMAIN").as_deref(),
            set("ACCESS_AUD").as_deref(),
            set("ACCESS_ADMINS").as_deref(),
            set("ACCESS_ADMIN_GROUPS").as_deref(),
        )?;
        let admin_secret = match set("ADMIN_JWT_SECRET").map(String::into_bytes) {
            Some(admin) if admin.len() < MIN_ADMIN_SECRET_BYTES => {
                return Err(format!(
                    "ADMIN_JWT_SECRET must hold {MIN_ADMIN_SECRET_BYTES} bytes at least"
                ))
            }
            Some(admin) if admin == secret => {
                return Err("ADMIN_JWT_SECRET must differ from JWT_SECRET".into())
            }
            admin => admin,
        };
        let limits = RoleLimits::DEFAULT;
        let tokens = TokenRules {
            secret,
            issuer: set("JWT_ISSUER"),
            audience: set("JWT_AUDIENCE"),
            max_lifetime_secs: RoleLimits {
                customer: seconds("CUSTOMER_TOKEN_MAX_SECONDS", limits.customer)?,
                service: seconds("SERVICE_TOKEN_MAX_SECONDS", limits.service)?,
                admin: seconds("ADMIN_TOKEN_MAX_SECONDS", limits.admin)?,
            },
        };
        Ok(Self {
            tokens,
            admin_sign_in: AdminSignIn {
                access,
                admin_secret,
            },
            default_phase,
            phase_cache_ms: cache_seconds.saturating_mul(1000),
            request_margin_ms: margin_seconds.saturating_mul(1000),
            consistency_window_ms: window_seconds.saturating_mul(1000),
            verification_period_ms: period_seconds.saturating_mul(1000),
            max_record_bytes,
            log_level,
            alert_webhook_url,
        })
    }
}

/// What one request may use.
pub struct App<'a, S, R, W> {
    pub stores: &'a Stores<S>,
    /// Where the phase record is written: the coordinator (docs/design.md §11).
    pub register: &'a R,
    /// Where customer writes run: their objects (docs/design.md §12).
    pub writers: &'a W,
    /// The backfill queue, where the account has one (docs/design.md §13).
    pub queue: Option<&'a dyn ChunkQueue>,
    pub config: &'a Config,
    pub phase_cache: &'a PhaseCache,
    /// The Access team's keys, as this isolate holds them.
    pub access_keys: &'a AccessKeys,
    pub now_ms: u64,
}

/// A response, the warnings worth logging and the request's log line (all free of
/// private data: `logging`).
pub struct Outcome {
    pub response: ApiResponse,
    pub warnings: Vec<String>,
    pub log: RequestLog,
    /// What the operator should hear about (`alerts`).
    pub alerts: Vec<Alert>,
}

/// What a request showed on its way, for its log line.
#[derive(Default)]
struct Trace {
    warnings: Vec<String>,
    route: Option<&'static str>,
    phase: Option<u8>,
    fallback_hits: u32,
}

/// Serves a request whose body is already in memory (native tests, the benches).
pub async fn handle<S: KvStore, R: PhaseRegister, W: Writers>(
    app: &App<'_, S, R, W>,
    request: &ApiRequest,
) -> Outcome {
    let head = ApiRequest {
        body: Vec::new(),
        ..request.clone()
    };
    handle_body(app, head, request.body.clone()).await
}

/// Serves `head` (a request whose body is not read yet) with `body`, which is read only
/// up to the limit its route takes.
pub async fn handle_body<S: KvStore, R: PhaseRegister, W: Writers, B: RequestBody>(
    app: &App<'_, S, R, W>,
    head: ApiRequest,
    body: B,
) -> Outcome {
    // Counts the request's KV operations; the limit is the platform's, not this one's.
    let budget = Budget::new(u32::MAX);
    let counted = metered(app.stores, &budget);
    let app = App {
        stores: &counted,
        register: app.register,
        writers: app.writers,
        queue: app.queue,
        config: app.config,
        phase_cache: app.phase_cache,
        access_keys: app.access_keys,
        now_ms: app.now_ms,
    };
    let method = head.method.as_str();
    let mut trace = Trace::default();
    let response = match serve(&app, head, body, &mut trace).await {
        Ok(response) => response,
        Err(refusal) => refusal,
    };
    let code = response.body["error"]["code"].as_str().map(str::to_owned);
    let log = RequestLog {
        method,
        route: trace.route.unwrap_or("unmatched"),
        status: response.status,
        code,
        phase: trace.phase,
        kv_operations: budget.used(),
        fallback_hits: trace.fallback_hits,
        detail: response.detail.clone(),
    };
    let alerts = alerts::of_request(&log, &response.body);
    Outcome {
        response,
        warnings: trace.warnings,
        log,
        alerts,
    }
}

async fn serve<S: KvStore, R: PhaseRegister, W: Writers, B: RequestBody>(
    app: &App<'_, S, R, W>,
    mut request: ApiRequest,
    body: B,
    trace: &mut Trace,
) -> Result<ApiResponse, ApiResponse> {
    let routed = route(&request.method, &request.path);
    trace.route = routed.as_ref().ok().map(Route::template);
    // Before anything costs work: a request no route takes is held to the default too.
    let limit = routed
        .as_ref()
        .map_or(BodyLimit::DEFAULT, Route::body_limit);
    let unread = match limit {
        BodyLimit::BeforeAuth(_) => {
            request.body = read_body(body, limit).await?;
            None
        }
        BodyLimit::AfterAdmin(_) => Some(body),
    };
    let route = routed.map_err(|refusal| {
        let response = ApiResponse::error(&refusal.error);
        match refusal.allow {
            Some(allow) => response.with_header("Allow", allow),
            None => response,
        }
    })?;
    if route == Route::Health {
        let current = current_phase(app).await?;
        trace.phase = Some(current.phase.number());
        return Ok(ApiResponse::ok(json!({
            "status": "ok",
            "phase": current.phase.number(),
            "phaseName": current.phase.name(),
        })));
    }
    if let Route::Dashboard(asset) = route {
        // Static files: no phase, no KV (docs/design.md §15).
        let config = app.config;
        return Ok(dashboard::serve(asset, &request, config, app.access_keys, app.now_ms).await?);
    }
    let config = app.config;
    let caller = if route.requires_admin() {
        let sign_in = &config.admin_sign_in;
        admin_caller(
            &request,
            &config.tokens,
            sign_in,
            app.access_keys,
            app.now_ms,
        )
        .await?
    } else {
        authenticate(
            request.authorization.as_deref(),
            &config.tokens,
            app.now_ms / 1000,
        )?
    };
    if let Some(body) = unread {
        // A body read only for an admin: the token is checked from the headers alone.
        caller.require_admin()?;
        request.body = read_body(body, limit).await?;
    }
    let request = &request;
    let current = current_phase(app).await?;
    trace.phase = Some(current.phase.number());
    let plane = if request.method == Method::Get {
        DataPlane::reading(
            app.stores,
            current.phase,
            app.now_ms,
            app.config.pass_delay_ms(),
        )
    } else {
        DataPlane::new(app.stores, current.phase, app.now_ms)
    }
    .with_cohort(current.state.cohort.clone())
    .with_old_store_catching_up(current.state.old_store_diverged)
    .with_new_store_behind(current.state.new_store_diverged)
    .with_old_store_retired(current.state.finalized_at.is_some());
    let ctx = Ctx {
        stores: app.stores,
        register: app.register,
        writers: app.writers,
        queue: app.queue,
        plane: &plane,
        config: app.config,
        cache: app.phase_cache,
        current: &current,
        caller: &caller,
        now_ms: app.now_ms,
    };
    let result = dispatch(&ctx, route, request).await;
    trace.warnings.extend(plane.warnings.take());
    trace.fallback_hits = plane.fallback_hits.get();
    result.map_err(ApiResponse::from)
}

async fn current_phase<S: KvStore, R: PhaseRegister, W: Writers>(
    app: &App<'_, S, R, W>,
) -> Result<CurrentPhase, ApiError> {
    phase_cache::current(
        app.phase_cache,
        &app.stores.new,
        app.config.default_phase,
        app.now_ms,
        app.config.phase_cache_ms,
    )
    .await
    .map_err(ApiError::from)
}

/// The body, read no further than `limit` allows.
async fn read_body<B: RequestBody>(body: B, limit: BodyLimit) -> Result<Vec<u8>, ApiError> {
    body.read_up_to(limit.bytes())
        .await
        .map_err(|problem| match problem {
            BodyError::TooLarge => payload_too_large(limit.bytes()),
            BodyError::Unreadable => {
                ApiError::bad_request("invalid_body", "the body could not be read")
            }
        })
}

fn payload_too_large(limit: usize) -> ApiError {
    ApiError::new(
        413,
        "payload_too_large",
        format!("the body is larger than {limit} bytes"),
    )
}
