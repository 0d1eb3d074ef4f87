//! What the customers' and emails' objects decide must hold against the other writers of
//! the same keys: copies decided on stale reads, the email audit, invalid input
//! (docs/design.md §12).

mod common;

use common::*;
use customer_kv_migration::migration::copying::backfill::{self, RunOptions};
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::budget::{metered, Budget};
use customer_kv_migration::store::{
    KvStore, ListPage, MemoryStore, PutOptions, StoreResult, StoredValue, Stores,
};
use serde_json::{json, Value};

/// A KV namespace as a location sees it whose cache of the customer keys still holds the
/// values from before a client write (docs/design.md §5): reads of customer keys come
/// from `stale`, everything else (and every write) goes to `live`.
struct StaleAt<'a> {
    live: &'a MemoryStore,
    stale: &'a MemoryStore,
}

fn is_data(key: &str) -> bool {
    key.starts_with("customer_") || key.starts_with("email_to_customer_")
}

impl KvStore for StaleAt<'_> {
    async fn get(&self, key: &str) -> StoreResult<Option<StoredValue>> {
        if is_data(key) {
            self.stale.get(key).await
        } else {
            self.live.get(key).await
        }
    }
    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> StoreResult<()> {
        self.live.put(key, value, options).await
    }
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<StoredValue>>> {
        let mut out = Vec::new();
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.live.delete(key).await
    }
    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> StoreResult<ListPage> {
        self.live.list(prefix, cursor, limit).await
    }
}

fn snapshot(store: &MemoryStore) -> MemoryStore {
    let copy = MemoryStore::new();
    for key in store.keys() {
        copy.insert(&key, &store.peek(&key).unwrap(), PutOptions::default());
    }
    copy
}

fn patch(world: &World, id: &str, body: Value) -> (u16, Value) {
    let r = world.send(
        "PATCH",
        &format!("/customer/{id}"),
        Some(&service()),
        Some(body),
    );
    (
        r.status,
        serde_json::from_str(&r.body.to_string()).unwrap_or(Value::Null),
    )
}

/// A stale backfill copy (§5) lands over an object's acknowledged write, and the
/// backfill checks it only at its next pass (`last_write_at + pass_delay_ms` + a cron
/// period + the time to reach the key). A PATCH in between must not read the copy and
/// merge into it — that would make it the truth in both stores — so the object believes
/// its own later write over an older state in KV, however long ago it wrote.
#[test]
fn a_patch_never_merges_into_a_copy_older_than_the_objects_own_write() {
    let mut world = World::in_phase(Phase::Backfill);
    world.config.consistency_window_ms = 60_000;
    world.config.request_margin_ms = 30_000;
    let pass_delay_ms = world.config.pass_delay_ms();
    // A legacy record, only in the old store.
    world.stores.old.insert(
        "customer_c1",
        br#"{"customerId":"c1","name":"A","updatedAt":"2020-01-01T00:00:00.000Z"}"#,
        PutOptions::default(),
    );
    // The cron's location cached both stores' customer keys before the PATCH below.
    let (stale_old, stale_new) = (snapshot(&world.stores.old), snapshot(&world.stores.new));

    let (status, _) = patch(&world, "c1", json!({ "plan": "pro" }));
    assert_eq!(status, 200, "PATCH plan acknowledged");

    // The backfill runs a second later at that location: it copies the legacy value
    // into the new store over the PATCH's, and its re-read (same cache) sees no change.
    world.now_ms += 1_000;
    let stale = Stores {
        old: StaleAt {
            live: &world.stores.old,
            stale: &stale_old,
        },
        new: StaleAt {
            live: &world.stores.new,
            stale: &stale_new,
        },
    };
    let budget = Budget::per_invocation(0);
    let options = RunOptions {
        pass_delay_ms,
        ..RunOptions::default()
    };
    block_on(backfill::run(
        &metered(&stale, &budget),
        &budget,
        options,
        world.now_ms,
    ))
    .unwrap();

    // Just past the object's trust window, before the backfill's next pass.
    world.now_ms += pass_delay_ms;
    let (status, _) = patch(&world, "c1", json!({ "displayName": "Ann" }));
    assert_eq!(status, 200, "PATCH displayName acknowledged");

    // The backfill's later passes, and every check, with current reads.
    for _ in 0..10 {
        world.now_ms += 120_000;
        let options = RunOptions {
            pass_delay_ms,
            ..RunOptions::default()
        };
        let budget = Budget::per_invocation(0);
        let _ = block_on(backfill::run(
            &metered(&world.stores, &budget),
            &budget,
            options,
            world.now_ms,
        ));
    }
    world.now_ms += 120_000;
    let got = world.send("GET", "/customer/c1", Some(&service()), None);
    let record: Value = serde_json::from_str(&got.body.to_string()).unwrap();
    assert_eq!(record["displayName"], json!("Ann"), "{record}");
    assert_eq!(
        record["plan"],
        json!("pro"),
        "acknowledged PATCH lost: {record}"
    );
}

/// An ensure answered 400 must not have claimed the email (writing its mapping and
/// holding it for `hold_ms`): a valid create of that email by another id succeeds.
#[test]
fn an_invalid_ensure_writes_nothing_and_blocks_no_email() {
    let mut world = World::in_phase(Phase::DualWrite);
    world.config.consistency_window_ms = 60_000;
    world.config.request_margin_ms = 30_000;
    let r = world.send(
        "POST",
        "/customer/ensure",
        Some(&service()),
        Some(json!({ "email": "x@example.com", "plan": 5 })),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let mappings: Vec<String> = world
        .stores
        .old
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("email_to_customer_"))
        .collect();
    let r2 = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "c9", "email": "x@example.com" })),
    );
    assert!(
        mappings.is_empty() && r2.status == 201,
        "a 400 left mappings {mappings:?}; a valid create then got {} {}",
        r2.status,
        r2.body
    );
}

/// An operation, a key, and what runs just before the first such operation on it.
type Hook<'h> = (&'static str, String, Option<Box<dyn FnOnce() + 'h>>);

/// Runs each hook once, just before the first operation of its kind on its key.
struct Hooks<'a, 'h> {
    inner: &'a MemoryStore,
    hooks: &'a std::cell::RefCell<Vec<Hook<'h>>>,
}

impl Hooks<'_, '_> {
    fn before(&self, op: &str, keys: &[&str]) {
        let mut ready = Vec::new();
        for (kind, key, hook) in self.hooks.borrow_mut().iter_mut() {
            if *kind == op && keys.contains(&key.as_str()) {
                if let Some(h) = hook.take() {
                    ready.push(h);
                }
            }
        }
        for h in ready {
            h();
        }
    }
}

impl KvStore for Hooks<'_, '_> {
    async fn get(&self, key: &str) -> StoreResult<Option<StoredValue>> {
        self.before("get", &[key]);
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> StoreResult<()> {
        self.before("put", &[key]);
        self.inner.put(key, value, options).await
    }
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<StoredValue>>> {
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.before("get", &names);
        self.inner.get_many(keys).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.before("delete", &[key]);
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> StoreResult<ListPage> {
        self.inner.list(prefix, cursor, limit).await
    }
}

/// The audit reads A's record (holding e); A moves to f and releases e, and B is created
/// with e; the audit, which read e's mapping absent, would derive e -> A over B's. Its
/// mapping changes go through the email's object, which decides again: A no longer
/// holds e, so B stays found by e, and C cannot take e later.
#[test]
fn the_email_audit_never_points_a_mapping_away_from_the_customer_holding_it() {
    use customer_kv_migration::domain::{email_key, Email};
    use customer_kv_migration::migration::checking::emails;
    let mut world = World::in_phase(Phase::Complete);
    world.config.consistency_window_ms = 60_000;
    world.config.request_margin_ms = 30_000;
    let svc = service();
    let r = world.send(
        "POST",
        "/customer",
        Some(&svc),
        Some(json!({"customerId":"A","email":"e@x.io"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let e_key = email_key(&Email::parse("e@x.io").unwrap().hash());

    let world_ref = &world;
    let hooks = std::cell::RefCell::new(vec![(
        "get",
        e_key.clone(),
        Some(Box::new(move || {
            let r = world_ref.send(
                "PATCH",
                "/customer/A",
                Some(&service()),
                Some(json!({"email":"f@x.io"})),
            );
            assert_eq!(r.status, 200, "{}", r.body);
            let r = world_ref.send(
                "POST",
                "/customer",
                Some(&service()),
                Some(json!({"customerId":"B","email":"e@x.io"})),
            );
            assert_eq!(r.status, 201, "B created: {}", r.body);
        }) as Box<dyn FnOnce()>),
    )]);
    let hooked = Stores {
        old: Hooks {
            inner: &world.stores.old,
            hooks: &hooks,
        },
        new: Hooks {
            inner: &world.stores.new,
            hooks: &hooks,
        },
    };
    let current = block_on(customer_kv_migration::migration::state::phase_record::load(
        &world.stores.new,
        Phase::Complete,
    ))
    .unwrap();
    block_on(emails::run_requested(
        (&hooked, &world.writers()),
        (&world.register(), None),
        &current,
        (false, true),
        "admin",
        world.now_ms,
    ))
    .unwrap();
    drop(hooks);

    let by_email = world.send("GET", "/customer/by-email/e%40x.io", Some(&svc), None);
    let later = {
        world.now_ms += 200_000;
        world.send(
            "POST",
            "/customer",
            Some(&svc),
            Some(json!({"customerId":"C","email":"e@x.io"})),
        )
    };
    assert!(
        by_email.status == 200 && later.status == 409,
        "B's acknowledged create: by-email {} {}; C's create of the same email later: {} {}",
        by_email.status,
        by_email.body,
        later.status,
        later.body
    );
}
