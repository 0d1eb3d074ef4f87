//! Serialized writes (docs/design.md §12). KV has no compare-and-swap, so every write of
//! a customer runs in that customer's object — a Durable Object in production, one lock
//! natively — and every claim of an email in that email's object. This module is the
//! worker's side: it picks the object a request's write goes to and turns the object's
//! answer into the request's.

pub mod claims;
pub mod delete_check;
pub mod held;
pub mod local;
pub mod memo;
pub mod object;
pub mod repairs;

use crate::customers::{self, derived_ids, Loaded};
use crate::domain::json::{Json, JsonObject};
use crate::domain::{CustomerId, CustomerRecord};
use crate::error::{Error, Input};
use crate::migration::checking::resolve::Rule;
use crate::migration::dataplane::DataPlane;
use crate::migration::state::phase_record::PhaseState;
use crate::migration::state::tombstones::Dropped;
use crate::store::KvStore;
use claims::ClaimSender;
use object::{CustomerOp, Reply, Settled, WriteRequest, Written};

/// Whoever carries a [`WriteRequest`] to the customer's object, and (as a
/// [`ClaimSender`]) an email op to the email's.
#[allow(async_fn_in_trait)]
pub trait Writers: ClaimSender {
    async fn write(&self, id: &CustomerId, request: WriteRequest) -> Reply;
}

/// A request's writes: the objects they go to, the phase-routed stores it reads, and the
/// phase record it was served under.
pub struct Writing<'a, S, W> {
    pub writers: &'a W,
    pub plane: &'a DataPlane<'a, S>,
    pub record: &'a PhaseState,
    /// The most bytes a record written may take (`Config::max_record_bytes`).
    pub max_record_bytes: usize,
}

/// An ensure as the request sees it: the record and whether it was created.
pub struct Done {
    pub record: CustomerRecord,
    pub created: bool,
}

impl<S: KvStore, W: Writers> Writing<'_, S, W> {
    /// Sends `op` for `id` with the request's phase record; the object's warnings join the
    /// request's.
    async fn send(&self, id: &CustomerId, op: CustomerOp) -> Result<Written, Error> {
        let (writers, plane, record) = (self.writers, self.plane, self.record);
        let request = WriteRequest {
            record: record.clone(),
            op,
            max_record_bytes: self.max_record_bytes,
        };
        let reply = writers.write(id, request).await;
        plane.warnings.borrow_mut().extend(reply.warnings);
        reply.result
    }

    /// `POST /customer`: at the id given, or else at the first id derived from the email
    /// that no record holds.
    pub async fn create(&self, body: JsonObject) -> Result<CustomerRecord, Error> {
        let given = match body.get("customerId") {
            Some(Json::String(raw)) => {
                let id = CustomerId::parse_new(raw);
                Some(id.map_err(|m| Error::invalid(Input::CustomerId, m))?)
            }
            Some(_) => return Err(Error::invalid(Input::Body, "customerId must be a string")),
            None => None,
        };
        let email = customers::parse_email_field(&body)?;
        let candidates: Vec<CustomerId> = match (given, &email) {
            (Some(id), _) => vec![id],
            (None, Some(email)) => derived_ids(email).collect(),
            (None, None) => {
                return Err(Error::invalid(
                    Input::Body,
                    "customerId or email is required",
                ))
            }
        };
        let derived = candidates.len() > 1;
        for id in &candidates {
            let op = CustomerOp::Create { body: body.clone() };
            match self.send(id, op).await {
                Ok(Written::Created { record }) => return Ok(record),
                // A derived id another record holds: the next one.
                Err(Error::CustomerExists(_)) if derived => continue,
                Ok(other) => return Err(unexpected(&other)),
                Err(err) => return Err(err),
            }
        }
        Err(Error::CustomerExists(
            "no free customer id could be derived from that email".to_owned(),
        ))
    }

    /// `POST /customer/ensure`: the customer holding the email, created if there is none.
    /// Concurrent calls for one email go to the same derived id's object, so one creates
    /// and the others find what it created.
    pub async fn ensure(&self, body: JsonObject) -> Result<Done, Error> {
        let email = object::ensure_email(&body)?;
        // An existing customer is found without asking any object. A legacy customer
        // mapped under an un-normalised hash is looked for once, in the object
        // (`customers::ensure`), which answers with its id: a new signup pays no more.
        if let Some(existing) = customers::owner_of(self.plane, &email).await? {
            return Ok(found(existing));
        }
        for id in derived_ids(&email) {
            let op = CustomerOp::Ensure { body: body.clone() };
            match self.send(&id, op).await? {
                Written::Created { record } => {
                    return Ok(Done {
                        record,
                        created: true,
                    })
                }
                Written::Found { record } => {
                    return Ok(Done {
                        record,
                        created: false,
                    })
                }
                Written::IdHoldsAnotherEmail => continue,
                Written::EmailHeldBy { id: holder } => {
                    let holder = CustomerId::parse(&holder).map_err(|_| holder_not_an_id())?;
                    return match customers::find_holding(self.plane, &holder, &email).await? {
                        Some(loaded) => Ok(found(loaded)),
                        // The holder's create is still being written, or its record is not
                        // visible here yet: the email is taken, but not by a record this
                        // request can show.
                        None => Err(Error::EmailBeingClaimed),
                    };
                }
                other => return Err(unexpected(&other)),
            }
        }
        Err(Error::CustomerExists(
            "no free customer id could be derived from that email".to_owned(),
        ))
    }

    /// `PATCH /customer/{id}`.
    pub async fn update(
        &self,
        id: &CustomerId,
        patch: JsonObject,
    ) -> Result<CustomerRecord, Error> {
        match self.send(id, CustomerOp::Update { patch }).await? {
            Written::Updated { record } => Ok(record),
            other => Err(unexpected(&other)),
        }
    }

    /// Settles a conflict on `id`'s record by `rule`, in its object (docs/design.md §6,
    /// "Settling").
    pub async fn settle(
        &self,
        id: &CustomerId,
        rule: Rule,
        expect: Option<String>,
    ) -> Result<Settled, Error> {
        match self.send(id, CustomerOp::Settle { rule, expect }).await? {
            Written::Settled { settled } => Ok(settled),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes `id`'s tombstone in its object, once finalized (docs/design.md §9).
    pub async fn drop_tombstone(&self, id: &CustomerId) -> Result<Dropped, Error> {
        match self.send(id, CustomerOp::DropTombstone).await? {
            Written::TombstoneDropped { dropped } => Ok(dropped),
            other => Err(unexpected(&other)),
        }
    }

    /// `DELETE /customer/{id}`.
    pub async fn delete(&self, id: &CustomerId) -> Result<(), Error> {
        match self.send(id, CustomerOp::Delete).await? {
            Written::Deleted => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

fn found(loaded: Loaded) -> Done {
    Done {
        record: loaded.record,
        created: false,
    }
}

/// The object answered for another op (names the answer's kind, never a record).
fn unexpected(written: &Written) -> Error {
    let kind = serde_json::to_value(written)
        .ok()
        .and_then(|v| v["outcome"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Error::Store(crate::store::StoreError::new(
        "customer object",
        format!("the object answered another op ({kind})"),
    ))
}

fn holder_not_an_id() -> Error {
    Error::Store(crate::store::StoreError::new(
        "customer object",
        "the object named a holder that is not a customer id",
    ))
}
