//! The worker's metrics: one data point per request, cron run and queue consumer
//! invocation, for Workers Analytics Engine (the optional `METRICS` binding; README,
//! "Metrics"). Built here from the same route templates, codes and counts as the log
//! lines (`logging`), never from paths, bodies or headers, so no email, token or record
//! content can reach a dataset; the adapter only writes them.
//!
//! Every point has the same columns whatever its kind, so one query can read all kinds
//! (records copied come from the cron and the queue's consumers alike); a column that
//! does not apply to a kind is empty (`""` or 0). The layout is fixed: a query names
//! columns by position (`blob4`, `double3`), so a column may be added at the end, never
//! moved.

use serde::Serialize;

use crate::logging::RequestLog;
use crate::migration::copying::backfill::RunReport;
use crate::migration::copying::fanout::Consumed;
use crate::migration::cron::CronReport;

/// The text columns, `blob1` onwards, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    /// `request`, `cron` or `queue`.
    Kind,
    /// A request's route template (`/customer/{id}`, `unmatched`), never its path.
    Route,
    /// A request's method.
    Method,
    /// A request's HTTP status (`"404"`); a cron run's `ok` or `failed`; a queue
    /// invocation's `ok`.
    Status,
    /// The error code of a refused request or a failed cron run.
    Code,
    /// The phase the request or cron run acted in (`"0"`–`"5"`); empty when unknown.
    Phase,
    /// What a cron run advanced (`backfill`, `reverse_sync`, `none`) or a queue
    /// invocation handled (`chunks`, `dead_letters`).
    Work,
    /// The stage the cron's backfill or reverse sync stands at after the run
    /// (`copy_customers`, `draining`, `done`, …).
    Stage,
}

/// The numeric columns, `double1` onwards, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Double {
    DurationMs,
    /// KV operations the invocation made.
    KvOperations,
    /// Reads a request served from the fallback store.
    FallbackHits,
    /// 1 when the request answered 5xx or the cron run failed, else 0.
    Failed,
    /// Records written by copies: the cron's backfill or reverse sync (copied and
    /// corrected), a consumer's chunks (`written`).
    RecordsCopied,
    /// Copies that failed.
    CopyErrors,
    /// Keys the copies left alone as conflicts (values they cannot order).
    Conflicts,
    /// Keys the cron's backfill or reverse sync scanned.
    RecordsScanned,
    /// Repair-journal entries the cron run found (it lists at most 110: see
    /// `JournalMore`).
    JournalEntries,
    /// Entries still in the journal after the run (deferred, or settling until a check).
    JournalLeft,
    /// 1 when the journal held more entries than one run lists.
    JournalMore,
    /// Cron runs in a row that left the backfill where it stood (`alerts`'s
    /// `backfill_stalled`).
    IdleRuns,
    /// Chunks a fanned-out cron run queued for consumers.
    ChunksQueued,
    /// Messages a queue invocation was handed.
    Messages,
    /// Chunks a consumer copied and reported done.
    ChunksDone,
    /// Messages handed back to the queue for another delivery.
    Retried,
}

impl Blob {
    pub const ALL: [Blob; 8] = [
        Blob::Kind,
        Blob::Route,
        Blob::Method,
        Blob::Status,
        Blob::Code,
        Blob::Phase,
        Blob::Work,
        Blob::Stage,
    ];

    /// Its column in Analytics Engine's SQL (`blob1` …).
    pub fn column(self) -> String {
        format!("blob{}", self as usize + 1)
    }
}

impl Double {
    pub const ALL: [Double; 16] = [
        Double::DurationMs,
        Double::KvOperations,
        Double::FallbackHits,
        Double::Failed,
        Double::RecordsCopied,
        Double::CopyErrors,
        Double::Conflicts,
        Double::RecordsScanned,
        Double::JournalEntries,
        Double::JournalLeft,
        Double::JournalMore,
        Double::IdleRuns,
        Double::ChunksQueued,
        Double::Messages,
        Double::ChunksDone,
        Double::Retried,
    ];

    pub fn column(self) -> String {
        format!("double{}", self as usize + 1)
    }
}

/// Analytics Engine's limits on one data point.
pub const MAX_BLOBS: usize = 20;
pub const MAX_DOUBLES: usize = 20;
pub const MAX_INDEX_BYTES: usize = 96;
pub const MAX_BLOBS_TOTAL_BYTES: usize = 16 * 1024;
/// Each blob is cut to this, so all of them together stay under the total.
const MAX_BLOB_BYTES: usize = 256;

const _: () = assert!(Blob::ALL.len() <= MAX_BLOBS && Double::ALL.len() <= MAX_DOUBLES);
const _: () = assert!(Blob::ALL.len() * MAX_BLOB_BYTES <= MAX_BLOBS_TOTAL_BYTES);

/// One data point: every blob and double of the layout, in order, and its index (the
/// key Analytics Engine samples by: the route for a request, so a rare route keeps its
/// points; `cron` or `queue` otherwise).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataPoint {
    pub blobs: Vec<String>,
    pub doubles: Vec<f64>,
    pub index: String,
}

impl DataPoint {
    fn new(kind: &str, index: &str) -> Self {
        let mut point = Self {
            blobs: vec![String::new(); Blob::ALL.len()],
            doubles: vec![0.0; Double::ALL.len()],
            index: truncate(index, MAX_INDEX_BYTES).to_owned(),
        };
        point.set(Blob::Kind, kind);
        point
    }

    fn set(&mut self, blob: Blob, value: &str) -> &mut Self {
        self.blobs[blob as usize] = truncate(value, MAX_BLOB_BYTES).to_owned();
        self
    }

    fn count(&mut self, double: Double, value: impl Into<f64>) -> &mut Self {
        self.doubles[double as usize] = value.into();
        self
    }

    pub fn blob(&self, blob: Blob) -> &str {
        &self.blobs[blob as usize]
    }

    pub fn double(&self, double: Double) -> f64 {
        self.doubles[double as usize]
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Counts as Analytics Engine stores them (doubles); a count past 2^53 loses precision,
/// which no count here reaches.
fn f(n: u64) -> f64 {
    n as f64
}

/// The point of one request, `duration_ms` from start to answer.
pub fn of_request(log: &RequestLog, duration_ms: u64) -> DataPoint {
    let mut point = DataPoint::new("request", log.route);
    point
        .set(Blob::Route, log.route)
        .set(Blob::Method, log.method)
        .set(Blob::Status, &log.status.to_string())
        .set(Blob::Code, log.code.as_deref().unwrap_or(""))
        .set(
            Blob::Phase,
            &log.phase.map_or(String::new(), |p| p.to_string()),
        )
        .count(Double::DurationMs, f(duration_ms))
        .count(Double::KvOperations, log.kv_operations)
        .count(Double::FallbackHits, log.fallback_hits)
        .count(Double::Failed, u8::from(log.status >= 500));
    point
}

/// The point of a cron run that completed.
pub fn of_cron(report: &CronReport, duration_ms: u64) -> DataPoint {
    let mut point = DataPoint::new("cron", "cron");
    let (work, run) = match (&report.backfill, &report.reverse_sync) {
        (Some(run), _) => ("backfill", Some(run)),
        (None, Some(run)) => ("reverse_sync", Some(run)),
        (None, None) => ("none", None),
    };
    let left = report
        .repair
        .examined
        .saturating_sub(report.repair.repaired);
    point
        .set(Blob::Status, "ok")
        .set(Blob::Phase, &report.phase.to_string())
        .set(Blob::Work, work)
        .set(Blob::Stage, run.map_or("", stage_name))
        .count(Double::DurationMs, f(duration_ms))
        .count(Double::KvOperations, report.operations)
        .count(Double::JournalEntries, report.repair.examined)
        .count(Double::JournalLeft, left)
        .count(Double::JournalMore, u8::from(report.repair.more));
    if let Some(run) = run {
        let counts = &run.counts;
        point
            .count(Double::RecordsCopied, f(counts.copied + counts.corrected))
            .count(Double::CopyErrors, f(counts.errors))
            .count(Double::Conflicts, f(counts.conflicts))
            .count(Double::RecordsScanned, f(counts.scanned))
            .count(Double::IdleRuns, run.idle_runs)
            .count(Double::ChunksQueued, f(run.queued));
    }
    point
}

fn stage_name(run: &RunReport) -> &'static str {
    run.stage.name()
}

/// The point of a cron run that failed with `code`.
pub fn of_cron_failure(code: &str, duration_ms: u64) -> DataPoint {
    let mut point = DataPoint::new("cron", "cron");
    point
        .set(Blob::Status, "failed")
        .set(Blob::Code, code)
        .count(Double::DurationMs, f(duration_ms))
        .count(Double::Failed, 1u8);
    point
}

/// The point of a consumer invocation of the backfill queue.
pub fn of_queue(consumed: &Consumed, duration_ms: u64) -> DataPoint {
    let mut point = DataPoint::new("queue", "queue");
    point
        .set(Blob::Status, "ok")
        .set(Blob::Work, "chunks")
        .count(Double::DurationMs, f(duration_ms))
        .count(Double::KvOperations, consumed.operations)
        .count(Double::RecordsCopied, f(consumed.written))
        .count(Double::CopyErrors, f(consumed.errors))
        .count(Double::Conflicts, f(consumed.conflicts))
        .count(Double::Messages, f(consumed.messages as u64))
        .count(Double::ChunksDone, f(consumed.chunks as u64))
        .count(Double::Retried, f(consumed.retried as u64));
    point
}

/// The point of a consumer invocation of the dead-letter queue, handed `messages`.
pub fn of_dead_letters(messages: usize, duration_ms: u64) -> DataPoint {
    let mut point = DataPoint::new("queue", "queue");
    point
        .set(Blob::Status, "ok")
        .set(Blob::Work, "dead_letters")
        .count(Double::DurationMs, f(duration_ms))
        .count(Double::Messages, f(messages as u64));
    point
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::copying::backfill::Stage;
    use crate::migration::copying::copy::CopyCounts;
    use crate::migration::healing::read_repair::CheckReport;
    use crate::migration::healing::repair::RepairReport;

    fn request_log(status: u16) -> RequestLog {
        RequestLog {
            method: "GET",
            route: "/customer/by-email/{email}",
            status,
            code: (status >= 400).then(|| "customer_not_found".to_owned()),
            phase: Some(3),
            kv_operations: 4,
            fallback_hits: 1,
            detail: Some("a detail is for the log, not the metrics".into()),
        }
    }

    #[test]
    fn a_request_fills_its_columns_in_the_documented_order() {
        let point = of_request(&request_log(404), 17);
        assert_eq!(
            point.blobs,
            [
                "request",
                "/customer/by-email/{email}",
                "GET",
                "404",
                "customer_not_found",
                "3",
                "",
                ""
            ]
        );
        assert_eq!(point.index, "/customer/by-email/{email}");
        assert_eq!(point.doubles.len(), Double::ALL.len());
        assert_eq!(point.double(Double::DurationMs), 17.0);
        assert_eq!(point.double(Double::KvOperations), 4.0);
        assert_eq!(point.double(Double::FallbackHits), 1.0);
        assert_eq!(point.double(Double::Failed), 0.0);
        assert_eq!(point.doubles[2], 1.0, "double3 is the fallback hits");
        assert!(!point.blobs.iter().any(|b| b.contains("detail")));
        assert_eq!(of_request(&request_log(503), 1).double(Double::Failed), 1.0);
        let unknown_phase = RequestLog {
            phase: None,
            ..request_log(401)
        };
        assert_eq!(of_request(&unknown_phase, 1).blob(Blob::Phase), "");
    }

    #[test]
    fn columns_are_numbered_from_one() {
        assert_eq!(Blob::Kind.column(), "blob1");
        assert_eq!(Blob::Route.column(), "blob2");
        assert_eq!(Double::DurationMs.column(), "double1");
        assert_eq!(Double::FallbackHits.column(), "double3");
        for (position, blob) in Blob::ALL.iter().enumerate() {
            assert_eq!(*blob as usize, position);
        }
        for (position, double) in Double::ALL.iter().enumerate() {
            assert_eq!(*double as usize, position);
        }
    }

    fn run(stage: Stage, copied: u64) -> RunReport {
        RunReport {
            ran: true,
            stage,
            counts: CopyCounts {
                scanned: copied + 5,
                copied,
                corrected: 2,
                errors: 1,
                conflicts: 3,
                ..CopyCounts::default()
            },
            idle_runs: 0,
            ..RunReport::default()
        }
    }

    #[test]
    fn a_cron_run_counts_its_copies_and_its_journal() {
        let report = CronReport {
            phase: 3,
            repair: RepairReport {
                examined: 110,
                repaired: 100,
                deferred: 4,
                more: true,
                settling: 6,
                wait_ms: None,
            },
            settle: CheckReport::default(),
            backfill: Some(run(Stage::CopyMappings, 800)),
            reverse_sync: None,
            operations: 950,
        };
        let point = of_cron(&report, 4_000);
        assert_eq!(point.index, "cron");
        assert_eq!(
            (
                point.blob(Blob::Kind),
                point.blob(Blob::Status),
                point.blob(Blob::Phase),
                point.blob(Blob::Work),
                point.blob(Blob::Stage),
                point.blob(Blob::Route)
            ),
            ("cron", "ok", "3", "backfill", "copy_mappings", "")
        );
        assert_eq!(point.double(Double::RecordsCopied), 802.0);
        assert_eq!(point.double(Double::RecordsScanned), 805.0);
        assert_eq!(point.double(Double::CopyErrors), 1.0);
        assert_eq!(point.double(Double::Conflicts), 3.0);
        assert_eq!(point.double(Double::JournalEntries), 110.0);
        assert_eq!(point.double(Double::JournalLeft), 10.0);
        assert_eq!(point.double(Double::JournalMore), 1.0);
        assert_eq!(point.double(Double::KvOperations), 950.0);

        let reverse = CronReport {
            backfill: None,
            reverse_sync: Some(run(Stage::Done, 0)),
            ..report.clone()
        };
        assert_eq!(of_cron(&reverse, 1).blob(Blob::Work), "reverse_sync");
        let idle = CronReport {
            backfill: None,
            ..report
        };
        let point = of_cron(&idle, 1);
        assert_eq!(
            (point.blob(Blob::Work), point.blob(Blob::Stage)),
            ("none", "")
        );
        assert_eq!(point.double(Double::RecordsCopied), 0.0);

        let failed = of_cron_failure("store_unavailable", 9);
        assert_eq!(
            (failed.blob(Blob::Status), failed.blob(Blob::Code)),
            ("failed", "store_unavailable")
        );
        assert_eq!(failed.double(Double::Failed), 1.0);
    }

    #[test]
    fn a_consumer_counts_what_it_wrote() {
        let consumed = Consumed {
            messages: 8,
            chunks: 7,
            written: 650,
            conflicts: 2,
            errors: 3,
            retried: 1,
            operations: 720,
            ..Consumed::default()
        };
        let point = of_queue(&consumed, 2_500);
        assert_eq!(
            (point.blob(Blob::Kind), point.blob(Blob::Work)),
            ("queue", "chunks")
        );
        assert_eq!(point.double(Double::RecordsCopied), 650.0);
        assert_eq!(point.double(Double::CopyErrors), 3.0);
        assert_eq!(point.double(Double::ChunksDone), 7.0);
        assert_eq!(point.double(Double::Messages), 8.0);
        assert_eq!(point.double(Double::Retried), 1.0);
        assert_eq!(point.double(Double::KvOperations), 720.0);
        let dead = of_dead_letters(4, 10);
        assert_eq!(dead.blob(Blob::Work), "dead_letters");
        assert_eq!(dead.double(Double::Messages), 4.0);
    }

    #[test]
    fn points_respect_analytics_engine_limits() {
        let long = "é".repeat(400); // two bytes a character: a cut must not split one
        let mut point = DataPoint::new("request", &long);
        point.set(Blob::Code, &long);
        assert!(point.index.len() <= MAX_INDEX_BYTES);
        assert_eq!(point.index.chars().count(), MAX_INDEX_BYTES / 2);
        assert!(point.blob(Blob::Code).len() <= MAX_BLOB_BYTES);
        assert!(point.blobs.len() <= MAX_BLOBS && point.doubles.len() <= MAX_DOUBLES);
        for blob in Blob::ALL {
            point.set(blob, &long);
        }
        let total: usize = point.blobs.iter().map(String::len).sum();
        assert!(total <= MAX_BLOBS_TOTAL_BYTES, "{total}");
    }
}
