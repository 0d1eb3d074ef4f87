//! One seeded history: the tasks, what they check as they go, and the end-state checks.

use std::future::Future;
use std::pin::Pin;

use customer_kv_migration::domain::Tombstone;
use customer_kv_migration::http::ApiResponse;
use customer_kv_migration::migration::keys::READ_REPAIR_CHECK_PREFIX as SETTLE_PREFIX;
use customer_kv_migration::migration::state::phase_cache::PhaseCache;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::{KvStore, PutOptions};
use serde_json::json;

use super::rng::Rng;
use super::store::pause;
use super::{block_on, cron_once, run_tasks, Cuts, Known, Outcome, Settings, Sim};

/// An answer that acknowledges nothing: a 5xx, or KV's rate limit (429), which a
/// second-store refusal can give after the first store took the write.
fn is_failure(response: &ApiResponse) -> bool {
    response.status >= 500 || response.status == 429
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
        let before = self
            .model
            .borrow_mut()
            .insert(id.to_owned(), vec![state.clone()]);
        let now = self.now();
        let mut retired = self.retired.borrow_mut();
        let retired = retired.entry(id.to_owned()).or_default();
        for old in before.unwrap_or_else(|| vec![Known::Absent]) {
            if old != state {
                retired.push((old, now));
            }
        }
    }

    /// What a read may show now: a state the model allows, one a write under way may
    /// have put there, or, through KV's eventual consistency, one the model allowed
    /// within the consistency window.
    fn readable(&self, id: &str) -> Vec<Known> {
        self.readable_since(id, self.now())
    }

    /// What a read that began at `start_ms` may show: also any state current since.
    fn readable_since(&self, id: &str, start_ms: u64) -> Vec<Known> {
        let mut readable = self.possible(id);
        for state in self.in_flight.borrow().get(id).into_iter().flatten() {
            if !readable.contains(state) {
                readable.push(state.clone());
            }
        }
        let since = start_ms.saturating_sub(self.shared.stale_window_ms);
        for (state, until) in self.retired.borrow().get(id).into_iter().flatten() {
            if *until >= since && !readable.contains(state) {
                readable.push(state.clone());
            }
        }
        readable
    }

    /// The states a write under way may leave, until its answer comes.
    fn writing(&self, id: &str, states: Vec<Known>) {
        self.in_flight.borrow_mut().insert(id.to_owned(), states);
    }

    fn written(&self, id: &str) {
        self.in_flight.borrow_mut().remove(id);
    }

    /// An update's possible results: the change merged into any state it could read.
    fn merged(&self, id: &str, change_email: bool, name: &str, email: &str) -> Vec<Known> {
        self.readable(id)
            .into_iter()
            .filter_map(|base| match base {
                Known::Present { name: n, .. } if change_email => Some(Known::Present {
                    name: n,
                    email: email.to_owned(),
                }),
                Known::Present { email: e, .. } => Some(Known::Present {
                    name: name.to_owned(),
                    email: e,
                }),
                Known::Absent => None,
            })
            .collect()
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
        self.expect_since(id, seen, what, self.now());
    }

    fn expect_since(&self, id: &str, seen: Known, what: &str, start_ms: u64) {
        let possible = self.readable_since(id, start_ms);
        if !possible.contains(&seen) {
            self.violation(format!(
                "{what}: {id} read as {seen:?}, the model allows {possible:?}"
            ));
        }
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
    for step in 0..settings.ops_per_client {
        // Drawn only where customers are shared, so other seeds stay as they were.
        if settings.shared_customers > 0 && rng.below(3) == 0 {
            let (kind, j) = (rng.below(6), rng.below(settings.shared_customers as u64));
            let thinking = rng.below(20);
            if sim.takes_step(k, step) {
                let at = format!("[{k}.{step}] client {k} (phase {})", seen_phase(&cache));
                super::shared::step(sim, &cache, k, &at, kind, j).await;
            }
            for _ in 0..thinking {
                pause().await;
            }
            continue;
        }
        let id = ids[rng.below(ids.len() as u64) as usize].clone();
        let seq = sim.next_seq();
        let name = format!("n{seq}");
        let email = format!("{id}.{seq}@sim.test");
        let path = format!("/customer/{id}");
        let kind = rng.below(7);
        let change_email = rng.below(3) == 0;
        let thinking = rng.below(20);
        // Some reads are of another client's customer: from another location, so they
        // may see its writes late, and their read-repair copies may race them.
        let neighbour = (k + 1 + rng.below(settings.clients as u64) as usize) % settings.clients;
        let (id, path) = if kind == 5 && neighbour != k {
            let id = format!("c{neighbour}x{}", rng.below(settings.ids_per_client as u64));
            (id.clone(), format!("/customer/{id}"))
        } else {
            (id, path)
        };
        if sim.takes_step(k, step) {
            client_step(
                sim,
                &cache,
                (k, step),
                kind,
                change_email,
                (id, name, email, path),
            )
            .await;
        }
        for _ in 0..thinking {
            pause().await;
        }
    }
}

/// One request of client `k`, checked against the model.
async fn client_step(
    sim: &Sim,
    cache: &PhaseCache,
    (k, step): (usize, usize),
    kind: u64,
    change_email: bool,
    (id, name, email, path): (String, String, String, String),
) {
    let at = format!("[{k}.{step}] client {k}");
    match kind {
        0 => {
            sim.writing(
                &id,
                vec![Known::Present {
                    name: name.clone(),
                    email: email.clone(),
                }],
            );
            let r = sim
                .send(
                    cache,
                    false,
                    "POST",
                    "/customer",
                    Some(json!({ "customerId": id, "email": email, "name": name })),
                )
                .await;
            sim.written(&id);
            sim.note(format!(
                "{at} (phase {}): create {id} -> {}",
                seen_phase(cache),
                r.status
            ));
            match r.status {
                201 => sim.acknowledge(&id, Known::Present { name, email }),
                409 => {
                    if !sim
                        .readable(&id)
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
            let patch = if change_email {
                json!({ "email": email })
            } else {
                json!({ "name": name })
            };
            let results = sim.merged(&id, change_email, &name, &email);
            sim.writing(&id, results.clone());
            let r = sim.send(cache, false, "PATCH", &path, Some(patch)).await;
            sim.written(&id);
            sim.note(format!(
                "{at} (phase {}): update {id} {} -> {} {}",
                seen_phase(cache),
                if change_email { "email" } else { "name" },
                r.status,
                r.body["email"]
            ));
            match r.status {
                200 => sim.acknowledge(&id, observed(&r)),
                404 => sim.expect(&id, Known::Absent, "update"),
                _ if is_failure(&r) => {
                    for attempted in results {
                        sim.attempt(&id, attempted);
                    }
                }
                other => sim.violation(format!("update {id}: unexpected {other} {}", r.body)),
            }
        }
        4 => {
            sim.writing(&id, vec![Known::Absent]);
            let r = sim.send(cache, false, "DELETE", &path, None).await;
            sim.written(&id);
            sim.note(format!(
                "{at} (phase {}): delete {id} -> {}",
                seen_phase(cache),
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
            let start = sim.now();
            let r = sim.send(cache, false, "GET", &path, None).await;
            sim.note(format!(
                "{at} (phase {}): read {id} -> {}",
                seen_phase(cache),
                r.status
            ));
            match r.status {
                200 => sim.expect_since(&id, observed(&r), "read", start),
                404 => sim.expect_since(&id, Known::Absent, "read", start),
                _ => {}
            }
        }
        _ => {
            // By email, when the model is sure of the customer's email.
            let possible = sim.possible(&id);
            if let [Known::Present { email, .. }] = possible.as_slice() {
                let r = sim
                    .send(
                        cache,
                        false,
                        "GET",
                        &format!("/customer/by-email/{email}"),
                        None,
                    )
                    .await;
                sim.note(format!(
                    "{at} (phase {}): read {id} by email -> {}",
                    seen_phase(cache),
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
                    // A stale read may still see the mapping or record as they were.
                    404 if sim.readable(&id).iter().any(|s| match s {
                        Known::Present { email: held, .. } => held != email,
                        Known::Absent => true,
                    }) => {}
                    404 => sim.violation(format!(
                        "by email {email}: {id} not found, the model says {possible:?}"
                    )),
                    _ => {}
                }
            }
        }
    }
}

async fn cron_task(sim: &Sim, task: usize, runs: usize, mut rng: Rng) {
    for step in 0..runs {
        let waiting = rng.below(60);
        if sim.takes_step(task, step) {
            let result = cron_once(sim).await;
            sim.note(format!(
                "[{task}.{step}] cron: {:?}",
                result.as_ref().map(|r| (
                    r.repair.repaired,
                    r.backfill.as_ref().map(|b| b.counts.copied)
                ))
            ));
            if waiting.is_multiple_of(8) {
                // The platform evicts idle objects; their next requests read storage.
                sim.objects.evict_all();
            }
            if let Ok(report) = result {
                if report.operations > 1_000 {
                    sim.violation(format!(
                        "a cron run used {} KV operations",
                        report.operations
                    ));
                }
            }
        }
        for _ in 0..waiting {
            pause().await;
        }
    }
}

async fn admin_task(sim: &Sim, task: usize, actions: usize, mut rng: Rng) {
    let cache = PhaseCache::default();
    for step in 0..actions {
        for _ in 0..rng.below(100) {
            pause().await;
        }
        // Like an operator, mostly wait for the last move to settle (the gate refuses
        // otherwise); sometimes try anyway.
        if rng.below(4) != 0 {
            while sim.now() < sim.settled_at() {
                pause().await;
            }
        }
        let kind = rng.below(7);
        let upwards = rng.below(4) != 0;
        let downwards_by = rng.next_u64();
        if !sim.takes_step(task, step) {
            continue;
        }
        let current = sim.stored_phase().number();
        let at = format!("[{task}.{step}] admin");
        let r = match kind {
            0..=2 if (downwards_by >> 40) % 8 >= 5 => {
                // A cohort step, from bits no other action uses, so histories without
                // one keep their random stream.
                let to = match sim.cohort_phase() {
                    Some(open) => open.number(),
                    None if current == 0 || (current < 5 && upwards) => current + 1,
                    None => current - 1,
                };
                let (path, body) = if (downwards_by >> 40) % 8 == 7 {
                    ("/admin/migrate/cohort/cancel", json!({}))
                } else {
                    let percent = (downwards_by >> 8) % 100 + 1;
                    let named: Vec<String> = sim
                        .model
                        .borrow()
                        .keys()
                        .nth((downwards_by >> 20) as usize % 8)
                        .cloned()
                        .into_iter()
                        .collect();
                    let body = json!({ "to": to, "percent": percent, "customers": named });
                    ("/admin/migrate/cohort", body)
                };
                let r = sim
                    .send(&cache, true, "POST", path, Some(body.clone()))
                    .await;
                sim.note(format!(
                    "{at}: {path} {body} in phase {current}: {}",
                    r.status
                ));
                r
            }
            0..=2 => {
                let to = match sim.cohort_phase() {
                    // The one move a cohort allows: its completion.
                    Some(open) if upwards => open.number(),
                    _ if current == 0 || (current < 5 && upwards) => current + 1,
                    _ => current - 1,
                };
                let body = json!({ "phase": to });
                let r = sim
                    .send(&cache, true, "POST", "/admin/migrate/phase", Some(body))
                    .await;
                sim.note(format!("{at}: phase {current} -> {to}: {}", r.status));
                r
            }
            3 => {
                let body = json!({ "mode": "full" });
                let r = sim
                    .send(&cache, true, "POST", "/admin/migrate/verify", Some(body))
                    .await;
                sim.note(format!(
                    "{at}: verify: {} clean={}",
                    r.status, r.body["clean"]
                ));
                r
            }
            4 => {
                let r = sim
                    .send(
                        &cache,
                        true,
                        "POST",
                        "/admin/migrate/backfill",
                        Some(json!({})),
                    )
                    .await;
                sim.note(format!("{at}: backfill batch: {}", r.status));
                r
            }
            5 if (downwards_by >> 48) % 4 == 3 => {
                // An email audit call, real or dry, from bits no other action uses: its
                // repairs go through the emails' objects among the clients' claims,
                // fanned out to consumers when the history has a queue.
                let dry_run = (downwards_by >> 50) % 2 == 1;
                let body = json!({ "dryRun": dry_run });
                let r = sim
                    .send(&cache, true, "POST", "/admin/migrate/emails", Some(body))
                    .await;
                sim.note(format!(
                    "{at}: emails (dry run {dry_run}): {} complete={}",
                    r.status, r.body["complete"]
                ));
                r
            }
            5 => {
                let r = sim
                    .send(&cache, true, "POST", "/admin/migrate/repair", None)
                    .await;
                sim.note(format!("{at}: repair: {}", r.status));
                r
            }
            _ => {
                // One call of a rollback: it takes the steps that are safe now.
                let to = (downwards_by % u64::from(current.max(1))) as u8;
                let body = json!({ "toPhase": to });
                let r = sim
                    .send(&cache, true, "POST", "/admin/migrate/rollback", Some(body))
                    .await;
                sim.note(format!("{at}: rollback {current} -> {to}: {}", r.status));
                r
            }
        };
        if r.status == 500 {
            sim.violation(format!("admin action answered 500: {}", r.body));
        }
    }
}

/// Every move the coordinator applied starts where the one before it ended: no move was
/// decided on a record another move had replaced (two admins at once, overlapping
/// rollbacks), so isolates never run phases more than one step apart.
/// A move whose write failed may have landed all the same, so a run of them may bridge a
/// gap: the next certain move may start from any phase they could have reached.
fn check_phase_chain(sim: &Sim) {
    let moves = sim.register.applied_moves();
    let mut ended: Option<u8> = None;
    let mut maybe: Vec<(u8, u8)> = Vec::new();
    for m in &moves {
        if !m.certain {
            maybe.push((m.from, m.to));
            continue;
        }
        if let Some(end) = ended {
            let mut reachable = vec![end];
            for &(from, to) in &maybe {
                if reachable.contains(&from) {
                    reachable.push(to);
                }
            }
            if !reachable.contains(&m.from) {
                sim.violation(format!(
                    "a move {} -> {} was applied after the phase had moved to {end}: moves {moves:?}",
                    m.from, m.to
                ));
            }
        }
        ended = Some(m.to);
        maybe.clear();
    }
}

/// Runs one history and checks it.
pub fn run(seed: u64) -> Outcome {
    let (settings, rng) = Settings::of_seed(seed);
    run_with(seed, settings, rng, Cuts::default())
}

/// Runs the history of `seed` with `settings` and `cuts` (smaller ones when shrinking);
/// `rng` is the seed's generator after drawing its settings.
pub fn run_with(seed: u64, settings: Settings, mut rng: Rng, cuts: Cuts) -> Outcome {
    let sim = Sim::new(seed, &settings, cuts);
    if settings.start_phase > 0 {
        sim.start_in_phase(settings.start_phase);
    }
    if settings.new_only {
        sim.start_with_new_only_customers(settings.clients);
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
            let task = tasks.len();
            tasks.push(Some(Box::pin(cron_task(
                &sim,
                task,
                3,
                Rng::new(rng.next_u64()),
            ))));
        }
        if settings.fan_out {
            for _ in 0..2 {
                let task = tasks.len();
                tasks.push(Some(Box::pin(super::queue::consumer_task(
                    &sim,
                    task,
                    30,
                    Rng::new(rng.next_u64()),
                ))));
            }
        }
        for _ in 0..settings.admins {
            let task = tasks.len();
            tasks.push(Some(Box::pin(admin_task(
                &sim,
                task,
                settings.admin_actions,
                Rng::new(rng.next_u64()),
            ))));
        }
        run_tasks(&mut rng, tasks, &sim.shared);
    }
    check_phase_chain(&sim);
    converge_and_check(&sim, settings.plant_difference);
    // A failing replay shows the stores as the checks left them.
    if std::env::var("SIM_REPLAY").is_ok() && !sim.violations.borrow().is_empty() {
        for (name, kv) in [("old", &sim.stores.old), ("new", &sim.stores.new)] {
            for (key, entry) in kv.entries.borrow().iter() {
                println!("{name} {key} = {}", String::from_utf8_lossy(&entry.bytes));
            }
        }
    }
    let shared = &sim.shared;
    let injected = shared.injected.take();
    Outcome {
        faults: injected.len() as u64,
        operations: shared.operations.get(),
        stale_reads: shared.stale_reads.get(),
        violations: sim.violations.take(),
        trace: shared.trace.take(),
        steps: sim.steps.take(),
        injected,
    }
}

/// With faults healed, every isolate caught up, the journal drained and the backfill and
/// a full verification run, the stores must agree with the model.
fn converge_and_check(sim: &Sim, plant_difference: bool) {
    sim.shared.fault_rate.set(0.0);
    // A location of its own, a minute on: every other location's view has caught up.
    sim.shared.location.set(usize::MAX);
    sim.advance_clock(60_000);
    ring_every_alarm(sim);
    settle_copies(sim);
    sim.together.check_at_rest(sim);
    let ids: Vec<String> = sim.model.borrow().keys().cloned().collect();
    for id in &ids {
        let phase = sim.phase_of(id);
        sim.expect(
            id,
            sim.read_path(phase, id),
            &format!("at rest in phase {}", phase.number()),
        );
    }
    let cache = PhaseCache::default();
    if sim.cohort_phase().is_some() {
        // Everyone back to the record's phase, whose read path then shows every
        // cohort customer's writes too (adjacent phases, docs/design.md §3).
        let body = json!({ "force": true, "reason": "simulation end" });
        let r = block_on(sim.send(
            &cache,
            true,
            "POST",
            "/admin/migrate/cohort/cancel",
            Some(body),
        ));
        if r.status != 200 {
            sim.violation(format!("a forced cohort cancel failed: {}", r.body));
        }
        sim.advance_clock(sim.config.settle_ms() + 1);
    }
    block_on(sim.send(&cache, true, "POST", "/admin/migrate/repair", None));
    if sim.stored_phase() >= Phase::NewPrimary || sim.old_store_diverged() {
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
        let result = block_on(cron_once(sim));
        super::queue::drain(sim);
        if sim.queue.is_some() {
            retry_failed(sim);
        }
        match result {
            Ok(report) if report.backfill.as_ref().is_some_and(|b| b.complete) => break,
            _ => sim.advance_clock(60_000),
        }
    }
    let planted = plant_difference && plant_a_difference(sim);
    // Fanned out, a verification completes once consumers compared its values: called
    // until complete, as the CLI does, with the queue drained in between.
    let mut body = json!({ "mode": "full", "restart": true });
    let mut report = block_on(sim.send(
        &cache,
        true,
        "POST",
        "/admin/migrate/verify",
        Some(body.clone()),
    ));
    body["restart"] = json!(false);
    for _ in 0..20 {
        if report.body["complete"] == true {
            break;
        }
        super::queue::drain(sim);
        report = block_on(sim.send(
            &cache,
            true,
            "POST",
            "/admin/migrate/verify",
            Some(body.clone()),
        ));
    }
    if report.body["complete"] != true {
        sim.violation(format!(
            "the final verification did not complete: {}",
            report.body
        ));
        return;
    }
    if planted && report.body["clean"] == true {
        sim.violation(format!(
            "the final verification was clean though a value planted in the new store differs: {}",
            report.body
        ));
        return;
    }
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

/// Changes one copied customer's value in the new store behind the product's back (a
/// byte appended), once every location can read it; false when no customer is in both
/// stores.
fn plant_a_difference(sim: &Sim) -> bool {
    let copied = sim
        .stores
        .new
        .entries
        .borrow()
        .iter()
        .find_map(|(key, entry)| {
            let old = sim.stores.old.peek(key)?;
            let plain = key.starts_with("customer_") && !Tombstone::is_tombstone(&entry.bytes);
            (plain && old.bytes == entry.bytes).then(|| (key.clone(), entry.bytes.clone()))
        });
    let Some((key, mut bytes)) = copied else {
        return false;
    };
    bytes.push(b' ');
    let written = block_on(sim.stores.new.put(&key, &bytes, PutOptions::default()));
    sim.advance_clock(60_001);
    written.is_ok()
}

/// Under stale reads, a backfill or read-repair copy may have overwritten a newer
/// value; the weaker guarantee is that the check after the window corrects it. So
/// finish the passes an operator's batches began, as the gate to phase 2 asks, and the
/// checks of read-repair copies, as the gates to phases 2 and 4 ask, before checking.
/// Lets the objects' alarms ring: each checks its last delete (docs/design.md §12).
fn ring_every_alarm(sim: &Sim) {
    let last = sim.objects.alarms().into_iter().map(|(_, at)| at).max();
    if let Some(last) = last {
        sim.advance_clock(last.saturating_sub(sim.now()));
        block_on(sim.writers().objects.ring_alarms());
    }
}

fn settle_copies(sim: &Sim) {
    let cache = PhaseCache::default();
    // Outside phases 1 to 3 no batch runs, and nothing reads what the copies wrote first.
    let mut batches_run = true;
    for _ in 0..50 {
        let checkpoint = block_on(
            customer_kv_migration::migration::copying::backfill::load_checkpoint(&sim.stores.new),
        )
        .unwrap_or_default();
        let read_repairs = block_on(sim.stores.new.list(SETTLE_PREFIX, None, 1))
            .map(|page| !page.keys.is_empty())
            .unwrap_or(false);
        let backfill = batches_run && checkpoint.unsettled_copies();
        if !backfill && !read_repairs {
            return;
        }
        let mut wait_ms = 0;
        if read_repairs {
            let r = block_on(sim.send(&cache, true, "POST", "/admin/migrate/repair", None));
            wait_ms = r.body["settle"]["waitMs"].as_u64().unwrap_or(0);
            // Outside phases 1 to 3 no correction is safe: the entries stay, and the
            // checks below see whether that left an older value where reads look.
            if r.body["settle"]["deferred"].as_u64().unwrap_or(0) > 0 {
                return;
            }
        }
        if backfill {
            let r = block_on(sim.send(
                &cache,
                true,
                "POST",
                "/admin/migrate/backfill",
                Some(json!({})),
            ));
            batches_run = r.status == 200;
            wait_ms = wait_ms.max(r.body["report"]["waitMs"].as_u64().unwrap_or(0));
            super::queue::drain(sim);
            retry_failed(sim);
        }
        sim.advance_clock(wait_ms + 1);
    }
    sim.violation("the backfill's passes or the read-repair checks did not settle".into());
}

/// Sends the chunks that reached the dead letters again, as an operator would, and
/// consumes them.
fn retry_failed(sim: &Sim) {
    if sim.queue.is_none() {
        return;
    }
    let cache = PhaseCache::default();
    block_on(sim.send(
        &cache,
        true,
        "POST",
        "/admin/migrate/backfill/retry-failed",
        None,
    ));
    super::queue::drain(sim);
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
        retry_failed(sim);
        sim.advance_clock(60_000);
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

/// Shrinks a failing history while some violation remains: first its settings, one
/// at a time (fewer clients, ids, operations, cron tasks, admin actions; no faults, no
/// phase cache, no stale reads), then the steps of its tasks and its injected faults,
/// one at a time. Returns the smallest failing settings and their outcome, whose trace
/// is the shrunk step list.
pub fn shrink(seed: u64) -> (Settings, Outcome) {
    let (mut best, rng) = Settings::of_seed(seed);
    let after_settings = rng.state();
    let attempt = |settings: Settings, cuts: &Cuts| {
        let outcome = run_with(seed, settings, Rng::new(after_settings), cuts.clone());
        (!outcome.violations.is_empty()).then_some(outcome)
    };
    let mut cuts = Cuts::default();
    let Some(mut outcome) = attempt(best, &cuts) else {
        return (best, run_with(seed, best, Rng::new(after_settings), cuts));
    };
    while let Some((smaller, tried)) = best
        .smaller()
        .into_iter()
        .find_map(|candidate| attempt(candidate, &cuts).map(|tried| (candidate, tried)))
    {
        best = smaller;
        outcome = tried;
    }
    loop {
        let mut progressed = false;
        for step in outcome.steps.clone().into_iter().rev() {
            let mut fewer = cuts.clone();
            fewer.steps.insert(step);
            if let Some(tried) = attempt(best, &fewer) {
                (cuts, outcome, progressed) = (fewer, tried, true);
            }
        }
        for fault in outcome.injected.clone().into_iter().rev() {
            let mut fewer = cuts.clone();
            fewer.faults.insert(fault);
            if let Some(tried) = attempt(best, &fewer) {
                (cuts, outcome, progressed) = (fewer, tried, true);
            }
        }
        if !progressed {
            return (best, outcome);
        }
    }
}
