//! One seeded history: the tasks, what they check as they go, and the end-state checks.

use std::future::Future;
use std::pin::Pin;

use customer_kv_migration::http::ApiResponse;
use customer_kv_migration::migration::control::PhaseCache;
use customer_kv_migration::phase::Phase;
use serde_json::json;

use super::rng::Rng;
use super::store::pause;
use super::{block_on, cron_once, run_tasks, Known, Outcome, Settings, Sim};

fn is_failure(response: &ApiResponse) -> bool {
    response.status >= 500
}

fn observed(response: &ApiResponse) -> Known {
    Known::Present {
        name: response.body["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        email: response.body["email"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

impl Sim {
    fn possible(&self, id: &str) -> Vec<Known> {
        self.model
            .borrow()
            .get(id)
            .cloned()
            .unwrap_or_else(|| vec![Known::Absent])
    }

    fn acknowledge(&self, id: &str, state: Known) {
        self.model.borrow_mut().insert(id.to_owned(), vec![state]);
    }

    /// A request that failed may or may not have taken effect.
    fn attempt(&self, id: &str, state: Known) {
        let mut model = self.model.borrow_mut();
        let possible = model
            .entry(id.to_owned())
            .or_insert_with(|| vec![Known::Absent]);
        if !possible.contains(&state) {
            possible.push(state);
        }
    }

    fn expect(&self, id: &str, seen: Known, what: &str) {
        let possible = self.possible(id);
        if !possible.contains(&seen) {
            self.violation(format!(
                "{what}: {id} read as {seen:?}, the model allows {possible:?}"
            ));
        }
    }

    fn present_emails(&self, id: &str) -> Vec<String> {
        self.possible(id)
            .into_iter()
            .filter_map(|k| match k {
                Known::Present { email, .. } => Some(email),
                Known::Absent => None,
            })
            .collect()
    }

    fn present_names(&self, id: &str) -> Vec<String> {
        self.possible(id)
            .into_iter()
            .filter_map(|k| match k {
                Known::Present { name, .. } => Some(name),
                Known::Absent => None,
            })
            .collect()
    }
}

fn seen_phase(cache: &PhaseCache) -> u8 {
    cache.stale().map_or(0, |c| c.phase.number())
}

async fn client(sim: &Sim, k: usize, settings: Settings, mut rng: Rng) {
    let cache = PhaseCache::default();
    let ids: Vec<String> = (0..settings.ids_per_client)
        .map(|j| format!("c{k}x{j}"))
        .collect();
    for _ in 0..settings.ops_per_client {
        let id = ids[rng.below(ids.len() as u64) as usize].clone();
        let seq = sim.next_seq();
        let name = format!("n{seq}");
        let email = format!("{id}.{seq}@sim.test");
        let path = format!("/customer/{id}");
        match rng.below(7) {
            0 => {
                let r = sim
                    .send(
                        &cache,
                        false,
                        "POST",
                        "/customer",
                        Some(json!({ "customerId": id, "email": email, "name": name })),
                    )
                    .await;
                sim.note(format!(
                    "client {k} (phase {}): create {id} -> {}",
                    seen_phase(&cache),
                    r.status
                ));
                match r.status {
                    201 => sim.acknowledge(&id, Known::Present { name, email }),
                    409 => {
                        if !sim
                            .possible(&id)
                            .iter()
                            .any(|s| matches!(s, Known::Present { .. }))
                        {
                            sim.violation(format!(
                                "create {id} answered 409 but the model says it is absent"
                            ));
                        }
                    }
                    _ if is_failure(&r) => sim.attempt(&id, Known::Present { name, email }),
                    other => sim.violation(format!("create {id}: unexpected {other} {}", r.body)),
                }
            }
            1..=3 => {
                let change_email = rng.below(3) == 0;
                let patch = if change_email {
                    json!({ "email": email })
                } else {
                    json!({ "name": name })
                };
                let r = sim.send(&cache, false, "PATCH", &path, Some(patch)).await;
                sim.note(format!(
                    "client {k} (phase {}): update {id} {} -> {} {}",
                    seen_phase(&cache),
                    if change_email { "email" } else { "name" },
                    r.status,
                    r.body["email"]
                ));
                match r.status {
                    200 => sim.acknowledge(&id, observed(&r)),
                    404 => sim.expect(&id, Known::Absent, "update"),
                    _ if is_failure(&r) => {
                        for (n, e) in sim
                            .present_names(&id)
                            .into_iter()
                            .zip(sim.present_emails(&id))
                        {
                            let attempted = if change_email {
                                Known::Present {
                                    name: n,
                                    email: email.clone(),
                                }
                            } else {
                                Known::Present {
                                    name: name.clone(),
                                    email: e,
                                }
                            };
                            sim.attempt(&id, attempted);
                        }
                    }
                    other => sim.violation(format!("update {id}: unexpected {other} {}", r.body)),
                }
            }
            4 => {
                let r = sim.send(&cache, false, "DELETE", &path, None).await;
                sim.note(format!(
                    "client {k} (phase {}): delete {id} -> {}",
                    seen_phase(&cache),
                    r.status
                ));
                match r.status {
                    200 => sim.acknowledge(&id, Known::Absent),
                    404 => sim.expect(&id, Known::Absent, "delete"),
                    _ if is_failure(&r) => sim.attempt(&id, Known::Absent),
                    other => sim.violation(format!("delete {id}: unexpected {other} {}", r.body)),
                }
            }
            5 => {
                let r = sim.send(&cache, false, "GET", &path, None).await;
                sim.note(format!(
                    "client {k} (phase {}): read {id} -> {}",
                    seen_phase(&cache),
                    r.status
                ));
                match r.status {
                    200 => sim.expect(&id, observed(&r), "read"),
                    404 => sim.expect(&id, Known::Absent, "read"),
                    _ => {}
                }
            }
            _ => {
                // By email, when the model is sure of the customer's email.
                let possible = sim.possible(&id);
                if let [Known::Present { email, .. }] = possible.as_slice() {
                    let r = sim
                        .send(
                            &cache,
                            false,
                            "GET",
                            &format!("/customer/by-email/{email}"),
                            None,
                        )
                        .await;
                    sim.note(format!(
                        "client {k} (phase {}): read {id} by email -> {}",
                        seen_phase(&cache),
                        r.status
                    ));
                    match r.status {
                        200 if r.body["customerId"] == id.as_str() => {
                            sim.expect(&id, observed(&r), "read by email")
                        }
                        200 => sim.violation(format!(
                            "by email {email}: got {} instead of {id}",
                            r.body["customerId"]
                        )),
                        404 => sim.violation(format!(
                            "by email {email}: {id} not found, the model says {possible:?}"
                        )),
                        _ => {}
                    }
                }
            }
        }
        for _ in 0..rng.below(20) {
            pause().await;
        }
    }
}

async fn cron_task(sim: &Sim, runs: usize, mut rng: Rng) {
    for _ in 0..runs {
        let result = cron_once(sim).await;
        sim.note(format!(
            "cron: {:?}",
            result.as_ref().map(|r| (
                r.repair.repaired,
                r.backfill.as_ref().map(|b| b.counts.copied)
            ))
        ));
        if let Ok(report) = result {
            if report.operations > 1_000 {
                sim.violation(format!(
                    "a cron run used {} KV operations",
                    report.operations
                ));
            }
        }
        for _ in 0..rng.below(60) {
            pause().await;
        }
    }
}

async fn admin_task(sim: &Sim, actions: usize, mut rng: Rng) {
    let cache = PhaseCache::default();
    for _ in 0..actions {
        for _ in 0..rng.below(100) {
            pause().await;
        }
        // Like an operator, mostly wait for the last move to settle (the gate refuses
        // otherwise); sometimes try anyway.
        if rng.below(4) != 0 {
            while sim.clock.get() < sim.settled_at() {
                pause().await;
            }
        }
        let current = sim.stored_phase().number();
        let r = match rng.below(7) {
            0..=2 => {
                let to = if current == 0 || (current < 5 && rng.below(4) != 0) {
                    current + 1
                } else {
                    current - 1
                };
                let r = sim
                    .send(
                        &cache,
                        true,
                        "POST",
                        "/admin/migrate/phase",
                        Some(json!({ "phase": to })),
                    )
                    .await;
                sim.note(format!("admin: phase {current} -> {to}: {}", r.status));
                r
            }
            3 => {
                sim.send(
                    &cache,
                    true,
                    "POST",
                    "/admin/migrate/verify",
                    Some(json!({ "mode": "full" })),
                )
                .await
            }
            4 => {
                sim.send(
                    &cache,
                    true,
                    "POST",
                    "/admin/migrate/backfill",
                    Some(json!({})),
                )
                .await
            }
            5 => {
                sim.send(&cache, true, "POST", "/admin/migrate/repair", None)
                    .await
            }
            _ => {
                // One call of a rollback: it takes the steps that are safe now.
                let to = rng.below(u64::from(current.max(1))) as u8;
                let r = sim
                    .send(
                        &cache,
                        true,
                        "POST",
                        "/admin/migrate/rollback",
                        Some(json!({ "toPhase": to })),
                    )
                    .await;
                sim.note(format!("admin: rollback {current} -> {to}: {}", r.status));
                r
            }
        };
        if r.status == 500 {
            sim.violation(format!("admin action answered 500: {}", r.body));
        }
    }
}

/// Runs one history and checks it.
pub fn run(seed: u64) -> Outcome {
    let mut rng = Rng::new(seed);
    let settings = Settings {
        start_phase: Settings::start_phase_for_seed(seed),
        ..Settings::for_seed(&mut rng)
    };
    run_with(seed, settings, rng)
}

/// Runs the history of `seed` with `settings` (smaller ones when shrinking); `rng` is
/// the seed's generator after drawing its settings.
pub fn run_with(seed: u64, settings: Settings, mut rng: Rng) -> Outcome {
    let sim = Sim::new(seed, settings.fault_rate, settings.phase_cache_ms);
    if settings.start_phase > 0 {
        sim.start_in_phase(settings.start_phase);
    }
    {
        let mut tasks: Vec<Option<Pin<Box<dyn Future<Output = ()> + '_>>>> = Vec::new();
        for k in 0..settings.clients {
            tasks.push(Some(Box::pin(client(
                &sim,
                k,
                settings,
                Rng::new(rng.next_u64()),
            ))));
        }
        for _ in 0..settings.cron_tasks {
            tasks.push(Some(Box::pin(cron_task(&sim, 3, Rng::new(rng.next_u64())))));
        }
        tasks.push(Some(Box::pin(admin_task(
            &sim,
            settings.admin_actions,
            Rng::new(rng.next_u64()),
        ))));
        run_tasks(&mut rng, tasks, &sim.clock);
    }
    if std::env::var("SIM_REPLAY").is_ok() {
        for (name, kv) in [("old", &sim.stores.old), ("new", &sim.stores.new)] {
            for (key, entry) in kv.entries.borrow().iter() {
                println!("{name} {key} = {}", String::from_utf8_lossy(&entry.bytes));
            }
        }
    }

    converge_and_check(&sim);
    Outcome {
        faults: sim.shared.faults.get(),
        operations: sim.shared.operations.get(),
        violations: sim.violations.take(),
        trace: sim.trace.take(),
    }
}

/// With faults healed, every isolate caught up, the journal drained and the backfill and
/// a full verification run, the stores must agree with the model.
fn converge_and_check(sim: &Sim) {
    sim.shared.fault_rate.set(0.0);
    sim.clock.set(sim.clock.get() + 60_000);
    let phase = sim.stored_phase();
    let ids: Vec<String> = sim.model.borrow().keys().cloned().collect();
    for id in &ids {
        sim.expect(
            id,
            sim.read_path(phase, id),
            &format!("at rest in phase {}", phase.number()),
        );
    }
    let cache = PhaseCache::default();
    block_on(sim.send(&cache, true, "POST", "/admin/migrate/repair", None));
    if phase >= Phase::NewPrimary || sim.old_store_diverged() {
        roll_back_to_the_old_store(sim, &ids);
    }
    let phase = sim.stored_phase();
    // Up to phase 3 by the gates; where a gate holds (after a rollback to phase 0), the
    // check below sees whether verification rightly refuses the new store.
    for to in phase.number() + 1..=3 {
        let r = block_on(sim.send(
            &cache,
            true,
            "POST",
            "/admin/migrate/phase",
            Some(json!({ "phase": to })),
        ));
        if r.status != 200 {
            block_on(sim.send(
                &cache,
                true,
                "POST",
                "/admin/migrate/phase",
                Some(json!({ "phase": to, "force": true, "reason": "simulation end" })),
            ));
        }
    }
    if sim.stored_phase() != Phase::Backfill {
        return; // above phase 3 already: the gate to 4 vouched for the stores
    }
    block_on(sim.send(&cache, true, "POST", "/admin/migrate/backfill/reset", None));
    for _ in 0..50 {
        match block_on(cron_once(sim)) {
            Ok(report) if report.backfill.as_ref().is_some_and(|b| b.complete) => break,
            _ => sim.clock.set(sim.clock.get() + 60_000),
        }
    }
    let report = block_on(sim.send(
        &cache,
        true,
        "POST",
        "/admin/migrate/verify",
        Some(json!({ "mode": "full", "restart": true })),
    ));
    if report.body["clean"] != true {
        let gate = block_on(sim.send(
            &cache,
            true,
            "POST",
            "/admin/migrate/phase",
            Some(json!({ "phase": 4 })),
        ));
        if gate.status == 200 {
            sim.violation("gate 3->4 opened after an unclean verification".into());
        }
        return;
    }
    for id in &ids {
        sim.expect(
            id,
            sim.read_path(Phase::Complete, id),
            "in the new store after a clean verification",
        );
        if let [Known::Present { email, .. }] = sim.possible(id).as_slice() {
            let r = block_on(sim.send(
                &cache,
                false,
                "GET",
                &format!("/customer/by-email/{email}"),
                None,
            ));
            if r.body["customerId"] != id.as_str() {
                sim.violation(format!(
                    "after convergence, {email} does not find {id}: {}",
                    r.body
                ));
            }
        }
    }
}

/// Writes since phase 4 reached the new store alone: a rollback to phase 1 must bring
/// every one back to the old store, which phase 1 reads.
fn roll_back_to_the_old_store(sim: &Sim, ids: &[String]) {
    let cache = PhaseCache::default();
    for _ in 0..50 {
        let r = block_on(sim.send(
            &cache,
            true,
            "POST",
            "/admin/migrate/rollback",
            Some(json!({ "toPhase": 1 })),
        ));
        if r.status == 200 || sim.stored_phase() <= Phase::DualWrite {
            break;
        }
        sim.clock.set(sim.clock.get() + 60_000);
    }
    if sim.stored_phase() != Phase::DualWrite {
        sim.violation(format!(
            "a rollback to phase 1 did not finish: phase {}",
            sim.stored_phase().number()
        ));
        return;
    }
    for id in ids {
        sim.expect(
            id,
            sim.read_path(Phase::DualWrite, id),
            "in the old store after a rollback to phase 1",
        );
    }
}

/// Shrinks a failing history: keeps the seed and lowers one setting at a time (fewer
/// clients, ids, operations, cron tasks, admin actions; no faults; no phase cache) as long
/// as some violation remains. Returns the smallest failing settings and their outcome.
pub fn shrink(seed: u64) -> (Settings, Outcome) {
    let mut rng = Rng::new(seed);
    let mut best = Settings::for_seed(&mut rng);
    let after_settings = rng.state();
    let mut outcome = run_with(seed, best, Rng::new(after_settings));
    loop {
        let smaller = best.smaller().into_iter().find_map(|candidate| {
            let tried = run_with(seed, candidate, Rng::new(after_settings));
            (!tried.violations.is_empty()).then_some((candidate, tried))
        });
        match smaller {
            Some((candidate, tried)) => {
                best = candidate;
                outcome = tried;
            }
            None => return (best, outcome),
        }
    }
}
