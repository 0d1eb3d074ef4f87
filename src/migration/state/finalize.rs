//! Finalizing the migration (docs/design.md §9, "Finalizing"): once phase 5 has run its
//! period and every record's mapping is in the new store, the phase record is marked
//! finalized. From then on nothing reads or writes `OTP_AUTH_KV` — not even for a
//! mapping's hint — and no phase move is possible, so the old namespace can be exported
//! and unbound.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::migration::checking::emails::{self, EmailAudit};
use crate::migration::keys::{self, CONFLICT_PREFIX, JOURNAL_PREFIX, READ_REPAIR_CHECK_PREFIX};
use crate::migration::state::coordinator::{PhaseRegister, RecordOp, RecordOutcome};
use crate::migration::state::gates;
use crate::migration::state::phase_record::CurrentPhase;
use crate::phase::Phase;
use crate::store::{KvStore, Stores};

/// What the checks need besides the record.
pub struct Facts {
    pub settle_ms: u64,
    pub period_ms: u64,
    pub now_ms: u64,
    pub journal_pending: bool,
    /// Whether a read-repair copy waits for its check, which reads the old store.
    pub checks_pending: bool,
    /// Whether the backfill left conflict entries: their listing reads the old store.
    pub conflicts_left: bool,
    /// The last email audit that was not a dry run.
    pub email_audit: Option<EmailAudit>,
}

/// Reads the facts the checks need: three lists and one read.
pub async fn gather<S: KvStore>(
    stores: &Stores<S>,
    (settle_ms, period_ms, now_ms): (u64, u64, u64),
) -> Result<Facts, Error> {
    let any = |prefix| async move {
        let page = stores.new.list(prefix, None, 1).await?;
        Ok::<bool, Error>(!page.keys.is_empty())
    };
    Ok(Facts {
        settle_ms,
        period_ms,
        now_ms,
        journal_pending: any(JOURNAL_PREFIX).await?,
        checks_pending: any(READ_REPAIR_CHECK_PREFIX).await?,
        conflicts_left: any(CONFLICT_PREFIX).await?,
        email_audit: emails::load(&stores.new, keys::EMAIL_AUDIT).await?,
    })
}

/// Every reason the migration may not be finalized now; none when it may.
pub fn unmet(current: &CurrentPhase, facts: &Facts) -> Vec<String> {
    let state = &current.state;
    let mut unmet = Vec::new();
    if current.phase != Phase::Complete {
        unmet.push(format!(
            "finalizing follows phase 5; the phase is {}",
            current.phase.number()
        ));
        return unmet;
    }
    if let Some(cohort) = current.cohort_phase() {
        unmet.push(format!(
            "a cohort of customers is in phase {}: cancel it first",
            cohort.number()
        ));
        return unmet;
    }
    let unsettled = gates::unsettled_ms(state, facts.settle_ms, facts.now_ms);
    if unsettled > 0 {
        unmet.push(format!("the move to phase 5 settles in {unsettled} ms"));
    }
    let period_ends = state.changed_at + facts.period_ms;
    if facts.now_ms < period_ends {
        unmet.push(format!(
            "phase 5 runs its period (VERIFICATION_PERIOD_SECONDS) for {} ms more",
            period_ends - facts.now_ms
        ));
    }
    if facts.journal_pending {
        unmet.push("the repair journal holds entries".to_owned());
    }
    if facts.checks_pending {
        unmet.push(
            "read-repair copies wait for their check (__migration/settle/): a forced move left them; they read OTP_AUTH_KV".to_owned(),
        );
    }
    if facts.conflicts_left {
        unmet.push(
            "conflict entries are left (kv-migrate conflicts): settle or prune them while OTP_AUTH_KV can still be read".to_owned(),
        );
    }
    // Phase 5 still reads OTP_AUTH_KV for a mapping CUSTOMER_KV lacks; the email audit
    // derives every record's mapping in CUSTOMER_KV, so after one that ran wholly in
    // phase 5 no lookup needs the old store.
    let audited_in_phase_5 = facts.email_audit.as_ref().is_some_and(|audit| {
        !audit.dry_run
            && audit.completed_at.is_some()
            && audit.started_at >= state.changed_at + facts.settle_ms
    });
    let unaudited = facts
        .email_audit
        .as_ref()
        .and_then(|audit| audit.fanout.as_ref())
        .map_or(0, |chunks| chunks.failed);
    if unaudited > 0 {
        unmet.push(format!(
            "the last email audit could not check {unaudited} chunks (they kept failing): run it again (POST /admin/migrate/emails)"
        ));
    } else if !audited_in_phase_5 {
        unmet.push(
            "no email audit has run to the end since phase 5 settled (POST /admin/migrate/emails): lookups by email may still need OTP_AUTH_KV's mappings".to_owned(),
        );
    }
    unmet
}

/// Why what follows the finalize (removing the working keys or the tombstones, named by
/// `what`) may not run now, if it may not: only once finalized and settled, when no
/// isolate still serves the record from before (and so reads marks, journal entries,
/// hints or the old store behind a missing key).
pub fn settled(
    current: &CurrentPhase,
    settle_ms: u64,
    now_ms: u64,
    what: &str,
) -> Result<(), Error> {
    let Some(finalized_at) = current.state.finalized_at else {
        return Err(Error::PurgeNotAllowed(format!(
            "{what} are removed after the migration is finalized (kv-migrate finalize)"
        )));
    };
    let settles_at = finalized_at + settle_ms;
    if now_ms < settles_at {
        return Err(Error::PurgeNotAllowed(format!(
            "the finalize settles in {} ms: isolates may still serve the record from before it",
            settles_at - now_ms
        )));
    }
    Ok(())
}

/// What a finalize answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finalized {
    pub dry_run: bool,
    /// When it was finalized; absent for a dry run of one not yet finalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized_at: Option<u64>,
    /// What still stands in the way (a dry run's answer).
    pub unmet: Vec<String>,
    pub next: String,
    /// The record finalized, for the isolate's phase cache.
    #[serde(skip)]
    pub record: Option<crate::migration::state::phase_record::PhaseState>,
}

const NEXT: &str = "OTP_AUTH_KV is no longer read or written once every isolate serves the finalized record (the phase settle time): then export it (kv-migrate export --store old) to archive it, remove its binding from wrangler.toml and deploy; never roll the worker back to a version from before finalize, which would use it again";

/// Finalizes the migration, or with `dry_run` says whether it could. Refused with every
/// unmet check (409 `finalize_refused`).
pub async fn run<R: PhaseRegister>(
    register: &R,
    current: &CurrentPhase,
    facts: &Facts,
    (who, dry_run): (&str, bool),
) -> Result<Finalized, Error> {
    if let Some(at) = current.state.finalized_at {
        return Ok(Finalized {
            dry_run,
            finalized_at: Some(at),
            unmet: Vec::new(),
            next: NEXT.to_owned(),
            record: None,
        });
    }
    let unmet = unmet(current, facts);
    if dry_run {
        return Ok(Finalized {
            dry_run,
            finalized_at: None,
            next: if unmet.is_empty() {
                "finalize".to_owned()
            } else {
                "meet the checks above".to_owned()
            },
            unmet,
            record: None,
        });
    }
    if !unmet.is_empty() {
        return Err(Error::FinalizeRefused(unmet.join("; ")));
    }
    let op = RecordOp::Finalize {
        judged: current.state.clone(),
        who: who.to_owned(),
        now_ms: facts.now_ms,
    };
    let RecordOutcome::Finalized { record } = register.apply(op).await? else {
        return Err(Error::Store(crate::store::StoreError::new(
            "coordinator",
            "the coordinator answered another op",
        )));
    };
    Ok(Finalized {
        dry_run,
        finalized_at: record.finalized_at,
        unmet: Vec::new(),
        next: NEXT.to_owned(),
        record: Some(record),
    })
}
