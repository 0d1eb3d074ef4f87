//! Concurrent writers of one customer and one email (docs/design.md §12), interleaved
//! one KV operation at a time by the simulation's seeded scheduler, each request in a
//! location of its own, with and without KV's consistency window. Every history must keep
//! every acknowledged field, make one customer of one email and give one 201 per id. The
//! `mutant-no-serialization` build, whose objects neither lock nor remember, fails here.

mod sim;

use std::future::Future;
use std::pin::Pin;

use customer_kv_migration::migration::state::phase_cache::PhaseCache;
use customer_kv_migration::phase::Phase;
use serde_json::{json, Value};
use sim::rng::Rng;
use sim::{block_on, run_tasks, Cuts, Settings, Sim};

const SEEDS: u64 = 60;
const PHASES: [Phase; 4] = [
    Phase::Legacy,
    Phase::DualWrite,
    Phase::Backfill,
    Phase::Complete,
];

fn sim_in(phase: Phase, seed: u64) -> Sim {
    let settings = Settings {
        clients: 1,
        ids_per_client: 1,
        ops_per_client: 0,
        cron_tasks: 0,
        admin_actions: 0,
        admins: 0,
        fault_rate: 0.0,
        phase_cache_ms: 0,
        start_phase: 0,
        stale_window_ms: [0, 2_000][(seed % 2) as usize],
        shared_customers: 0,
        fan_out: false,
        new_only: false,
        plant_difference: false,
    };
    let mut sim = Sim::new(seed, &settings, Cuts::default());
    sim.config.default_phase = phase;
    sim
}

type Task<'a> = Option<Pin<Box<dyn Future<Output = ()> + 'a>>>;

/// Runs `requests` at once and returns their answers (status, body) in order.
fn concurrently(sim: &Sim, seed: u64, requests: Vec<(&str, String, Value)>) -> Vec<(u16, Value)> {
    let answers = std::cell::RefCell::new(vec![(0, Value::Null); requests.len()]);
    let caches: Vec<_> = requests.iter().map(|_| Default::default()).collect();
    let tasks: Vec<Task> = requests
        .into_iter()
        .enumerate()
        .map(|(i, (method, path, body))| {
            let (answers, cache) = (&answers, &caches[i]);
            let task: Pin<Box<dyn Future<Output = ()>>> = Box::pin(async move {
                let r = sim.send(cache, false, method, &path, Some(body)).await;
                answers.borrow_mut()[i] = (r.status, r.body);
            });
            Some(task)
        })
        .collect();
    run_tasks(&mut Rng::new(seed), tasks, &sim.shared);
    answers.into_inner()
}

fn read(sim: &Sim, path: &str) -> (u16, Value) {
    let cache = Default::default();
    sim.advance_clock(60_000);
    let r = block_on(sim.send(&cache, false, "GET", path, None));
    (r.status, r.body)
}

#[test]
fn concurrent_patches_keep_every_field() {
    for phase in PHASES {
        for seed in 0..SEEDS {
            let sim = sim_in(phase, seed);
            let created = concurrently(
                &sim,
                seed,
                vec![("POST", "/customer".into(), json!({ "customerId": "c1" }))],
            );
            assert_eq!(created[0].0, 201, "{phase:?} seed {seed}");
            let patches = (0..5)
                .map(|i| {
                    let body = json!({ "metadata": { format!("f{i}"): i } });
                    ("PATCH", "/customer/c1".to_owned(), body)
                })
                .collect();
            let answers = concurrently(&sim, seed, patches);
            let acknowledged: Vec<usize> = (0..5).filter(|&i| answers[i].0 == 200).collect();
            assert_eq!(acknowledged.len(), 5, "{phase:?} seed {seed}: {answers:?}");
            let (status, record) = read(&sim, "/customer/c1");
            assert_eq!(status, 200);
            for i in acknowledged {
                assert_eq!(
                    record["metadata"][format!("f{i}")],
                    json!(i),
                    "{phase:?} seed {seed}: acknowledged field f{i} lost: {record}"
                );
            }
        }
    }
}

#[test]
fn concurrent_creates_of_one_email_make_one_customer() {
    for phase in PHASES {
        for seed in 0..SEEDS {
            let sim = sim_in(phase, seed);
            let creates = (0..4)
                .map(|i| {
                    let body = json!({ "customerId": format!("c{i}"), "email": "one@sim.test" });
                    ("POST", "/customer".to_owned(), body)
                })
                .collect();
            let answers = concurrently(&sim, seed, creates);
            let created = answers.iter().filter(|(s, _)| *s == 201).count();
            assert_eq!(created, 1, "{phase:?} seed {seed}: {answers:?}");
            let holders = (0..4)
                .filter(|i| read(&sim, &format!("/customer/c{i}")).0 == 200)
                .count();
            assert_eq!(holders, 1, "{phase:?} seed {seed}");
        }
    }
}

#[test]
fn concurrent_ensures_and_creates_of_one_id_give_one_201() {
    for phase in PHASES {
        for seed in 0..SEEDS {
            let sim = sim_in(phase, seed);
            let ensures = (0..4)
                .map(|_| {
                    let body = json!({ "email": "ensure@sim.test" });
                    ("POST", "/customer/ensure".to_owned(), body)
                })
                .collect();
            let answers = concurrently(&sim, seed, ensures);
            let created = answers.iter().filter(|(s, _)| *s == 201).count();
            assert_eq!(created, 1, "{phase:?} seed {seed}: ensures {answers:?}");
            let ids: std::collections::BTreeSet<_> = answers
                .iter()
                .filter(|(s, _)| *s < 300)
                .map(|(_, b)| b["customerId"].to_string())
                .collect();
            assert_eq!(ids.len(), 1, "{phase:?} seed {seed}: {answers:?}");

            let creates = (0..4)
                .map(|i| {
                    let body = json!({ "customerId": "same", "email": format!("{i}@sim.test") });
                    ("POST", "/customer".to_owned(), body)
                })
                .collect();
            let answers = concurrently(&sim, seed, creates);
            let created = answers.iter().filter(|(s, _)| *s == 201).count();
            assert_eq!(created, 1, "{phase:?} seed {seed}: creates {answers:?}");
        }
    }
}

/// Isolates see a move at different moments: a write from one still in phase 0 after a
/// write from one in phase 1 must not leave the new store behind, which phase 2 reads
/// first (docs/design.md §12, "an object's phase never goes back").
#[test]
fn a_write_from_an_isolate_behind_on_the_phase_never_leaves_the_new_store_behind() {
    let mut sim = sim_in(Phase::Legacy, 0);
    sim.config.phase_cache_ms = 600_000;
    let behind = PhaseCache::default();
    let send = |cache: &PhaseCache, admin: bool, method: &str, path: &str, body: Value| {
        let r = block_on(sim.send(cache, admin, method, path, Some(body)));
        (r.status, r.body)
    };
    let fresh = PhaseCache::default;
    // This isolate reads phase 0 now and keeps it for ten minutes.
    assert_eq!(
        send(&behind, false, "GET", "/customer/none", json!({})).0,
        404
    );
    let created = send(
        &fresh(),
        false,
        "POST",
        "/customer",
        json!({ "customerId": "c1" }),
    );
    assert_eq!(created.0, 201);
    let force = |to: u8| json!({ "phase": to, "force": true, "reason": "test" });
    assert_eq!(
        send(&fresh(), true, "POST", "/admin/migrate/phase", force(1)).0,
        200
    );
    sim.advance_clock(1_000);
    let ahead = send(
        &fresh(),
        false,
        "PATCH",
        "/customer/c1",
        json!({ "metadata": { "f0": 0 } }),
    );
    assert_eq!(ahead.0, 200, "{}", ahead.1);
    sim.advance_clock(1_000);
    let late = send(
        &behind,
        false,
        "PATCH",
        "/customer/c1",
        json!({ "metadata": { "f1": 1 } }),
    );
    assert_eq!(late.0, 200, "{}", late.1);
    sim.advance_clock(1_000);
    assert_eq!(
        send(&fresh(), true, "POST", "/admin/migrate/phase", force(2)).0,
        200
    );
    let (status, record) = read(&sim, "/customer/c1");
    assert_eq!(status, 200);
    assert_eq!(record["metadata"], json!({ "f0": 0, "f1": 1 }), "{record}");
}
