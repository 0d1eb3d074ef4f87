//! The core's errors, in the core's terms: what went wrong, never how to answer it. The
//! HTTP edge gives each its status and code (`http::ApiError`).

use serde::{Deserialize, Serialize};

use crate::domain::RecordError;
use crate::store::StoreError;

/// Which input a validation error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    Email,
    CustomerId,
    Body,
}

/// Serializable: a customer's or an email's object (docs/design.md §12) answers with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Error {
    /// A KV operation failed (or the run's operation budget is spent).
    Store(StoreError),
    /// A stored record is unreadable, or an input field of a record is invalid.
    Record(RecordError),
    InvalidInput {
        input: Input,
        message: String,
    },
    /// No such customer: by id (`Some`), or by email (`None`, naming no address).
    CustomerNotFound(Option<String>),
    CustomerExists(String),
    EmailTaken,
    /// Another customer's claim of the email is still being written: retry shortly.
    EmailBeingClaimed,
    /// A stored record that is valid JSON but not the customer it is stored under.
    CorruptRecord(String),
    CorruptPhaseState,
    /// A gate refused the move; the message names each unmet gate.
    PhaseChangeRefused(String),
    /// The phase record moved while the request was decided; names the move that won.
    PhaseMoved(String),
    /// A forced move without a reason.
    ReasonRequired,
    BackfillNotAllowed(String),
    /// Conflicts are settled only where writes reach both stores.
    SettleNotAllowed(String),
    /// The new store may not be purged now (`purge::may_purge`).
    PurgeNotAllowed(String),
    /// The migration may not be finalized yet: every unmet check.
    FinalizeRefused(String),
    /// The migration is finalized: nothing may touch the old store.
    Finalized,
    InvalidRollback(String),
    /// A cohort step, or a move while a cohort is open, that cannot be made.
    CohortRefused(String),
    /// A write reached one store but not one a reader may go to first: not acknowledged.
    NotAcknowledged(String),
    /// KV refused a write for its rate (one write a second to one key); the request is
    /// not acknowledged and may be retried after a second.
    RateLimited(String),
}

impl Error {
    pub fn invalid(input: Input, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            input,
            message: message.into(),
        }
    }

    /// Whether a stored record could not be read as a customer.
    pub fn is_corrupt_record(&self) -> bool {
        matches!(
            self,
            Error::CorruptRecord(_) | Error::Record(RecordError::Corrupt(_))
        )
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        if err.rate_limited {
            return Self::RateLimited(format!(
                "KV accepts one write a second to one key; this {} was refused: retry after a second",
                err.operation
            ));
        }
        Self::Store(err)
    }
}

impl From<RecordError> for Error {
    fn from(err: RecordError) -> Self {
        Self::Record(err)
    }
}

pub type CoreResult<T> = Result<T, Error>;
