//! Human-readable renderings of the worker's answers.

use serde_json::Value;

use customer_kv_migration::time::rfc3339;

const BAR_WIDTH: usize = 30;

fn at(ms: &Value) -> String {
    match ms.as_u64() {
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

/// One line for a backfill-like progress object.
fn progress(label: &str, p: &Value) -> String {
    let percent = p["percent"].as_f64().unwrap_or(0.0);
    let counts = &p["counts"];
    let eta = match p["etaMs"].as_u64() {
        Some(ms) if p["complete"] != true => format!("  ETA {}", duration(ms)),
        _ => String::new(),
    };
    let state = if p["complete"] == true {
        "complete".to_owned()
    } else if p["paused"] == true {
        "paused".to_owned()
    } else if p["pass"].as_u64().is_some_and(|pass| pass > 1) {
        format!("pass {} {}", p["pass"], p["stage"].as_str().unwrap_or("?"))
    } else {
        p["stage"].as_str().unwrap_or("?").to_owned()
    };
    format!(
        "{label:<13} {} {:>5.1}%  {state}  scanned {}/{}  copied {}  conflicts {}  errors {}{eta}",
        bar(percent),
        percent,
        counts["scanned"],
        p["total"],
        counts["copied"],
        counts["conflicts"],
        counts["errors"],
    )
}

fn gate_lines(direction: &str, gate: &Value) -> String {
    if gate.is_null() {
        return format!("  {direction}: none");
    }
    let mut text = format!(
        "  {direction} to {}: {}",
        gate["to"],
        if gate["met"] == true {
            "allowed"
        } else {
            "blocked"
        }
    );
    for unmet in gate["unmet"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "\n    - {}: {}",
            unmet["gate"].as_str().unwrap_or("?"),
            unmet["reason"].as_str().unwrap_or("")
        ));
    }
    text
}

fn key_sample(label: &str, sample: &Value) -> String {
    let keys: Vec<&str> = sample["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let more = if sample["exact"] == false { "+" } else { "" };
    if keys.is_empty() {
        format!("{label}: {}{more}", sample["count"])
    } else {
        format!("{label}: {}{more} ({})", sample["count"], keys.join(", "))
    }
}

fn audit_line(entry: &Value) -> String {
    let mut line = format!(
        "  {}  {:<10} {}",
        at(&entry["at"]),
        entry["who"].as_str().unwrap_or("?"),
        entry["action"].as_str().unwrap_or("?")
    );
    if entry["from"].is_number() {
        line.push_str(&format!(" {}→{}", entry["from"], entry["to"]));
    }
    if entry["forced"] == true {
        line.push_str(" FORCED");
        if let Some(gates) = entry["unmetGates"].as_array() {
            let names: Vec<&str> = gates.iter().filter_map(Value::as_str).collect();
            line.push_str(&format!(" [{}]", names.join(", ")));
        }
    }
    if let Some(reason) = entry["reason"].as_str() {
        line.push_str(&format!(" — {reason}"));
    }
    line
}

fn verification_line(v: &Value) -> String {
    if v.is_null() {
        return "none".into();
    }
    format!(
        "{} {} at {}: listed {}, missing {}, mismatched {}, extra {}",
        v["mode"].as_str().unwrap_or("?"),
        if v["complete"] != true {
            "running"
        } else if v["clean"] == true {
            "clean"
        } else {
            "DIFFERENCES"
        },
        at(&v["completedAt"]),
        v["listed"],
        v["missing"]["count"],
        v["mismatched"]["count"],
        v["extra"]["count"],
    )
}

pub fn status(s: &Value) -> String {
    let phase = &s["phase"];
    let mut out = vec![format!(
        "phase {} {} ({}; changed {} by {})",
        phase["current"],
        phase["name"].as_str().unwrap_or("?"),
        phase["source"].as_str().unwrap_or("?"),
        at(&phase["changedAt"]),
        phase["changedBy"]
            .as_str()
            .filter(|w| !w.is_empty())
            .unwrap_or("nobody"),
    )];
    out.push("gates:".into());
    out.push(gate_lines("forward", &s["gates"]["forward"]));
    out.push(gate_lines("back", &s["gates"]["back"]));
    out.push(progress("backfill", &s["backfill"]));
    let phase_number = phase["current"].as_u64().unwrap_or(0);
    if s["reverseSync"]["needed"] == true && phase_number >= 4 {
        out.push(
            "reverse sync  due after a rollback: the old store lacks writes made since phase 4"
                .into(),
        );
    } else if s["reverseSync"]["needed"] == true {
        out.push(progress("reverse sync", &s["reverseSync"]));
    } else {
        out.push("reverse sync  not needed (the old store has every write)".into());
    }
    let period = &s["verificationPeriod"];
    if !period.is_null() {
        out.push(format!(
            "phase 4 period: {} left; {}",
            duration(period["leftMs"].as_u64().unwrap_or(0)),
            key_sample("fallback hits since phase 4", &period["fallbackHits"])
        ));
    }
    out.push(format!(
        "verification: last full {}",
        verification_line(&s["verification"]["lastFull"])
    ));
    if !s["verification"]["current"].is_null() {
        out.push(format!(
            "              latest {}",
            verification_line(&s["verification"]["current"])
        ));
    }
    out.push(key_sample("repair journal", &s["repairJournal"]));
    if !s["readRepairsSettling"].is_null() {
        out.push(key_sample(
            "read-repair copies awaiting their check",
            &s["readRepairsSettling"],
        ));
    }
    out.push(key_sample("fallback hits", &s["fallbackHits"]));
    out.push("recent audit:".into());
    for entry in s["recentAudit"].as_array().into_iter().flatten().take(8) {
        out.push(audit_line(entry));
    }
    out.join("\n")
}

/// One line per `status --watch` redraw when output is not a terminal.
pub fn progress_line(s: &Value) -> String {
    let running = if s["reverseSync"]["needed"] == true && s["reverseSync"]["vouches"] != true {
        progress("reverse sync", &s["reverseSync"])
    } else {
        progress("backfill", &s["backfill"])
    };
    format!("phase {} | {running}", s["phase"]["current"])
}

/// Whether `status --watch` has nothing left to watch: the backfill is complete (or
/// paused), and no reverse sync is still needed.
pub fn nothing_running(s: &Value) -> bool {
    let backfill_idle = s["backfill"]["complete"] == true || s["backfill"]["paused"] == true;
    let sync_idle = s["reverseSync"]["needed"] != true || s["reverseSync"]["vouches"] == true;
    backfill_idle && sync_idle
}

pub fn phase_change(a: &Value) -> String {
    let mut text = if a["changed"] == true {
        format!(
            "phase {} → {} ({})",
            a["previous"],
            a["phase"],
            a["name"].as_str().unwrap_or("?")
        )
    } else {
        format!("already in phase {}", a["phase"])
    };
    if a["forced"] == true {
        let gates: Vec<&str> = a["forcedGates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["gate"].as_str())
            .collect();
        text.push_str(&format!("\nforced past: {}", gates.join(", ")));
    }
    text
}

pub fn backfill_batch(a: &Value) -> String {
    let r = &a["report"];
    let head = match r["skippedBecause"].as_str() {
        Some(why) => format!("batch skipped: {why}"),
        None => format!(
            "batch{}: scanned {}, copied {}, skipped {}, conflicts {}, corrupt {}, errors {} in {} KV operations",
            if r["dryRun"] == true { " (dry run)" } else { "" },
            r["counts"]["scanned"],
            r["counts"]["copied"],
            r["counts"]["skipped"],
            r["counts"]["conflicts"],
            r["counts"]["corrupt"],
            r["counts"]["errors"],
            r["operations"],
        ),
    };
    format!("{head}\n{}", progress("backfill", &a["progress"]))
}

pub fn verification(v: &Value) -> String {
    let mut out = vec![verification_line(v)];
    for kind in ["missing", "mismatched", "extra"] {
        let keys: Vec<&str> = v[kind]["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !keys.is_empty() {
            out.push(format!("  {kind}: {}", keys.join(", ")));
        }
    }
    out.join("\n")
}

pub fn email_audit(a: &Value) -> String {
    format!(
        "email mappings{}: derived {}, repointed {}, re-keyed {}; {} conflicts, {} orphans",
        if a["dryRun"] == true {
            " (dry run: nothing written)"
        } else {
            ""
        },
        a["derived"],
        a["repointed"],
        a["rekeyed"],
        a["conflicts"],
        a["orphans"],
    )
}

pub fn rollback(a: &Value) -> String {
    let r = &a["rollback"];
    let mut out = Vec::new();
    for step in r["steps"].as_array().into_iter().flatten() {
        out.push(match step["step"].as_str() {
            Some("move") => format!("moved phase {} → {}", step["from"], step["to"]),
            Some("sync") => {
                let report = &step["report"];
                format!(
                    "reverse sync: scanned {}, copied back {}, errors {}",
                    report["counts"]["scanned"],
                    report["counts"]["copied"],
                    report["counts"]["errors"]
                )
            }
            Some("repair") => format!("repair: {}", step["report"]),
            _ => step.to_string(),
        });
    }
    if r["done"] == true {
        out.push(format!("rollback complete: phase {}", r["phase"]));
    } else {
        let next = &r["next"];
        out.push(format!(
            "rollback to {} under way at phase {}; next: {}",
            r["target"],
            r["phase"],
            match next["step"].as_str() {
                Some("wait") => format!(
                    "waiting {} for isolates to settle",
                    duration(next["ms"].as_u64().unwrap_or(0))
                ),
                Some("sync") => progress("reverse sync", &r["reverseSync"]),
                Some("blocked") => a["error"]["message"]
                    .as_str()
                    .unwrap_or("blocked")
                    .to_owned(),
                other => other.unwrap_or("?").to_owned(),
            }
        ));
    }
    out.join("\n")
}

pub fn import(t: &Value) -> String {
    format!(
        "imported into the {} store: {} written, {} already there, {} migration-state keys skipped",
        t["store"].as_str().unwrap_or("?"),
        t["written"],
        t["alreadyPresent"],
        t["skippedMigrationState"]
    )
}

pub fn audit_page(page: &Value) -> String {
    let entries: Vec<String> = page["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(audit_line)
        .collect();
    if entries.is_empty() {
        "no audit entries".into()
    } else {
        entries.join("\n")
    }
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
