//! Purging the new store after a rollback that is final (docs/design.md §9, "Purging the
//! new store"): in phase 0 it removes every customer record and email mapping the
//! migration put into `CUSTOMER_KV` — copies, dual writes, tombstones — and keeps every
//! key the inventory found there before the migration (its marks), a page per call.

use serde::{Deserialize, Serialize};

use crate::domain::{CUSTOMER_PREFIX, EMAIL_PREFIX};
use crate::error::{Error, Input};
use crate::migration::checking::inventory::{self, Inventory};
use crate::migration::copying::backfill;
use crate::migration::keys;
use crate::migration::state::gates;
use crate::migration::state::phase_record::CurrentPhase;
use crate::phase::Phase;
use crate::store::{KvStore, StoreResult, Stores};

const FAMILIES: [&str; 2] = [CUSTOMER_PREFIX, EMAIL_PREFIX];
/// Keys listed per call: a list, five bulk reads of their marks and at most one delete
/// each fit one invocation's 1,000 operations.
pub const PAGE: u32 = 500;

/// Where a purge stands: the family and the list cursor in it, as the client carries it
/// between calls (`<family>:<cursor>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    family: usize,
    cursor: Option<String>,
}

impl Position {
    pub fn parse(text: Option<&str>) -> Result<Self, Error> {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Ok(Self::default());
        };
        let invalid = || Error::invalid(Input::Body, "cursor is not one a purge answered");
        let (family, cursor) = text.split_once(':').ok_or_else(invalid)?;
        let family: usize = family.parse().map_err(|_| invalid())?;
        if family >= FAMILIES.len() {
            return Err(invalid());
        }
        Ok(Self {
            family,
            cursor: Some(cursor.to_owned()).filter(|c| !c.is_empty()),
        })
    }

    fn text(&self) -> String {
        format!(
            "{}:{}",
            self.family,
            self.cursor.as_deref().unwrap_or_default()
        )
    }
}

/// What one call did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Purged {
    pub dry_run: bool,
    pub listed: u64,
    pub removed: u64,
    /// Keys the inventory found before the migration: left as they are.
    pub kept: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    pub complete: bool,
}

/// Why the new store may not be purged now, if it may not. `forced`: the operator
/// vouches, with a reason, that `CUSTOMER_KV` held nothing of its own before the
/// migration, where no inventory can tell.
pub fn may_purge(
    current: &CurrentPhase,
    (settle_ms, now_ms): (u64, u64),
    taken: Option<&Inventory>,
    forced: bool,
) -> Result<(), Error> {
    let refuse = |why: String| Err(Error::PurgeNotAllowed(why));
    if current.phase != Phase::Legacy {
        return refuse(format!(
            "the new store is purged in phase 0, after a rollback; the phase is {}, whose writes reach it",
            current.phase.number()
        ));
    }
    let unsettled = gates::unsettled_ms(&current.state, settle_ms, now_ms);
    if unsettled > 0 {
        return refuse(format!(
            "the phase changed moments ago; isolates may still write the new store for {unsettled} ms"
        ));
    }
    if forced {
        return Ok(());
    }
    match taken {
        Some(taken) if taken.complete() && taken.marks_same => Ok(()),
        Some(taken) if !taken.complete() => refuse(
            "the inventory was never finished, so what CUSTOMER_KV held before the migration is not known".into(),
        ),
        Some(_) => refuse(
            "the inventory predates marks of keys equal in both stores, so a purge could remove customers CUSTOMER_KV held before the migration; force with a reason if it held none".into(),
        ),
        None => refuse(
            "no inventory was taken before the migration; if CUSTOMER_KV held nothing of its own then, force with a reason".into(),
        ),
    }
}

/// One page from `position`: removes the unmarked keys (unless a dry run). The last
/// call, not dry, also starts the backfill over and forgets the last full verification:
/// neither describes the store any longer.
pub async fn purge<S: KvStore>(
    stores: &Stores<S>,
    position: Position,
    dry_run: bool,
) -> StoreResult<Purged> {
    let page = stores
        .new
        .list(FAMILIES[position.family], position.cursor.as_deref(), PAGE)
        .await?;
    let names: Vec<String> = page.keys.into_iter().map(|k| k.name).collect();
    let marks = inventory::marks(&stores.new, &names).await?;
    let mut purged = Purged {
        dry_run,
        listed: names.len() as u64,
        ..Purged::default()
    };
    for (name, mark) in names.iter().zip(marks) {
        if mark.is_some() {
            purged.kept += 1;
            continue;
        }
        if !dry_run {
            stores.new.delete(name).await?;
        }
        purged.removed += 1;
    }
    let next = match (page.complete, position.family + 1 < FAMILIES.len()) {
        (false, _) => Some(Position {
            family: position.family,
            cursor: page.cursor,
        }),
        (true, true) => Some(Position {
            family: position.family + 1,
            cursor: None,
        }),
        (true, false) => None,
    };
    purged.complete = next.is_none();
    purged.cursor = next.map(|p| p.text());
    if purged.complete && !dry_run {
        backfill::reset(&stores.new).await?;
        stores.new.delete(keys::LAST_FULL_VERIFICATION).await?;
    }
    Ok(purged)
}
