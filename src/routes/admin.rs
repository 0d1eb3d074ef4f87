//! The `/admin/migrate` handlers for what the migration is doing and for its phase.

use serde_json::{json, Map, Value};

use crate::auth::Caller;
use crate::http::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::migration::checking::verify::{self, Verification};
use crate::migration::copying::backfill::{self, Checkpoint};
use crate::migration::copying::copy::Direction;
use crate::migration::copying::reverse;
use crate::migration::cron;
use crate::migration::healing::fallback;
use crate::migration::keys::{self, FALLBACK_PREFIX, JOURNAL_PREFIX, READ_REPAIR_CHECK_PREFIX};
use crate::migration::state::audit::{self, AuditEntry};
use crate::migration::state::phase_record::{
    self, CurrentPhase, GateFacts, GateSettings, PhaseCache, PhaseChangeRequest, PhaseSource,
    VerificationFacts,
};
use crate::migration::{sample_keys, KeySample};
use crate::phase::Phase;
use crate::routes::verify::report_json;
use crate::store::budget::{metered, Budget};
use crate::store::{KvStore, Stores};

/// Pages of 1,000 keys a status call may list per prefix, bounding its cost.
const STATUS_LIST_PAGES: u32 = 5;
/// Keys named per category in a status answer.
const STATUS_SAMPLE_KEYS: usize = 20;
const MAX_REASON_CHARS: usize = 1_000;

/// What the gates are judged on, read from the new store.
pub struct Facts {
    pub gates: GateFacts,
    pub journal: KeySample,
    /// Read-repair copies not yet checked after the consistency window.
    pub settling: KeySample,
    pub checkpoint: Checkpoint,
    pub reverse_sync: Checkpoint,
    pub last_full: Option<Verification>,
    pub fallback_in_phase_4: KeySample,
}

fn progress(checkpoint: &Checkpoint, now_ms: u64) -> String {
    let waiting = checkpoint.waiting_ms(now_ms);
    if waiting > 0 && !checkpoint.complete() {
        return format!(
            "pass {} starts in {} s, once the last pass's copies reach every KV location",
            checkpoint.pass,
            waiting.div_ceil(1000)
        );
    }
    format!(
        "pass {}, stage {:?}, {:.1}% scanned",
        checkpoint.pass.max(1),
        checkpoint.stage,
        checkpoint.percent()
    )
}

pub async fn gather_facts<S: KvStore>(
    stores: &Stores<S>,
    current: &CurrentPhase,
    settings: GateSettings,
    now_ms: u64,
) -> Result<Facts, ApiError> {
    let journal = sample_keys(
        &stores.new,
        JOURNAL_PREFIX,
        STATUS_LIST_PAGES,
        STATUS_SAMPLE_KEYS,
        |_| true,
    )
    .await?;
    let settling = sample_keys(
        &stores.new,
        READ_REPAIR_CHECK_PREFIX,
        STATUS_LIST_PAGES,
        STATUS_SAMPLE_KEYS,
        |_| true,
    )
    .await?;
    let checkpoint = backfill::load_checkpoint(&stores.new).await?;
    let last_full = verify::load(&stores.new, keys::LAST_FULL_VERIFICATION).await?;
    // Only a verification finished after the backfill vouches for what it copied.
    let vouching = last_full.as_ref().filter(|v| {
        let done = checkpoint.completed_at;
        done.is_some_and(|done| v.completed_at.is_some_and(|at| at >= done))
    });
    let reverse_sync = backfill::load_checkpoint_of(&stores.new, Direction::Reverse).await?;
    let state = &current.state;
    let reverse_sync_complete = reverse::vouches(&reverse_sync, state);
    let in_phase_4 = current.phase.is_verification_period();
    let since = state.changed_at;
    let fallback_in_phase_4 = if in_phase_4 {
        sample_keys(
            &stores.new,
            FALLBACK_PREFIX,
            STATUS_LIST_PAGES,
            STATUS_SAMPLE_KEYS,
            |k| fallback::recorded_at(k).is_some_and(|at| at >= since),
        )
        .await?
    } else {
        KeySample::default()
    };
    let gates = GateFacts {
        unsettled_ms: phase_record::unsettled_ms(state, settings.settle_ms, now_ms),
        repair_journal_size: journal.count,
        unsettled_read_repairs: settling.count,
        backfill_complete: checkpoint.complete(),
        backfill_unsettled: checkpoint.unsettled_copies(),
        backfill_progress: progress(&checkpoint, now_ms),
        last_full_verification: vouching.map(|v| VerificationFacts {
            missing: v.missing,
            mismatched: v.mismatched,
            extra: v.extra,
        }),
        reverse_sync_complete,
        reverse_sync_progress: progress(&reverse_sync, now_ms),
        verification_period_left_ms: if in_phase_4 {
            (since + settings.verification_period_ms).saturating_sub(now_ms)
        } else {
            0
        },
        fallback_hits_in_phase_4: fallback_in_phase_4.count,
        fallback_keys_in_phase_4: fallback_in_phase_4.keys.clone(),
    };
    Ok(Facts {
        gates,
        journal,
        settling,
        checkpoint,
        reverse_sync,
        last_full,
        fallback_in_phase_4,
    })
}

pub async fn status<S: KvStore>(
    stores: &Stores<S>,
    current: &CurrentPhase,
    settings: GateSettings,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let facts = gather_facts(stores, current, settings, now_ms).await?;
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
        .filter(|e| e.action == "phase_change" || e.action == "rollback")
        .collect();
    let mut phase = phase_json(current);
    phase["unsettledMs"] = json!(facts.gates.unsettled_ms);
    Ok(ApiResponse::ok(json!({
        "phase": phase,
        "gates": next_move_gates(current, &facts.gates),
        "history": history,
        "backfill": backfill_json(&facts.checkpoint),
        "reverseSync": reverse_sync_json(current, &facts),
        "verificationPeriod": verification_period_json(current, settings, &facts),
        "verification": {
            "current": verify::load(&stores.new, keys::VERIFICATION).await?.as_ref().map(report_json),
            "lastFull": facts.last_full.as_ref().map(report_json),
        },
        "fallbackHits": fallback,
        "repairJournal": facts.journal,
        "readRepairsSettling": facts.settling,
        "newStoreDiverged": current.state.new_store_diverged,
        "oldStoreDiverged": current.state.old_store_diverged,
        "recentAudit": recent,
    })))
}

/// The reverse sync: needed while the old store lacks writes made since phase 4.
pub fn reverse_sync_json(current: &CurrentPhase, facts: &Facts) -> Value {
    let mut progress = backfill_json(&facts.reverse_sync);
    progress["needed"] = json!(current.state.old_store_diverged);
    progress["vouches"] = json!(facts.gates.reverse_sync_complete);
    progress
}

fn verification_period_json(
    current: &CurrentPhase,
    settings: GateSettings,
    facts: &Facts,
) -> Value {
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

pub fn backfill_json(checkpoint: &Checkpoint) -> Value {
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

/// The gates of a move one phase up and one phase down, so an operator sees what the
/// next step needs before trying it.
fn next_move_gates(current: &CurrentPhase, facts: &GateFacts) -> Value {
    let describe = |to: Option<Phase>| {
        to.map(|to| {
            let unmet = phase_record::unmet_gates(&current.state, current.phase, to, facts);
            json!({ "to": to.number(), "met": unmet.is_empty(), "unmet": unmet })
        })
    };
    json!({
        "forward": describe(current.phase.next()),
        "back": describe(current.phase.previous()),
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
    settings: GateSettings,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let change = parse_phase_change(request.json_object()?, "phase")?;
    let facts = gather_facts(stores, current, settings, now_ms).await?;
    let outcome = phase_record::change(
        &stores.new,
        current,
        change,
        &caller.subject,
        &facts.gates,
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

/// Entries per audit page unless `limit` says otherwise.
const AUDIT_PAGE: u32 = 50;

/// `GET /admin/migrate/audit?limit=&cursor=`: admin actions, newest first, paged.
pub async fn audit_log<S: KvStore>(
    stores: &Stores<S>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let limit = match request.query_param("limit")? {
        None => AUDIT_PAGE,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::bad_request("invalid_query", "limit must be 1 to 1000"))?,
    };
    let cursor = request.query_param("cursor")?.filter(|c| !c.is_empty());
    let page = audit::page(&stores.new, limit, cursor.as_deref()).await?;
    Ok(ApiResponse::ok(json!({
        "entries": page.entries,
        "cursor": page.cursor,
        "complete": page.cursor.is_none(),
    })))
}

/// Drains the repair journal and checks the due read-repair copies now (the cron does
/// both every minute), and audits the run.
pub async fn repair<S: KvStore>(
    stores: &Stores<S>,
    current: &CurrentPhase,
    settings: GateSettings,
    caller: &Caller,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    // One invocation's KV budget: the journal first, then as many checks as fit.
    let budget = Budget::per_invocation(0);
    let metered = metered(stores, &budget);
    let (report, settle) =
        cron::repair_and_settle(&metered, &budget, current, settings.pass_delay_ms, now_ms).await?;
    let detail = format!(
        "repaired {} of {} journaled keys ({} settling); read-repair copies: {} settled, {} corrected, {} waiting",
        report.repaired, report.examined, report.settling, settle.settled, settle.corrected, settle.waiting
    );
    audit::append(
        &stores.new,
        &AuditEntry::action(&caller.subject, "repair", now_ms, Some(detail)),
    )
    .await?;
    Ok(ApiResponse::ok(
        json!({ "repair": report, "settle": settle }),
    ))
}

/// A move to the phase in `field`, with the optional `force` and `reason`.
pub fn parse_phase_change(
    body: Map<String, Value>,
    field: &str,
) -> Result<PhaseChangeRequest, ApiError> {
    let to = body
        .get(field)
        .and_then(Value::as_u64)
        .and_then(Phase::from_number)
        .ok_or_else(|| ApiError::invalid_body(format!("{field} must be an integer from 0 to 5")))?;
    let force = optional_bool(&body, "force")?;
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
    Ok(PhaseChangeRequest {
        to,
        force,
        reason,
        rollback: false,
    })
}

/// A boolean field that defaults to false.
pub fn optional_bool(body: &Map<String, Value>, field: &str) -> Result<bool, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid_body(format!("{field} must be a boolean"))),
    }
}
