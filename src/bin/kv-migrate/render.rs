//! Human-readable renderings of the worker's answers, read as the library's types
//! (`customer_kv_migration::api`).

use customer_kv_migration::api::{
    AuditPageView, BatchView, EmailAuditView, FanoutView, GateView, ImportView, InventoryView,
    PhaseChangeView, ProgressView, RollbackAnswer, StatusView, VerificationView,
};
use customer_kv_migration::migration::checking::conflicts::{ConflictKind, ConflictPage, Side};
use customer_kv_migration::migration::copying::copy::CopyCounts;
use customer_kv_migration::migration::state::audit::AuditEntry;
use customer_kv_migration::migration::state::rollback::{Step, Taken};
use customer_kv_migration::migration::state::tombstones::Purged as PurgedTombstones;
use customer_kv_migration::migration::state::working_keys::Purged as PurgedWorkingKeys;
use customer_kv_migration::migration::KeySample;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::time::rfc3339;

const BAR_WIDTH: usize = 30;

fn at(ms: Option<u64>) -> String {
    match ms {
        Some(0) | None => "never".into(),
        Some(ms) => rfc3339(ms),
    }
}

/// `1h02m`, `3m05s`, `12s`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn bar(percent: f64) -> String {
    let filled = ((percent.clamp(0.0, 100.0) / 100.0) * BAR_WIDTH as f64).round() as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR_WIDTH - filled))
}

fn stage_name(p: &ProgressView) -> String {
    serde_json::to_value(p.stage)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// One line for a backfill-like progress.
fn progress(label: &str, p: &ProgressView) -> String {
    let eta = match p.eta_ms {
        // The worker's estimate counts working time only and what the current pass has
        // left; a paused backfill has none.
        Some(ms) if !p.complete && !p.paused => format!("  ETA {}", duration(ms)),
        _ => String::new(),
    };
    let state = if p.complete {
        "complete".to_owned()
    } else if p.paused {
        "paused".to_owned()
    } else if p.pass > 1 {
        format!("pass {} {}", p.pass, stage_name(p))
    } else {
        stage_name(p)
    };
    let counts = &p.counts;
    let line = format!(
        "{label:<13} {} {:>5.1}%  {state}  scanned {}/{}  copied {}  conflicts {}  errors {}{eta}",
        bar(p.percent),
        p.percent,
        counts.scanned,
        p.total,
        counts.copied,
        counts.conflicts,
        counts.errors,
    );
    let line = match &p.fanout {
        Some(fanout) if !p.complete => format!("{line}\n{:<13} {}", "", chunks(fanout)),
        _ => line,
    };
    format!("{line}{}", corrupt(counts))
}

/// The corrupt values found, by key (docs/design.md §6), when there are any.
fn corrupt(counts: &CopyCounts) -> String {
    if counts.corrupt == 0 {
        return String::new();
    }
    let unnamed = counts
        .corrupt
        .saturating_sub(counts.corrupt_keys.len() as u64);
    let more = if unnamed > 0 {
        format!(" and {unnamed} more")
    } else {
        String::new()
    };
    format!(
        "\n{:<13} corrupt values ({}, copied as they are): {}{more}",
        "",
        counts.corrupt,
        counts.corrupt_keys.join(", ")
    )
}

/// The chunks of a fanned-out pass (docs/design.md §13).
fn chunks(f: &FanoutView) -> String {
    let rate = f
        .records_per_second
        .map_or(String::new(), |r| format!("  {r:.0} records/s"));
    let listing = if f.listed_all { "" } else { ", listing" };
    let mut text = format!(
        "chunks: {} queued{listing}, {} in flight (window {}), {} done, {} failed, {} set aside{rate}",
        f.queued, f.in_flight, f.max_in_flight, f.done, f.failed, f.parked
    );
    if !f.failed_keys.is_empty() {
        text.push_str(&format!(
            "\n{:<13} failed keys: {} (kv-migrate backfill retry-failed)",
            "",
            f.failed_keys.join(", ")
        ));
    }
    text
}

fn gate_lines(direction: &str, gate: Option<&GateView>) -> String {
    let Some(gate) = gate else {
        return format!("  {direction}: none");
    };
    let mut text = format!(
        "  {direction} to {}: {}",
        gate.to.number(),
        if gate.met { "allowed" } else { "blocked" }
    );
    for unmet in &gate.unmet {
        text.push_str(&format!("\n    - {}: {}", unmet.gate.name(), unmet.reason));
    }
    text
}

fn key_sample(label: &str, sample: &KeySample) -> String {
    let more = if sample.exact { "" } else { "+" };
    if sample.keys.is_empty() {
        format!("{label}: {}{more}", sample.count)
    } else {
        format!(
            "{label}: {}{more} ({})",
            sample.count,
            sample.keys.join(", ")
        )
    }
}

fn audit_line(entry: &AuditEntry) -> String {
    let mut line = format!(
        "  {}  {:<10} {}",
        at(Some(entry.at)),
        entry.who,
        entry.action
    );
    if let (Some(from), Some(to)) = (entry.from, entry.to) {
        line.push_str(&format!(" {from}→{to}"));
    }
    if entry.forced {
        line.push_str(" FORCED");
        if !entry.unmet_gates.is_empty() {
            line.push_str(&format!(" [{}]", entry.unmet_gates.join(", ")));
        }
    }
    if let Some(reason) = &entry.reason {
        line.push_str(&format!(" — {reason}"));
    }
    line
}

fn verification_line(v: Option<&VerificationView>) -> String {
    let Some(v) = v else {
        return "none".into();
    };
    let mode = serde_json::to_value(v.mode)
        .ok()
        .and_then(|m| m.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    format!(
        "{mode} {} at {}: listed {}, missing {}, mismatched {}, extra {}",
        if !v.complete {
            "running"
        } else if v.clean {
            "clean"
        } else {
            "DIFFERENCES"
        },
        at(v.completed_at),
        v.listed,
        v.missing.count,
        v.mismatched.count,
        v.extra.count,
    ) + &if v.preexisting.count > 0 {
        format!(" (and {} there before the migration)", v.preexisting.count)
    } else {
        String::new()
    } + &match &v.fanout {
        Some(f) if f.failed.count > 0 => format!(
            "; values of {} chunks NOT COMPARED (they kept failing)",
            f.failed.count
        ),
        Some(f) => format!("; {} of {} chunks compared", f.done, f.queued),
        None => String::new(),
    }
}

pub fn status(s: &StatusView) -> String {
    let phase = &s.phase;
    let mut out = vec![format!(
        "phase {} {} ({}; changed {} by {})",
        phase.current.number(),
        phase.name,
        phase.source,
        at(Some(phase.changed_at)),
        if phase.changed_by.is_empty() {
            "nobody"
        } else {
            &phase.changed_by
        },
    )];
    if let Some(cohort) = &phase.cohort {
        out.push(format!(
            "cohort: {} (opened {}, widened {}); `phase {}` completes it, `cohort --cancel` takes it back",
            cohort.describe(),
            at(Some(cohort.started_at)),
            at(Some(cohort.widened_at)),
            cohort.to
        ));
    }
    if let Some(finalized) = phase.finalized_at {
        out.push(format!(
            "finalized {}: OTP_AUTH_KV is no longer read or written",
            at(Some(finalized))
        ));
    }
    out.push("gates:".into());
    out.push(gate_lines("forward", s.gates.forward.as_ref()));
    out.push(gate_lines("back", s.gates.back.as_ref()));
    if s.gates.cancel.is_some() {
        out.push(gate_lines("cohort cancel", s.gates.cancel.as_ref()));
    }
    out.push(progress("backfill", &s.backfill));
    let sync_needed = s.reverse_sync.needed == Some(true);
    if sync_needed && skips_old_store(phase.current) {
        out.push(
            "reverse sync  due after a rollback: the old store lacks writes made since phase 4"
                .into(),
        );
    } else if sync_needed {
        out.push(progress("reverse sync", &s.reverse_sync));
    } else {
        out.push("reverse sync  not needed (the old store has every write)".into());
    }
    if let Some(period) = &s.verification_period {
        out.push(format!(
            "phase 4 period: {} left; {}",
            duration(period.left_ms),
            key_sample("fallback hits since phase 4", &period.fallback_hits)
        ));
    }
    out.push(format!(
        "verification: last full {}",
        verification_line(s.verification.last_full.as_ref())
    ));
    if let Some(current) = &s.verification.current {
        out.push(format!(
            "              latest {}",
            verification_line(Some(current))
        ));
    }
    out.push(key_sample("repair journal", &s.repair_journal));
    out.push(key_sample(
        "read-repair copies awaiting their check",
        &s.read_repairs_settling,
    ));
    out.push(key_sample("fallback hits", &s.fallback_hits));
    out.push("recent audit:".into());
    for entry in s.recent_audit.iter().take(8) {
        out.push(audit_line(entry));
    }
    out.join("\n")
}

/// Whether a reverse sync is due and not yet vouching for the old store.
fn syncing(s: &StatusView) -> bool {
    s.reverse_sync.needed == Some(true) && s.reverse_sync.vouches != Some(true)
}

/// One line per `status --watch` redraw when output is not a terminal.
pub fn progress_line(s: &StatusView) -> String {
    let running = if syncing(s) {
        progress("reverse sync", &s.reverse_sync)
    } else {
        progress("backfill", &s.backfill)
    };
    let running: Vec<&str> = running.lines().map(str::trim).collect();
    format!(
        "phase {} | {}",
        s.phase.current.number(),
        running.join(" | ")
    )
}

/// Whether `status --watch` has nothing left to watch: the backfill is complete (or
/// paused), and no reverse sync is still needed.
pub fn nothing_running(s: &StatusView) -> bool {
    (s.backfill.complete || s.backfill.paused) && !syncing(s)
}

pub fn phase_change(a: &PhaseChangeView) -> String {
    let mut text = if a.changed {
        format!(
            "phase {} → {} ({})",
            a.previous.number(),
            a.phase.number(),
            a.name
        )
    } else {
        format!("already in phase {}", a.phase.number())
    };
    if a.forced {
        let gates: Vec<&str> = a.forced_gates.iter().map(|g| g.gate.name()).collect();
        text.push_str(&format!("\nforced past: {}", gates.join(", ")));
    }
    text
}

pub fn backfill_batch(a: &BatchView) -> String {
    let head = match &a.report {
        None => String::new(),
        Some(r) => match &r.skipped_because {
            Some(why) => format!("batch skipped: {why}\n"),
            None => format!(
                "batch{}: scanned {}, copied {}, skipped {}, conflicts {}, corrupt {}, errors {} in {} KV operations\n",
                if r.dry_run { " (dry run)" } else { "" },
                r.counts.scanned,
                r.counts.copied,
                r.counts.skipped,
                r.counts.conflicts,
                r.counts.corrupt,
                r.counts.errors,
                r.operations,
            ),
        },
    };
    format!("{head}{}", progress("backfill", &a.progress))
}

pub fn verification(v: &VerificationView) -> String {
    let mut out = vec![verification_line(Some(v))];
    for (kind, keys) in [
        ("missing", &v.missing.keys),
        ("mismatched", &v.mismatched.keys),
        ("extra", &v.extra.keys),
        (
            "not compared",
            &v.fanout
                .as_ref()
                .map_or_else(Vec::new, |f| f.failed.keys.clone()),
        ),
    ] {
        if !keys.is_empty() {
            out.push(format!("  {kind}: {}", keys.join(", ")));
        }
    }
    out.join("\n")
}

pub fn inventory(i: &InventoryView) -> String {
    let mut out = vec![format!(
        "inventory {}: {} customer keys in CUSTOMER_KV; {} only there, {} equal to OTP_AUTH_KV's, {} different",
        if i.complete { "complete" } else { "running" },
        i.listed,
        i.new_only.count,
        i.same,
        i.different.count,
    )];
    for (kind, keys) in [
        ("only there", &i.new_only.keys),
        ("different", &i.different.keys),
    ] {
        if !keys.is_empty() {
            out.push(format!("  {kind}: {}", keys.join(", ")));
        }
    }
    if i.new_only.count + i.different.count > 0 {
        out.push(
            "  the migration leaves these as they are: the backfill never overwrites them and \
             the verification counts them apart"
                .into(),
        );
    }
    out.join("\n")
}

pub fn email_audit(a: &EmailAuditView) -> String {
    let audit = &a.audit;
    let counts = &audit.counts;
    let line = format!(
        "email mappings{}: derived {}, repointed {}, re-keyed {}; {} conflicts, {} orphans",
        if audit.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        },
        counts.derived,
        counts.repointed,
        counts.rekeyed,
        counts.conflicts,
        counts.orphans,
    );
    match &a.fanout {
        Some(f) if f.failed.count > 0 => format!(
            "{line}\n  {} chunks NOT AUDITED (they kept failing): {}",
            f.failed.count,
            f.failed.keys.join(", ")
        ),
        Some(f) => format!("{line}; {} of {} chunks audited", f.done, f.queued),
        None => line,
    }
}

/// A rollback's answer; `blocked_by` is the error message of a 409 that names the gates.
pub fn rollback(a: &RollbackAnswer, blocked_by: Option<&str>) -> String {
    let r = &a.rollback;
    let mut out = Vec::new();
    for step in &r.steps {
        out.push(match step {
            Taken::Move { from, to, .. } => {
                format!("moved phase {} → {}", from.number(), to.number())
            }
            Taken::Sync { report } => {
                let counts = report
                    .as_ref()
                    .map(|r| r.counts.clone())
                    .unwrap_or_default();
                format!(
                    "reverse sync: scanned {}, copied back {}, errors {}",
                    counts.scanned, counts.copied, counts.errors
                )
            }
            Taken::Repair { report } => format!(
                "repair: {}",
                serde_json::to_string(report).unwrap_or_default()
            ),
        });
    }
    if r.done {
        out.push(format!("rollback complete: phase {}", r.phase.number()));
    } else {
        let next = match &r.next {
            Some(Step::Wait { ms }) => format!("waiting {} for isolates to settle", duration(*ms)),
            Some(Step::Sync) => match &r.reverse_sync {
                Some(sync) => progress("reverse sync", sync),
                None => "sync".into(),
            },
            Some(Step::Blocked { .. }) => blocked_by.unwrap_or("blocked").to_owned(),
            Some(Step::Move { to }) => format!("move to phase {}", to.number()),
            Some(Step::Repair) => "repair".into(),
            Some(Step::Done) | None => "?".into(),
        };
        out.push(format!(
            "rollback to {} under way at phase {}; next: {next}",
            r.target.number(),
            r.phase.number(),
        ));
    }
    out.join("\n")
}

pub fn import(t: &ImportView) -> String {
    format!(
        "imported into the {} store: {} written, {} already there, {} migration-state keys skipped",
        t.store, t.written, t.already_present, t.skipped_migration_state
    )
}

pub fn audit_page(page: &AuditPageView) -> String {
    if page.entries.is_empty() {
        return "no audit entries".into();
    }
    let lines: Vec<String> = page.entries.iter().map(audit_line).collect();
    lines.join("\n")
}

pub fn conflicts(page: &ConflictPage) -> String {
    if page.conflicts.is_empty() {
        return "no conflicts".into();
    }
    let blocks: Vec<String> = page
        .conflicts
        .iter()
        .map(|c| {
            let why = match c.kind {
                ConflictKind::Unordered => "versions cannot be ordered",
                ConflictKind::Preexisting => "the new store held it before the migration",
            };
            let state = if c.settled { "settled" } else { "open" };
            format!(
                "{} ({why}; found {}; {state})\n  old: {}\n  new: {}",
                c.key,
                at(Some(c.found_at)),
                side(&c.old),
                side(&c.new)
            )
        })
        .collect();
    blocks.join("\n")
}

/// A page of email conflicts and orphans.
pub fn email_issues(
    page: &customer_kv_migration::migration::checking::email_issues::IssuePage,
) -> String {
    use customer_kv_migration::migration::checking::email_issues::IssueKind;
    let lines: Vec<String> = page
        .issues
        .iter()
        .map(|issue| match issue.kind {
            IssueKind::Conflict => format!(
                "{}: conflict, held by {} (found {})",
                issue.key,
                issue.customers.join(" and "),
                at(Some(issue.found_at))
            ),
            IssueKind::Orphan => format!(
                "{}: orphan, names {} which does not exist (found {})",
                issue.key,
                issue.customers.join(", "),
                at(Some(issue.found_at))
            ),
        })
        .collect();
    match lines.is_empty() {
        true => "no email conflicts or orphans on this page".into(),
        false => lines.join("\n"),
    }
}

/// A finalize, or its dry run.
pub fn finalized(done: &customer_kv_migration::migration::state::finalize::Finalized) -> String {
    match (done.finalized_at, done.unmet.is_empty()) {
        (Some(at_ms), _) => format!("finalized {}; {}", at(Some(at_ms)), done.next),
        (None, true) => "ready to finalize: every check is met".to_owned(),
        (None, false) => format!("not ready to finalize:\n  {}", done.unmet.join("\n  ")),
    }
}

/// A cohort step, done (docs/design.md §17).
pub fn cohort(done: &customer_kv_migration::api::CohortView) -> String {
    let mut text = match &done.phase.cohort {
        Some(cohort) => format!(
            "cohort {}: {}; everyone else in phase {}",
            done.done,
            cohort.describe(),
            done.phase.current.number()
        ),
        None => format!(
            "cohort {}: everyone in phase {}",
            done.done,
            done.phase.current.number()
        ),
    };
    if done.forced {
        let names: Vec<&str> = done.forced_gates.iter().map(|g| g.gate.name()).collect();
        text.push_str(&format!("\nforced past: {}", names.join(", ")));
    }
    text
}

/// A purge of the new store, done.
pub fn purged(run: &customer_kv_migration::migration::state::purge::Purge) -> String {
    let verb = if run.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut text = format!(
        "CUSTOMER_KV: {} keys listed; {verb} {}; kept {} the inventory found before the migration and {} it cannot account for",
        run.listed, run.removed, run.kept, run.unexplained
    );
    if !run.unexplained_keys.is_empty() {
        text.push_str(&format!(
            "\n  unexplained (kept): {}",
            run.unexplained_keys.join(", ")
        ));
    }
    text
}

/// A settle's page: a line per key.
pub fn settled(page: &serde_json::Value) -> String {
    let results = page["results"].as_array().cloned().unwrap_or_default();
    let lines: Vec<String> = results
        .iter()
        .map(|r| {
            let text = |field: &str| r[field].as_str().unwrap_or_default().to_owned();
            let how = match (text("chose").as_str(), text("reason").as_str()) {
                ("", "") => String::new(),
                (chose, "") => format!(" ({chose})"),
                (_, reason) => format!(": {reason}"),
            };
            format!(
                "{}: {}{how}",
                text("key"),
                text("outcome").replace('_', " ")
            )
        })
        .collect();
    lines.join("\n")
}

fn side(side: &Side) -> String {
    match (&side.value, &side.metadata) {
        (None, _) => "(absent)".into(),
        (Some(value), None) => value.to_string(),
        (Some(value), Some(metadata)) => format!("{value} metadata {metadata}"),
    }
}

/// Whether the phase's writes skip the old store (so a due reverse sync cannot run yet).
fn skips_old_store(phase: Phase) -> bool {
    !phase.writes_to(customer_kv_migration::store::StoreName::Old)
}

/// The totals of removing the migration's working keys after the finalize.
pub fn purged_working_keys(p: &PurgedWorkingKeys) -> String {
    let verb = if p.dry_run { "would remove" } else { "removed" };
    format!(
        "working keys: {verb} {} of {} listed; kept {} (the phase record and the audit)\n",
        p.removed, p.listed, p.kept
    )
}

/// The totals of removing the tombstones after the finalize.
pub fn purged_tombstones(p: &PurgedTombstones) -> String {
    let verb = if p.dry_run { "would remove" } else { "removed" };
    let mut text = format!(
        "tombstones: {verb} {} of {} found among {} customer keys\n",
        p.removed, p.tombstones, p.listed
    );
    for (count, what) in [
        (
            p.recreated,
            "created again before their turn: the records stay",
        ),
        (p.gone, "already gone"),
        (p.unreachable, "under keys no request can name: left"),
        (p.failed, "failed: run the purge again"),
    ] {
        if count > 0 {
            text.push_str(&format!("  {count} {what}\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_bars_read_naturally() {
        assert_eq!(duration(5_000), "5s");
        assert_eq!(duration(185_000), "3m05s");
        assert_eq!(duration(3_720_000), "1h02m");
        assert_eq!(bar(50.0), format!("[{}{}]", "#".repeat(15), ".".repeat(15)));
        assert_eq!(bar(250.0), format!("[{}]", "#".repeat(30)));
    }
}
