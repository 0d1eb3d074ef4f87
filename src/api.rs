//! The admin API's answers as types, defined once: the handlers build them, and
//! `kv-migrate` reads them (docs/http-api.md shows each shape).

use serde::{Deserialize, Serialize};

use crate::migration::checking::emails::EmailAudit;
use crate::migration::checking::fanned_out::FanoutProgress;
use crate::migration::checking::inventory::Inventory;
use crate::migration::checking::verify::{Mode, Verification};
use crate::migration::copying::backfill::{Checkpoint, RunReport, Stage};
use crate::migration::copying::copy::CopyCounts;
use crate::migration::copying::fanout::{with_tally, Tally};
use crate::migration::healing::read_repair::CheckReport;
use crate::migration::healing::repair::RepairReport;
use crate::migration::state::audit::AuditEntry;
use crate::migration::state::cohort::Cohort;
use crate::migration::state::gates::{Facts, GateSettings, UnmetGate};
use crate::migration::state::phase_record::{CurrentPhase, PhaseSource};
use crate::migration::state::rollback::{Progress as RollbackProgress, Step, Taken};
use crate::migration::status::{NextMove, Status};
use crate::migration::KeySample;
use crate::phase::Phase;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseView {
    pub current: Phase,
    pub name: String,
    /// `stored`, or `default` before any move.
    pub source: String,
    pub changed_at: u64,
    pub changed_by: String,
    /// How long isolates may still run the previous phase (status only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsettled_ms: Option<u64>,
    /// When the migration was finalized (docs/design.md §9, "Finalizing").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized_at: Option<u64>,
    /// Customers served by the phase one step away (docs/design.md §17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<Cohort>,
}

impl PhaseView {
    pub fn of(current: &CurrentPhase) -> Self {
        Self {
            current: current.phase,
            name: current.phase.name().to_owned(),
            source: match current.source {
                PhaseSource::Stored => "stored",
                PhaseSource::Default => "default",
            }
            .to_owned(),
            changed_at: current.state.changed_at,
            changed_by: current.state.changed_by.clone(),
            unsettled_ms: None,
            finalized_at: current.state.finalized_at,
            cohort: current.state.cohort.clone(),
        }
    }
}

/// A backfill or reverse sync: where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressView {
    pub stage: Stage,
    pub complete: bool,
    pub paused: bool,
    pub total: u64,
    pub counts: CopyCounts,
    pub percent: f64,
    pub eta_ms: Option<u64>,
    pub started_at: Option<u64>,
    pub updated_at: u64,
    pub completed_at: Option<u64>,
    pub runs: u64,
    /// Time spent paused between `startedAt` and `updatedAt`.
    #[serde(default)]
    pub paused_ms: u64,
    pub pass: u32,
    pub pass_starts_at: Option<u64>,
    pub unsettled_copies: bool,
    /// Reverse sync only: whether one is due, and whether a finished one vouches for the
    /// old store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vouches: Option<bool>,
    /// A run fanned out on the queue: the coordinator's tally of its pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanout: Option<FanoutView>,
}

/// Chunks of the current pass, queued, in flight, done, failed and set aside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FanoutView {
    pub queued: u64,
    pub in_flight: u64,
    pub done: u64,
    pub failed: u64,
    pub parked: u64,
    pub listed_all: bool,
    pub max_in_flight: u64,
    pub records_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_keys: Vec<String>,
}

impl FanoutView {
    fn of(tally: &Tally) -> Self {
        Self {
            queued: tally.queued,
            in_flight: tally.in_flight(),
            done: tally.done,
            failed: tally.failed,
            parked: tally.parked,
            listed_all: tally.listed_all,
            max_in_flight: tally.window(),
            records_per_second: tally.records_per_second().map(|r| r.round()),
            failed_keys: tally.failed_keys.clone(),
        }
    }
}

impl ProgressView {
    pub fn of(checkpoint: &Checkpoint) -> Self {
        Self {
            stage: checkpoint.stage,
            complete: checkpoint.complete(),
            paused: checkpoint.paused,
            total: checkpoint.total,
            counts: checkpoint.counts.clone(),
            percent: (checkpoint.percent() * 10.0).round() / 10.0,
            eta_ms: checkpoint.eta_ms(),
            started_at: checkpoint.started_at,
            updated_at: checkpoint.updated_at,
            completed_at: checkpoint.completed_at,
            runs: checkpoint.runs,
            paused_ms: checkpoint.paused_ms_until(checkpoint.updated_at),
            pass: checkpoint.pass.max(1),
            pass_starts_at: checkpoint.pass_not_before,
            unsettled_copies: checkpoint.unsettled_copies(),
            needed: None,
            vouches: None,
            fanout: None,
        }
    }

    /// A run and, when it fans out, its pass's tally so far.
    pub fn of_run(checkpoint: &Checkpoint, tally: Option<&Tally>) -> Self {
        match tally {
            None => Self::of(checkpoint),
            Some(tally) => Self {
                fanout: Some(FanoutView::of(tally)),
                ..Self::of(&with_tally(checkpoint, tally))
            },
        }
    }

    /// The reverse sync: needed while the old store lacks writes made since phase 4; with
    /// its pass's tally when it fans out.
    pub fn reverse_sync(current: &CurrentPhase, facts: &Facts, tally: Option<&Tally>) -> Self {
        Self {
            needed: Some(current.state.old_store_diverged),
            vouches: Some(facts.gates.reverse_sync_complete),
            ..Self::of_run(&facts.reverse_sync, tally)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysView {
    pub count: u64,
    pub keys: Vec<String>,
}

/// `POST /admin/migrate/inventory`, and the status's `inventory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryView {
    pub complete: bool,
    /// Customer keys the new store held, deletions' markers aside.
    pub listed: u64,
    pub new_only: KeysView,
    pub same: u64,
    pub different: KeysView,
    pub started_at: u64,
    pub updated_at: u64,
    pub completed_at: Option<u64>,
}

impl InventoryView {
    pub fn of(inventory: &Inventory) -> Self {
        Self {
            complete: inventory.complete(),
            listed: inventory.listed,
            new_only: KeysView {
                count: inventory.new_only,
                keys: inventory.new_only_keys.clone(),
            },
            same: inventory.same,
            different: KeysView {
                count: inventory.different,
                keys: inventory.different_keys.clone(),
            },
            started_at: inventory.started_at,
            updated_at: inventory.updated_at,
            completed_at: inventory.completed_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationView {
    pub mode: Mode,
    pub rate: u64,
    pub complete: bool,
    pub clean: bool,
    pub listed: u64,
    pub values_compared: u64,
    pub missing: KeysView,
    pub extra: KeysView,
    pub mismatched: KeysView,
    /// Only in the new store, and there before the migration: not counted against it.
    pub preexisting: KeysView,
    pub started_at: u64,
    pub updated_at: u64,
    pub completed_at: Option<u64>,
    /// Fanned out on the queue: the chunks of values consumers compare.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout: Option<CheckFanoutView>,
}

/// The chunks of a fanned-out verification or email audit (docs/design.md §13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckFanoutView {
    pub queued: u64,
    pub in_flight: u64,
    pub done: u64,
    /// Chunks that kept failing: their keys were not checked.
    pub failed: KeysView,
}

impl CheckFanoutView {
    pub fn of(f: &FanoutProgress) -> Self {
        Self {
            queued: f.queued,
            in_flight: f.queued.saturating_sub(f.done + f.failed),
            done: f.done,
            failed: KeysView {
                count: f.failed,
                keys: f.failed_keys.clone(),
            },
        }
    }
}

impl VerificationView {
    pub fn of(v: &Verification) -> Self {
        Self {
            mode: v.mode,
            rate: v.rate,
            complete: v.complete(),
            clean: v.clean(),
            listed: v.listed,
            values_compared: v.values_compared,
            missing: KeysView {
                count: v.missing,
                keys: v.missing_keys.clone(),
            },
            extra: KeysView {
                count: v.extra,
                keys: v.extra_keys.clone(),
            },
            mismatched: KeysView {
                count: v.mismatched,
                keys: v.mismatched_keys.clone(),
            },
            preexisting: KeysView {
                count: v.preexisting,
                keys: v.preexisting_keys.clone(),
            },
            started_at: v.started_at,
            updated_at: v.updated_at,
            completed_at: v.completed_at,
            fanout: v.fanout.as_ref().map(CheckFanoutView::of),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateView {
    pub to: Phase,
    pub met: bool,
    pub unmet: Vec<UnmetGate>,
}

impl GateView {
    fn of(next: &Option<NextMove>) -> Option<Self> {
        next.as_ref().map(|m| Self {
            to: m.to,
            met: m.unmet.is_empty(),
            unmet: m.unmet.clone(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveGates {
    pub forward: Option<GateView>,
    pub back: Option<GateView>,
    /// With a cohort open: the gates of its cancel (docs/design.md §17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<GateView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationPeriodView {
    pub started_at: u64,
    pub period_ms: u64,
    pub left_ms: u64,
    pub fallback_hits: KeySample,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verifications {
    pub current: Option<VerificationView>,
    pub last_full: Option<VerificationView>,
}

/// `GET /admin/migrate/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub phase: PhaseView,
    pub gates: MoveGates,
    /// Phase changes and rollbacks among the recent audit entries, newest first.
    pub history: Vec<AuditEntry>,
    pub backfill: ProgressView,
    pub reverse_sync: ProgressView,
    /// Phase 4 only.
    pub verification_period: Option<VerificationPeriodView>,
    pub verification: Verifications,
    /// What the new store held before the migration, if an inventory was taken.
    pub inventory: Option<InventoryView>,
    pub fallback_hits: KeySample,
    pub repair_journal: KeySample,
    pub read_repairs_settling: KeySample,
    pub new_store_diverged: bool,
    pub old_store_diverged: bool,
    pub recent_audit: Vec<AuditEntry>,
}

impl StatusView {
    pub fn of(current: &CurrentPhase, settings: GateSettings, status: Status) -> Self {
        let facts = &status.facts;
        let phase = PhaseView {
            unsettled_ms: Some(facts.gates.unsettled_ms),
            ..PhaseView::of(current)
        };
        let history = status
            .recent_audit
            .iter()
            .filter(|e| {
                e.action == "phase_change"
                    || e.action == "rollback"
                    || e.action.starts_with("cohort_")
            })
            .cloned()
            .collect();
        let verification_period =
            current
                .phase
                .is_verification_period()
                .then(|| VerificationPeriodView {
                    started_at: current.state.changed_at,
                    period_ms: settings.verification_period_ms,
                    left_ms: facts.gates.verification_period_left_ms,
                    fallback_hits: facts.fallback_in_phase_4.clone(),
                });
        Self {
            phase,
            gates: MoveGates {
                forward: GateView::of(&status.forward),
                back: GateView::of(&status.back),
                cancel: GateView::of(&status.cancel),
            },
            history,
            backfill: ProgressView::of_run(&facts.checkpoint, status.fanout.as_ref()),
            reverse_sync: ProgressView::reverse_sync(
                current,
                facts,
                status.reverse_fanout.as_ref(),
            ),
            verification_period,
            verification: Verifications {
                current: status.verification.as_ref().map(VerificationView::of),
                last_full: facts.last_full.as_ref().map(VerificationView::of),
            },
            inventory: status.inventory.as_ref().map(InventoryView::of),
            fallback_hits: status.fallback_hits.clone(),
            repair_journal: facts.journal.clone(),
            read_repairs_settling: facts.settling.clone(),
            new_store_diverged: current.state.new_store_diverged,
            old_store_diverged: current.state.old_store_diverged,
            recent_audit: status.recent_audit,
        }
    }
}

/// `POST /admin/migrate/phase`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseChangeView {
    pub phase: Phase,
    pub name: String,
    pub previous: Phase,
    pub changed: bool,
    pub forced: bool,
    pub forced_gates: Vec<UnmetGate>,
}

/// `POST /admin/migrate/cohort` and `…/cohort/cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CohortView {
    /// `opened`, `widened`, `unchanged` or `cancelled`.
    pub done: String,
    pub forced: bool,
    pub forced_gates: Vec<UnmetGate>,
    /// The phase record after the step, its cohort included.
    pub phase: PhaseView,
}

/// `POST /admin/migrate/backfill` (and `progress` alone for pause, resume, reset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<RunReport>,
    pub progress: ProgressView,
}

/// `POST /admin/migrate/repair`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairView {
    pub repair: RepairReport,
    /// The read-repair checks.
    pub settle: CheckReport,
}

/// `POST /admin/migrate/emails`: the audit with its completeness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailAuditView {
    #[serde(flatten)]
    pub audit: EmailAudit,
    pub complete: bool,
    /// Fanned out on the queue: the chunks of records and mappings consumers check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanout: Option<CheckFanoutView>,
}

impl EmailAuditView {
    pub fn of(mut audit: EmailAudit) -> Self {
        let complete = audit.complete();
        let fanout = audit.fanout.take().map(|f| CheckFanoutView::of(&f));
        // Only the audit's own memory, not the operator's business.
        audit.counts.planned_repoints.clear();
        Self {
            audit,
            complete,
            fanout,
        }
    }
}

/// `POST /admin/migrate/rollback`: the `rollback` member of the answer (200, or inside
/// the 409 `rollback_in_progress` error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackView {
    pub done: bool,
    pub phase: Phase,
    pub target: Phase,
    pub steps: Vec<Taken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_sync: Option<ProgressView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair_journal: Option<KeySample>,
}

impl RollbackView {
    pub fn of(progress: &RollbackProgress, reverse_tally: Option<&Tally>) -> Self {
        let facts = progress.facts.as_ref();
        Self {
            done: progress.done(),
            phase: progress.current.phase,
            target: progress.target,
            steps: progress.steps.clone(),
            reverse_sync: facts
                .map(|f| ProgressView::reverse_sync(&progress.current, f, reverse_tally)),
            next: progress.next.clone(),
            repair_journal: progress.next.as_ref().and(facts).map(|f| f.journal.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackAnswer {
    pub rollback: RollbackView,
}

/// `POST /admin/migrate/import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportView {
    pub store: String,
    pub written: u64,
    pub already_present: u64,
    pub skipped_migration_state: u64,
}

/// `GET /admin/migrate/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPageView {
    pub entries: Vec<AuditEntry>,
    pub cursor: Option<String>,
    pub complete: bool,
}

/// `GET /admin/migrate/ready`: each binding the worker needs, touched once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyView {
    pub ready: bool,
    pub old_store: Probe,
    pub new_store: Probe,
    pub coordinator: Probe,
    pub queue: QueueBinding,
    /// How admins sign in (docs/design.md §14); not a readiness condition: local and
    /// staging setups may share the OTP service's secret.
    #[serde(default)]
    pub admin_sign_in: AdminSignInView,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminSignInView {
    /// `access`, `admin-secret`, `access-or-admin-secret` or `shared-secret`.
    pub method: String,
    /// Whether a `JWT_SECRET` admin token opens `/admin`.
    pub shares_otp_secret: bool,
}

/// One binding touched: whether it answered, and which operation failed if not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether the worker has the backfill queue (without it the cron copies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueBinding {
    pub bound: bool,
}
