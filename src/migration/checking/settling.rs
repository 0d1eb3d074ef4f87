//! Settling the conflicts the backfill left (docs/design.md §6, "Settling"): by an
//! operator's rule, a key at a time or a page of the conflict entries at a time, each in
//! its customer's object, or as a dry run that writes nothing.

use std::collections::BTreeMap;

use crate::domain::{CustomerId, CUSTOMER_PREFIX};
use crate::error::Error;
use crate::migration::checking::conflicts::{self, Entry};
use crate::migration::checking::resolve::{self, Chose, Resolution, Rule};
use crate::migration::keys;
use crate::phase::Phase;
use crate::store::{read_many, KvStore, StoreResult, Stores};
use crate::writes::object::{Settled, SETTLE_PHASES};
use crate::writes::{Writers, Writing};

/// Keys settled per call at most: each is a call to its customer's object.
pub const MAX_KEYS: usize = 100;

/// Which conflicts a call settles.
pub enum Scope<'a> {
    /// These keys, each of which must have a conflict entry.
    Keys(&'a [String]),
    /// A page of the entries, from the cursor.
    Page { cursor: Option<&'a str>, limit: u32 },
}

/// One key's outcome.
#[derive(Debug)]
pub enum Outcome {
    /// A dry run: what the rule would write.
    WouldWrite(Chose),
    Written(Chose),
    Agreed,
    /// The values changed since the operator saw them (the fingerprint differs).
    Changed,
    Undecidable(String),
    /// The key has no conflict entry: settling is for what the backfill left.
    NotAConflict,
    Failed(Error),
}

impl Outcome {
    /// Whether the stores agree on the key now (its entry is then removed).
    pub fn settled(&self) -> bool {
        matches!(self, Outcome::Written(_) | Outcome::Agreed)
    }
}

pub struct Report {
    pub results: Vec<(String, Outcome)>,
    /// Where the next page starts (a page scope that has more).
    pub cursor: Option<String>,
    /// Settled keys whose entry could not be removed (the prune removes them).
    pub entries_left: u64,
}

/// Settles the conflicts of `scope` by `rule`: dry, on what this request reads; else in
/// each customer's object, with `expect`'s fingerprint where the operator gave one. An
/// entry whose stores agree afterwards is removed.
pub async fn settle<S: KvStore, W: Writers>(
    stores: &Stores<S>,
    writing: &Writing<'_, S, W>,
    (rule, scope, dry_run): (Rule, Scope<'_>, bool),
    expect: &BTreeMap<String, String>,
    now_ms: u64,
) -> Result<Report, Error> {
    if !writing.plane.every_phase(Phase::writes_both) || writing.record.old_store_diverged {
        return Err(Error::SettleNotAllowed(SETTLE_PHASES.to_owned()));
    }
    let (entries, cursor) = match scope {
        Scope::Keys(keys) => (entries_of(stores, keys).await?, None),
        Scope::Page { cursor, limit } => {
            let page = conflicts::entries(stores, cursor, limit).await?;
            (page.0.into_iter().map(Some).collect(), page.1)
        }
    };
    let keys: Vec<String> = entries.iter().flatten().map(|e| e.key.clone()).collect();
    let (old, new) = if dry_run {
        (
            read_many(&stores.old, &keys).await?,
            read_many(&stores.new, &keys).await?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let mut values = old.into_iter().zip(new);
    let mut results = Vec::with_capacity(entries.len());
    let mut report_left = 0;
    for (i, entry) in entries.into_iter().enumerate() {
        let Some(entry) = entry else {
            let Scope::Keys(asked) = scope else {
                unreachable!("a page lists only entries")
            };
            results.push((asked[i].clone(), Outcome::NotAConflict));
            continue;
        };
        let seen = expect.get(&entry.key).cloned();
        let outcome = if dry_run {
            let (old, new) = values.next().unwrap_or_default();
            dry(rule, &entry.key, (old.as_ref(), new.as_ref()), seen, now_ms)
        } else {
            settle_one(writing, rule, &entry.key, seen).await
        };
        // A dry run removes nothing; an entry whose removal fails is left for the prune,
        // which finds its stores agreeing: the settle it records stands.
        if !dry_run && outcome.settled() {
            report_left += u64::from(
                stores
                    .new
                    .delete(&keys::conflict(&entry.key))
                    .await
                    .is_err(),
            );
        }
        results.push((entry.key, outcome));
    }
    Ok(Report {
        results,
        cursor,
        entries_left: report_left,
    })
}

/// The entries of `keys`, `None` where a key has none.
async fn entries_of<S: KvStore>(
    stores: &Stores<S>,
    keys: &[String],
) -> StoreResult<Vec<Option<Entry>>> {
    let names: Vec<String> = keys.iter().map(|k| keys::conflict(k)).collect();
    let stored = read_many(&stores.new, &names).await?;
    Ok(stored
        .into_iter()
        .zip(keys)
        .map(|(value, key)| {
            let entry: Entry = serde_json::from_slice(&value?.bytes).ok()?;
            (entry.key == *key).then_some(entry)
        })
        .collect())
}

fn dry(
    rule: Rule,
    key: &str,
    (old, new): (
        Option<&crate::store::StoredValue>,
        Option<&crate::store::StoredValue>,
    ),
    seen: Option<String>,
    now_ms: u64,
) -> Outcome {
    if resolve::changed_since(seen, old, new) {
        return Outcome::Changed;
    }
    match resolve::resolve(rule, key, old, new, now_ms) {
        Resolution::Agreed => Outcome::Agreed,
        Resolution::Write { chose, .. } => Outcome::WouldWrite(chose),
        Resolution::Undecidable(reason) => Outcome::Undecidable(reason.to_owned()),
    }
}

async fn settle_one<S: KvStore, W: Writers>(
    writing: &Writing<'_, S, W>,
    rule: Rule,
    key: &str,
    seen: Option<String>,
) -> Outcome {
    // A mapping has no object of its own to settle it in; `resolve` says what to do.
    let Some(id) = key
        .strip_prefix(CUSTOMER_PREFIX)
        .and_then(|id| CustomerId::parse(id).ok())
    else {
        return match resolve::resolve(rule, key, None, None, 0) {
            Resolution::Undecidable(reason) => Outcome::Undecidable(reason.to_owned()),
            _ => Outcome::Undecidable("not a key the backfill copies".to_owned()),
        };
    };
    match writing.settle(&id, rule, seen).await {
        Ok(Settled::Written { chose }) => Outcome::Written(chose),
        Ok(Settled::Agreed) => Outcome::Agreed,
        Ok(Settled::Changed) => Outcome::Changed,
        Ok(Settled::Undecidable { reason }) => Outcome::Undecidable(reason),
        Err(err) => Outcome::Failed(err),
    }
}
