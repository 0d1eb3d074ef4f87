//! Purging the new store after a rollback that is final (docs/design.md §9, "Purging the
//! new store"): in phase 0 it removes each customer record and email mapping the
//! migration can account for in `CUSTOMER_KV` — a tombstone, or a value equal to the old
//! store's — and keeps every key the inventory marked and every value it cannot account
//! for, which it lists. A page per call, from where the last call stopped.

use serde::{Deserialize, Serialize};

use crate::domain::{Tombstone, CUSTOMER_PREFIX, EMAIL_PREFIX};
use crate::error::Error;
use crate::migration::checking::inventory::Inventory;
use crate::migration::copying::backfill;
use crate::migration::keys;
use crate::migration::state::gates;
use crate::migration::state::phase_record::CurrentPhase;
use crate::migration::stored::{self, Listing};
use crate::phase::Phase;
use crate::store::{read_many, KvStore, StoreResult, Stores, MAX_BULK_KEYS};

const FAMILIES: [&str; 2] = [CUSTOMER_PREFIX, EMAIL_PREFIX];
/// Keys listed per call: a list, three bulk reads per 100 keys (marks, both stores) and
/// at most one delete each fit one invocation's 1,000 operations.
pub const PAGE: u32 = 500;
/// Keys named per list in the answer.
const SAMPLE_KEYS: usize = 20;

/// A purge in progress, or done: kept in the run ledger (docs/design.md §11) under
/// `keys::PURGE` (`PURGE_DRY_RUN` for a dry run's), so a call continues exactly where
/// the last one stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Purge {
    pub dry_run: bool,
    pub family: usize,
    pub cursor: Option<String>,
    pub started_at: u64,
    pub updated_at: u64,
    pub completed_at: Option<u64>,
    pub listed: u64,
    pub removed: u64,
    /// Keys the inventory marked: left as they are.
    pub kept: u64,
    /// Values the migration cannot account for (neither a tombstone nor the old store's
    /// value): left as they are, for the operator to look at.
    pub unexplained: u64,
    pub unexplained_keys: Vec<String>,
    /// Whether the operator vouched, with a reason, for a store the inventory cannot.
    pub forced: bool,
}

impl Purge {
    pub fn complete(&self) -> bool {
        self.completed_at.is_some()
    }
}

fn key_of(dry_run: bool) -> &'static str {
    if dry_run {
        keys::PURGE_DRY_RUN
    } else {
        keys::PURGE
    }
}

/// The purge to continue: the stored one, or a fresh one (`restart`, or none stored).
pub async fn load<S: KvStore>(
    new_store: &S,
    dry_run: bool,
    restart: bool,
    now_ms: u64,
) -> StoreResult<Purge> {
    let stored: Option<Purge> = stored::get(new_store, key_of(dry_run)).await?;
    Ok(match stored {
        Some(purge) if !restart => purge,
        _ => Purge {
            dry_run,
            started_at: now_ms,
            updated_at: now_ms,
            ..Purge::default()
        },
    })
}

/// What the purge checks before it may run.
pub struct Facts<'a> {
    pub current: &'a CurrentPhase,
    pub settle_ms: u64,
    pub now_ms: u64,
    pub inventory: Option<&'a Inventory>,
    /// Whether the repair journal holds an entry: its repair may write the new store.
    pub journal_pending: bool,
    /// The operator vouches, with a reason, that `CUSTOMER_KV` held nothing of its own
    /// before the migration, where no inventory can tell.
    pub forced: bool,
}

/// Why the new store may not be purged now, if it may not.
pub fn may_purge(facts: &Facts<'_>) -> Result<(), Error> {
    let refuse = |why: String| Err(Error::PurgeNotAllowed(why));
    let current = facts.current;
    if current.phase != Phase::Legacy {
        return refuse(format!(
            "the new store is purged in phase 0, after a rollback; the phase is {}, whose writes reach it",
            current.phase.number()
        ));
    }
    if current.cohort_phase().is_some() {
        return refuse("a cohort of customers is in phase 1, whose writes reach the new store: cancel it first".into());
    }
    if current.state.old_store_diverged {
        return refuse(
            "writes made since phase 4 are only in CUSTOMER_KV: roll back through phase 2, where the reverse sync copies them to OTP_AUTH_KV, before purging".into(),
        );
    }
    let unsettled = gates::unsettled_ms(&current.state, facts.settle_ms, facts.now_ms);
    if unsettled > 0 {
        return refuse(format!(
            "the phase changed moments ago; isolates may still write the new store for {unsettled} ms"
        ));
    }
    if facts.journal_pending {
        return refuse(
            "the repair journal holds entries whose repair may write the new store: drain it first (POST /admin/migrate/repair)".into(),
        );
    }
    if facts.forced {
        return Ok(());
    }
    match facts.inventory {
        Some(taken) if taken.complete() && taken.marks_same => Ok(()),
        Some(taken) if !taken.complete() => refuse(
            "the inventory was never finished, so what CUSTOMER_KV held before the migration is not known; force with a reason if it held nothing".into(),
        ),
        Some(_) => refuse(
            "the inventory predates marks of keys equal in both stores, so a purge could remove customers CUSTOMER_KV held before the migration; force with a reason if it held none".into(),
        ),
        None => refuse(
            "no inventory was taken before the migration; if CUSTOMER_KV held nothing of its own then, force with a reason".into(),
        ),
    }
}

/// One page from where `purge` stands; saves where it stands after it. A key with a
/// mark is kept even when its mark cannot be read. The last page of a purge that is not
/// a dry run also starts the backfill over and forgets the last full verification:
/// neither describes the store any longer.
pub async fn page<S: KvStore>(
    stores: &Stores<S>,
    purge: &mut Purge,
    now_ms: u64,
) -> StoreResult<()> {
    if purge.complete() {
        return Ok(());
    }
    let listed = stores
        .new
        .list(FAMILIES[purge.family], purge.cursor.as_deref(), PAGE)
        .await?;
    let names: Vec<String> = listed.keys.into_iter().map(|k| k.name).collect();
    for chunk in names.chunks(MAX_BULK_KEYS) {
        let mark_keys: Vec<String> = chunk.iter().map(|n| keys::preexisting(n)).collect();
        let marks = read_many(&stores.new, &mark_keys).await?;
        let new = read_many(&stores.new, chunk).await?;
        let old = read_many(&stores.old, chunk).await?;
        for (((name, mark), new), old) in chunk.iter().zip(marks).zip(new).zip(old) {
            purge.listed += 1;
            let Some(new) = new else { continue };
            if mark.is_some() {
                purge.kept += 1;
                continue;
            }
            let accounted = Tombstone::is_tombstone(&new.bytes) || old.as_ref() == Some(&new);
            if !accounted {
                purge.unexplained += 1;
                if purge.unexplained_keys.len() < SAMPLE_KEYS {
                    purge.unexplained_keys.push(name.clone());
                }
                continue;
            }
            if !purge.dry_run {
                stores.new.delete(name).await?;
            }
            purge.removed += 1;
        }
    }
    if !listed.complete {
        purge.cursor = listed.cursor;
    } else if purge.family + 1 < FAMILIES.len() {
        purge.family += 1;
        purge.cursor = None;
    } else {
        purge.cursor = None;
        purge.completed_at = Some(now_ms);
        if !purge.dry_run {
            backfill::reset(&stores.new).await?;
            stores.new.delete(keys::LAST_FULL_VERIFICATION).await?;
        }
    }
    purge.updated_at = now_ms;
    stored::put(
        &stores.new,
        key_of(purge.dry_run),
        purge,
        Listing::ValueOnly,
    )
    .await
}
