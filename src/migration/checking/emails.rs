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
use crate::migration::checking::emails_fanout;
use crate::migration::checking::fanned_out::FanoutProgress;
use crate::migration::copying::fanout::{ChunkQueue, Fanout};
use crate::migration::dataplane::DataPlane;
use crate::migration::keys;
use crate::migration::state::audit::{self, AuditEntry};
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::phase_record::CurrentPhase;
use crate::migration::stored::{self, Listing};
use crate::store::budget::metered;
use crate::store::budget::Budget;
use crate::store::Stores;
use crate::store::{read_many, KvStore, ListedKey, StoreResult, StoredValue, MAX_BULK_KEYS};
use crate::writes::claims::{Claim, ClaimSender, Claims};

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
    #[serde(flatten)]
    pub counts: AuditCounts,
    pub started_at: u64,
    pub updated_at: u64,
    pub completed_at: Option<u64>,
    /// Fanned out on the queue: the chunks of records and mappings sent to consumers
    /// (docs/design.md §13). Complete only once every one is reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout: Option<FanoutProgress>,
}

/// What the audit found and did, summed over the chunks it checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuditCounts {
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
    /// A dry run's memory of the mappings its records pass would repoint, so that its
    /// mappings pass does not count them as re-keys (a real run has repointed them).
    pub planned_repoints: Vec<String>,
    /// Set when a dry run planned more repoints than it remembers: counts are estimates.
    pub approximate: bool,
}

impl AuditCounts {
    /// Adds another chunk's counts; samples and planned repoints stay within their caps.
    pub fn merge(&mut self, other: AuditCounts, max_planned: usize) {
        self.records_scanned += other.records_scanned;
        self.mappings_scanned += other.mappings_scanned;
        self.in_place += other.in_place;
        self.derived += other.derived;
        self.repointed += other.repointed;
        self.rekeyed += other.rekeyed;
        self.conflicts += other.conflicts;
        self.orphans += other.orphans;
        self.corrupt += other.corrupt;
        for (into, from) in [
            (&mut self.conflict_samples, other.conflict_samples),
            (&mut self.orphan_samples, other.orphan_samples),
            (&mut self.rekeyed_samples, other.rekeyed_samples),
        ] {
            from.into_iter().for_each(|text| sample(into, text));
        }
        for key in other.planned_repoints {
            self.plan_repoint(key, max_planned);
        }
        self.approximate |= other.approximate;
    }

    fn plan_repoint(&mut self, key: String, max_planned: usize) {
        if self.planned_repoints.len() < max_planned {
            self.planned_repoints.push(key);
        } else {
            self.approximate = true;
        }
    }
}

/// Repoints a dry run remembers; past this its counts are estimates.
const MAX_PLANNED_REPOINTS: usize = 10_000;

impl EmailAudit {
    pub fn new(dry_run: bool, now_ms: u64) -> Self {
        Self {
            dry_run,
            started_at: now_ms,
            updated_at: now_ms,
            ..Self::default()
        }
    }

    /// Both passes listed, and every chunk sent to consumers reported or failed.
    pub fn complete(&self) -> bool {
        self.listed_all() && self.fanout.as_ref().is_none_or(FanoutProgress::settled)
    }

    /// Both passes' listings walked.
    pub fn listed_all(&self) -> bool {
        self.pass == Pass::Done
    }

    /// What one chunk is checked as.
    fn of_chunk(&self) -> ChunkOf {
        ChunkOf {
            dry_run: self.dry_run,
            started_at: self.started_at,
        }
    }
}

/// The audit a chunk belongs to, as its checks need it.
#[derive(Debug, Clone, Copy)]
pub struct ChunkOf {
    pub dry_run: bool,
    /// Names the audit in the issues it writes.
    pub started_at: u64,
}

fn sample(into: &mut Vec<String>, text: String) {
    if into.len() < SAMPLES {
        into.push(text);
    }
}

pub async fn load<S: KvStore>(new_store: &S, key: &str) -> StoreResult<Option<EmailAudit>> {
    stored::get(new_store, key).await
}

/// Where the audit's progress is kept for the status and the finalize.
pub fn progress_key(dry_run: bool) -> &'static str {
    if dry_run {
        keys::EMAIL_AUDIT_DRY_RUN
    } else {
        keys::EMAIL_AUDIT
    }
}

/// Starts or continues the audit and saves where it stands. `plane` must route over
/// stores metered by `budget`.
pub async fn run<S: KvStore, T: ClaimSender>(
    (plane, claims): (&DataPlane<'_, S>, &Claims<'_, T>),
    budget: &Budget,
    dry_run: bool,
    restart: bool,
) -> Result<EmailAudit, Error> {
    let progress_key = progress_key(dry_run);
    let new_store = &plane.stores.new;
    let mut audit = match load(new_store, progress_key).await? {
        // One fanned out earlier is not this one's to continue: it has no chunks here.
        Some(a) if !restart && !a.complete() && a.fanout.is_none() => a,
        _ => EmailAudit::new(dry_run, plane.now_ms),
    };
    let result = advance((plane, claims), budget, &mut audit).await;
    audit.updated_at = plane.now_ms;
    stored::put(new_store, progress_key, &audit, Listing::ValueOnly).await?;
    result?;
    Ok(audit)
}

/// Keys a chunk holds: its three bulk reads stay within a bulk read's keys.
pub const CHUNK_KEYS: usize = MAX_BULK_KEYS / 2;

/// Operations one chunk of `n` keys may take: three bulk reads and a fallback's, an
/// issue entry or a repair per key, and the repair's writes to each written store.
pub fn chunk_cost(n: usize, stores_written: usize) -> u32 {
    4 + n as u32 * (2 * stores_written as u32 + 1)
}

async fn advance<S: KvStore, T: ClaimSender>(
    (plane, claims): (&DataPlane<'_, S>, &Claims<'_, T>),
    budget: &Budget,
    audit: &mut EmailAudit,
) -> Result<(), Error> {
    let source = plane.stores.get(plane.phase.primary_read_store());
    let written = plane.phase.stores_written();
    while !audit.listed_all() && budget.affords(chunk_cost(1, written)) {
        let (pending, page) = list_page(source, audit).await?;
        for chunk in pending.chunks(CHUNK_KEYS) {
            if !budget.affords(chunk_cost(chunk.len(), written)) {
                return Ok(());
            }
            let names: Vec<String> = chunk.iter().map(|k| k.name.clone()).collect();
            match audit.pass {
                Pass::Records => {
                    let of = audit.of_chunk();
                    audit_records((plane, claims), of, &mut audit.counts, &names).await?
                }
                _ => {
                    // The repoints a dry run planned, set apart while the chunk counts.
                    let planned = std::mem::take(&mut audit.counts.planned_repoints);
                    let of = audit.of_chunk();
                    let checked =
                        audit_mappings((plane, claims), of, &mut audit.counts, &names, &planned)
                            .await;
                    audit.counts.planned_repoints = planned;
                    checked?
                }
            }
            audit.after_key = names.last().cloned();
        }
        end_page(audit, page, plane.now_ms);
    }
    Ok(())
}

/// Where a listed page ends: whether it was the pass's last, and the cursor after it.
pub struct PageEnd {
    complete: bool,
    cursor: Option<String>,
}

/// The next page of the pass's listing, past the keys already checked.
pub async fn list_page<S: KvStore>(
    source: &S,
    audit: &EmailAudit,
) -> StoreResult<(Vec<ListedKey>, PageEnd)> {
    let prefix = if audit.pass == Pass::Records {
        CUSTOMER_PREFIX
    } else {
        EMAIL_PREFIX
    };
    let page = source
        .list(prefix, audit.cursor.as_deref(), LIST_PAGE)
        .await?;
    let pending = page
        .keys
        .into_iter()
        .filter(|k| {
            audit
                .after_key
                .as_deref()
                .is_none_or(|after| k.name.as_str() > after)
        })
        .collect();
    let end = PageEnd {
        complete: page.complete,
        cursor: page.cursor,
    };
    Ok((pending, end))
}

/// Moves the walk past a page whose every key was checked (or handed to consumers).
pub fn end_page(audit: &mut EmailAudit, page: PageEnd, now_ms: u64) {
    audit.after_key = None;
    if page.complete {
        audit.pass = if audit.pass == Pass::Records {
            Pass::Mappings
        } else {
            Pass::Done
        };
        audit.cursor = None;
        if audit.listed_all() {
            audit.completed_at = Some(now_ms);
        }
    } else {
        audit.cursor = page.cursor;
    }
}

/// Checks one chunk of keys of either pass, as a consumer does: records by
/// `customer_…` keys, mappings otherwise. `planned` are the repoints a dry run's records
/// pass planned among these mappings.
pub async fn audit_chunk<S: KvStore, T: ClaimSender>(
    (plane, claims): (&DataPlane<'_, S>, &Claims<'_, T>),
    of: ChunkOf,
    names: &[String],
    planned: &[String],
) -> Result<AuditCounts, Error> {
    let mut counts = AuditCounts::default();
    if names.iter().all(|name| name.starts_with(CUSTOMER_PREFIX)) {
        audit_records((plane, claims), of, &mut counts, names).await?;
    } else {
        audit_mappings((plane, claims), of, &mut counts, names, planned).await?;
    }
    Ok(counts)
}

fn mapped_id(value: &Option<StoredValue>) -> Option<CustomerId> {
    value.as_ref().and_then(|v| mapping_target(&v.bytes))
}

async fn audit_records<S: KvStore, T: ClaimSender>(
    (plane, claims): (&DataPlane<'_, S>, &Claims<'_, T>),
    of: ChunkOf,
    counts: &mut AuditCounts,
    names: &[String],
) -> Result<(), Error> {
    let values = read_many(plane.stores.get(plane.phase.primary_read_store()), names).await?;
    let mut holders = Vec::new(); // (customer, mapping key)
    for value in values.into_iter().flatten() {
        counts.records_scanned += 1;
        if Tombstone::is_tombstone(&value.bytes) {
            continue;
        }
        match CustomerRecord::from_stored(&value.bytes) {
            Ok(record) => {
                if let Some(email) = record.email() {
                    holders.push((record.id().clone(), email_key(&email.hash())));
                }
            }
            Err(_) => counts.corrupt += 1,
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

    let mut points = Vec::new(); // (mapping key, customer, whether derived)
    let mut issues = Vec::new();
    for ((id, key), mapping) in holders.iter().zip(&mappings) {
        match mapped_id(mapping) {
            Some(target) if &target == id => counts.in_place += 1,
            None => {
                counts.derived += 1;
                points.push((key.clone(), id.clone(), true));
            }
            Some(target) => {
                let rival_holds_it = rival_records
                    .get(&customer_key(&target))
                    .and_then(|v| v.as_ref())
                    .and_then(|v| CustomerRecord::from_stored(&v.bytes).ok())
                    .and_then(|r| r.email())
                    .is_some_and(|e| &email_key(&e.hash()) == key);
                if rival_holds_it {
                    counts.conflicts += 1;
                    sample(
                        &mut counts.conflict_samples,
                        format!("{key}: {target} and {id}"),
                    );
                    let customers = vec![target.as_str().to_owned(), id.as_str().to_owned()];
                    issues.push(issue(of, key, IssueKind::Conflict, customers, plane.now_ms));
                } else {
                    counts.repointed += 1;
                    if of.dry_run {
                        counts.plan_repoint(key.clone(), MAX_PLANNED_REPOINTS);
                    }
                    points.push((key.clone(), id.clone(), false));
                }
            }
        }
    }
    if !of.dry_run {
        // Through the email's object, which decides again on what it knows: a claim, or
        // another chunk's repair, may have given the email to another customer since
        // these reads (docs/design.md §12). Then it is a conflict, not a repair.
        for (key, id, derived) in points {
            let Claim::HeldBy(holder) = claims.point(&hash_of(&key)?, &id).await? else {
                continue;
            };
            if holder == id {
                continue;
            }
            let undone = if derived {
                &mut counts.derived
            } else {
                &mut counts.repointed
            };
            *undone = undone.saturating_sub(1);
            counts.conflicts += 1;
            sample(
                &mut counts.conflict_samples,
                format!("{key}: {holder} and {id}"),
            );
            let customers = vec![holder.as_str().to_owned(), id.as_str().to_owned()];
            issues.push(issue(
                of,
                &key,
                IssueKind::Conflict,
                customers,
                plane.now_ms,
            ));
        }
        email_issues::record(&plane.stores.new, &issues).await?;
    }
    Ok(())
}

fn issue(of: ChunkOf, key: &str, kind: IssueKind, customers: Vec<String>, now_ms: u64) -> Issue {
    Issue {
        key: key.to_owned(),
        kind,
        customers,
        found_at: now_ms,
        audit_started_at: of.started_at,
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
    of: ChunkOf,
    counts: &mut AuditCounts,
    names: &[String],
    planned: &[String],
) -> Result<(), Error> {
    let values = plane.read_many(names).await?;
    let targets: Vec<(String, CustomerId)> = names
        .iter()
        .zip(&values)
        .filter_map(|(key, value)| mapped_id(value).map(|id| (key.clone(), id)))
        .collect();
    counts.mappings_scanned += names.len() as u64;
    let record_keys: Vec<String> = targets.iter().map(|(_, id)| customer_key(id)).collect();
    let records = plane.read_many(&record_keys).await?;
    // The mapping each target's current email should be under, to see it is in place.
    let mut own_keys = Vec::new();
    let mut candidates = Vec::new();
    let mut issues = Vec::new();
    for ((key, id), record) in targets.iter().zip(&records) {
        let Some(record) = record else {
            counts.orphans += 1;
            sample(&mut counts.orphan_samples, format!("{key} -> {id}"));
            let customers = vec![id.as_str().to_owned()];
            issues.push(issue(of, key, IssueKind::Orphan, customers, plane.now_ms));
            continue;
        };
        let Some(email) = CustomerRecord::from_stored(&record.bytes)
            .ok()
            .and_then(|r| r.email())
        else {
            continue;
        };
        let own = email_key(&email.hash());
        if &own != key && !planned.contains(key) {
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
        if own_target.as_ref() == Some(&id) || (of.dry_run && own_target.is_none()) {
            counts.rekeyed += 1;
            sample(&mut counts.rekeyed_samples, format!("{key} -> {id}"));
            unpoints.push((key, id));
        }
    }
    if !of.dry_run {
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
/// phase, and audits a real run. With the queue bound, consumers check the chunks
/// ([`emails_fanout`]).
pub async fn run_requested<S: KvStore, T: ClaimSender, R: PhaseRegister>(
    (stores, emails): (&Stores<S>, &T),
    (register, queue): (&R, Option<&dyn ChunkQueue>),
    current: &CurrentPhase,
    (dry_run, restart): (bool, bool),
    who: &str,
    now_ms: u64,
) -> Result<EmailAudit, Error> {
    let budget = Budget::per_invocation(REQUEST_OVERHEAD_OPS);
    let metered_stores = metered(stores, &budget);
    let plane = plane_of(&metered_stores, current, now_ms);
    let report = match queue {
        Some(queue) => {
            let fanout = Fanout { register, queue };
            emails_fanout::run(&plane, fanout, &budget, (dry_run, restart)).await?
        }
        None => {
            let claims = Claims {
                sender: emails,
                record: current.state.clone(),
            };
            run((&plane, &claims), &budget, dry_run, restart).await?
        }
    };
    if !dry_run {
        let c = &report.counts;
        let detail = format!(
            "derived {}, repointed {}, re-keyed {}; {} conflicts, {} orphans",
            c.derived, c.repointed, c.rekeyed, c.conflicts, c.orphans
        );
        let entry = AuditEntry::action(who, "email_repair", now_ms, Some(detail));
        audit::append(&stores.new, &entry).await?;
    }
    Ok(report)
}

/// The data plane the audit reads and repairs through, routed as the phase record says.
pub fn plane_of<'a, S: KvStore>(
    stores: &'a Stores<S>,
    current: &CurrentPhase,
    now_ms: u64,
) -> DataPlane<'a, S> {
    DataPlane::new(stores, current.phase, now_ms)
        .with_cohort(current.state.cohort.clone())
        .with_old_store_catching_up(current.state.old_store_diverged)
        .with_new_store_behind(current.state.new_store_diverged)
        .with_old_store_retired(current.state.finalized_at.is_some())
}
