//! Verification, in the manner of Vitess VDiff: walk both stores' key families in key
//! order side by side and compare them key by key — missing in the new store, extra in
//! the new store, mismatched value, metadata or expiration — keeping capped samples of
//! each. It is resumable: progress is saved after every batch, so a large store is
//! verified over several requests, each inside the per-invocation budget.
//!
//! Listing gives existence, metadata and expiration for free (1,000 keys an operation);
//! values are compared with bulk reads. A sampled verification lists every key (so
//! missing and extra keys are all found) but compares the values of one key in `rate`.

use serde::{Deserialize, Serialize};

use crate::domain::{Tombstone, CUSTOMER_PREFIX, EMAIL_PREFIX};
use crate::error::Error;
use crate::migration::checking::fanned_out::FanoutProgress;
use crate::migration::checking::{comparisons, inventory, verify_fanout};
use crate::migration::copying::backfill;
use crate::migration::copying::fanout::{ChunkQueue, Fanout};
use crate::migration::keys;
use crate::migration::state::coordinator::{PhaseRegister, RecordOp};
use crate::migration::state::phase_record::CurrentPhase;
use crate::migration::stored::{self, Listing};
use crate::phase::Phase;
use crate::store::budget::{metered, Budget};
use crate::store::{read_many, KvStore, ListPage, ListedKey, StoreResult, Stores, MAX_BULK_KEYS};

const LIST_PAGE: u32 = 1_000;
/// Keys named per category.
pub const SAMPLE_KEYS: usize = 20;
const FAMILIES: [&str; 2] = [CUSTOMER_PREFIX, EMAIL_PREFIX];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Full,
    Sample,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Verification {
    pub mode: Mode,
    /// Values of one key in `rate` are compared (1 in full mode).
    pub rate: u64,
    /// Index into the key families; 2 once complete.
    pub family: usize,
    pub old_cursor: Option<String>,
    pub new_cursor: Option<String>,
    /// Every key up to this one (in the current family) has been compared.
    pub done_through: Option<String>,
    pub started_at: u64,
    pub updated_at: u64,
    pub completed_at: Option<u64>,
    pub listed: u64,
    pub values_compared: u64,
    pub missing: u64,
    pub extra: u64,
    pub mismatched: u64,
    /// Keys only the new store holds that it held before the migration (the inventory
    /// marked them): not the copy's doing, so not extra.
    pub preexisting: u64,
    /// Whether an inventory marked keys to count apart: read once when the verification
    /// starts, so a migration without any pays nothing per batch.
    pub consult_marks: bool,
    pub missing_keys: Vec<String>,
    pub extra_keys: Vec<String>,
    pub mismatched_keys: Vec<String>,
    pub preexisting_keys: Vec<String>,
    /// Fanned out on the queue: the chunks of values sent to consumers (docs/design.md
    /// §13). Complete only once every one is reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout: Option<FanoutProgress>,
}

impl Verification {
    pub fn new(mode: Mode, rate: u64, now_ms: u64) -> Self {
        Self {
            mode,
            rate: rate.max(1),
            started_at: now_ms,
            updated_at: now_ms,
            ..Default::default()
        }
    }

    /// Every key of both listings walked.
    pub fn listed_all(&self) -> bool {
        self.family >= FAMILIES.len()
    }

    /// Walked, and every chunk sent to consumers reported or failed.
    pub fn complete(&self) -> bool {
        self.listed_all() && self.fanout.as_ref().is_none_or(FanoutProgress::settled)
    }

    /// Nothing missing, extra or mismatched, and every value compared. While the old
    /// store is written (phases 0 to 3) a key only the new store holds is a write the old
    /// store never saw or a delete the new store missed, so it counts against the stores
    /// being in sync.
    pub fn clean(&self) -> bool {
        self.complete()
            && self.missing == 0
            && self.mismatched == 0
            && self.extra == 0
            && self.fanout.as_ref().is_none_or(|f| f.failed == 0)
    }

    fn note(&mut self, category: Category, key: &str) {
        let (count, samples) = match category {
            Category::Missing => (&mut self.missing, &mut self.missing_keys),
            Category::Extra => (&mut self.extra, &mut self.extra_keys),
            Category::Mismatched => (&mut self.mismatched, &mut self.mismatched_keys),
            Category::Preexisting => (&mut self.preexisting, &mut self.preexisting_keys),
        };
        *count += 1;
        if samples.len() < SAMPLE_KEYS {
            samples.push(key.to_owned());
        }
    }
}

#[derive(Clone, Copy)]
enum Category {
    Missing,
    Extra,
    Mismatched,
    Preexisting,
}

/// The verification in progress (`keys::VERIFICATION`) or the last full one
/// (`keys::LAST_FULL_VERIFICATION`).
pub async fn load<S: KvStore>(new_store: &S, key: &str) -> StoreResult<Option<Verification>> {
    stored::get(new_store, key).await
}

pub(crate) async fn save<S: KvStore>(
    new_store: &S,
    key: &str,
    verification: &Verification,
) -> StoreResult<()> {
    stored::put(new_store, key, verification, Listing::ValueOnly).await
}

/// One side's page of keys and where it came from.
struct Side {
    page: ListPage,
    /// The cursor that lists `page` (saved, so a resumed run lists it again).
    cursor: Option<String>,
    next: usize,
}

impl Side {
    async fn open<S: KvStore>(
        store: &S,
        prefix: &str,
        cursor: Option<String>,
        done_through: Option<&str>,
    ) -> StoreResult<Self> {
        let page = store.list(prefix, cursor.as_deref(), LIST_PAGE).await?;
        let next = page
            .keys
            .iter()
            .take_while(|k| done_through.is_some_and(|d| k.name.as_str() <= d))
            .count();
        Ok(Self { page, cursor, next })
    }

    /// The next key, listing the next page when this one is used up; `None` at the end.
    async fn peek<S: KvStore>(
        &mut self,
        store: &S,
        prefix: &str,
    ) -> StoreResult<Option<&ListedKey>> {
        while self.next >= self.page.keys.len() && !self.page.complete {
            let cursor = self.page.cursor.clone();
            self.page = store.list(prefix, cursor.as_deref(), LIST_PAGE).await?;
            self.cursor = cursor;
            self.next = 0;
        }
        Ok(self.page.keys.get(self.next))
    }
}

/// A key present in both stores, whose value is to be compared.
struct Pair {
    name: String,
    old: ListedKey,
    new: ListedKey,
}

/// Values to compare, gathered in chunks for consumers rather than read by the walk
/// (a verification fanned out on the queue).
#[derive(Debug, Default)]
pub struct Deferred {
    pub chunks: Vec<Vec<String>>,
    /// Chunks to gather at most.
    pub limit: usize,
}

impl Deferred {
    pub fn new(limit: usize) -> Self {
        Self {
            chunks: Vec::new(),
            limit,
        }
    }

    fn full(&self) -> bool {
        self.chunks.len() >= self.limit
    }

    fn push(&mut self, names: Vec<String>) {
        for name in names {
            match self.chunks.last_mut() {
                Some(open) if open.len() < MAX_BULK_KEYS => open.push(name),
                _ => self.chunks.push(vec![name]),
            }
        }
    }
}

/// Advances the verification as far as `budget` allows, saving progress after every
/// batch; `stores` should be metered by `budget`.
pub async fn advance<S: KvStore>(
    stores: &Stores<S>,
    budget: &Budget,
    verification: &mut Verification,
    now_ms: u64,
) -> StoreResult<()> {
    walk(stores, budget, verification, now_ms, None).await
}

/// Walks both listings as far as `budget` allows, comparing values here or, with
/// `deferred`, gathering them for consumers until it holds its limit of chunks.
pub async fn walk<S: KvStore>(
    stores: &Stores<S>,
    budget: &Budget,
    verification: &mut Verification,
    now_ms: u64,
    mut deferred: Option<&mut Deferred>,
) -> StoreResult<()> {
    let room = |deferred: &Option<&mut Deferred>| deferred.as_ref().is_none_or(|d| !d.full());
    // Opening both sides costs two lists; a batch at most two more and three bulk reads.
    while !verification.listed_all() && budget.affords(7) && room(&deferred) {
        let prefix = FAMILIES[verification.family];
        let through = verification.done_through.clone();
        let mut old = Side::open(
            &stores.old,
            prefix,
            verification.old_cursor.clone(),
            through.as_deref(),
        )
        .await?;
        let mut new = Side::open(
            &stores.new,
            prefix,
            verification.new_cursor.clone(),
            through.as_deref(),
        )
        .await?;
        loop {
            // A batch: merged keys in order until MAX_BULK_KEYS values need comparing.
            let mut pairs: Vec<Pair> = Vec::new();
            let mut only_new: Vec<String> = Vec::new();
            let mut last: Option<String> = None;
            let mut at_end = false;
            while pairs.len() < MAX_BULK_KEYS && only_new.len() < MAX_BULK_KEYS && budget.affords(5)
            {
                let o = old.peek(&stores.old, prefix).await?.cloned();
                let n = new.peek(&stores.new, prefix).await?.cloned();
                let name = match (&o, &n) {
                    (None, None) => {
                        at_end = true;
                        break;
                    }
                    (Some(o), None) => {
                        old.next += 1;
                        missing_unless_expired(verification, o, now_ms);
                        o.name.clone()
                    }
                    (None, Some(n)) => {
                        new.next += 1;
                        only_new.push(n.name.clone());
                        n.name.clone()
                    }
                    (Some(o), Some(n)) if o.name < n.name => {
                        old.next += 1;
                        missing_unless_expired(verification, o, now_ms);
                        o.name.clone()
                    }
                    (Some(o), Some(n)) if o.name > n.name => {
                        new.next += 1;
                        only_new.push(n.name.clone());
                        n.name.clone()
                    }
                    (Some(o), Some(n)) => {
                        old.next += 1;
                        new.next += 1;
                        pairs.push(Pair {
                            name: o.name.clone(),
                            old: o.clone(),
                            new: n.clone(),
                        });
                        o.name.clone()
                    }
                };
                verification.listed += 1;
                last = Some(name);
            }
            compare_pairs(stores, verification, &pairs, deferred.as_deref_mut()).await?;
            classify_only_new(stores, verification, &only_new).await?;
            if let Some(last) = last {
                verification.done_through = Some(last);
                verification.old_cursor = old.cursor.clone();
                verification.new_cursor = new.cursor.clone();
            }
            verification.updated_at = now_ms;
            if at_end {
                verification.family += 1;
                verification.old_cursor = None;
                verification.new_cursor = None;
                verification.done_through = None;
                if verification.listed_all() {
                    verification.completed_at = Some(now_ms);
                }
                break;
            }
            if !budget.affords(5) || !room(&deferred) {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn missing_unless_expired(verification: &mut Verification, old: &ListedKey, now_ms: u64) {
    if old.expiration.is_none_or(|at| at * 1000 > now_ms) {
        verification.note(Category::Missing, &old.name);
    }
}

/// Compares metadata and expiration of every pair, and the values of the sampled ones
/// (or hands those to `deferred`).
async fn compare_pairs<S: KvStore>(
    stores: &Stores<S>,
    verification: &mut Verification,
    pairs: &[Pair],
    deferred: Option<&mut Deferred>,
) -> StoreResult<()> {
    let mut to_read = Vec::new();
    for pair in pairs {
        if pair.old.metadata != pair.new.metadata || pair.old.expiration != pair.new.expiration {
            verification.note(Category::Mismatched, &pair.name);
        } else if sampled(&pair.name, verification.rate) {
            to_read.push(pair.name.clone());
        }
    }
    if let Some(deferred) = deferred {
        deferred.push(to_read);
        return Ok(());
    }
    if to_read.is_empty() {
        return Ok(());
    }
    let old_values = read_many(&stores.old, &to_read).await?;
    let new_values = read_many(&stores.new, &to_read).await?;
    for ((name, old), new) in to_read.iter().zip(old_values).zip(new_values) {
        verification.values_compared += 1;
        if comparisons::values_differ(&old, &new) {
            verification.note(Category::Mismatched, name);
        }
    }
    Ok(())
}

/// A key only the new store has is extra, unless it is a tombstone (a deleted customer)
/// or the inventory found it there before the migration (docs/design.md §16).
async fn classify_only_new<S: KvStore>(
    stores: &Stores<S>,
    verification: &mut Verification,
    keys: &[String],
) -> StoreResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let values = read_many(&stores.new, keys).await?;
    if !verification.consult_marks {
        for (name, value) in keys.iter().zip(values) {
            if value.is_some_and(|v| !Tombstone::is_tombstone(&v.bytes)) {
                verification.note(Category::Extra, name);
            }
        }
        return Ok(());
    }
    let live: Vec<String> = keys
        .iter()
        .zip(values)
        .filter(|(_, value)| {
            value
                .as_ref()
                .is_some_and(|v| !Tombstone::is_tombstone(&v.bytes))
        })
        .map(|(name, _)| name.clone())
        .collect();
    if live.is_empty() {
        return Ok(());
    }
    let marks = inventory::marks(&stores.new, &live).await?;
    for (name, mark) in live.iter().zip(marks) {
        let category = match mark {
            Some(mark) if mark.found.held_back() => Category::Preexisting,
            _ => Category::Extra,
        };
        verification.note(category, name);
    }
    Ok(())
}

/// Whether a key's value is compared at `rate`: a stable choice, so a resumed sample
/// compares the same keys.
fn sampled(key: &str, rate: u64) -> bool {
    if rate <= 1 {
        return true;
    }
    // FNV-1a: cheap, stable, and spread enough for choosing a sample.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % rate == 0
}

/// Starts or continues a verification and saves where it stands; a completed full
/// verification is also kept as the last one, which gate 3→4 reads.
pub async fn run<S: KvStore>(
    stores: &Stores<S>,
    budget: &Budget,
    mode: Mode,
    rate: u64,
    restart: bool,
    now_ms: u64,
) -> StoreResult<Verification> {
    let mut verification = match load(&stores.new, keys::VERIFICATION).await? {
        Some(v) if !restart && !v.complete() && v.mode == mode && v.rate == rate.max(1) => v,
        _ => Verification {
            consult_marks: inventory::load(&stores.new)
                .await?
                .is_some_and(|taken| taken.preexisting() > 0),
            ..Verification::new(mode, rate, now_ms)
        },
    };
    let result = advance(stores, budget, &mut verification, now_ms).await;
    save(&stores.new, keys::VERIFICATION, &verification).await?;
    result?;
    if verification.complete() && verification.mode == Mode::Full {
        save(&stores.new, keys::LAST_FULL_VERIFICATION, &verification).await?;
    }
    Ok(verification)
}

/// KV operations an admin request has made before the verification starts.
const REQUEST_OVERHEAD_OPS: u32 = 4;
/// Values compared in one key in this many when a sample is asked for and the number of
/// keys is not known yet (the backfill counts them).
const DEFAULT_SAMPLE_RATE: u64 = 10;

/// What an admin asked to verify: every value, or a sample of about `keys` values
/// (`None`: one in [`DEFAULT_SAMPLE_RATE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Full,
    Sample { keys: Option<u64> },
}

/// An admin's verification request: what to verify, and whether to start over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyRequest {
    pub requested: Requested,
    pub restart: bool,
}

/// Starts or continues a verification within one invocation's budget. A clean full one
/// that proves the new store caught up after writes skipped it clears
/// `new_store_diverged` (through the phase record's writer).
pub async fn run_requested<S: KvStore, R: PhaseRegister>(
    stores: &Stores<S>,
    (register, queue): (&R, Option<&dyn ChunkQueue>),
    current: &CurrentPhase,
    VerifyRequest { requested, restart }: VerifyRequest,
    who: &str,
    settle_ms: u64,
    now_ms: u64,
) -> Result<Verification, Error> {
    let (mode, rate) = match requested {
        Requested::Full => (Mode::Full, 1),
        Requested::Sample { keys } => {
            let total = backfill::load_checkpoint(&stores.new).await?.total;
            let rate = match keys {
                Some(n) if total > 0 => total.div_ceil(n).max(1),
                _ => DEFAULT_SAMPLE_RATE,
            };
            (Mode::Sample, rate)
        }
    };
    let budget = Budget::per_invocation(REQUEST_OVERHEAD_OPS);
    let metered = metered(stores, &budget);
    let verification = match queue {
        Some(queue) => {
            let fanout = Fanout { register, queue };
            verify_fanout::run(&metered, fanout, &budget, (mode, rate), restart, now_ms).await?
        }
        None => run(&metered, &budget, mode, rate, restart, now_ms).await?,
    };
    if current.state.new_store_diverged
        && proves_new_store_caught_up(&verification, current, settle_ms)
    {
        let op = RecordOp::ClearNewStoreDivergence {
            judged: current.state.clone(),
            who: who.to_owned(),
            now_ms,
        };
        register.apply(op).await?;
    }
    Ok(verification)
}

/// A clean full verification shows that the new store caught up after writes skipped
/// it — if it started once every isolate writes the new store again: in phase 1 or
/// later, a cache lifetime after the phase changed.
fn proves_new_store_caught_up(
    verification: &Verification,
    current: &CurrentPhase,
    settle_ms: u64,
) -> bool {
    verification.clean()
        && verification.mode == Mode::Full
        && current.every_phase(Phase::verification_can_clear_new_store_divergence)
        && verification.started_at >= current.state.routing_changed_at() + settle_ms
}
