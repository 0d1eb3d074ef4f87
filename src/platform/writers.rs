//! The customers' and emails' Durable Objects (docs/design.md §12) and the worker's side
//! of them. The decisions are the core's (`writes::object`, `writes::claims`); this file
//! carries requests and replies, keeps each object's lock and memory, and reads the time.

use futures::lock::Mutex;
use worker::{
    durable_object, Delay, DurableObject, Env, Request, Response, Result, ScheduledTime, State,
    Storage,
};

use super::kv::WorkersKv;
use std::time::Duration;

use crate::domain::CustomerId;
use crate::error::{Error, Input};
use crate::logging::Level;
use crate::migration::state::phase_record::PhaseState;
use crate::store::{StoreError, StoreName, StoreResult, Stores};
use crate::writes::claims::{self, ClaimAnswer, ClaimSender, EmailRequest, Holder};
use crate::writes::delete_check;
use crate::writes::held::{Held, Recollection};
use crate::writes::memo::{is_memo_key, memo_key, Memo, Remembered, Waiter};
use crate::writes::object::{self, ObjectClock, Ran, Reply, WriteRequest};
use crate::writes::Writers;

pub const CUSTOMER_BINDING: &str = "CUSTOMER_WRITER";
pub const EMAIL_BINDING: &str = "EMAIL_OWNER";
/// Where an email's object keeps the customer it granted the email to.
const HOLDER: &str = "holder";
/// Where an object keeps the newest phase record it acted on.
const PHASE: &str = "phase";
/// Where a customer's object keeps its id for its alarm: an object is not told its name.
const ALARM_ID: &str = "alarm-id";

/// Sleeps the object's request (its lock held, so requests behind it queue).
struct Sleep;

impl Waiter for Sleep {
    async fn wait_until(&self, at_ms: u64) -> u64 {
        let now = super::now_ms();
        if at_ms > now {
            Delay::from(Duration::from_millis(at_ms - now)).await;
        }
        super::now_ms().max(at_ms)
    }
}

/// An object's memory of its writes, in its own storage.
struct StorageMemo<'a>(&'a Storage);

impl Memo for StorageMemo<'_> {
    async fn recall_all(&self) -> StoreResult<Recollection> {
        let listed = self
            .0
            .list()
            .await
            .map_err(|e| StoreError::new("object storage list", e.to_string()))?;
        let mut all = Recollection::default();
        let mut unreadable = None;
        listed.for_each(&mut |value, name| {
            let Some(name) = name.as_string() else {
                return;
            };
            let read = match name.as_str() {
                PHASE => serde_wasm_bindgen::from_value(value).map(|v| all.phase = Some(v)),
                HOLDER => serde_wasm_bindgen::from_value(value).map(|v| all.holder = Some(v)),
                _ if is_memo_key(&name) => serde_wasm_bindgen::from_value(value).map(|v| {
                    all.entries.insert(name, v);
                }),
                // The alarm's id: not memory.
                _ => Ok(()),
            };
            if let Err(err) = read {
                unreadable.get_or_insert(err.to_string());
            }
        });
        match unreadable {
            Some(err) => Err(StoreError::new("object storage list", err)),
            None => Ok(all),
        }
    }

    async fn recall(&self, store: StoreName, key: &str) -> StoreResult<Option<Remembered>> {
        self.get(&memo_key(store, key)).await
    }

    async fn remember(&self, store: StoreName, key: &str, entry: Remembered) -> StoreResult<()> {
        self.put(&memo_key(store, key), entry).await
    }

    async fn forget(&self, store: StoreName, key: &str) -> StoreResult<()> {
        self.0
            .delete(&memo_key(store, key))
            .await
            .map(|_| ())
            .map_err(|e| StoreError::new("object storage delete", e.to_string()))
    }

    async fn recall_phase(&self) -> StoreResult<Option<PhaseState>> {
        self.get(PHASE).await
    }

    async fn remember_phase(&self, record: &PhaseState) -> StoreResult<()> {
        self.put(PHASE, record).await
    }

    async fn recall_holder(&self) -> StoreResult<Option<Holder>> {
        self.get(HOLDER).await
    }

    async fn remember_holder(&self, holder: Option<&Holder>) -> StoreResult<()> {
        match holder {
            Some(holder) => self.put(HOLDER, holder).await,
            None => self
                .0
                .delete(HOLDER)
                .await
                .map(|_| ())
                .map_err(|e| StoreError::new("object storage delete", e.to_string())),
        }
    }
}

impl StorageMemo<'_> {
    async fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> StoreResult<Option<T>> {
        self.0
            .get(key)
            .await
            .map_err(|e| StoreError::new("object storage get", e.to_string()))
    }

    async fn put<T: serde::Serialize>(&self, key: &str, value: T) -> StoreResult<()> {
        self.0
            .put(key, value)
            .await
            .map_err(|e| StoreError::new("object storage put", e.to_string()))
    }
}

fn kv_stores(env: &Env) -> std::result::Result<Stores<WorkersKv>, Error> {
    super::namespaces(env).map_err(|e| unavailable("the object's KV bindings", e))
}

fn clock(env: &Env) -> std::result::Result<(ObjectClock, u64), Error> {
    let config = super::config(env).map_err(|e| unavailable("the object's configuration", e))?;
    Ok((live_clock(&config), config.pass_delay_ms()))
}

/// The object's clock, reading the time as its op goes on.
fn live_clock(config: &crate::app::Config) -> ObjectClock {
    ObjectClock {
        live_ms: super::now_ms,
        ..ObjectClock::of(config, super::now_ms())
    }
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> Error {
    Error::Store(StoreError::new("durable object", format!("{what}: {err}")))
}

/// Every write of one customer (named by its id), one at a time.
#[durable_object]
pub struct CustomerWriter {
    state: State,
    env: Env,
    /// Awaiting KV lets other requests into the object: the lock makes writes one at a time.
    lock: Mutex<()>,
    /// Its storage, read once per instance (`writes::held`).
    held: Held,
}

impl DurableObject for CustomerWriter {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            lock: Mutex::new(()),
            held: Held::default(),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Some((id, request)) = super::object_request::<(String, WriteRequest)>(&mut req).await
        else {
            return Response::error("not a write request", 400);
        };
        let _held = self.lock.lock().await;
        let reply = match self.run(&id, request).await {
            Ok(Ran {
                mut reply,
                check_at,
            }) => {
                if let Some(at) = check_at {
                    if let Err(err) = self.set_alarm(&id, at).await {
                        // The write stands; only its later check is missing.
                        reply
                            .warnings
                            .push(format!("delete_check_unscheduled: {err}"));
                    }
                }
                reply
            }
            Err(err) => Reply {
                result: Err(err),
                warnings: Vec::new(),
            },
        };
        Response::from_json(&reply)
    }

    /// Checks the object's last delete (`delete_check::check`). An error makes the platform
    /// ring the alarm again later.
    async fn alarm(&self) -> Result<Response> {
        let _held = self.lock.lock().await;
        let storage = self.state.storage();
        let Some(id) = storage.get::<String>(ALARM_ID).await? else {
            return Response::ok("");
        };
        let id = CustomerId::parse(&id).map_err(|m| worker::Error::RustError(m.to_owned()))?;
        let stores = super::namespaces(&self.env)?;
        let config = super::config(&self.env)?;
        let clock = live_clock(&config);
        let memo = StorageMemo(&storage);
        let checked = delete_check::check(&stores, &self.held.over(&memo), &Sleep, &id, clock)
            .await
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        if !checked.restored.is_empty() {
            // A copy had put an older state back over the delete (no id: it is private).
            super::log(
                config.log_level,
                Level::Warn,
                "delete_restored",
                &checked,
                None,
            );
        }
        Response::ok("")
    }
}

impl CustomerWriter {
    async fn run(&self, id: &str, request: WriteRequest) -> std::result::Result<Ran, Error> {
        let id = CustomerId::parse(id).map_err(|m| Error::invalid(Input::CustomerId, m))?;
        let stores = kv_stores(&self.env)?;
        let (clock, _) = clock(&self.env)?;
        let storage = self.state.storage();
        let memo = StorageMemo(&storage);
        let memo = self.held.over(&memo);
        let sender = DoClaims { env: &self.env };
        Ok(object::run(&stores, &memo, (&sender, &Sleep), &id, request, clock).await)
    }

    async fn set_alarm(&self, id: &str, at_ms: u64) -> Result<()> {
        let storage = self.state.storage();
        storage.put(ALARM_ID, id).await?;
        let at = worker::js_sys::Date::new(&worker::wasm_bindgen::JsValue::from_f64(at_ms as f64));
        storage.set_alarm(ScheduledTime::new(at)).await
    }
}

/// Every claim of one email (named by its hash), one at a time.
#[durable_object]
pub struct EmailOwner {
    state: State,
    env: Env,
    lock: Mutex<()>,
    held: Held,
}

impl DurableObject for EmailOwner {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            lock: Mutex::new(()),
            held: Held::default(),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Some(request) = super::object_request::<EmailRequest>(&mut req).await else {
            return Response::error("not an email request", 400);
        };
        let _held = self.lock.lock().await;
        let answer: std::result::Result<ClaimAnswer, Error> = self.decide(request).await;
        Response::from_json(&answer)
    }
}

impl EmailOwner {
    async fn decide(&self, request: EmailRequest) -> std::result::Result<ClaimAnswer, Error> {
        let stores = kv_stores(&self.env)?;
        let storage = self.state.storage();
        let memo = StorageMemo(&storage);
        let memo = self.held.over(&memo);
        claims::run(&stores, &memo, &Sleep, request, clock(&self.env)?).await
    }
}

/// The worker's side of the customers' objects.
pub struct DoWriters {
    env: Env,
}

impl DoWriters {
    pub fn new(env: &Env) -> Self {
        Self { env: env.clone() }
    }
}

impl Writers for DoWriters {
    async fn write(&self, id: &CustomerId, request: WriteRequest) -> Reply {
        let body = (id.as_str(), request);
        match super::call_object(&self.env, (CUSTOMER_BINDING, id.as_str()), "/write", &body).await
        {
            Ok(reply) => reply,
            // The write may or may not have happened: not acknowledged.
            Err(err) => Reply {
                result: Err(unavailable("the customer's object did not answer", err)),
                warnings: Vec::new(),
            },
        }
    }
}

impl ClaimSender for DoWriters {
    async fn send(&self, request: EmailRequest) -> std::result::Result<ClaimAnswer, Error> {
        DoClaims { env: &self.env }.send(request).await
    }
}

/// A customer object's side of the emails' objects.
struct DoClaims<'a> {
    env: &'a Env,
}

impl ClaimSender for DoClaims<'_> {
    async fn send(&self, request: EmailRequest) -> std::result::Result<ClaimAnswer, Error> {
        let name = request.hash.clone();
        match super::call_object::<_, std::result::Result<ClaimAnswer, Error>>(
            self.env,
            (EMAIL_BINDING, &name),
            "/claim",
            &request,
        )
        .await
        {
            Ok(answer) => answer,
            Err(err) => Err(unavailable("the email's object did not answer", err)),
        }
    }
}
