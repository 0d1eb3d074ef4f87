//! The email-mapping audit and repair: every customer with an email must be found by it,
//! through `email_to_customer_<hash of the normalised email>`.
//!
//! Two resumable passes over the store reads come from. Over the records: derive a
//! missing mapping; repoint a mapping whose customer no longer holds the email; report,
//! never overwrite, an email that two customers hold. Over the mappings: remove one
//! whose customer holds a different email and is found by its own mapping (a mapping
//! hashed from an un-normalised email, or left from an old one) — the re-key; report a
//! mapping whose customer does not exist (an orphan). Writes go through the phase's
//! routing, so they reach every store the phase writes.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::domain::{
    customer_key, email_key, mapping_target, CustomerId, CustomerRecord, EmailHash, Tombstone,
    CUSTOMER_PREFIX, EMAIL_PREFIX,
};
use crate::error::Error;
use crate::migration::checking::email_issues::{self, Issue, IssueKind};
use crate::migration::dataplane::DataPlane;
use crate::migration::keys;
use crate::migration::state::audit::{self, AuditEntry};
use crate::migration::state::phase_record::CurrentPhase;
use crate::migration::stored::{self, Listing};
use crate::store::budget::metered;
use crate::store::budget::Budget;
use crate::store::Stores;
use crate::store::{read_many, KvStore, ListedKey, StoreResult, StoredValue, MAX_BULK_KEYS};
use crate::writes::claims::{ClaimSender, Claims};

const LIST_PAGE: u32 = 1_000;
const SAMPLES: usize = 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pass {
    #[default]
    Records,
    Mappings,
    Done,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EmailAudit {
    pub pass: Pass,
    pub cursor: Option<String>,
    pub after_key: Option<String>,
    pub dry_run: bool,
    pub records_scanned: u64,
    pub mappings_scanned: u64,
    pub in_place: u64,
    pub derived: u64,
    pub repointed: u64,
    pub rekeyed: u64,
    pub conflicts: u64,
    pub orphans: u64,
    pub corrupt: u64,
    /// `email_to_customer_…` key and the customers that claim it.
    pub conflict_samples: Vec<String>,
    pub orphan_samples: Vec<String>,
    pub rekeyed_samples: Vec<String>,
    pub started_at: u64,
    pub updated_at: u64,
    pub completed_at: Option<u64>,
    /// A dry run's memory of the mappings its records pass would repoint, so that its
    /// mappings pass does not count them as re-keys (a real run has repointed them).
    pub planned_repoints: Vec<String>,
    /// Set when a dry run planned more repoints than it remembers: counts are estimates.
    pub approximate: bool,
}

/// Repoints a dry run remembers; past this its counts are estimates.
const MAX_PLANNED_REPOINTS: usize = 10_000;

impl EmailAudit {
    pub fn complete(&self) -> bool {
        self.pass == Pass::Done
    }
}

fn sample(into: &mut Vec<String>, text: String) {
    if into.len() < SAMPLES {
        into.push(text);
    }
}

pub async fn load<S: KvStore>(new_store: &S, key: &str) -> StoreResult<Option<EmailAudit>> {
    stored::get(new_store, key).await
}

/// Starts or continues the audit and saves where it stands. `plane` must route over
/// stores metered by `budget`.
pub async fn run<S: KvStore, T: ClaimSender>(
    (plane, claims): (&DataPlane<'_, S>, &Claims<'_, T>),
    budget: &Budget,
    dry_run: bool,
    restart: bool,
) -> Result<EmailAudit, Error> {
    let progress_key = if dry_run {
        keys::EMAIL_AUDIT_DRY_RUN
    } else {
        keys::EMAIL_AUDIT
    };
    let new_store = &plane.stores.new;
    let mut audit = match load(new_store, progress_key).await? {
        Some(a) if !restart && !a.complete() => a,
        _ => EmailAudit {
            dry_run,
            started_at: plane.now_ms,
            ..Default::default()
        },
    };
    let result = advance((plane, claims), budget, &mut audit).await;
    audit.updated_at = plane.now_ms;
    stored::put(new_store, progress_key, &audit, Listing::ValueOnly).await?;
    result?;
    Ok(audit)
}

async fn advance<S: KvStore, T: ClaimSender>(
    (plane, claims): (&DataPlane<'_, S>, &Claims<'_, T>),
    budget: &Budget,
    audit: &mut EmailAudit,
) -> Result<(), Error> {
    let source = plane.stores.get(plane.phase.primary_read_store());
    // A chunk: its list, three bulk reads, a write to each written store per key, and
    // an issue entry per key at most.
    let chunk_cost = |n: usize| 4 + n as u32 * (2 * plane.phase.stores_written() as u32 + 1);
    while !audit.complete() && budget.affords(chunk_cost(1)) {
        let prefix = if audit.pass == Pass::Records {
            CUSTOMER_PREFIX
        } else {
            EMAIL_PREFIX
        };
        let page = source
            .list(prefix, audit.cursor.as_deref(), LIST_PAGE)
            .await?;
        let pending: Vec<ListedKey> = page
            .keys
            .into_iter()
            .filter(|k| {
                audit
                    .after_key
                    .as_deref()
                    .is_none_or(|after| k.name.as_str() > after)
            })
            .collect();
        for chunk in pending.chunks(MAX_BULK_KEYS / 2) {
            if !budget.affords(chunk_cost(chunk.len())) {
                return Ok(());
            }
            let names: Vec<String> = chunk.iter().map(|k| k.name.clone()).collect();
            match audit.pass {
                Pass::Records => audit_records((plane, claims), audit, &names).await?,
                _ => audit_mappings((plane, claims), audit, &names).await?,
            }
            audit.after_key = names.last().cloned();
        }
        audit.after_key = None;
        if page.complete {
            audit.pass = if audit.pass == Pass::Records {
                Pass::Mappings
            } else {
                Pass::Done
            };
            audit.cursor = None;
            if audit.complete() {
                audit.completed_at = Some(plane.now_ms);
            }
        } else {
            audit.cursor = page.cursor;
        }
    }
    Ok(())
}

fn mapped_id(value: &Option<StoredValue>) -> Option<CustomerId> {
    value.as_ref().and_then(|v| mapping_target(&v.bytes))
}

async fn audit_records<S: KvStore, T: ClaimSender>(
    (plane, claims): (&DataPlane<'_, S>, &Claims<'_, T>),
    audit: &mut EmailAudit,
    names: &[String],
) -> Result<(), Error> {
    let values = read_many(plane.stores.get(plane.phase.primary_read_store()), names).await?;
    let mut holders = Vec::new(); // (customer, mapping key)
    for value in values.into_iter().flatten() {
        audit.records_scanned += 1;
        if Tombstone::is_tombstone(&value.bytes) {
            continue;
        }
        match CustomerRecord::from_stored(&value.bytes) {
            Ok(record) => {
                if let Some(email) = record.email() {
                    holders.push((record.id().clone(), email_key(&email.hash())));
                }
            }
            Err(_) => audit.corrupt += 1,
        }
    }
    let mapping_keys: Vec<String> = holders.iter().map(|(_, k)| k.clone()).collect();
    let mappings = plane.read_many(&mapping_keys).await?;
    // Customers the mappings point to instead, to tell a rival claim from a stale one.
    let rivals: Vec<String> = holders
        .iter()
        .zip(&mappings)
        .filter_map(|((id, _), m)| {
            mapped_id(m)
                .filter(|target| target != id)
                .map(|t| customer_key(&t))
        })
        .collect();
    let rival_records: HashMap<String, Option<StoredValue>> = rivals
        .iter()
        .cloned()
        .zip(plane.read_many(&rivals).await?)
        .collect();

    let mut points = Vec::new();
    let mut issues = Vec::new();
    for ((id, key), mapping) in holders.iter().zip(&mappings) {
        match mapped_id(mapping) {
            Some(target) if &target == id => audit.in_place += 1,
            None => {
                audit.derived += 1;
                points.push((key.clone(), id.clone()));
            }
            Some(target) => {
                let rival_holds_it = rival_records
                    .get(&customer_key(&target))
                    .and_then(|v| v.as_ref())
                    .and_then(|v| CustomerRecord::from_stored(&v.bytes).ok())
                    .and_then(|r| r.email())
                    .is_some_and(|e| &email_key(&e.hash()) == key);
                if rival_holds_it {
                    audit.conflicts += 1;
                    sample(
                        &mut audit.conflict_samples,
                        format!("{key}: {target} and {id}"),
                    );
                    let customers = vec![target.as_str().to_owned(), id.as_str().to_owned()];
                    issues.push(issue(
                        audit,
                        key,
                        IssueKind::Conflict,
                        customers,
                        plane.now_ms,
                    ));
                } else {
                    audit.repointed += 1;
                    if audit.dry_run {
                        if audit.planned_repoints.len() < MAX_PLANNED_REPOINTS {
                            audit.planned_repoints.push(key.clone());
                        } else {
                            audit.approximate = true;
                        }
                    }
                    points.push((key.clone(), id.clone()));
                }
            }
        }
    }
    if !audit.dry_run {
        email_issues::record(&plane.stores.new, &issues).await?;
        // Through the email's object, which decides again on what it knows: a claim may
        // have moved the email since these reads (docs/design.md §12).
        for (key, id) in points {
            claims.point(&hash_of(&key)?, &id).await?;
        }
    }
    Ok(())
}

fn issue(
    audit: &EmailAudit,
    key: &str,
    kind: IssueKind,
    customers: Vec<String>,
    now_ms: u64,
) -> Issue {
    Issue {
        key: key.to_owned(),
        kind,
        customers,
        found_at: now_ms,
        audit_started_at: audit.started_at,
    }
}

/// The email hash a mapping key is named by.
fn hash_of(key: &str) -> Result<EmailHash, Error> {
    key.strip_prefix(EMAIL_PREFIX)
        .and_then(EmailHash::from_hex)
        .ok_or_else(|| Error::CorruptRecord("a mapping key that names no email hash".into()))
}

async fn audit_mappings<S: KvStore, T: ClaimSender>(
    (plane, claims): (&DataPlane<'_, S>, &Claims<'_, T>),
    audit: &mut EmailAudit,
    names: &[String],
) -> Result<(), Error> {
    let values = plane.read_many(names).await?;
    let targets: Vec<(String, CustomerId)> = names
        .iter()
        .zip(&values)
        .filter_map(|(key, value)| mapped_id(value).map(|id| (key.clone(), id)))
        .collect();
    audit.mappings_scanned += names.len() as u64;
    let record_keys: Vec<String> = targets.iter().map(|(_, id)| customer_key(id)).collect();
    let records = plane.read_many(&record_keys).await?;
    // The mapping each target's current email should be under, to see it is in place.
    let mut own_keys = Vec::new();
    let mut candidates = Vec::new();
    let mut issues = Vec::new();
    for ((key, id), record) in targets.iter().zip(&records) {
        let Some(record) = record else {
            audit.orphans += 1;
            sample(&mut audit.orphan_samples, format!("{key} -> {id}"));
            let customers = vec![id.as_str().to_owned()];
            issues.push(issue(
                audit,
                key,
                IssueKind::Orphan,
                customers,
                plane.now_ms,
            ));
            continue;
        };
        let Some(email) = CustomerRecord::from_stored(&record.bytes)
            .ok()
            .and_then(|r| r.email())
        else {
            continue;
        };
        let own = email_key(&email.hash());
        if &own != key && !audit.planned_repoints.contains(key) {
            own_keys.push(own);
            candidates.push((key.clone(), id.clone()));
        }
    }
    let own_mappings = plane.read_many(&own_keys).await?;
    let mut unpoints = Vec::new();
    for ((key, id), own) in candidates.into_iter().zip(own_mappings) {
        // Only once the customer is found by its own mapping is this one safe to drop; a
        // dry run counts those the records pass would have derived too.
        let own_target = mapped_id(&own);
        if own_target.as_ref() == Some(&id) || (audit.dry_run && own_target.is_none()) {
            audit.rekeyed += 1;
            sample(&mut audit.rekeyed_samples, format!("{key} -> {id}"));
            unpoints.push((key, id));
        }
    }
    if !audit.dry_run {
        email_issues::record(&plane.stores.new, &issues).await?;
        for (key, id) in unpoints {
            claims.unpoint(&hash_of(&key)?, &id).await?;
        }
    }
    Ok(())
}

/// KV operations an admin request has made before the audit starts.
const REQUEST_OVERHEAD_OPS: u32 = 4;

/// Starts or continues the audit within one invocation's budget, routed by the current
/// phase, and audits a real run.
pub async fn run_requested<S: KvStore, T: ClaimSender>(
    (stores, emails): (&Stores<S>, &T),
    current: &CurrentPhase,
    dry_run: bool,
    restart: bool,
    who: &str,
    now_ms: u64,
) -> Result<EmailAudit, Error> {
    let budget = Budget::per_invocation(REQUEST_OVERHEAD_OPS);
    let metered_stores = metered(stores, &budget);
    let plane = DataPlane::new(&metered_stores, current.phase, now_ms)
        .with_cohort(current.state.cohort.clone())
        .with_old_store_catching_up(current.state.old_store_diverged)
        .with_new_store_behind(current.state.new_store_diverged)
        .with_old_store_retired(current.state.finalized_at.is_some());
    let claims = Claims {
        sender: emails,
        record: current.state.clone(),
    };
    let report = run((&plane, &claims), &budget, dry_run, restart).await?;
    if !dry_run {
        let detail = format!(
            "derived {}, repointed {}, re-keyed {}; {} conflicts, {} orphans",
            report.derived, report.repointed, report.rekeyed, report.conflicts, report.orphans
        );
        let entry = AuditEntry::action(who, "email_repair", now_ms, Some(detail));
        audit::append(&stores.new, &entry).await?;
    }
    Ok(report)
}
