//! The one error type handlers return; it becomes `{"error": {"code", "message"}}`.
//! The core's errors become one here: each kind gets its status and code in one place.

use serde_json::json;

use crate::domain::{CustomerId, RecordError};
use crate::error::{Error, Input};
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// What failed underneath, for the log only: the platform's own words, which may
    /// carry stack traces and limits a client has no use for.
    pub detail: Option<String>,
}

/// How much of a platform error the log keeps.
const DETAIL_CHARS: usize = 300;

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// A store or the coordinator failed: a stable message for the client, the
    /// platform's first line for the log.
    fn unavailable(err: &StoreError) -> Self {
        let first_line = err.message.lines().next().unwrap_or_default();
        let detail = if first_line.contains('@') {
            "(withheld: it may name an email)".to_owned()
        } else {
            first_line.chars().take(DETAIL_CHARS).collect()
        };
        Self {
            detail: Some(detail),
            ..Self::new(
                503,
                "store_unavailable",
                format!("a store is unavailable ({} failed); retry", err.operation),
            )
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_body", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }

    pub fn customer_not_found(id: &str) -> Self {
        // A legacy id may be an address or anything else private: repeat only ids made
        // of the new ids' alphabet.
        let message = if CustomerId::in_alphabet(id) {
            format!("no customer with id '{id}'")
        } else {
            "no customer with that id".to_owned()
        };
        Self::new(404, "customer_not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal_error", message)
    }

    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::Store(err) => Self::unavailable(&err),
            Error::Record(err) => err.into(),
            Error::InvalidInput { input, message } => {
                let code = match input {
                    Input::Email => "invalid_email",
                    Input::CustomerId => "invalid_customer_id",
                    Input::Body => "invalid_body",
                };
                Self::bad_request(code, message)
            }
            Error::CustomerNotFound(Some(id)) => Self::customer_not_found(&id),
            Error::CustomerNotFound(None) => {
                Self::new(404, "customer_not_found", "no customer with that email")
            }
            Error::CustomerExists(message) => Self::conflict("customer_exists", message),
            Error::EmailTaken => Self::conflict("email_taken", "another customer holds that email"),
            Error::EmailBeingClaimed => Self::conflict(
                "email_being_claimed",
                "another request is creating the customer with that email: retry in a second",
            ),
            Error::CorruptRecord(message) => Self::new(500, "corrupt_record", message),
            Error::CorruptPhaseState => Self::new(
                500,
                "corrupt_phase_state",
                "the stored phase record is not valid",
            ),
            Error::PhaseChangeRefused(message) => Self::conflict("phase_change_refused", message),
            Error::PhaseMoved(message) => Self::conflict("phase_moved", message),
            Error::ReasonRequired => {
                Self::bad_request("reason_required", "forcing a gate needs a reason")
            }
            Error::BackfillNotAllowed(message) => Self::conflict("backfill_not_allowed", message),
            Error::SettleNotAllowed(message) => Self::conflict("settle_not_allowed", message),
            Error::CohortRefused(message) => Self::conflict("cohort_refused", message),
            Error::PurgeNotAllowed(message) => Self::conflict("purge_not_allowed", message),
            Error::FinalizeRefused(message) => Self::conflict("finalize_refused", message),
            Error::Finalized => Self::conflict(
                "finalized",
                crate::migration::state::phase_record::FINALIZED,
            ),
            Error::InvalidRollback(message) => Self::bad_request("invalid_rollback", message),
            Error::NotAcknowledged(message) => Self::new(503, "store_unavailable", message),
            Error::RateLimited(message) => Self::new(429, "rate_limited", message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        Error::from(err).into()
    }
}

impl From<RecordError> for ApiError {
    fn from(err: RecordError) -> Self {
        match err {
            RecordError::Corrupt(message) => Self::new(500, "corrupt_record", message),
            RecordError::InvalidField { field, message } => {
                let code = match field.as_str() {
                    "email" => "invalid_email",
                    "customerId" => "invalid_customer_id",
                    _ => "invalid_body",
                };
                Self::bad_request(code, message)
            }
            RecordError::TooLarge { bytes, limit } => Self::new(
                413,
                "record_too_large",
                format!(
                    "the record would take {bytes} bytes; at most {limit} are allowed (MAX_RECORD_BYTES)"
                ),
            ),
        }
    }
}
