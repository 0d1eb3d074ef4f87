//! JSON renderings the admin handlers share (the shapes are in docs/http-api.md).

use serde_json::{json, Value};

use crate::migration::checking::verify::Verification;
use crate::migration::copying::backfill::Checkpoint;
use crate::migration::state::gates::{Facts, GateSettings};
use crate::migration::state::phase_record::{CurrentPhase, PhaseSource};

pub fn phase(current: &CurrentPhase) -> Value {
    json!({
        "current": current.phase.number(),
        "name": current.phase.name(),
        "source": match current.source { PhaseSource::Stored => "stored", PhaseSource::Default => "default" },
        "changedAt": current.state.changed_at,
        "changedBy": current.state.changed_by,
    })
}

pub fn backfill(checkpoint: &Checkpoint) -> Value {
    json!({
        "stage": checkpoint.stage,
        "complete": checkpoint.complete(),
        "paused": checkpoint.paused,
        "total": checkpoint.total,
        "counts": checkpoint.counts,
        "percent": (checkpoint.percent() * 10.0).round() / 10.0,
        "etaMs": checkpoint.eta_ms(),
        "startedAt": checkpoint.started_at,
        "updatedAt": checkpoint.updated_at,
        "completedAt": checkpoint.completed_at,
        "runs": checkpoint.runs,
        "pass": checkpoint.pass.max(1),
        "passStartsAt": checkpoint.pass_not_before,
        "unsettledCopies": checkpoint.unsettled_copies(),
    })
}

/// The reverse sync: needed while the old store lacks writes made since phase 4.
pub fn reverse_sync(current: &CurrentPhase, facts: &Facts) -> Value {
    let mut progress = backfill(&facts.reverse_sync);
    progress["needed"] = json!(current.state.old_store_diverged);
    progress["vouches"] = json!(facts.gates.reverse_sync_complete);
    progress
}

/// The verification period of phase 4; `null` in any other phase.
pub fn verification_period(current: &CurrentPhase, settings: GateSettings, facts: &Facts) -> Value {
    if !current.phase.is_verification_period() {
        return Value::Null;
    }
    json!({
        "startedAt": current.state.changed_at,
        "periodMs": settings.verification_period_ms,
        "leftMs": facts.gates.verification_period_left_ms,
        "fallbackHits": facts.fallback_in_phase_4,
    })
}

pub fn verification(v: &Verification) -> Value {
    json!({
        "mode": v.mode,
        "rate": v.rate,
        "complete": v.complete(),
        "clean": v.clean(),
        "listed": v.listed,
        "valuesCompared": v.values_compared,
        "missing": { "count": v.missing, "keys": v.missing_keys },
        "extra": { "count": v.extra, "keys": v.extra_keys },
        "mismatched": { "count": v.mismatched, "keys": v.mismatched_keys },
        "startedAt": v.started_at,
        "updatedAt": v.updated_at,
        "completedAt": v.completed_at,
    })
}
