//! Customers every client writes at once (docs/design.md §12). Each client merges a field
//! of its own (`metadata.f<k>`) into the shared customers `s<j>`, creates them, and races
//! the others for the shared emails (`shared<j>@sim.test`) by ensure and by creates of
//! ids of its own. Values are the global sequence, so a client's later write always
//! carries a larger one. What must hold: every acknowledged field survives unless the
//! same client wrote it again since, in every answer and at rest; one 201 per id; one
//! customer per email.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use customer_kv_migration::domain::Email;
use customer_kv_migration::migration::state::phase_cache::PhaseCache;
use serde_json::{json, Value};

use super::Sim;

/// A client's field of one shared customer.
#[derive(Debug, Default, Clone)]
struct Field {
    /// The value it was last told was kept.
    acknowledged: Option<u64>,
    /// Values of writes since then that failed: they may have landed.
    attempted: Vec<u64>,
}

/// What the clients were told about what they share.
#[derive(Default)]
pub struct Together {
    fields: RefCell<BTreeMap<(String, usize), Field>>,
    /// 201s answered per shared customer id.
    created: RefCell<BTreeMap<String, u32>>,
    /// Per shared email: the ids answered 201 holding it, and ids that may hold it.
    holders: RefCell<BTreeMap<String, BTreeSet<String>>>,
    maybe_holders: RefCell<BTreeMap<String, BTreeSet<String>>>,
}

fn shared_id(j: u64) -> String {
    format!("s{j}")
}

fn shared_email(j: u64) -> String {
    format!("shared{j}@sim.test")
}

fn field_name(k: usize) -> String {
    format!("f{k}")
}

/// One shared step of client `k`: `kind` and `j` drawn by the caller.
pub async fn step(sim: &Sim, cache: &PhaseCache, k: usize, at: &str, kind: u64, j: u64) {
    let seq = sim.next_seq();
    let (id, email) = (shared_id(j), shared_email(j));
    match kind {
        0 => {
            let body = json!({ "customerId": id, "name": format!("n{seq}") });
            let r = sim
                .send(cache, false, "POST", "/customer", Some(body))
                .await;
            sim.note(format!("{at}: create shared {id} -> {}", r.status));
            if r.status == 201 {
                let mut created = sim.together.created.borrow_mut();
                let count = created.entry(id.clone()).or_default();
                *count += 1;
                if *count > 1 {
                    sim.violation(format!("{id} was created twice (two 201s)"));
                }
            } else if !matches!(r.status, 409 | 429 | 500..) {
                sim.violation(format!("create shared {id}: unexpected {}", r.status));
            }
        }
        1..=3 => {
            let before = sim.together.acknowledged_fields(&id);
            let created_before = sim.together.created.borrow().contains_key(&id);
            let body = json!({ "metadata": { field_name(k): seq } });
            let path = format!("/customer/{id}");
            let r = sim.send(cache, false, "PATCH", &path, Some(body)).await;
            sim.note(format!("{at}: merge f{k}={seq} into {id} -> {}", r.status));
            match r.status {
                200 => {
                    sim.together
                        .check_fields(sim, &id, &r.body, &before, "a PATCH answer");
                    sim.together.acknowledge(&id, k, seq);
                }
                404 if created_before => {
                    sim.violation(format!("PATCH {id}: 404 after its create was acknowledged"))
                }
                404 => {}
                429 | 500.. => sim.together.attempt(&id, k, seq),
                other => sim.violation(format!("PATCH {id}: unexpected {other} {}", r.body)),
            }
        }
        4 => {
            let body = json!({ "email": email });
            let r = sim
                .send(cache, false, "POST", "/customer/ensure", Some(body))
                .await;
            sim.note(format!("{at}: ensure {email} -> {}", r.status));
            let holder = r.body["customerId"].as_str().map(str::to_owned);
            match (r.status, holder) {
                (201, Some(holder)) => sim.together.created_holding(sim, &email, holder),
                (200, Some(_)) | (409, _) | (429, _) | (500.., _) => {}
                (other, _) => sim.violation(format!("ensure {email}: unexpected {other}")),
            }
        }
        _ => {
            let id = format!("t{k}x{seq}");
            let body = json!({ "customerId": id, "email": email });
            let r = sim
                .send(cache, false, "POST", "/customer", Some(body))
                .await;
            sim.note(format!("{at}: create {id} with {email} -> {}", r.status));
            match r.status {
                201 => sim.together.created_holding(sim, &email, id),
                409 => {}
                429 | 500.. => {
                    let mut maybe = sim.together.maybe_holders.borrow_mut();
                    maybe.entry(email).or_default().insert(id);
                }
                other => sim.violation(format!("create {id}: unexpected {other}")),
            }
        }
    }
}

impl Together {
    fn acknowledged_fields(&self, id: &str) -> BTreeMap<usize, u64> {
        self.fields
            .borrow()
            .iter()
            .filter(|((of, _), _)| of == id)
            .filter_map(|((_, k), f)| f.acknowledged.map(|v| (*k, v)))
            .collect()
    }

    fn acknowledge(&self, id: &str, k: usize, value: u64) {
        let mut fields = self.fields.borrow_mut();
        let field = fields.entry((id.to_owned(), k)).or_default();
        *field = Field {
            acknowledged: Some(value),
            attempted: Vec::new(),
        };
    }

    fn attempt(&self, id: &str, k: usize, value: u64) {
        let mut fields = self.fields.borrow_mut();
        fields
            .entry((id.to_owned(), k))
            .or_default()
            .attempted
            .push(value);
    }

    /// Every field acknowledged before (`before`) is in `record` with that value or a
    /// later one of the same client.
    fn check_fields(
        &self,
        sim: &Sim,
        id: &str,
        record: &Value,
        before: &BTreeMap<usize, u64>,
        what: &str,
    ) {
        for (k, acknowledged) in before {
            let seen = record["metadata"][field_name(*k)].as_u64();
            if seen.is_none_or(|seen| seen < *acknowledged) {
                sim.violation(format!(
                    "{what} of {id} lost f{k}: acknowledged {acknowledged}, shows {seen:?}"
                ));
            }
        }
    }

    fn created_holding(&self, sim: &Sim, email: &str, id: String) {
        let mut holders = self.holders.borrow_mut();
        let ids = holders.entry(email.to_owned()).or_default();
        ids.insert(id);
        if ids.len() > 1 {
            sim.violation(format!(
                "{email} was given to {} customers: {ids:?}",
                ids.len()
            ));
        }
    }

    /// At rest, each customer read by the phase it is served by (a cohort's or the
    /// record's): every acknowledged field is there with its value or one
    /// attempted since, and no two customers hold one shared email.
    pub fn check_at_rest(&self, sim: &Sim) {
        let fields = self.fields.borrow().clone();
        for ((id, k), field) in &fields {
            let Some(acknowledged) = field.acknowledged else {
                continue;
            };
            let phase = sim.phase_of(id);
            let record = sim.record_at_rest(phase, id);
            let seen = record
                .as_ref()
                .and_then(|r| r["metadata"][field_name(*k)].as_u64());
            let allowed = Some(acknowledged) == seen
                || seen.is_some_and(|seen| field.attempted.contains(&seen));
            if !allowed {
                sim.violation(format!(
                    "at rest in phase {}: {id} lost f{k}: acknowledged {acknowledged} (then attempted {:?}), holds {seen:?}",
                    phase.number(),
                    field.attempted
                ));
            }
        }
        let mut emails: BTreeMap<String, BTreeSet<String>> = self.holders.borrow().clone();
        for (email, ids) in self.maybe_holders.borrow().iter() {
            emails
                .entry(email.clone())
                .or_default()
                .extend(ids.iter().cloned());
        }
        for (email, ids) in emails.iter_mut() {
            ids.extend(derived_ids(email));
            let holding: Vec<&String> = ids
                .iter()
                .filter(|id| {
                    sim.record_at_rest(sim.phase_of(id), id)
                        .is_some_and(|r| r["email"].as_str() == Some(email.as_str()))
                })
                .collect();
            if holding.len() > 1 {
                sim.violation(format!(
                    "at rest in phase {}: {email} is held by {holding:?}",
                    sim.stored_phase().number()
                ));
            }
        }
    }
}

/// The ids `ensure` derives from an email (`customers::derived_ids`).
fn derived_ids(email: &str) -> Vec<String> {
    let hash = Email::parse(email).expect("a shared email").hash();
    let stem = format!("cus_{}", &hash.as_str()[..24]);
    (1..=5)
        .map(|n| {
            if n == 1 {
                stem.clone()
            } else {
                format!("{stem}_{n}")
            }
        })
        .collect()
}
