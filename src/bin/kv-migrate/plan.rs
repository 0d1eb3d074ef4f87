//! `phase N --dry-run` and `rollback N --dry-run`: what the move would meet, read from
//! `GET /admin/migrate/status`, without acting. A rollback's steps come from the
//! worker's own plan ([`plan`]) applied to the facts the status reports, so the
//! plan and the walk agree.

use customer_kv_migration::api::{GateView, StatusView};
use customer_kv_migration::migration::state::gates::{
    unmet_gates, GateFacts, UnmetGate, VerificationFacts,
};
use customer_kv_migration::migration::state::phase_record::PhaseState;
use customer_kv_migration::migration::state::rollback::{plan, Step};
use customer_kv_migration::phase::Phase;
use serde_json::{json, Value};

use crate::cli::Force;
use crate::client::Client;
use crate::commands::{typed, Output};
use crate::outcome::{CommandResult, Failure};
use crate::render;

fn fetch_status(client: &Client) -> CommandResult<StatusView> {
    typed(&client.get("/admin/migrate/status", &[])?.success()?)
}

fn target(number: u8) -> CommandResult<Phase> {
    Phase::from_number(u64::from(number))
        .ok_or_else(|| Failure::Invalid(format!("there is no phase {number}")))
}

/// The phase record as far as the status shows it.
fn phase_state(s: &StatusView) -> PhaseState {
    PhaseState {
        phase: s.phase.current.number(),
        changed_at: s.phase.changed_at,
        changed_by: s.phase.changed_by.clone(),
        new_store_diverged: s.new_store_diverged,
        old_store_diverged: s.old_store_diverged,
        left_old_store_at: 0,
        revision: 0,
        finalized_at: s.phase.finalized_at,
        cohort: s.phase.cohort.clone(),
        routed_at: 0,
    }
}

/// The gates' facts as the status reports them.
fn gate_facts(s: &StatusView) -> GateFacts {
    let progress = |p: &customer_kv_migration::api::ProgressView| {
        format!("pass {}, {:.1}% scanned", p.pass, p.percent)
    };
    let period = s.verification_period.as_ref();
    GateFacts {
        unsettled_ms: s.phase.unsettled_ms.unwrap_or(0),
        repair_journal_size: s.repair_journal.count,
        unsettled_read_repairs: s.read_repairs_settling.count,
        backfill_complete: s.backfill.complete,
        backfill_progress: progress(&s.backfill),
        backfill_unsettled: s.backfill.unsettled_copies,
        last_full_verification: s
            .verification
            .last_full
            .as_ref()
            .map(|v| VerificationFacts {
                missing: v.missing.count,
                mismatched: v.mismatched.count,
                extra: v.extra.count,
                uncompared_chunks: v.fanout.as_ref().map_or(0, |f| f.failed.count),
            }),
        reverse_sync_complete: s.reverse_sync.vouches == Some(true),
        reverse_sync_progress: progress(&s.reverse_sync),
        verification_period_left_ms: period.map_or(0, |p| p.left_ms),
        fallback_hits_in_phase_4: period.map_or(0, |p| p.fallback_hits.count),
        fallback_keys_in_phase_4: period.map_or_else(Vec::new, |p| p.fallback_hits.keys.clone()),
        // Only phase 0 moves can be held by it (docs/design.md §16).
        inventory_unfinished: s
            .inventory
            .as_ref()
            .filter(|i| !i.complete && s.phase.current == Phase::Legacy)
            .map(|i| format!("{} keys sorted", i.listed)),
    }
}

/// Prints the verdict; exit 0 if the move would go through, 3 if not.
fn verdict(out: &Output, report: Value, human: String, refused: Option<String>) -> CommandResult {
    if out.json {
        println!("{report}");
    } else {
        println!("{human}");
    }
    match refused {
        None => Ok(()),
        Some(why) => Err(Failure::Refused(why)),
    }
}

/// Once finalized no move is possible, forced or not (docs/design.md §9).
fn refuse_if_finalized(status: &StatusView, from: Phase, to: Phase) -> CommandResult {
    match status.phase.finalized_at {
        Some(_) if from != to => Err(Failure::Refused(
            "the migration is finalized: no phase move is possible".into(),
        )),
        _ => Ok(()),
    }
}

fn gate_names(gates: &[UnmetGate]) -> String {
    gates
        .iter()
        .map(|g| g.gate.name())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn phase(client: &Client, out: &Output, to: u8, force: &Force) -> CommandResult {
    let status = fetch_status(client)?;
    let (from, to) = (status.phase.current, target(to)?);
    refuse_if_finalized(&status, from, to)?;
    // With a cohort open the one move is its completion (docs/design.md §17).
    if let Some(cohort) = status.phase.cohort.as_ref().filter(|c| c.to != to.number()) {
        return Err(Failure::Refused(format!(
            "a cohort of customers is in phase {}: `phase {}` completes it, `cohort --cancel` takes it back",
            cohort.to, cohort.to
        )));
    }
    if from == to {
        let report =
            json!({ "dryRun": true, "from": from, "to": to, "allowed": true, "unmet": [] });
        return verdict(
            out,
            report,
            format!("already in phase {}: nothing to do", to.number()),
            None,
        );
    }
    // The worker's own view of the next move each way; any other move is judged here.
    let shown = [&status.gates.forward, &status.gates.back]
        .into_iter()
        .flatten()
        .find(|g| g.to == to);
    let unmet = match shown {
        Some(GateView { unmet, .. }) => unmet.clone(),
        None => unmet_gates(&phase_state(&status), from, to, &gate_facts(&status)),
    };
    let allowed = unmet.is_empty() || force.force;
    let mut human = format!(
        "phase {} → {} (dry run, nothing changed): {}",
        from.number(),
        to.number(),
        match (unmet.is_empty(), force.force) {
            (true, _) => "allowed",
            (false, true) => "allowed, forced past the gates below",
            (false, false) => "refused",
        }
    );
    for gate in &unmet {
        human.push_str(&format!("\n  - {}: {}", gate.gate.name(), gate.reason));
    }
    let report = json!({
        "dryRun": true, "from": from, "to": to, "allowed": allowed,
        "forced": force.force && !unmet.is_empty(), "unmet": unmet,
    });
    let refused = (!allowed).then(|| {
        format!(
            "phase {} → {} would be refused: {}",
            from.number(),
            to.number(),
            gate_names(&unmet)
        )
    });
    verdict(out, report, human, refused)
}

/// The steps a rollback to `to` would take from where the status stands, and the gates
/// that would stop it, if any: the worker's own plan.
fn rollback_steps(status: &StatusView, to: Phase) -> (Vec<Step>, Option<Vec<UnmetGate>>) {
    let facts = gate_facts(status);
    plan(&phase_state(status), status.phase.current, to, &facts)
}

pub fn rollback(client: &Client, out: &Output, to: u8, force: &Force) -> CommandResult {
    let status = fetch_status(client)?;
    let (from, to) = (status.phase.current, target(to)?);
    refuse_if_finalized(&status, from, to)?;
    if let Some(cohort) = &status.phase.cohort {
        return Err(Failure::Refused(format!(
            "a cohort of customers is in phase {}: `cohort --cancel` takes it back before a rollback",
            cohort.to
        )));
    }
    if to > from {
        return Err(Failure::Invalid(format!(
            "a rollback goes down: phase {} is above the current phase {}",
            to.number(),
            from.number()
        )));
    }
    let head = format!(
        "rollback {} → {} (dry run, nothing changed)",
        from.number(),
        to.number()
    );
    if force.force && from != to {
        // A forced rollback moves straight to the target, past every gate.
        let unmet = unmet_gates(&phase_state(&status), from, to, &gate_facts(&status));
        let mut human = format!("{head}: forced straight to phase {}", to.number());
        for gate in &unmet {
            human.push_str(&format!(
                "\n  - forced past {}: {}",
                gate.gate.name(),
                gate.reason
            ));
        }
        let report = json!({
            "dryRun": true, "from": from, "to": to, "allowed": true, "forced": true,
            "steps": [Step::Move { to }], "unmet": unmet,
        });
        return verdict(out, report, human, None);
    }
    let (steps, blocked) = rollback_steps(&status, to);
    let mut human = vec![format!("{head}:")];
    let mut here = from;
    for (n, step) in steps.iter().enumerate() {
        human.push(format!("  {}. {}", n + 1, describe(step, here, &status)));
        if let Step::Move { to } = step {
            here = *to;
        }
    }
    if steps.is_empty() && blocked.is_none() {
        human.push(format!("  already in phase {}: nothing to do", to.number()));
    }
    let refused = blocked.as_ref().map(|gates| {
        human.push(format!(
            "  stops at phase {}: a gate only an operator can resolve (or --force with a reason)",
            here.number()
        ));
        for gate in gates {
            human.push(format!("    - {}: {}", gate.gate.name(), gate.reason));
        }
        format!(
            "the rollback to phase {} would stop at phase {}: {}",
            to.number(),
            here.number(),
            gate_names(gates)
        )
    });
    let report = json!({
        "dryRun": true, "from": from, "to": to, "allowed": refused.is_none(),
        "steps": steps, "blockedBy": blocked.unwrap_or_default(),
    });
    verdict(out, report, human.join("\n"), refused)
}

fn describe(step: &Step, at: Phase, status: &StatusView) -> String {
    match step {
        Step::Move { to } => format!(
            "move phase {} → {}, then wait for isolates to settle",
            at.number(),
            to.number()
        ),
        Step::Wait { ms } => format!(
            "wait {} for isolates to settle on the last move",
            render::duration(*ms)
        ),
        Step::Repair => format!(
            "drain the repair journal ({} keys out of sync)",
            status.repair_journal.count
        ),
        Step::Sync => {
            "reverse sync: copy back to the old store what was written since phase 4".to_owned()
        }
        Step::Done | Step::Blocked { .. } => String::new(),
    }
}
