//! Deterministic simulation: several clients, overlapping cron runs and an admin share
//! two simulated KV namespaces; a seeded scheduler interleaves them one KV operation at a
//! time while operations fail at random; every answer a client gets is checked against a
//! model of what it was told before, and the end state against the model once the
//! migration has converged.
#![allow(dead_code)]

pub mod history;
pub mod queue;
pub mod rng;
pub mod shared;
pub mod store;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use customer_kv_migration::app::{handle, App, Config};
use customer_kv_migration::auth::keys::AccessKeys;
use customer_kv_migration::auth::{AdminSignIn, RoleLimits, TokenRules};
use customer_kv_migration::domain::{email_key, CustomerId, Email, DEFAULT_MAX_RECORD_BYTES};
use customer_kv_migration::error::Error;
use customer_kv_migration::http::{ApiRequest, ApiResponse, Method};
use customer_kv_migration::migration::copying::fanout::local::LocalQueue;
use customer_kv_migration::migration::copying::fanout::{ChunkQueue, Fanout};
use customer_kv_migration::migration::cron;
use customer_kv_migration::migration::keys;
use customer_kv_migration::migration::state::cohort::Cohort;
use customer_kv_migration::migration::state::coordinator::{LocalRegister, RegisterCell};
use customer_kv_migration::migration::state::phase_cache::PhaseCache;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::Stores;
use customer_kv_migration::store::{StoreError, StoreName};
use customer_kv_migration::writes::claims::{ClaimAnswer, ClaimSender, EmailRequest};
use customer_kv_migration::writes::local::{LocalWriters, ObjectCells};
use customer_kv_migration::writes::object::{ObjectClock, Reply, WriteRequest};
use customer_kv_migration::writes::Writers;
use serde_json::Value;

use rng::Rng;
use store::{Shared, SimKv};

/// The shape of one history.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub clients: usize,
    pub ids_per_client: usize,
    pub ops_per_client: usize,
    pub cron_tasks: usize,
    pub admin_actions: usize,
    /// Admins acting at once, each with `admin_actions` actions.
    pub admins: usize,
    pub fault_rate: f64,
    pub phase_cache_ms: u64,
    /// The phase the history starts in: 0, or 4 or 5 (empty stores already migrated,
    /// so that rollbacks from there run under the clients' writes).
    pub start_phase: u8,
    /// KV's consistency window: how long a location may read what it saw before (0: reads
    /// are current).
    pub stale_window_ms: u64,
    /// Customers (and emails) every client writes at once, besides its own (see
    /// `shared.rs`).
    pub shared_customers: usize,
    /// Whether the backfill and the reverse sync fan out on a queue, with consumers
    /// running among the other tasks (see `queue.rs`).
    pub fan_out: bool,
    /// Whether each client's first customer was created by another service in the new
    /// store before the history, and the inventory found it there (docs/design.md §16).
    pub new_only: bool,
    /// Whether the final check plants a value that differs in the new store before it
    /// verifies: the verification, fanned out or not, must find it.
    pub plant_difference: bool,
}

impl Settings {
    pub fn for_seed(rng: &mut Rng) -> Self {
        Self {
            clients: 1 + rng.below(3) as usize,
            ids_per_client: 1 + rng.below(3) as usize,
            ops_per_client: 4 + rng.below(26) as usize,
            cron_tasks: rng.below(3) as usize,
            admin_actions: 1 + rng.below(10) as usize,
            fault_rate: [0.0, 0.02, 0.05, 0.1][rng.below(4) as usize],
            phase_cache_ms: [0, 500, 2_000][rng.below(3) as usize],
            start_phase: 0,
            stale_window_ms: 0,
            admins: 1,
            shared_customers: 0,
            fan_out: false,
            new_only: false,
            plant_difference: false,
        }
    }

    /// The settings of `seed`, with those drawn from streams of their own.
    pub fn of_seed(seed: u64) -> (Self, Rng) {
        let mut rng = Rng::new(seed);
        let settings = Self {
            start_phase: Self::start_phase_for_seed(seed),
            stale_window_ms: Self::stale_window_for_seed(seed),
            admins: Self::admins_for_seed(seed),
            shared_customers: Self::shared_customers_for_seed(seed),
            fan_out: Self::fan_out_for_seed(seed),
            new_only: Self::new_only_for_seed(seed),
            plant_difference: Rng::new(seed ^ 0x0d1f_fe4e_9ce5).chance(0.25),
            ..Self::for_seed(&mut rng)
        };
        (settings, rng)
    }

    /// One history in three starts in phase 4 or 5. Drawn from its own stream so that
    /// every other setting of a seed stays what it was before this one existed.
    pub fn start_phase_for_seed(seed: u64) -> u8 {
        let mut rng = Rng::new(seed ^ 0x0001_2011_bac4);
        [0, 0, 0, 0, 4, 5][rng.below(6) as usize]
    }

    /// One history in three has two admins moving the phase at once. Drawn from its own
    /// stream, as the start phase is.
    pub fn admins_for_seed(seed: u64) -> usize {
        let mut rng = Rng::new(seed ^ 0x0ad3_1325_c0c0);
        [1, 1, 2][rng.below(3) as usize]
    }

    /// One history in two has its clients also write one or two customers together and
    /// race for their emails. Drawn from its own stream, as the start phase is.
    pub fn shared_customers_for_seed(seed: u64) -> usize {
        let mut rng = Rng::new(seed ^ 0x05a4_ed0c_0570);
        [0, 0, 1, 2][rng.below(4) as usize]
    }

    /// One history in two fans out on a queue. Drawn from its own stream, as the start
    /// phase is.
    pub fn fan_out_for_seed(seed: u64) -> bool {
        Rng::new(seed ^ 0x0f4a_0cf0_0e0e).chance(0.5)
    }

    /// One history in three that start in phase 0 begins with customers only in the new
    /// store. Drawn from its own stream, as the start phase is.
    pub fn new_only_for_seed(seed: u64) -> bool {
        Self::start_phase_for_seed(seed) == 0 && Rng::new(seed ^ 0x0e30_0a1e_5e7d).chance(0.34)
    }

    /// One history in three reads through KV's eventual consistency, with a window a few
    /// times longer than a request (production's is 60 s against requests of tens of ms).
    pub fn stale_window_for_seed(seed: u64) -> u64 {
        let mut rng = Rng::new(seed ^ 0x57a1_e0c0_75e7);
        [0, 0, 0, 0, 2_000, 10_000][rng.below(6) as usize]
    }

    /// Settings one step smaller in each dimension that can shrink.
    pub fn smaller(&self) -> Vec<Settings> {
        let mut out = Vec::new();
        let mut push = |changed: Settings| {
            if format!("{changed:?}") != format!("{self:?}") {
                out.push(changed);
            }
        };
        push(Settings {
            clients: self.clients.saturating_sub(1).max(1),
            ..*self
        });
        push(Settings {
            ids_per_client: self.ids_per_client.saturating_sub(1).max(1),
            ..*self
        });
        push(Settings {
            ops_per_client: self.ops_per_client / 2,
            ..*self
        });
        push(Settings {
            ops_per_client: self.ops_per_client.saturating_sub(1),
            ..*self
        });
        push(Settings {
            cron_tasks: self.cron_tasks.saturating_sub(1),
            ..*self
        });
        push(Settings {
            admin_actions: self.admin_actions.saturating_sub(1),
            ..*self
        });
        push(Settings {
            admins: self.admins.saturating_sub(1).max(1),
            ..*self
        });
        push(Settings {
            fault_rate: 0.0,
            ..*self
        });
        push(Settings {
            phase_cache_ms: 0,
            ..*self
        });
        push(Settings {
            stale_window_ms: 0,
            ..*self
        });
        push(Settings {
            shared_customers: self.shared_customers.saturating_sub(1),
            ..*self
        });
        push(Settings {
            fan_out: false,
            ..*self
        });
        push(Settings {
            new_only: false,
            ..*self
        });
        push(Settings {
            plant_difference: false,
            ..*self
        });
        out
    }
}

/// What a customer may look like through the read path, as far as the model knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    Absent,
    Present { name: String, email: String },
}

/// Parts of a history that shrinking removed: steps of tasks (task, step), and
/// injected faults by number.
#[derive(Debug, Clone, Default)]
pub struct Cuts {
    pub steps: BTreeSet<(usize, usize)>,
    pub faults: BTreeSet<u64>,
}

/// Outcome of one history.
#[derive(Debug, Default)]
pub struct Outcome {
    pub faults: u64,
    pub operations: u64,
    pub stale_reads: u64,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    /// The steps that ran and the faults injected: what shrinking may cut.
    pub steps: Vec<(usize, usize)>,
    pub injected: Vec<u64>,
}

pub struct Sim {
    pub stores: Stores<SimKv>,
    /// The one coordinator of the phase record, shared by every isolate.
    pub register: RegisterCell,
    /// The customers' and emails' objects, shared by every isolate.
    pub objects: ObjectCells,
    pub shared: Rc<Shared>,
    pub config: Config,
    /// Per customer id: every state the read path may show (one once it is certain).
    pub model: RefCell<BTreeMap<String, Vec<Known>>>,
    /// Per customer id: states the model no longer allows, and when they stopped being
    /// current (a stale read may still show them for the consistency window).
    pub retired: RefCell<BTreeMap<String, Vec<(Known, u64)>>>,
    /// Per customer id: what a write under way may have left (other clients read it).
    pub in_flight: RefCell<BTreeMap<String, Vec<Known>>>,
    /// What the clients were told about the customers they share.
    pub together: shared::Together,
    pub violations: RefCell<Vec<String>>,
    pub seq: Cell<u64>,
    pub cuts: Cuts,
    pub steps: RefCell<Vec<(usize, usize)>>,
    /// The backfill queue, in histories that fan out.
    pub queue: Option<LocalQueue>,
}

pub const SECRET: &[u8] = b"simulation-secret-0123456789abcdef";
const START_MS: u64 = 1_800_000_000_000;

const TOKEN_LIFETIME_SECS: u64 = 10 * 365 * 86_400;

fn token(role: &str, sub: &str) -> String {
    use jwt_simple::prelude::*;
    #[derive(Serialize, Deserialize)]
    struct RoleClaim {
        role: String,
    }
    let mut claims =
        Claims::with_custom_claims(RoleClaim { role: role.into() }, Duration::from_days(3650))
            .with_subject(sub);
    claims.issued_at = Some(UnixTimeStamp::from_secs(START_MS / 1000 - 60));
    claims.invalid_before = None;
    claims.expires_at = Some(UnixTimeStamp::from_secs(
        START_MS / 1000 - 60 + TOKEN_LIFETIME_SECS,
    ));
    HS256Key::from_bytes(SECRET).authenticate(claims).unwrap()
}

thread_local! {
    static TOKENS: (String, String) = (token("service", "sim-service"), token("admin", "sim-admin"));
}

impl Sim {
    pub fn new(seed: u64, settings: &Settings, cuts: Cuts) -> Self {
        let mut shared = Shared::new(
            seed,
            settings.fault_rate,
            settings.stale_window_ms,
            START_MS,
        );
        shared.spared_faults = cuts.faults.clone();
        let shared = Rc::new(shared);
        let phase_cache_ms = settings.phase_cache_ms;
        Self {
            stores: Stores {
                old: SimKv::new("old", shared.clone()),
                new: SimKv::new("new", shared.clone()),
            },
            register: RegisterCell::default(),
            objects: ObjectCells::default(),
            shared,
            config: Config {
                // The histories' tokens live as long as they run (`token`).
                tokens: TokenRules {
                    max_lifetime_secs: RoleLimits {
                        customer: TOKEN_LIFETIME_SECS,
                        service: TOKEN_LIFETIME_SECS,
                        admin: TOKEN_LIFETIME_SECS,
                    },
                    ..TokenRules::new(SECRET.to_vec())
                },
                admin_sign_in: AdminSignIn::default(),
                default_phase: Phase::Legacy,
                phase_cache_ms,
                // Requests here span up to a second or so of simulated time.
                request_margin_ms: 3_000,
                consistency_window_ms: settings.stale_window_ms,
                verification_period_ms: 0,
                max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
                log_level: customer_kv_migration::logging::Level::Info,
                alert_webhook_url: None,
            },
            model: RefCell::new(BTreeMap::new()),
            retired: RefCell::new(BTreeMap::new()),
            in_flight: RefCell::new(BTreeMap::new()),
            together: shared::Together::default(),
            violations: RefCell::new(Vec::new()),
            seq: Cell::new(0),
            cuts,
            steps: RefCell::new(Vec::new()),
            queue: settings.fan_out.then(LocalQueue::default),
        }
    }

    /// The coordinator every isolate shares.
    pub fn register(&self) -> LocalRegister<'_, SimKv> {
        LocalRegister {
            new_store: &self.stores.new,
            default_phase: self.config.default_phase,
            cell: &self.register,
        }
    }

    /// The queue and the coordinator, in histories that fan out.
    pub fn fanout<'a>(
        &'a self,
        register: &'a LocalRegister<'a, SimKv>,
    ) -> Option<Fanout<'a, LocalRegister<'a, SimKv>>> {
        self.queue.as_ref().map(|queue| Fanout {
            register,
            queue: queue as &dyn ChunkQueue,
        })
    }

    pub fn next_seq(&self) -> u64 {
        self.seq.set(self.seq.get() + 1);
        self.seq.get()
    }

    pub async fn send(
        &self,
        cache: &PhaseCache,
        admin: bool,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> ApiResponse {
        let mut request = ApiRequest::new(Method::parse(method), path);
        let bearer = TOKENS.with(|(service, admin_token)| {
            if admin {
                admin_token.clone()
            } else {
                service.clone()
            }
        });
        request.authorization = Some(format!("Bearer {bearer}"));
        request.body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let register = self.register();
        let writers = self.writers();
        let app = App {
            stores: &self.stores,
            register: &register,
            writers: &writers,
            queue: self.queue.as_ref().map(|q| q as &dyn ChunkQueue),
            config: &self.config,
            phase_cache: cache,
            access_keys: &AccessKeys::default(),
            now_ms: self.now(),
        };
        handle(&app, &request).await.response.parsed()
    }

    /// The customers' and emails' objects, at the time now. A call to one may fail
    /// like a KV operation: before the object acted, or after (the reply lost).
    pub fn writers(&self) -> FaultyObjects<'_> {
        FaultyObjects {
            objects: LocalWriters {
                stores: &self.stores,
                cells: &self.objects,
                clock: ObjectClock::of(&self.config, self.now()),
                hold_ms: self.config.pass_delay_ms(),
            },
            faults: &self.stores.new,
        }
    }

    pub fn violation(&self, text: String) {
        self.violations.borrow_mut().push(text);
    }

    pub fn note(&self, text: String) {
        self.shared.note(text);
    }

    pub fn now(&self) -> u64 {
        self.shared.clock.get()
    }

    pub fn advance_clock(&self, ms: u64) {
        self.shared.clock.set(self.now() + ms);
    }

    /// Whether step `step` of task `task` runs (shrinking may have cut it); notes it.
    pub fn takes_step(&self, task: usize, step: usize) -> bool {
        if self.cuts.steps.contains(&(task, step)) {
            return false;
        }
        self.steps.borrow_mut().push((task, step));
        true
    }

    pub fn stored_phase(&self) -> Phase {
        self.stores
            .new
            .peek("__migration/phase")
            .and_then(|e| serde_json::from_slice::<Value>(&e.bytes).ok())
            .and_then(|v| v["phase"].as_u64())
            .and_then(Phase::from_number)
            .unwrap_or(self.config.default_phase)
    }

    /// Starts the history in phase 4 or 5 of a finished migration (both stores empty),
    /// an hour after the move to phase 4.
    pub fn start_in_phase(&self, phase: u8) {
        let moved_at = START_MS - 3_600_000;
        let state = serde_json::json!({
            "phase": phase,
            "changedAt": moved_at,
            "changedBy": "simulation",
            "newStoreDiverged": false,
            "oldStoreDiverged": true,
            "leftOldStoreAt": moved_at,
        });
        self.stores.new.entries.borrow_mut().insert(
            "__migration/phase".to_owned(),
            store::Entry {
                bytes: state.to_string().into_bytes(),
                expiration: None,
                metadata: None,
            },
        );
    }

    /// Each client's first customer, created by another service in the new store alone
    /// (with its mapping) before the history, and the inventory that finds them.
    pub fn start_with_new_only_customers(&self, clients: usize) {
        for k in 0..clients {
            let id = format!("c{k}x0");
            let email = format!("{id}.api@sim.test");
            let record = serde_json::json!({
                "customerId": id, "email": email, "name": "api",
                "createdAt": "2025-01-01T00:00:00Z", "updatedAt": "2025-01-01T00:00:00Z",
            });
            let hash = Email::parse(&email).unwrap().hash();
            let mut entries = self.stores.new.entries.borrow_mut();
            for (key, bytes) in [
                (format!("customer_{id}"), record.to_string().into_bytes()),
                (email_key(&hash), id.clone().into_bytes()),
            ] {
                let entry = store::Entry {
                    bytes,
                    expiration: None,
                    metadata: None,
                };
                entries.insert(key, entry);
            }
            drop(entries);
            let known = Known::Present {
                name: "api".into(),
                email,
            };
            self.model.borrow_mut().insert(id, vec![known]);
        }
        let cache = PhaseCache::default();
        let body = serde_json::json!({});
        let path = "/admin/migrate/inventory";
        for _ in 0..20 {
            let r = block_on(self.send(&cache, true, "POST", path, Some(body.clone())));
            if r.status == 200 && r.body["complete"] == true {
                // The history begins once every location sees the marks: until then a
                // read may not find these customers, as before the inventory.
                self.advance_clock(self.config.settle_ms() + 1);
                return;
            }
        }
        self.violation("the inventory did not complete before the history".into());
    }

    /// Whether the old store lacks writes made since phase 4 (a reverse sync is due).
    pub fn old_store_diverged(&self) -> bool {
        self.stored_record()
            .is_some_and(|v| v["oldStoreDiverged"] == true)
    }

    fn stored_record(&self) -> Option<Value> {
        self.stores
            .new
            .peek("__migration/phase")
            .and_then(|e| serde_json::from_slice::<Value>(&e.bytes).ok())
    }

    /// The open cohort's phase, if one is open (docs/design.md §17).
    pub fn cohort_phase(&self) -> Option<Phase> {
        self.stored_record()
            .and_then(|v| v["cohort"]["to"].as_u64())
            .and_then(Phase::from_number)
    }

    /// The phase customer `id`'s record is served by now: the cohort's, if it is in it.
    pub fn phase_of(&self, id: &str) -> Phase {
        let record = self.stored_record().unwrap_or(Value::Null);
        let phase = self.stored_phase();
        match serde_json::from_value::<Cohort>(record["cohort"].clone()) {
            Ok(cohort) if cohort.includes(id) => cohort.phase().unwrap_or(phase),
            _ => phase,
        }
    }

    /// When the last phase move or cohort step settles: no isolate or request still runs
    /// the routing before it.
    pub fn settled_at(&self) -> u64 {
        let record = self.stored_record().unwrap_or(Value::Null);
        let at = |field: &str| record[field].as_u64().unwrap_or(0);
        at("changedAt").max(at("routedAt")) + self.config.settle_ms()
    }

    /// What the read path of `phase` shows for a customer, read straight from the maps.
    pub fn read_path(&self, phase: Phase, id: &str) -> Known {
        match self.record_at_rest(phase, id) {
            None => Known::Absent,
            Some(value) => Known::Present {
                name: value["name"].as_str().unwrap_or_default().to_owned(),
                email: value["email"].as_str().unwrap_or_default().to_owned(),
            },
        }
    }
}

impl Sim {
    /// A customer's record as the read path of `phase` shows it, read from the maps.
    pub fn record_at_rest(&self, phase: Phase, id: &str) -> Option<Value> {
        let key = format!("customer_{id}");
        let mut reads = phase.routing().reads.to_vec();
        // A customer the inventory found only in the new store is read there in the
        // phases that do not read it otherwise (docs/design.md §16).
        if !phase.reads_from(StoreName::New) && self.found_only_in_new_store(&key) {
            reads.push(StoreName::New);
        }
        for store in reads {
            let Some(entry) = self.stores.get(store).peek(&key) else {
                continue;
            };
            let value: Value = serde_json::from_slice(&entry.bytes).unwrap_or(Value::Null);
            if value.get("__tombstone").is_some() {
                return None;
            }
            return Some(value);
        }
        None
    }

    fn found_only_in_new_store(&self, key: &str) -> bool {
        self.stores
            .new
            .peek(&keys::preexisting(key))
            .and_then(|e| serde_json::from_slice::<Value>(&e.bytes).ok())
            .is_some_and(|mark| mark["found"] == "new_only")
    }
}

/// The objects, reached through calls that fail at the fault rate.
pub struct FaultyObjects<'a> {
    objects: LocalWriters<'a, SimKv>,
    /// Whose fault stream decides a call's fate.
    faults: &'a SimKv,
}

impl ClaimSender for FaultyObjects<'_> {
    async fn send(&self, request: EmailRequest) -> Result<ClaimAnswer, Error> {
        self.objects.send(request).await
    }
}

impl Writers for FaultyObjects<'_> {
    async fn write(&self, id: &CustomerId, request: WriteRequest) -> Reply {
        let lost = || Reply {
            result: Err(Error::Store(StoreError::new(
                "customer object",
                "injected fault",
            ))),
            warnings: Vec::new(),
        };
        match self.faults.step("object", id.as_str()).await {
            store::Fate::Succeed => self.objects.write(id, request).await,
            store::Fate::FailBefore => lost(),
            store::Fate::FailAfter => {
                self.objects.write(id, request).await;
                lost()
            }
        }
    }
}

/// Runs tasks to completion, polling a randomly chosen one each step; a task runs in
/// the location of its index.
pub fn run_tasks<'a>(
    rng: &mut Rng,
    mut tasks: Vec<Option<Pin<Box<dyn Future<Output = ()> + 'a>>>>,
    shared: &Shared,
) {
    let clock = &shared.clock;
    let mut context = Context::from_waker(Waker::noop());
    loop {
        let live: Vec<usize> = tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_some())
            .map(|(i, _)| i)
            .collect();
        if live.is_empty() {
            return;
        }
        let chosen = live[rng.below(live.len() as u64) as usize];
        clock.set(clock.get() + 1 + rng.below(20));
        shared.location.set(chosen);
        if let Some(task) = tasks[chosen].as_mut() {
            if let Poll::Ready(()) = task.as_mut().poll(&mut context) {
                tasks[chosen] = None;
            }
        }
    }
}

/// Drives a future whose stores never wait to completion (used for set-up and checks).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}

/// A cron invocation, after the objects' alarms due by then: the platform rings them on
/// its own, and the history gives them the cron's turns.
pub async fn cron_once(sim: &Sim) -> Result<cron::CronReport, customer_kv_migration::error::Error> {
    sim.writers().objects.ring_alarms().await;
    let register = sim.register();
    let fanout = sim.fanout(&register);
    cron::run(
        &sim.stores,
        (&sim.writers(), fanout),
        sim.config.default_phase,
        sim.config.gate_settings(),
        sim.now(),
    )
    .await
}
