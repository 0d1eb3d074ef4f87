//! The verification's side of a check fanned out on the queue (docs/design.md §13,
//! "Verification fanned out"): consumers compare the values of the keys the planner
//! hands them, and the coordinator keeps the walk and what they found
//! ([`fanned_out`](crate::migration::checking::fanned_out), under `compare/…`).

use serde::{Deserialize, Serialize};

use crate::domain::Tombstone;
use crate::migration::checking::fanned_out::{
    self, FanAnswer, FanOp, FannedOut, Findings, KeyChunk, Report, Walk,
};
use crate::migration::checking::verify::{Verification, SAMPLE_KEYS};
use crate::migration::copying::fanout::tally::TallyStore;
use crate::store::{read_many, KvStore, StoreResult, StoredValue, Stores};

pub use crate::migration::checking::fanned_out::{CHUNKS_PER_PLAN, RESEND_AFTER_MS, WINDOW};

/// Where the coordinator keeps the verification in progress.
const SPACE: &str = "compare";

/// What consumers found comparing values, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CompareFindings {
    pub values_compared: u64,
    pub mismatched: u64,
    pub mismatched_keys: Vec<String>,
}

/// What a consumer found in one chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValuesCompared {
    pub compared: u64,
    /// The keys whose values differ (at most the chunk's).
    pub mismatched: Vec<String>,
}

impl Findings for CompareFindings {
    type Report = ValuesCompared;

    fn add(&mut self, report: ValuesCompared) {
        self.values_compared += report.compared;
        self.mismatched += report.mismatched.len() as u64;
        let room = SAMPLE_KEYS.saturating_sub(self.mismatched_keys.len());
        self.mismatched_keys
            .extend(report.mismatched.into_iter().take(room));
    }
}

impl Walk for Verification {
    fn started_at(&self) -> u64 {
        self.started_at
    }

    fn set_started_at(&mut self, at: u64) {
        self.started_at = at;
    }
}

/// The coordinator's record of the verification in progress.
pub type Comparisons = FannedOut<Verification, CompareFindings>;
pub type CompareOp = FanOp<Verification, CompareFindings>;
pub type CompareAnswer = FanAnswer<Verification, CompareFindings>;
/// Keys whose values a consumer compares, as they travel on the queue.
pub type CompareChunk = KeyChunk;
pub type Compared = Report<ValuesCompared>;

/// Applies `op` to the verification in progress. The caller holds the coordinator's lock.
pub async fn apply<T: TallyStore>(store: &T, op: CompareOp) -> StoreResult<CompareAnswer> {
    fanned_out::apply(store, SPACE, op).await
}

impl Comparisons {
    /// The verification as it stands: the walk's findings and the consumers'.
    pub fn verification(&self) -> Option<Verification> {
        let mut merged = self.walk.clone()?;
        merged.values_compared += self.found.values_compared;
        merged.mismatched += self.found.mismatched;
        let room = SAMPLE_KEYS.saturating_sub(merged.mismatched_keys.len());
        merged
            .mismatched_keys
            .extend(self.found.mismatched_keys.iter().take(room).cloned());
        merged.fanout = Some(self.progress());
        // The gates compare the end of the listing with the backfill's end.
        (merged.completed_at, merged.updated_at) =
            self.dates(merged.completed_at, merged.updated_at);
        Some(merged)
    }
}

/// Whether two stores' values of a listed key differ. A key deleted from the old store
/// since it was listed is no difference of the copy's.
pub fn values_differ(old: &Option<StoredValue>, new: &Option<StoredValue>) -> bool {
    let same = match (old, new) {
        (Some(o), Some(n)) => o.bytes == n.bytes,
        (None, _) => new
            .as_ref()
            .is_none_or(|n| Tombstone::is_tombstone(&n.bytes)),
        (Some(_), None) => false,
    };
    !same
}

/// A consumer's work on one chunk: both stores' values in one bulk read each (a chunk
/// holds at most a bulk read's keys).
pub async fn compare_chunk<S: KvStore>(
    stores: &Stores<S>,
    chunk: &CompareChunk,
) -> StoreResult<Compared> {
    let old_values = read_many(&stores.old, &chunk.keys).await?;
    let new_values = read_many(&stores.new, &chunk.keys).await?;
    let mismatched = chunk
        .keys
        .iter()
        .zip(old_values.iter().zip(&new_values))
        .filter(|(_, (old, new))| values_differ(old, new))
        .map(|(name, _)| name.clone())
        .collect();
    Ok(Report {
        run: chunk.run,
        seq: chunk.seq,
        found: ValuesCompared {
            compared: chunk.keys.len() as u64,
            mismatched,
        },
    })
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::migration::checking::verify::Mode;
    use crate::migration::copying::fanout::tally::MemoryTally;

    fn walk(started_at: u64) -> Verification {
        Verification::new(Mode::Full, 1, started_at)
    }

    fn plan(version: u64, chunks: usize) -> CompareOp {
        CompareOp::Plan {
            run: 10,
            version,
            walk: walk(10),
            chunks: (0..chunks).map(|i| vec![format!("k{i}")]).collect(),
            now_ms: 10,
        }
    }

    /// A verification started and listed to the end, with chunks `k0` and `k1` sent.
    fn listed_with_two_chunks(store: &MemoryTally, listed: Verification) {
        let version = block_on(apply(store, CompareOp::Start { walk: walk(10) }))
            .unwrap()
            .state
            .version;
        let op = CompareOp::Plan {
            run: 10,
            version,
            walk: Verification {
                family: 2,
                completed_at: Some(10),
                ..listed
            },
            chunks: vec![vec!["k0".into()], vec!["k1".into()]],
            now_ms: 10,
        };
        assert!(block_on(apply(store, op)).unwrap().accepted);
    }

    fn done(seq: u64, mismatched: &[&str]) -> Compared {
        Report {
            run: 10,
            seq,
            found: ValuesCompared {
                compared: 1,
                mismatched: mismatched.iter().map(|k| (*k).to_owned()).collect(),
            },
        }
    }

    #[test]
    fn a_plan_from_a_version_another_plan_overtook_is_refused() {
        let store = MemoryTally::default();
        let started = block_on(apply(&store, CompareOp::Start { walk: walk(10) })).unwrap();
        let version = started.state.version;
        let first = block_on(apply(&store, plan(version, 2))).unwrap();
        assert_eq!((first.accepted, first.first_seq), (true, Some(0)));
        // A second planner that read the same version walked the same keys.
        let second = block_on(apply(&store, plan(version, 2))).unwrap();
        assert!(!second.accepted);
        assert_eq!(second.state.queued, 2);
    }

    #[test]
    fn the_verification_is_complete_only_when_every_chunk_is_reported_once() {
        let store = MemoryTally::default();
        let listed = Verification {
            mismatched: 1,
            mismatched_keys: vec!["meta".into()],
            ..walk(10)
        };
        listed_with_two_chunks(&store, listed);
        let reports = vec![done(0, &["k0"]), done(0, &["k0"])];
        let once = block_on(apply(
            &store,
            CompareOp::Done {
                reports,
                now_ms: 20,
            },
        ))
        .unwrap();
        let merged = once.state.verification().unwrap();
        assert!(!merged.complete());
        assert_eq!((merged.mismatched, merged.values_compared), (2, 1));
        assert_eq!(merged.mismatched_keys, ["meta", "k0"]);
        let reports = vec![done(1, &[])];
        let all = block_on(apply(
            &store,
            CompareOp::Done {
                reports,
                now_ms: 30,
            },
        ))
        .unwrap();
        let merged = all.state.verification().unwrap();
        assert!(merged.complete() && !merged.clean());
        // Dated by the end of the listing, as the gates compare it with the backfill's.
        assert_eq!((merged.completed_at, merged.updated_at), (Some(10), 30));
    }

    #[test]
    fn a_failed_chunk_reported_after_all_counts_as_compared() {
        let store = MemoryTally::default();
        let version = block_on(apply(&store, CompareOp::Start { walk: walk(10) }))
            .unwrap()
            .state
            .version;
        block_on(apply(&store, plan(version, 1))).unwrap();
        let chunk = CompareChunk {
            run: 10,
            seq: 0,
            keys: vec!["k0".into()],
        };
        let failed = block_on(apply(&store, CompareOp::Failed { chunk })).unwrap();
        assert_eq!(failed.state.failed_keys, ["k0"]);
        let reports = vec![done(0, &[])];
        let late = block_on(apply(
            &store,
            CompareOp::Done {
                reports,
                now_ms: 20,
            },
        ))
        .unwrap();
        assert_eq!((late.state.failed, late.state.done), (0, 1));
        assert!(late.state.failed_keys.is_empty());
    }

    #[test]
    fn an_unreported_chunk_is_due_again_after_the_resend_delay_and_a_failed_one_never() {
        let store = MemoryTally::default();
        let version = block_on(apply(&store, CompareOp::Start { walk: walk(10) }))
            .unwrap()
            .state
            .version;
        block_on(apply(&store, plan(version, 2))).unwrap();
        let failed = CompareChunk {
            run: 10,
            seq: 1,
            keys: Vec::new(),
        };
        let unknown = CompareChunk {
            run: 10,
            seq: 7,
            keys: Vec::new(),
        };
        let refused = block_on(apply(&store, CompareOp::Failed { chunk: unknown })).unwrap();
        assert!(!refused.accepted);
        let reports = vec![done(7, &[])];
        let refused = block_on(apply(
            &store,
            CompareOp::Done {
                reports,
                now_ms: 11,
            },
        ))
        .unwrap();
        assert!(!refused.accepted);
        block_on(apply(&store, CompareOp::Failed { chunk: failed })).unwrap();
        let early = block_on(apply(&store, CompareOp::Read { now_ms: 11 })).unwrap();
        assert!(early.resend.is_empty());
        let now_ms = 10 + RESEND_AFTER_MS;
        let late = block_on(apply(&store, CompareOp::Read { now_ms })).unwrap();
        let due: Vec<u64> = late.resend.iter().map(|c| c.seq).collect();
        assert_eq!(due, [0]);
        assert_eq!(late.resend[0].keys, ["k0"]);
    }
}
