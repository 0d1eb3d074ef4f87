//! The worker's entry points: convert between the runtime and the pure request pipeline.
//!
//! Panics: `worker` 0.8.7 installs a panic hook when the module starts (its `init`, a
//! `wasm_bindgen(start)` function) that logs "Rust panic: <message>" with
//! `console.error` and re-instantiates the module after an abort, so this crate adds
//! none of its own.

mod access;
mod body;
mod coordinator;
mod kv;
mod metrics;
mod queue;
mod webhook;
mod writers;

use std::cell::OnceCell;
use std::rc::Rc;

use worker::{
    console_error, console_log, console_warn, event, Context, Env, Headers, Request, Response,
    Result, ScheduleContext, ScheduledEvent,
};

use crate::alerts;
use crate::app::{self, App, Config};
use crate::auth::keys::AccessKeys;
use crate::http::{query_of, ApiError, ApiRequest, ApiResponse, Method, Provenance};
use crate::logging::{self, Level};
use crate::migration::copying::fanout::{ChunkQueue, Fanout};
use crate::migration::cron;
use crate::migration::state::ledger::Ledgered;
use crate::migration::state::phase_cache::PhaseCache;
use crate::store::Stores;
use body::StreamedBody;
use coordinator::{DoLedger, DoRegister};
use kv::WorkersKv;
use queue::WorkerQueue;
use writers::DoWriters;

thread_local! {
    /// The settings (`config`), once read.
    static CONFIG: OnceCell<std::result::Result<Rc<Config>, String>> = const { OnceCell::new() };
    /// Lives as long as the isolate: the phase is re-read from KV only when it is stale.
    static PHASE_CACHE: Rc<PhaseCache> = Rc::new(PhaseCache::default());
    /// The Access team's keys, fetched when an assertion first needs them.
    static ACCESS_KEYS: Rc<AccessKeys> = Rc::new(AccessKeys::new(Box::new(access::FetchKeys)));
}

/// The two namespaces. OTP_AUTH_KV's binding may be removed once the migration is
/// finalized (docs/design.md §9), after which nothing uses it: without it, any use
/// fails as a store error (503, and `ready` reports it) rather than the whole worker.
fn namespaces(env: &Env) -> Result<Stores<WorkersKv>> {
    Ok(Stores {
        old: WorkersKv::from_env_or_unbound(env, "OTP_AUTH_KV"),
        new: WorkersKv::from_env(env, "CUSTOMER_KV")?,
    })
}

/// The two namespaces, the migration's run state in the new one kept in the
/// coordinator's ledger (docs/design.md §11).
fn stores(env: &Env) -> Result<Stores<Ledgered<WorkersKv, DoLedger>>> {
    let Stores { old, new } = namespaces(env)?;
    Ok(Stores {
        old: Ledgered {
            kv: old,
            ledger: None,
        },
        new: Ledgered {
            kv: new,
            ledger: Some(DoLedger::new(env)),
        },
    })
}

/// The settings, read from the environment once per isolate: vars and secrets are fixed
/// for an isolate's life (changing one deploys a new version, in new isolates), and
/// reading them is a score of calls into JavaScript that a read hit would otherwise pay
/// on every request (BENCHMARKS.md §3).
fn config(env: &Env) -> std::result::Result<Rc<Config>, String> {
    CONFIG.with(|cached| {
        cached
            .get_or_init(|| {
                Config::from_env(|name| {
                    // A var or a secret (`ALERT_WEBHOOK_URL` may be either).
                    env.var(name)
                        .ok()
                        .map(|v| v.to_string())
                        .or_else(|| env.secret(name).ok().map(|s| s.to_string()))
                })
                .map(Rc::new)
            })
            .clone()
    })
}

/// An object's request body, read as text and parsed with serde_json, as `call_object`
/// wrote it (not `Request::json`, which has JavaScript parse it and then converts the
/// result field by field across the wasm boundary); `None` if it is not a `T`.
async fn object_request<T: serde::de::DeserializeOwned>(req: &mut Request) -> Option<T> {
    serde_json::from_str(&req.text().await.ok()?).ok()
}

/// Sends a JSON body to `path` of the Durable Object `name` of `binding` and reads its
/// JSON answer.
async fn call_object<B: serde::Serialize, T: serde::de::DeserializeOwned>(
    env: &Env,
    (binding, name): (&str, &str),
    path: &str,
    body: &B,
) -> Result<T> {
    let namespace = env.durable_object(binding)?;
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::Post)
        .with_body(Some(wasm_bindgen::JsValue::from_str(
            &serde_json::to_string(body)?,
        )));
    let request = Request::new_with_init(&format!("https://object{path}"), &init)?;
    let stub = namespace.id_from_name(name)?.get_stub()?;
    let mut response = stub.fetch_with_request(request).await?;
    response.json::<T>().await
}

fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let config = match config(&env) {
        Ok(config) => config,
        Err(problem) => {
            console_error!("configuration error: {problem}");
            return to_response(ApiResponse::error(&ApiError::internal(
                "the worker is misconfigured",
            )));
        }
    };
    let (head, body) = read_head(&req);
    let stores = match stores(&env) {
        Ok(stores) => stores,
        Err(problem) => {
            // A binding name is configuration, not private data.
            console_error!("configuration error: {problem}");
            return to_response(ApiResponse::error(&ApiError::internal(
                "the worker is misconfigured",
            )));
        }
    };
    let register = DoRegister::new(&env);
    let writers = DoWriters::new(&env);
    let queue = WorkerQueue::from_env(&env);
    let cache = PHASE_CACHE.with(Rc::clone);
    let access_keys = ACCESS_KEYS.with(Rc::clone);
    let app = App {
        stores: &stores,
        register: &register,
        writers: &writers,
        queue: queue.as_ref().map(|q| q as &dyn ChunkQueue),
        config: &config,
        phase_cache: &cache,
        access_keys: &access_keys,
        now_ms: now_ms(),
    };
    let outcome = app::handle_body(&app, head, body).await;
    // The log holds route templates, codes and counts only (`logging`): paths and bodies
    // may hold emails, headers hold tokens.
    for warning in &outcome.warnings {
        let message = serde_json::json!({ "message": warning });
        log(config.log_level, Level::Warn, "warning", message, None);
    }
    let took = now_ms().saturating_sub(app.now_ms);
    log(
        config.log_level,
        outcome.log.level(),
        "request",
        &outcome.log,
        Some(took),
    );
    let point = crate::metrics::of_request(&outcome.log, took);
    metrics::write(&env, &point, config.log_level);
    if let (Some(url), false) = (&config.alert_webhook_url, outcome.alerts.is_empty()) {
        ctx.wait_until(webhook::deliver(
            url.clone(),
            outcome.alerts,
            config.log_level,
        ));
    }
    to_response(outcome.response)
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, ctx: ScheduleContext) {
    let (config, stores) = match (config(&env), stores(&env)) {
        (Ok(config), Ok(stores)) => (config, stores),
        _ => {
            console_error!("cron: the worker is misconfigured");
            return;
        }
    };
    let writers = DoWriters::new(&env);
    let register = DoRegister::new(&env);
    let queue = WorkerQueue::from_env(&env);
    let fanout = queue.as_ref().map(|queue| Fanout {
        register: &register,
        queue,
    });
    let started = now_ms();
    let ran = cron::run(
        &stores,
        (&writers, fanout),
        config.default_phase,
        config.gate_settings(),
        started,
    )
    .await;
    let took_ms = now_ms().saturating_sub(started);
    let took = Some(took_ms);
    let raised = match ran {
        Ok(report) => {
            let point = crate::metrics::of_cron(&report, took_ms);
            metrics::write(&env, &point, config.log_level);
            let raised = alerts::of_cron(&report);
            let fields = serde_json::json!({ "report": report });
            log(config.log_level, Level::Info, "cron", fields, took);
            raised
        }
        Err(err) => {
            let err = ApiError::from(err);
            let point = crate::metrics::of_cron_failure(err.code, took_ms);
            metrics::write(&env, &point, config.log_level);
            let fields = serde_json::json!({ "code": err.code, "message": err.message });
            log(config.log_level, Level::Error, "cron", fields, took);
            vec![alerts::of_cron_failure(err.code)]
        }
    };
    if let (Some(url), false) = (&config.alert_webhook_url, raised.is_empty()) {
        ctx.wait_until(webhook::deliver(url.clone(), raised, config.log_level));
    }
}

/// Converts the runtime's request: its head now, its body as a stream the core reads
/// only as far as the route's limit.
fn read_head(req: &Request) -> (ApiRequest, StreamedBody) {
    let headers = req.headers();
    let declared = headers
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<usize>().ok());
    // The runtime hands over a normalised URL; splitting it here rather than parsing it
    // with `Request::url` keeps the `url` crate and its Unicode tables (a fifth of the
    // wasm) out of the build.
    let url = req.inner().url();
    let head = ApiRequest {
        method: Method::parse(req.method().as_ref()),
        path: req.path(),
        query: query_of(&url).to_owned(),
        authorization: headers.get("Authorization").ok().flatten(),
        access_assertion: headers.get("Cf-Access-Jwt-Assertion").ok().flatten(),
        provenance: Provenance {
            fetch_site: headers.get("Sec-Fetch-Site").ok().flatten(),
            origin: headers.get("Origin").ok().flatten(),
            host: headers.get("Host").ok().flatten(),
        },
        body: Vec::new(),
    };
    let stream = req.inner().body().map(wasm_bindgen::JsCast::unchecked_into);
    (head, StreamedBody::new(stream, declared))
}

/// Writes one log line (`logging::line`) to the console stream of its level.
pub(crate) fn log(
    threshold: Level,
    level: Level,
    event: &str,
    fields: impl serde::Serialize,
    duration_ms: Option<u64>,
) {
    let Some(line) = logging::line(threshold, level, event, fields, duration_ms) else {
        return;
    };
    match level {
        Level::Error => console_error!("{line}"),
        Level::Warn => console_warn!("{line}"),
        Level::Info | Level::Debug => console_log!("{line}"),
    }
}

/// Takes the response by value: an export page (up to about 8 MiB of values, or one
/// value of 25 MiB) is handed to the runtime without another copy in wasm memory.
fn to_response(response: ApiResponse) -> Result<Response> {
    let headers = Headers::new();
    let (content_type, body) = match response.raw {
        Some((content_type, bytes)) => (content_type, bytes),
        None => (
            "application/json",
            serde_json::to_vec(&response.body).unwrap_or_default(),
        ),
    };
    headers.set("Content-Type", content_type)?;
    headers.set("Cache-Control", "no-store")?;
    for (name, value) in &response.headers {
        headers.set(name, value)?;
    }
    Ok(Response::from_bytes(body)?
        .with_status(response.status)
        .with_headers(headers))
}
