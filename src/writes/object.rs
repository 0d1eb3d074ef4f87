//! A customer's object (docs/design.md §12): every write of one customer runs here, one
//! at a time, against the stores seen through the object's memory of its own writes.

use serde::{Deserialize, Serialize};

use crate::app::Config;
use serde_json::{Map, Value};

use crate::customers::{self, Ensured, Loaded};
use crate::domain::{customer_key, CustomerId, Email, DEFAULT_MAX_RECORD_BYTES};
use crate::error::{Error, Input};
use crate::migration::dataplane::DataPlane;
use crate::migration::healing::repair::{self, Repaired};
use crate::migration::state::phase_record::PhaseState;
use crate::phase::Phase;
use crate::store::{KvStore, Stores};
use crate::writes::claims::{ClaimSender, Claims};
use crate::writes::memo::{self, Memo, Waiter};

/// One write of one customer, and the phase record its request was served under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteRequest {
    pub record: PhaseState,
    pub op: CustomerOp,
    /// The record cap of the worker that sent the write (`MAX_RECORD_BYTES`).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
}

fn default_max_record_bytes() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CustomerOp {
    Create {
        body: Map<String, Value>,
    },
    /// `ensureCustomerAccount` at an id derived from the email in `body`.
    Ensure {
        body: Map<String, Value>,
    },
    Update {
        patch: Map<String, Value>,
    },
    Delete,
    /// Makes the stores agree on the customer's record after a journaled write
    /// (`repair::in_place`), on the object's view of them.
    Repair,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Written {
    Created { record: Value },
    Found { record: Value },
    Updated { record: Value },
    Deleted,
    IdHoldsAnotherEmail,
    EmailHeldBy { id: String },
    Repaired { repair: Repaired },
}

/// A write's outcome and what the request should log (nothing private).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub result: Result<Written, Error>,
    pub warnings: Vec<String>,
}

/// The timings an object works with.
#[derive(Debug, Clone, Copy)]
pub struct ObjectClock {
    /// When the op starts.
    pub now_ms: u64,
    /// How long after a write the object believes its memory of a mapping over KV
    /// (records: see `memo::Remembering`).
    pub trust_ms: u64,
    /// The time as it passes during the op, to stamp a write when it lands (natively
    /// none passes: 0, and the op's start is used).
    pub live_ms: fn() -> u64,
}

impl ObjectClock {
    /// The write lands up to the request margin after the op starts, and reaches every
    /// location within the consistency window after that.
    pub fn of(config: &Config, now_ms: u64) -> Self {
        Self {
            now_ms,
            trust_ms: config.pass_delay_ms(),
            live_ms: || 0,
        }
    }
}

/// The phase a record routes by.
pub fn routing_of(record: PhaseState) -> Result<(Phase, PhaseState), Error> {
    let phase = Phase::from_number(u64::from(record.phase)).ok_or(Error::CorruptPhaseState)?;
    Ok((phase, record))
}

/// Runs one write in `id`'s object, which holds its lock.
pub async fn run<S: KvStore, M: Memo, T: ClaimSender, W: Waiter>(
    stores: &Stores<S>,
    memo: &M,
    (sender, waiter): (&T, &W),
    id: &CustomerId,
    request: WriteRequest,
    clock: ObjectClock,
) -> Reply {
    let now_ms = match memo::paced(memo, waiter, &customer_key(id), clock.now_ms).await {
        Ok(now_ms) => now_ms,
        Err(err) => {
            return Reply {
                result: Err(err.into()),
                warnings: Vec::new(),
            }
        }
    };
    let clock = ObjectClock { now_ms, ..clock };
    let routed = match memo::acting_phase(memo, request.record).await {
        Ok(record) => routing_of(record),
        Err(err) => Err(err.into()),
    };
    let (phase, record) = match routed {
        Ok(routed) => routed,
        Err(err) => {
            return Reply {
                result: Err(err),
                warnings: Vec::new(),
            }
        }
    };
    let seen = memo::remembering(stores, memo, clock);
    let plane = DataPlane::new(&seen, phase, clock.now_ms)
        .with_old_store_catching_up(record.old_store_diverged);
    let claims = Claims { sender, record };
    let result = apply(&plane, &claims, id, request.op, request.max_record_bytes).await;
    Reply {
        result,
        warnings: plane.warnings.take(),
    }
}

async fn apply<S: KvStore, T: ClaimSender>(
    plane: &DataPlane<'_, S>,
    claims: &Claims<'_, T>,
    id: &CustomerId,
    op: CustomerOp,
    max_record_bytes: usize,
) -> Result<Written, Error> {
    let record = |loaded: Loaded| loaded.record.to_json();
    match op {
        CustomerOp::Create { body } => Ok(Written::Created {
            record: record(customers::create(plane, claims, id, body, max_record_bytes).await?),
        }),
        CustomerOp::Ensure { body } => {
            let email = ensure_email(&body)?;
            if !customers::derived_ids(&email).any(|derived| derived == *id) {
                return Err(Error::invalid(
                    Input::CustomerId,
                    "ensure runs only at an id derived from the email",
                ));
            }
            Ok(
                match customers::ensure(plane, claims, id, &email, body, max_record_bytes).await? {
                    Ensured::Created(loaded) => Written::Created {
                        record: record(loaded),
                    },
                    Ensured::Found(loaded) => Written::Found {
                        record: record(loaded),
                    },
                    Ensured::IdHoldsAnotherEmail => Written::IdHoldsAnotherEmail,
                    Ensured::EmailHeldBy(holder) => Written::EmailHeldBy {
                        id: holder.as_str().to_owned(),
                    },
                },
            )
        }
        CustomerOp::Update { patch } => Ok(Written::Updated {
            record: record(customers::update(plane, claims, id, patch, max_record_bytes).await?),
        }),
        CustomerOp::Delete => {
            customers::delete(plane, claims, id).await?;
            Ok(Written::Deleted)
        }
        CustomerOp::Repair => {
            let key = customer_key(id);
            let outcome = repair::in_place(plane.stores, plane.phase, &key, plane.now_ms).await?;
            Ok(Written::Repaired { repair: outcome })
        }
    }
}

/// The email an ensure is for, so the worker can derive the ids to try.
pub fn ensure_email(body: &Map<String, Value>) -> Result<Email, Error> {
    customers::parse_email_field(body)?
        .ok_or_else(|| Error::invalid(Input::Body, "email is required"))
}
