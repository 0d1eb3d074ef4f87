//! The `/admin/migrate` handlers: what the migration is doing, and moving its phase.

use serde_json::{json, Map, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::migration::audit::{self, AuditEntry};
use crate::migration::control::{
    self, CurrentPhase, GateFacts, PhaseCache, PhaseChangeRequest, PhaseSource,
};
use crate::migration::repair;
use crate::migration::{sample_keys, FALLBACK_PREFIX, JOURNAL_PREFIX};
use crate::phase::Phase;
use crate::store::{KvStore, Stores};

/// Pages of 1,000 keys a status call may list per prefix, bounding its cost.
const STATUS_LIST_PAGES: u32 = 5;
/// Keys named per category in a status answer.
const STATUS_SAMPLE_KEYS: usize = 20;
const MAX_REASON_CHARS: usize = 1_000;

pub async fn status<S: KvStore>(
    stores: &Stores<S>,
    current: &CurrentPhase,
) -> Result<ApiResponse, ApiError> {
    let journal = sample_keys(
        &stores.new,
        JOURNAL_PREFIX,
        STATUS_LIST_PAGES,
        STATUS_SAMPLE_KEYS,
        |_| true,
    )
    .await?;
    let fallback = sample_keys(
        &stores.new,
        FALLBACK_PREFIX,
        STATUS_LIST_PAGES,
        STATUS_SAMPLE_KEYS,
        |_| true,
    )
    .await?;
    let recent = audit::recent(&stores.new, 50).await?;
    let history: Vec<_> = recent
        .iter()
        .filter(|e| e.action == "phase_change")
        .collect();
    let gates = next_move_gates(current, journal.count);
    Ok(ApiResponse::ok(json!({
        "phase": phase_json(current),
        "gates": gates,
        "history": history,
        "fallbackHits": fallback,
        "repairJournal": journal,
        "newStoreDiverged": current.state.new_store_diverged,
        "oldStoreDiverged": current.state.old_store_diverged,
        "recentAudit": recent,
    })))
}

/// The gates of a move one phase up and one phase down, so an operator sees what the
/// next step needs before trying it.
fn next_move_gates(current: &CurrentPhase, journal_size: usize) -> Value {
    let facts = GateFacts {
        repair_journal_size: journal_size,
    };
    let describe = |to: Option<Phase>| {
        to.map(|to| {
            let unmet = control::unmet_gates(&current.state, current.phase, to, &facts);
            json!({ "to": to.number(), "met": unmet.is_empty(), "unmet": unmet })
        })
    };
    let n = u64::from(current.phase.number());
    json!({
        "forward": describe(Phase::from_number(n + 1)),
        "back": describe(n.checked_sub(1).and_then(Phase::from_number)),
    })
}

pub fn phase_json(current: &CurrentPhase) -> Value {
    json!({
        "current": current.phase.number(),
        "name": current.phase.name(),
        "source": match current.source { PhaseSource::Stored => "stored", PhaseSource::Default => "default" },
        "changedAt": current.state.changed_at,
        "changedBy": current.state.changed_by,
    })
}

pub async fn change_phase<S: KvStore>(
    stores: &Stores<S>,
    cache: &PhaseCache,
    current: &CurrentPhase,
    caller: &Caller,
    request: &ApiRequest,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let change = parse_phase_change(request.json_object()?)?;
    let journal = sample_keys(&stores.new, JOURNAL_PREFIX, STATUS_LIST_PAGES, 0, |_| true).await?;
    let facts = GateFacts {
        repair_journal_size: journal.count,
    };
    let outcome = control::change(
        &stores.new,
        current,
        change,
        &caller.subject,
        &facts,
        now_ms,
    )
    .await?;
    // This isolate sees its own change at once; others within the cache lifetime.
    cache.invalidate();
    Ok(ApiResponse::ok(json!({
        "phase": outcome.to.number(),
        "name": outcome.to.name(),
        "previous": outcome.from.number(),
        "changed": outcome.from != outcome.to,
        "forced": !outcome.forced_gates.is_empty(),
        "forcedGates": outcome.forced_gates,
    })))
}

/// Drains the repair journal now (the cron does it every minute) and audits the run.
pub async fn repair<S: KvStore>(
    stores: &Stores<S>,
    caller: &Caller,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let report = repair::drain(stores, now_ms, repair::ENTRIES_PER_RUN).await?;
    let entry = AuditEntry {
        at: now_ms,
        who: caller.subject.clone(),
        action: "repair".into(),
        from: None,
        to: None,
        reason: Some(format!(
            "repaired {} of {} journaled keys",
            report.repaired, report.examined
        )),
        forced: false,
        unmet_gates: Vec::new(),
    };
    audit::append(&stores.new, &entry).await?;
    Ok(ApiResponse::ok(json!({ "repair": report })))
}

fn parse_phase_change(body: Map<String, Value>) -> Result<PhaseChangeRequest, ApiError> {
    let to = body
        .get("phase")
        .and_then(Value::as_u64)
        .and_then(Phase::from_number)
        .ok_or_else(|| ApiError::invalid_body("phase must be an integer from 0 to 5"))?;
    let force = match body.get("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid_body("force must be a boolean")),
    };
    let reason = match body.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if r.chars().count() <= MAX_REASON_CHARS => Some(r.clone()),
        Some(Value::String(_)) => {
            return Err(ApiError::invalid_body(format!(
                "reason is longer than {MAX_REASON_CHARS} characters"
            )))
        }
        Some(_) => return Err(ApiError::invalid_body("reason must be a string")),
    };
    Ok(PhaseChangeRequest { to, force, reason })
}
