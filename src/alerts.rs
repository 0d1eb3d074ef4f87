//! What an operator should hear about without watching (`ALERT_WEBHOOK_URL`): a phase
//! change, a forced move, a rollback step, a verification that finds differences, a
//! backfill or reverse sync whose copies fail, a backfill that has stopped moving, a
//! repair journal that outgrows a run, a cron run that fails. Derived here from what a request answered or a cron run
//! reported, so the adapter only delivers them. Texts hold phases, codes and counts;
//! an admin's `reason` is the only free text, and it is the admin's own.

use serde::Serialize;
use serde_json::Value;

use crate::logging::RequestLog;
use crate::migration::copying::backfill::RunReport;
use crate::migration::cron::CronReport;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// A stable name to route or silence by.
    pub kind: &'static str,
    pub text: String,
}

impl Alert {
    fn new(kind: &'static str, text: impl Into<String>) -> Self {
        Self {
            kind,
            text: text.into(),
        }
    }
}

/// Cron runs in a row (one a minute) that leave a backfill expected to move where it
/// stood before `backfill_stalled` is raised: long enough for a few minutes of a busy
/// repair journal or slow consumers, short enough to hear of a stall within minutes.
pub const BACKFILL_STALL_RUNS: u32 = 5;

/// Alerts a request's answer calls for.
pub fn of_request(log: &RequestLog, body: &Value) -> Vec<Alert> {
    if !(200..300).contains(&log.status) {
        return Vec::new();
    }
    match log.route {
        "/admin/migrate/phase" if body["changed"] == true => {
            let (from, to) = (&body["previous"], &body["phase"]);
            if body["forced"] == true {
                let gates = body["forcedGates"].as_array().map_or(0, Vec::len);
                vec![Alert::new(
                    "phase_forced",
                    format!("phase forced {from} → {to} past {gates} unmet gate(s)"),
                )]
            } else {
                vec![Alert::new(
                    "phase_changed",
                    format!("phase moved {from} → {to}"),
                )]
            }
        }
        "/admin/migrate/rollback" => {
            let body = &body["rollback"];
            let steps = body["steps"].as_array().map_or(0, Vec::len);
            if steps == 0 {
                return Vec::new();
            }
            let (phase, target) = (&body["phase"], &body["target"]);
            let state = if body["done"] == true {
                "done"
            } else {
                "under way"
            };
            vec![Alert::new(
                "rollback",
                format!("rollback to phase {target} {state}: now in phase {phase}"),
            )]
        }
        "/admin/migrate/verify" if body["complete"] == true && body["clean"] == false => {
            let count = |field: &str| body[field]["count"].as_u64().unwrap_or(0);
            vec![Alert::new(
                "verification_differences",
                format!(
                    "verification found differences: {} missing, {} mismatched, {} extra",
                    count("missing"),
                    count("mismatched"),
                    count("extra")
                ),
            )]
        }
        _ => Vec::new(),
    }
}

/// Alerts a cron run's report calls for.
pub fn of_cron(report: &CronReport) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (name, run) in [
        ("backfill", &report.backfill),
        ("reverse sync", &report.reverse_sync),
    ] {
        if let Some(RunReport { counts, .. }) = run {
            if counts.errors > 0 {
                alerts.push(Alert::new(
                    "copy_errors",
                    format!("{name}: {} copies failed in one cron run", counts.errors),
                ));
            }
        }
    }
    // The cron runs the backfill only when it is expected to move (phase 3, settled,
    // neither paused nor done nor waiting for a pass's window: `cron::run`), and counts
    // the runs that left it in place (`Checkpoint::note_cron_run`). Raised when the count
    // reaches the threshold, so once a stall, and again only after the backfill moved.
    if let Some(run) = report
        .backfill
        .as_ref()
        .filter(|run| run.idle_runs == BACKFILL_STALL_RUNS)
    {
        alerts.push(Alert::new(
            "backfill_stalled",
            format!(
                "the backfill has not moved in {BACKFILL_STALL_RUNS} cron runs in a row (stage {})",
                run.stage.name()
            ),
        ));
    }
    if report.repair.more {
        alerts.push(Alert::new(
            "journal_growing",
            format!(
                "the repair journal holds more than a cron run repairs ({} deferred)",
                report.repair.deferred
            ),
        ));
    }
    alerts
}

/// The alert for a cron run that failed with `code`.
pub fn of_cron_failure(code: &str) -> Alert {
    Alert::new("cron_failed", format!("a cron run failed: {code}"))
}

/// The webhook's body: Slack-compatible (`text`), with the kind for other receivers.
pub fn webhook_body(worker: &str, alert: &Alert) -> Value {
    serde_json::json!({
        "text": format!("[{worker}] {}", alert.text),
        "kind": alert.kind,
    })
}
