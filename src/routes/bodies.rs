//! The bodies of the admin requests, as typed input: unknown fields are refused, every
//! optional field may be absent or `null`, and ranges are checked here, at the edge.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::domain::CustomerId;
use crate::http::ApiError;
use crate::migration::checking::resolve::Rule;
use crate::migration::checking::settling::{Scope, MAX_KEYS};
use crate::migration::checking::verify::{Requested, VerifyRequest};
use crate::migration::copying::backfill::RunOptions;
use crate::migration::state::cohort;
use crate::migration::state::phase_record::{CohortRequest, CohortStep, PhaseChangeRequest};
use crate::phase::Phase;

const MAX_REASON_CHARS: usize = 1_000;
const MAX_RECORDS_LIMIT: u64 = 1_000_000;

/// `POST /admin/migrate/phase`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PhaseMove {
    phase: i64,
    force: Option<bool>,
    reason: Option<String>,
}

impl PhaseMove {
    pub fn into_request(self) -> Result<PhaseChangeRequest, ApiError> {
        change_request("phase", self.phase, self.force, self.reason, false)
    }
}

/// `POST /admin/migrate/rollback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rollback {
    to_phase: i64,
    force: Option<bool>,
    reason: Option<String>,
    dry_run: Option<bool>,
}

impl Rollback {
    pub fn dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }

    pub fn into_request(self) -> Result<PhaseChangeRequest, ApiError> {
        change_request("toPhase", self.to_phase, self.force, self.reason, true)
    }
}

fn change_request(
    field: &str,
    phase: i64,
    force: Option<bool>,
    reason: Option<String>,
    rollback: bool,
) -> Result<PhaseChangeRequest, ApiError> {
    let to = u64::try_from(phase)
        .ok()
        .and_then(Phase::from_number)
        .ok_or_else(|| ApiError::invalid_body(format!("{field} must be an integer from 0 to 5")))?;
    Ok(PhaseChangeRequest {
        to,
        force: force.unwrap_or(false),
        reason: checked_reason(reason)?,
        rollback,
    })
}

/// `POST /admin/migrate/cohort`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CohortWiden {
    to: i64,
    percent: Option<f64>,
    customers: Option<Vec<String>>,
    force: Option<bool>,
    reason: Option<String>,
}

impl CohortWiden {
    pub fn into_request(self) -> Result<CohortRequest, ApiError> {
        let to = change_request("to", self.to, None, None, false)?.to;
        let share = cohort::share_of_percent(self.percent.unwrap_or(0.0))
            .map_err(ApiError::invalid_body)?;
        let customers = self.customers.unwrap_or_default();
        if customers.len() > cohort::MAX_NAMED_CUSTOMERS {
            return Err(ApiError::invalid_body(format!(
                "customers names at most {} ids; use percent for more",
                cohort::MAX_NAMED_CUSTOMERS
            )));
        }
        // The message never repeats an id: a legacy id may be an address.
        let customers = customers
            .into_iter()
            .enumerate()
            .map(|(n, raw)| {
                CustomerId::parse(&raw)
                    .map(|id| id.as_str().to_owned())
                    .map_err(|_| {
                        ApiError::invalid_body(format!("customers[{n}] is not a customer id"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if share == 0 && customers.is_empty() {
            return Err(ApiError::invalid_body(
                "give a percent above 0, customers, or both",
            ));
        }
        Ok(CohortRequest {
            step: CohortStep::Widen {
                to,
                share,
                customers,
            },
            force: self.force.unwrap_or(false),
            reason: checked_reason(self.reason)?,
        })
    }
}

/// `POST /admin/migrate/cohort/cancel`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CohortCancel {
    force: Option<bool>,
    reason: Option<String>,
}

impl CohortCancel {
    pub fn into_request(self) -> Result<CohortRequest, ApiError> {
        Ok(CohortRequest {
            step: CohortStep::Cancel,
            force: self.force.unwrap_or(false),
            reason: checked_reason(self.reason)?,
        })
    }
}

fn checked_reason(reason: Option<String>) -> Result<Option<String>, ApiError> {
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(ApiError::invalid_body(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    Ok(reason)
}

/// The most chunks a throttle lets be in flight at once.
const MAX_IN_FLIGHT_LIMIT: u64 = 100_000;

/// `POST /admin/migrate/backfill/throttle`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Throttle {
    max_in_flight: u64,
}

impl Throttle {
    pub fn max_in_flight(self) -> Result<u64, ApiError> {
        if !(1..=MAX_IN_FLIGHT_LIMIT).contains(&self.max_in_flight) {
            return Err(ApiError::invalid_body(format!(
                "maxInFlight must be an integer from 1 to {MAX_IN_FLIGHT_LIMIT}"
            )));
        }
        Ok(self.max_in_flight)
    }
}

/// `POST /admin/migrate/backfill`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackfillBatch {
    dry_run: Option<bool>,
    max_records: Option<u64>,
}

impl BackfillBatch {
    pub fn into_options(self) -> Result<RunOptions, ApiError> {
        if self
            .max_records
            .is_some_and(|n| !(1..=MAX_RECORDS_LIMIT).contains(&n))
        {
            return Err(ApiError::invalid_body(format!(
                "maxRecords must be an integer from 1 to {MAX_RECORDS_LIMIT}"
            )));
        }
        Ok(RunOptions {
            dry_run: self.dry_run.unwrap_or(false),
            max_records: self.max_records,
            ..RunOptions::default()
        })
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum VerifyMode {
    Full,
    Sample,
}

/// `POST /admin/migrate/inventory`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inventory {
    pub restart: Option<bool>,
}

/// `POST /admin/migrate/conflicts/prune`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Prune {
    pub cursor: Option<String>,
}

/// `POST /admin/migrate/conflicts/settle`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Settle {
    pub rule: Rule,
    keys: Option<Vec<String>>,
    cursor: Option<String>,
    limit: Option<u32>,
    dry_run: Option<bool>,
    /// Per key, the fingerprint the operator saw in the listing.
    #[serde(default)]
    pub expect: BTreeMap<String, String>,
}

/// Conflicts settled per page when the body names none.
const SETTLE_PAGE: u32 = 25;

impl Settle {
    pub fn dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }

    /// The keys named, or a page of the entries.
    pub fn scope(&self) -> Result<Scope<'_>, ApiError> {
        match (&self.keys, &self.cursor, self.limit) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ApiError::bad_request(
                "invalid_body",
                "name keys, or settle a page by cursor and limit, not both",
            )),
            (Some(keys), None, None) if keys.is_empty() || keys.len() > MAX_KEYS => {
                Err(ApiError::bad_request(
                    "invalid_body",
                    format!("keys must name 1 to {MAX_KEYS} keys"),
                ))
            }
            (Some(keys), None, None) => {
                let mut seen = std::collections::BTreeSet::new();
                if keys.iter().all(|k| seen.insert(k)) {
                    Ok(Scope::Keys(keys))
                } else {
                    Err(ApiError::bad_request(
                        "invalid_body",
                        "keys must not repeat",
                    ))
                }
            }
            (None, cursor, limit) => match limit.unwrap_or(SETTLE_PAGE) {
                limit @ 1..=100 => Ok(Scope::Page {
                    cursor: cursor.as_deref().filter(|c| !c.is_empty()),
                    limit,
                }),
                _ => Err(ApiError::bad_request(
                    "invalid_body",
                    "limit must be 1 to 100",
                )),
            },
        }
    }
}

/// `POST /admin/migrate/finalize`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Finalize {
    dry_run: Option<bool>,
}

impl Finalize {
    pub fn dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }
}

/// `POST /admin/migrate/finalize/purge` and `…/finalize/tombstones`: a page from the
/// cursor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PurgePage {
    dry_run: Option<bool>,
    cursor: Option<String>,
    /// Keys listed at most (the route's page size when absent or larger).
    limit: Option<u32>,
}

impl PurgePage {
    pub fn dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }

    /// Where the page starts; an empty cursor is the start, as no cursor is.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref().filter(|c| !c.is_empty())
    }

    /// The page size asked for, within `1..=most`.
    pub fn limit(&self, most: u32) -> u32 {
        self.limit.unwrap_or(most).clamp(1, most)
    }
}

/// `POST /admin/migrate/purge-new`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PurgeNew {
    restart: Option<bool>,
    dry_run: Option<bool>,
    force: Option<bool>,
    reason: Option<String>,
}

impl PurgeNew {
    pub fn dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }

    pub fn restart(&self) -> bool {
        self.restart.unwrap_or(false)
    }

    /// The reason a forced purge gives, required with `force`.
    pub fn forced_reason(&self) -> Result<Option<String>, ApiError> {
        if !self.force.unwrap_or(false) {
            return Ok(None);
        }
        match self.reason.as_deref().map(str::trim) {
            Some(reason) if !reason.is_empty() && reason.chars().count() <= MAX_REASON_CHARS => {
                Ok(Some(reason.to_owned()))
            }
            Some(reason) if !reason.is_empty() => Err(ApiError::bad_request(
                "invalid_body",
                format!("reason must be at most {MAX_REASON_CHARS} characters"),
            )),
            _ => Err(ApiError::from(crate::error::Error::ReasonRequired)),
        }
    }
}

/// `POST /admin/migrate/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Verify {
    mode: Option<VerifyMode>,
    sample: Option<u64>,
    restart: Option<bool>,
}

impl Verify {
    /// What to verify, and whether to start over.
    pub fn into_request(self) -> Result<VerifyRequest, ApiError> {
        let requested = match self.mode.unwrap_or(VerifyMode::Full) {
            VerifyMode::Full => Requested::Full,
            VerifyMode::Sample => {
                if self.sample == Some(0) {
                    return Err(ApiError::invalid_body(
                        "sample must be a positive integer (keys to compare)",
                    ));
                }
                Requested::Sample { keys: self.sample }
            }
        };
        Ok(VerifyRequest {
            requested,
            restart: self.restart.unwrap_or(false),
        })
    }
}

/// `POST /admin/migrate/emails`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmailAudit {
    dry_run: Option<bool>,
    restart: Option<bool>,
}

impl EmailAudit {
    pub fn dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }

    pub fn restart(&self) -> bool {
        self.restart.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn a_phase_move_is_checked_at_the_edge() {
        let ok: PhaseMove = parse(json!({ "phase": 2, "force": null, "reason": null })).unwrap();
        assert_eq!(ok.into_request().unwrap().to, Phase::ReadNew);
        for phase in [6, -1] {
            let body: PhaseMove = parse(json!({ "phase": phase })).unwrap();
            assert!(body.into_request().is_err(), "{phase}");
        }
        assert!(parse::<PhaseMove>(json!({ "phase": "2" })).is_err());
        assert!(parse::<PhaseMove>(json!({})).is_err());
        assert!(parse::<PhaseMove>(json!({ "phase": 1, "frobnicate": true })).is_err());
        let long: PhaseMove = parse(json!({ "phase": 1, "reason": "x".repeat(1_001) })).unwrap();
        assert!(long.into_request().is_err());
    }

    #[test]
    fn batch_and_verification_bodies_keep_their_ranges() {
        let zero: BackfillBatch = parse(json!({ "maxRecords": 0 })).unwrap();
        assert!(zero.into_options().is_err());
        let none: BackfillBatch = parse(json!({ "maxRecords": null })).unwrap();
        assert_eq!(none.into_options().unwrap().max_records, None);
        let sample: Verify = parse(json!({ "mode": "sample", "sample": 0 })).unwrap();
        assert!(sample.into_request().is_err());
        assert!(parse::<Verify>(json!({ "mode": "quick" })).is_err());
        let full: Verify = parse(json!({})).unwrap();
        let full = full.into_request().unwrap();
        assert_eq!((full.requested, full.restart), (Requested::Full, false));
    }
}
