//! A customer's object (docs/design.md §12): every write of one customer runs here, one
//! at a time, against the stores seen through the object's memory of its own writes.

use serde::{Deserialize, Serialize};

use crate::app::Config;

use crate::customers::{self, Ensured, Loaded};
use crate::domain::json::{object_as_text, JsonObject};
use crate::domain::record::record_as_text;
use crate::domain::{
    customer_key, CustomerId, CustomerRecord, Email, RecordError, DEFAULT_MAX_RECORD_BYTES,
};
use crate::error::{Error, Input};
use crate::migration::checking::resolve::{self, Chose, Resolution, Rule};
use crate::migration::dataplane::DataPlane;
use crate::migration::healing::repair::{self, Repaired};
use crate::migration::state::phase_record::PhaseState;
use crate::migration::state::tombstones::{self, Dropped};
use crate::phase::Phase;
use crate::store::{KvStore, StoreName, Stores};
use crate::writes::claims::{ClaimSender, Claims};
use crate::writes::delete_check;
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

/// Bodies and records travel as their text (`bodyText`, `recordText`) so that their
/// numbers keep their spelling; the names differ from the objects of before, so a peer
/// of the other version fails loudly rather than misreads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CustomerOp {
    Create {
        #[serde(rename = "bodyText", with = "object_as_text")]
        body: JsonObject,
    },
    /// `ensureCustomerAccount` at an id derived from the email in `body`.
    Ensure {
        #[serde(rename = "bodyText", with = "object_as_text")]
        body: JsonObject,
    },
    Update {
        #[serde(rename = "patchText", with = "object_as_text")]
        patch: JsonObject,
    },
    Delete,
    /// Makes the stores agree on the customer's record after a journaled write
    /// (`repair::in_place`), on the object's view of them; `lagging` is the store the
    /// journal says missed the write, if it says.
    Repair {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lagging: Option<StoreName>,
    },
    /// Settles a conflict by an operator's rule (`resolve`), on the object's view of both
    /// stores; with `expect`, only if that view still has the fingerprint the operator saw.
    Settle {
        rule: Rule,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<String>,
    },
    /// Removes the customer's tombstone once the migration is finalized, if the key still
    /// holds one (`tombstones::drop_in_object`).
    DropTombstone,
}

/// What a settle did with the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Settled {
    /// Both stores now hold the chosen value.
    Written { chose: Chose },
    /// The stores agreed already.
    Agreed,
    /// The values are no longer the ones the operator saw.
    Changed,
    /// The rule cannot settle this pair, and why.
    Undecidable { reason: String },
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Written {
    Created {
        #[serde(rename = "recordText", with = "record_as_text")]
        record: CustomerRecord,
    },
    Found {
        #[serde(rename = "recordText", with = "record_as_text")]
        record: CustomerRecord,
    },
    Updated {
        #[serde(rename = "recordText", with = "record_as_text")]
        record: CustomerRecord,
    },
    Deleted,
    IdHoldsAnotherEmail,
    EmailHeldBy {
        id: String,
    },
    Repaired {
        repair: Repaired,
    },
    Settled {
        settled: Settled,
    },
    TombstoneDropped {
        dropped: Dropped,
    },
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
    /// How long after a delete the object checks it (`delete_check::check_at`): the pass delay
    /// for the copy decided on a read from just before the delete to land, and the
    /// consistency window for it to show everywhere; 0 when reads are never stale.
    pub check_after_ms: u64,
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
            check_after_ms: match config.consistency_window_ms {
                0 => 0,
                window => config.pass_delay_ms() + window,
            },
            live_ms: || 0,
        }
    }
}

/// The phase a record routes by.
pub fn routing_of(record: PhaseState) -> Result<(Phase, PhaseState), Error> {
    let phase = Phase::from_number(u64::from(record.phase)).ok_or(Error::CorruptPhaseState)?;
    Ok((phase, record))
}

/// What one op did, and when the object should check its writes (`delete_check::check_at`).
pub struct Ran {
    pub reply: Reply,
    pub check_at: Option<u64>,
}

impl Ran {
    fn failed(err: Error) -> Self {
        Self {
            reply: Reply {
                result: Err(err),
                warnings: Vec::new(),
            },
            check_at: None,
        }
    }
}

/// Runs one write in `id`'s object, which holds its lock.
pub async fn run<S: KvStore, M: Memo, T: ClaimSender, W: Waiter>(
    stores: &Stores<S>,
    memo: &M,
    (sender, waiter): (&T, &W),
    id: &CustomerId,
    request: WriteRequest,
    clock: ObjectClock,
) -> Ran {
    let now_ms = match memo::paced(memo, waiter, &customer_key(id), clock.now_ms).await {
        Ok(now_ms) => now_ms,
        Err(err) => return Ran::failed(err.into()),
    };
    let clock = ObjectClock { now_ms, ..clock };
    let routed = match memo::acting_phase(memo, request.record).await {
        Ok(record) => routing_of(record),
        Err(err) => Err(err.into()),
    };
    let (phase, record) = match routed {
        Ok(routed) => routed,
        Err(err) => return Ran::failed(err),
    };
    // Checked whatever the answer: a delete that failed may have written.
    let customers_phase = record.phase_of_key(phase, &customer_key(id));
    let check_at = delete_check::check_at(customers_phase, &request.op, clock);
    let seen = memo::remembering(stores, memo, clock);
    let plane = DataPlane::new(&seen, phase, clock.now_ms)
        .with_cohort(record.cohort.clone())
        .with_old_store_catching_up(record.old_store_diverged)
        .with_new_store_behind(record.new_store_diverged)
        .with_old_store_retired(record.finalized_at.is_some());
    let claims = Claims { sender, record };
    let result = apply(&plane, &claims, id, request.op, request.max_record_bytes).await;
    Ran {
        reply: Reply {
            result,
            warnings: plane.warnings.take(),
        },
        check_at,
    }
}

async fn apply<S: KvStore, T: ClaimSender>(
    plane: &DataPlane<'_, S>,
    claims: &Claims<'_, T>,
    id: &CustomerId,
    op: CustomerOp,
    max_record_bytes: usize,
) -> Result<Written, Error> {
    let record = |loaded: Loaded| loaded.record;
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
        CustomerOp::Repair { lagging } => {
            let key = customer_key(id);
            let phase = plane.phase_for(&key);
            let outcome =
                repair::in_place(plane.stores, phase, &key, lagging, plane.now_ms).await?;
            Ok(Written::Repaired { repair: outcome })
        }
        CustomerOp::Settle { rule, expect } => Ok(Written::Settled {
            settled: settle(plane, claims, id, (rule, expect), max_record_bytes).await?,
        }),
        CustomerOp::DropTombstone => {
            let retired = plane.old_store_retired;
            let key = customer_key(id);
            Ok(Written::TombstoneDropped {
                dropped: tombstones::drop_in_object(&plane.stores.new, &key, retired).await?,
            })
        }
    }
}

async fn settle<S: KvStore, T: ClaimSender>(
    plane: &DataPlane<'_, S>,
    claims: &Claims<'_, T>,
    id: &CustomerId,
    (rule, expect): (Rule, Option<String>),
    max_record_bytes: usize,
) -> Result<Settled, Error> {
    let key = customer_key(id);
    if !plane.phase_for(&key).writes_both() || plane.old_store_catching_up {
        return Err(Error::SettleNotAllowed(SETTLE_PHASES.to_owned()));
    }
    let old = plane.stores.old.get(&key).await?;
    let new = plane.stores.new.get(&key).await?;
    if resolve::changed_since(expect, old.as_ref(), new.as_ref()) {
        return Ok(Settled::Changed);
    }
    match resolve::resolve(rule, &key, old.as_ref(), new.as_ref(), plane.now_ms) {
        Resolution::Agreed => Ok(Settled::Agreed),
        Resolution::Undecidable(reason) => Ok(Settled::Undecidable {
            reason: reason.to_owned(),
        }),
        Resolution::Write { value, chose } => {
            // A merge makes a new record, which must fit as any write must; a side kept
            // is a value already stored, copied as the backfill copies it.
            if chose == Chose::Merged && value.bytes.len() > max_record_bytes {
                return Err(RecordError::TooLarge {
                    bytes: value.bytes.len(),
                    limit: max_record_bytes,
                }
                .into());
            }
            let sides = [old.as_ref(), new.as_ref()];
            customers::replace(plane, claims, id, value, sides).await?;
            Ok(Settled::Written { chose })
        }
    }
}

/// Why a settle outside phases 1 to 3 is refused: one store would be left out.
pub const SETTLE_PHASES: &str =
    "conflicts are settled in phases 1 to 3, where writes reach both stores";

/// The email an ensure is for, so the worker can derive the ids to try.
pub fn ensure_email(body: &JsonObject) -> Result<Email, Error> {
    customers::parse_email_field(body)?
        .ok_or_else(|| Error::invalid(Input::Body, "email is required"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::json;

    /// Between the worker and a customer's object, bodies and records cross as JSON:
    /// their numbers must cross as they were written.
    #[test]
    fn bodies_and_records_cross_to_and_from_the_object_with_their_numbers_text() {
        let text = r#"{"customerId":"c1","n":12345678901234567890123,"x":[1e2,1E+2,-0,1.00]}"#;
        let patch = json::parse_object(text.as_bytes()).unwrap().unwrap();
        let op = CustomerOp::Update { patch };
        let crossed: CustomerOp =
            serde_json::from_str(&serde_json::to_string(&op).unwrap()).unwrap();
        assert_eq!(crossed, op);
        let CustomerOp::Update { patch } = crossed else {
            unreachable!("an update crossed");
        };
        assert_eq!(json::object_text(&patch), text);

        let record = CustomerRecord::from_stored(text.as_bytes()).unwrap();
        let reply = Reply {
            result: Ok(Written::Updated { record }),
            warnings: Vec::new(),
        };
        let crossed: Reply = serde_json::from_str(&serde_json::to_string(&reply).unwrap()).unwrap();
        let Ok(Written::Updated { record }) = crossed.result else {
            unreachable!("an update's record crossed");
        };
        assert_eq!(record.to_text(), text);
    }
}
