//! `POST /admin/migrate/rollback {toPhase, force?, reason?}`: walks the phase down to
//! `toPhase` as far as is safe right now, and says what is left.
//!
//! Each call takes the steps it can (moves, one reverse-sync batch, one repair pass) and
//! answers 200 once the target is reached, or 409 `rollback_in_progress` with the
//! progress and what it waits for; calling again continues. `force` with a reason moves
//! straight to the target, past every gate, and is audited as forced.

use serde_json::{json, Value};

use super::admin::{self, parse_phase_change};
use crate::auth::Caller;
use crate::http::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::migration::copying::reverse;
use crate::migration::healing::repair;
use crate::migration::state::phase_record::{
    self, CurrentPhase, GateSettings, PhaseCache, PhaseChangeRequest,
};
use crate::migration::state::rollback::{self, Step};
use crate::phase::{Move, Phase};
use crate::store::budget::{metered, Budget};
use crate::store::{KvStore, Stores};

/// Steps one call may take; a walk from 5 to 0 needs at most five moves and a sync.
const MAX_STEPS_PER_CALL: usize = 8;
/// KV operations the request spends outside the sync batch (phase, gates, moves).
const REQUEST_OVERHEAD_OPS: u32 = 150;

pub struct Context<'a, S> {
    pub stores: &'a Stores<S>,
    pub cache: &'a PhaseCache,
    pub default_phase: Phase,
    pub settings: GateSettings,
    pub now_ms: u64,
}

pub async fn run<S: KvStore>(
    ctx: &Context<'_, S>,
    current: &CurrentPhase,
    caller: &Caller,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let mut change = parse_phase_change(request.json_object()?, "toPhase")?;
    change.rollback = true;
    let target = change.to;
    if Move::new(current.phase, target).goes_forward() {
        return Err(ApiError::bad_request(
            "invalid_rollback",
            format!(
                "a rollback goes to a lower phase; the phase is {} (use /admin/migrate/phase to move forward)",
                current.phase.number()
            ),
        ));
    }
    if change.force {
        let facts = admin::gather_facts(ctx.stores, current, ctx.settings, ctx.now_ms).await?;
        let outcome = phase_record::change(
            &ctx.stores.new,
            current,
            change,
            &caller.subject,
            &facts.gates,
            ctx.now_ms,
        )
        .await?;
        ctx.cache.invalidate();
        let steps = vec![
            json!({ "step": "move", "from": outcome.from.number(), "to": outcome.to.number(), "forcedGates": outcome.forced_gates }),
        ];
        return Ok(ApiResponse::ok(json!({
            "rollback": { "done": true, "phase": target.number(), "target": target.number(), "steps": steps }
        })));
    }

    let mut current = current.clone();
    let mut taken: Vec<Value> = Vec::new();
    for _ in 0..MAX_STEPS_PER_CALL {
        let facts = admin::gather_facts(ctx.stores, &current, ctx.settings, ctx.now_ms).await?;
        let step = rollback::next_step(&current.state, current.phase, target, &facts.gates);
        match step {
            Step::Done => {
                return Ok(ApiResponse::ok(json!({
                    "rollback": {
                        "done": true,
                        "phase": current.phase.number(),
                        "target": target.number(),
                        "steps": taken,
                        "reverseSync": admin::reverse_sync_json(&current, &facts),
                    }
                })));
            }
            Step::Move { to } => {
                let to = Phase::from_number(to.into()).unwrap_or(target);
                let request = PhaseChangeRequest {
                    to,
                    force: false,
                    reason: change.reason.clone(),
                    rollback: true,
                };
                let outcome = phase_record::change(
                    &ctx.stores.new,
                    &current,
                    request,
                    &caller.subject,
                    &facts.gates,
                    ctx.now_ms,
                )
                .await?;
                ctx.cache.invalidate();
                taken.push(json!({ "step": "move", "from": outcome.from.number(), "to": outcome.to.number() }));
                current = phase_record::load(&ctx.stores.new, ctx.default_phase).await?;
            }
            Step::Repair => {
                let report = repair::drain(
                    ctx.stores,
                    current.phase,
                    ctx.settings.pass_delay_ms,
                    ctx.now_ms,
                    repair::ENTRIES_PER_RUN,
                )
                .await?;
                let progressed = report.repaired > 0;
                let wait_ms = report.wait_ms;
                taken.push(json!({ "step": "repair", "report": report }));
                if let Some(ms) = wait_ms.filter(|_| !progressed) {
                    return Ok(in_progress(&current, target, taken, &Step::Wait { ms }, &facts, "repaired keys stay in the journal until a check once KV has spread the repair to every location; call again then"));
                }
                if !progressed {
                    return Ok(in_progress(
                        &current,
                        target,
                        taken,
                        &step,
                        &facts,
                        "the repair journal could not be drained; see the repair report",
                    ));
                }
            }
            Step::Sync => {
                let budget = Budget::per_invocation(REQUEST_OVERHEAD_OPS);
                let report = reverse::advance(
                    &metered(ctx.stores, &budget),
                    &budget,
                    &current.state,
                    ctx.settings.pass_delay_ms,
                    ctx.now_ms,
                )
                .await?;
                let synced = report.as_ref().is_some_and(|r| r.complete);
                let wait_ms = report.as_ref().and_then(|r| r.wait_ms);
                taken.push(json!({ "step": "sync", "report": report }));
                if let Some(ms) = wait_ms.filter(|_| !synced) {
                    let facts =
                        admin::gather_facts(ctx.stores, &current, ctx.settings, ctx.now_ms).await?;
                    return Ok(in_progress(&current, target, taken, &Step::Wait { ms }, &facts, "the reverse sync's next pass re-reads what the last one copied once KV has spread those copies to every location; call again then"));
                }
                if !synced {
                    let facts =
                        admin::gather_facts(ctx.stores, &current, ctx.settings, ctx.now_ms).await?;
                    return Ok(in_progress(&current, target, taken, &step, &facts, "the reverse sync is copying writes made since phase 4 back to the old store; call again (the cron also advances it every minute)"));
                }
            }
            Step::Wait { .. } | Step::Blocked { .. } => {
                let why = match &step {
                    Step::Wait { .. } => "isolates may still run the previous phase; call again once it has settled",
                    _ => "a gate blocks the next move; resolve it, or force the rollback with a reason",
                };
                return Ok(in_progress(&current, target, taken, &step, &facts, why));
            }
        }
    }
    let facts = admin::gather_facts(ctx.stores, &current, ctx.settings, ctx.now_ms).await?;
    Ok(in_progress(
        &current,
        target,
        taken,
        &Step::Wait { ms: 0 },
        &facts,
        "call again to continue",
    ))
}

/// The 409 that says the rollback is under way: where it is and what it waits for.
fn in_progress(
    current: &CurrentPhase,
    target: Phase,
    steps: Vec<Value>,
    next: &Step,
    facts: &admin::Facts,
    message: &str,
) -> ApiResponse {
    let mut body = ApiError::conflict(
        "rollback_in_progress",
        format!(
            "rollback to phase {} is under way at phase {}: {message}",
            target.number(),
            current.phase.number()
        ),
    )
    .body();
    body["rollback"] = json!({
        "done": false,
        "phase": current.phase.number(),
        "target": target.number(),
        "steps": steps,
        "next": next,
        "reverseSync": admin::reverse_sync_json(current, facts),
        "repairJournal": facts.journal,
    });
    ApiResponse::json(409, body)
}
