//! A native test world: both stores in memory, the real request pipeline, real tokens.
#![allow(dead_code)]

use customer_kv_migration::app::{handle, handle_body, App, Config};
use customer_kv_migration::auth::keys::AccessKeys;
use customer_kv_migration::auth::{AdminSignIn, TokenRules};
use customer_kv_migration::domain::DEFAULT_MAX_RECORD_BYTES;
use customer_kv_migration::http::{ApiRequest, ApiResponse, Method, RequestBody};
use customer_kv_migration::migration::copying::fanout::local::LocalQueue;
use customer_kv_migration::migration::copying::fanout::{
    consume, dead_letters, ChunkQueue, Consumed, Disposition, Fanout, QueueMessage,
};
use customer_kv_migration::migration::state::coordinator::{
    LocalRegister, PhaseRegister, RegisterCell,
};
use customer_kv_migration::migration::state::phase_cache::PhaseCache;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::{MemoryStore, Stores};
use customer_kv_migration::writes::local::{LocalWriters, ObjectCells};
use customer_kv_migration::writes::object::ObjectClock;
use jwt_simple::prelude::*;
use serde_json::{json, Value};

/// Runs a future of the in-memory stores to completion. Their operations never wait, so
/// polling until ready is enough; unlike an executor this may nest (a hook running a
/// client request in the middle of a backfill operation).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}

/// No queue: runs copy in the cron's invocation.
pub type NoFanout<'a> = Option<Fanout<'a, LocalRegister<'a, MemoryStore>>>;

pub const SECRET: &[u8] = b"native-test-secret-0123456789abcdef";
pub const START_MS: u64 = 1_800_000_000_000;

pub struct World {
    pub stores: Stores<MemoryStore>,
    pub config: Config,
    pub cache: PhaseCache,
    /// The Access team's keys; fetched from nowhere unless a test gives a fetcher.
    pub access_keys: AccessKeys,
    /// The coordinator of the phase record, as one process holds it.
    pub register: RegisterCell,
    /// The customers' and emails' objects, as one process holds them.
    pub objects: ObjectCells,
    /// The backfill queue, when the world fans out (docs/design.md §13).
    pub queue: Option<LocalQueue>,
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
                tokens: TokenRules::new(SECRET.to_vec()),
                admin_sign_in: AdminSignIn::default(),
                default_phase: Phase::Legacy,
                phase_cache_ms: 0,
                request_margin_ms: 0,
                consistency_window_ms: 0,
                verification_period_ms: 0,
                max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
                log_level: customer_kv_migration::logging::Level::Info,
                alert_webhook_url: None,
            },
            cache: PhaseCache::default(),
            access_keys: AccessKeys::default(),
            register: RegisterCell::default(),
            objects: ObjectCells::default(),
            queue: None,
            now_ms: START_MS,
        }
    }

    /// The coordinator, as one process holds it.
    pub fn register(&self) -> LocalRegister<'_, MemoryStore> {
        LocalRegister {
            new_store: &self.stores.new,
            default_phase: self.config.default_phase,
            cell: &self.register,
        }
    }

    /// Hands the waiting messages to consumers, `batch` at a time, and the dead letters
    /// to theirs, until none waits; returns the batches consumed.
    pub fn drain_queue(&self, batch: usize) -> usize {
        let queue = self.queue.as_ref().expect("a world with a queue");
        let register = self.register();
        let fanout = Fanout {
            register: &register,
            queue,
        };
        let mut batches = 0;
        loop {
            let deliveries = queue.take(batch);
            let dead = queue.take_dead(batch);
            if deliveries.is_empty() && dead.is_empty() {
                return batches;
            }
            batches += 1;
            let messages: Vec<_> = deliveries.iter().map(|d| d.message.clone()).collect();
            let dispositions = self.consume_batch(fanout, &messages).dispositions;
            for (delivery, disposition) in deliveries.into_iter().zip(dispositions) {
                queue.settle(delivery, disposition);
            }
            let dead: Vec<_> = dead.into_iter().map(|d| d.message).collect();
            let dispositions = block_on(dead_letters(fanout, &dead, self.now_ms));
            assert!(dispositions.iter().all(|d| *d == Disposition::Ack));
        }
    }

    /// Hands `messages` to one consumer invocation, through `fanout`.
    pub fn consume_batch<R: PhaseRegister>(
        &self,
        fanout: Fanout<'_, R>,
        messages: &[QueueMessage],
    ) -> Consumed {
        let settings = (self.config.default_phase, self.config.gate_settings());
        let stores = (&self.stores, &self.writers());
        block_on(consume(stores, fanout, settings, messages, self.now_ms))
    }

    /// Hands the next waiting message to the dead-letter consumer, as after its last
    /// retry.
    pub fn dead_letter_next(&self) {
        let queue = self.queue.as_ref().expect("a world with a queue");
        let kept_failing = queue.take(1).remove(0).message;
        let register = self.register();
        let fanout = Fanout {
            register: &register,
            queue,
        };
        block_on(dead_letters(fanout, &[kept_failing], self.now_ms));
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
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut request = ApiRequest::new(Method::parse(method), path);
        request.query = query.to_owned();
        request.authorization = token.map(|t| format!("Bearer {t}"));
        request.body = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        self.send_request(&request)
    }

    pub fn send_request(&self, request: &ApiRequest) -> ApiResponse {
        self.handle(request).response
    }

    /// The whole outcome of a request: response, warnings and log line.
    pub fn handle(&self, request: &ApiRequest) -> customer_kv_migration::app::Outcome {
        let register = self.register();
        let writers = self.writers();
        let app = self.app(&register, &writers);
        let mut outcome = block_on(handle(&app, request));
        outcome.response = outcome.response.parsed();
        outcome
    }

    /// Serves `head` with a body the pipeline reads itself, as the worker's stream is.
    pub fn send_body(&self, head: ApiRequest, body: impl RequestBody) -> ApiResponse {
        let register = self.register();
        let writers = self.writers();
        let app = self.app(&register, &writers);
        block_on(handle_body(&app, head, body)).response.parsed()
    }

    fn app<'a>(
        &'a self,
        register: &'a LocalRegister<'a, MemoryStore>,
        writers: &'a LocalWriters<'a, MemoryStore>,
    ) -> App<'a, MemoryStore, LocalRegister<'a, MemoryStore>, LocalWriters<'a, MemoryStore>> {
        App {
            stores: &self.stores,
            register,
            writers,
            queue: self.queue.as_ref().map(|q| q as &dyn ChunkQueue),
            config: &self.config,
            phase_cache: &self.cache,
            access_keys: &self.access_keys,
            now_ms: self.now_ms,
        }
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

    /// The customers' and emails' objects, at `now_ms`.
    pub fn writers(&self) -> LocalWriters<'_, MemoryStore> {
        LocalWriters {
            stores: &self.stores,
            cells: &self.objects,
            clock: ObjectClock::of(&self.config, self.now_ms),
            hold_ms: self.config.pass_delay_ms(),
        }
    }

    /// Rings the objects' alarms due by `now_ms` (the platform rings them on its own);
    /// returns how many objects wrote a store again.
    pub fn ring_alarms(&self) -> usize {
        block_on(self.writers().ring_alarms())
    }

    /// One cron invocation, as the platform's scheduled event runs it, after the alarms
    /// due by then.
    pub fn run_cron(&self) -> customer_kv_migration::migration::cron::CronReport {
        self.ring_alarms();
        let register = self.register();
        let fanout = self.queue.as_ref().map(|queue| Fanout {
            register: &register,
            queue,
        });
        block_on(customer_kv_migration::migration::cron::run(
            &self.stores,
            (&self.writers(), fanout),
            self.config.default_phase,
            self.config.gate_settings(),
            self.now_ms,
        ))
        .unwrap()
    }

    /// Fires the cron until a run does no backfill (done, paused or not phase 3).
    pub fn run_cron_until_backfill_stops(&self) {
        while self.run_cron().backfill.is_some() {}
    }

    /// Both stores, running `hook` just before the `at`-th operation of either.
    pub fn hooked<'a, 'h>(
        &'a self,
        counter: &'a std::cell::Cell<u32>,
        at: u32,
        hook: &'a std::cell::RefCell<Option<Box<dyn FnOnce() + 'h>>>,
    ) -> Stores<Hooked<'a, 'h>> {
        let wrap = |inner| Hooked {
            inner,
            counter,
            at,
            hook,
        };
        Stores {
            old: wrap(&self.stores.old),
            new: wrap(&self.stores.new),
        }
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

/// A store that runs a hook (a concurrent client, say) just before its `at`-th operation,
/// counting operations across every `Hooked` that shares `counter`.
pub struct Hooked<'a, 'h> {
    pub inner: &'a MemoryStore,
    pub counter: &'a std::cell::Cell<u32>,
    pub at: u32,
    pub hook: &'a std::cell::RefCell<Option<Box<dyn FnOnce() + 'h>>>,
}

impl Hooked<'_, '_> {
    fn tick(&self) {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        if n == self.at {
            if let Some(hook) = self.hook.borrow_mut().take() {
                hook();
            }
        }
    }
}

use customer_kv_migration::store::{KvStore, ListPage, PutOptions, StoreResult, StoredValue};

impl KvStore for Hooked<'_, '_> {
    async fn get(&self, key: &str) -> StoreResult<Option<StoredValue>> {
        self.tick();
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<StoredValue>>> {
        self.tick();
        self.inner.get_many(keys).await
    }
    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> StoreResult<()> {
        self.tick();
        self.inner.put(key, value, options).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.tick();
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> StoreResult<ListPage> {
        self.tick();
        self.inner.list(prefix, cursor, limit).await
    }
}

/// Puts `n` legacy customers with their mappings into the old store.
pub fn seed_legacy(world: &World, n: usize) {
    for i in 0..n {
        let id = format!("cust_{i:06}");
        let email = format!("user{i}@legacy.example.com");
        let record = json!({
            "customerId": id, "email": email, "name": format!("User {i}"),
            "updatedAt": "2024-01-01T00:00:00Z", "legacyField": { "n": i }
        });
        world.stores.old.insert(
            &format!("customer_{id}"),
            record.to_string().as_bytes(),
            Default::default(),
        );
        world
            .stores
            .old
            .insert(&mapping_key(&email), id.as_bytes(), Default::default());
    }
}

/// Takes (or continues) the inventory of the new store (docs/design.md §16).
pub fn inventory(world: &World, body: Value) -> (u16, Value) {
    let response = world.send(
        "POST",
        "/admin/migrate/inventory",
        Some(&admin()),
        Some(body),
    );
    (response.status, response.body)
}

/// A customer record as another service may have written it.
pub fn record(id: &str, name: &str, updated_at: &str) -> Vec<u8> {
    json!({ "customerId": id, "email": format!("{id}@example.com"), "name": name,
            "updatedAt": updated_at })
    .to_string()
    .into_bytes()
}

/// Legacy customers in the old store, and a new store that another service already
/// wrote: one customer only there (with its mapping), one equal to the old store's and
/// one that differs (older than the old store's).
pub fn world_with_a_populated_new_store() -> World {
    let world = World::in_phase(Phase::Legacy);
    seed_legacy(&world, 20);
    let new = &world.stores.new;
    new.insert(
        "customer_from_api",
        &record(
            "from_api",
            "Made by the customer API",
            "2025-06-01T00:00:00Z",
        ),
        PutOptions::default(),
    );
    new.insert(
        &mapping_key("from_api@example.com"),
        b"from_api",
        PutOptions::default(),
    );
    let same = world.stores.old.peek("customer_cust_000001").unwrap();
    new.insert("customer_cust_000001", &same, PutOptions::default());
    new.insert(
        "customer_cust_000002",
        &record(
            "cust_000002",
            "Edited in the customer API",
            "2023-01-01T00:00:00Z",
        ),
        PutOptions::default(),
    );
    world
}
