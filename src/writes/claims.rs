//! Who holds an email (docs/design.md §12). Each email hash has an object that decides
//! every claim of it one at a time and remembers the customer it last granted it to. A
//! customer's object claims an email before writing a record that holds it and releases
//! it once the record no longer does; the email object never calls a customer's object,
//! so the two kinds of lock are always taken customer first and cannot deadlock.

use serde::{Deserialize, Serialize};

use crate::customers::{holder_in_stores, mapping_change};
use crate::domain::{email_key, CustomerId, EmailHash};
use crate::error::Error;
use crate::error::Input;
use crate::migration::dataplane::{Change, DataPlane};
use crate::migration::state::phase_record::PhaseState;
use crate::store::{KvStore, Stores};
use crate::writes::memo::{self, Memo, Waiter};
use crate::writes::object::{routing_of, ObjectClock};

/// One decision asked of an email's object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum EmailOp {
    /// Grant the email to `id` unless another customer holds it; writes the mapping.
    Claim { id: String },
    /// `id`'s record no longer holds the email: remove the mapping if it names `id`.
    Release { id: String },
    /// The email audit found `id`'s record holding the email without the mapping naming
    /// it: point the mapping at `id`, unless another customer holds the email.
    Point { id: String },
    /// The email audit found the mapping naming `id`, whose record holds another email:
    /// remove the mapping, unless `id`'s record holds this email after all.
    Unpoint { id: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailRequest {
    /// Only the hash crosses to the object: the address itself is private.
    pub hash: String,
    /// The phase record the request was served under (see `memo::acting_phase`).
    pub record: PhaseState,
    pub op: EmailOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum ClaimAnswer {
    Granted,
    HeldBy { id: String },
    Released,
}

/// The customer an email's object granted the email to last, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub id: String,
    pub at_ms: u64,
}

/// Whoever carries an [`EmailRequest`] to the email's object.
#[allow(async_fn_in_trait)]
pub trait ClaimSender {
    async fn send(&self, request: EmailRequest) -> Result<ClaimAnswer, Error>;
}

/// A customer object's view of the email objects, in the phase it acts in.
pub struct Claims<'a, T> {
    pub sender: &'a T,
    pub record: PhaseState,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Granted,
    HeldBy(CustomerId),
}

impl<T: ClaimSender> Claims<'_, T> {
    pub async fn claim(&self, hash: &EmailHash, id: &CustomerId) -> Result<Claim, Error> {
        let op = EmailOp::Claim {
            id: id.as_str().to_owned(),
        };
        match self.send(hash, op).await? {
            ClaimAnswer::Granted => Ok(Claim::Granted),
            ClaimAnswer::HeldBy { id } => CustomerId::parse(&id)
                .map(Claim::HeldBy)
                .map_err(|_| unexpected("a holder that is not a customer id")),
            ClaimAnswer::Released => Err(unexpected("a release to a claim")),
        }
    }

    pub async fn release(&self, hash: &EmailHash, id: &CustomerId) -> Result<(), Error> {
        let op = EmailOp::Release {
            id: id.as_str().to_owned(),
        };
        self.send(hash, op).await.map(|_| ())
    }

    /// For the email audit: points the mapping at `id` if `id` holds the email; whether
    /// it does now.
    pub async fn point(&self, hash: &EmailHash, id: &CustomerId) -> Result<Claim, Error> {
        let op = EmailOp::Point {
            id: id.as_str().to_owned(),
        };
        match self.send(hash, op).await? {
            ClaimAnswer::HeldBy { id } => CustomerId::parse(&id)
                .map(Claim::HeldBy)
                .map_err(|_| unexpected("a holder that is not a customer id")),
            _ => Ok(Claim::Granted),
        }
    }

    /// For the email audit: removes a mapping naming `id` unless `id` holds the email.
    pub async fn unpoint(&self, hash: &EmailHash, id: &CustomerId) -> Result<(), Error> {
        let op = EmailOp::Unpoint {
            id: id.as_str().to_owned(),
        };
        self.send(hash, op).await.map(|_| ())
    }

    async fn send(&self, hash: &EmailHash, op: EmailOp) -> Result<ClaimAnswer, Error> {
        let request = EmailRequest {
            hash: hash.as_str().to_owned(),
            record: self.record.clone(),
            op,
        };
        self.sender.send(request).await
    }
}

/// Another customer than `id` holding the email: the one granted it last, within the hold
/// or while its record holds the email (whatever the mapping names: the email audit
/// rewrites mappings); else the one the stores show holding it.
async fn other_holder<S: KvStore>(
    plane: &DataPlane<'_, S>,
    hash: &EmailHash,
    held: Option<&Holder>,
    id: &str,
    hold_ms: u64,
) -> Result<Option<String>, Error> {
    if let Some(h) = held {
        if h.id == id {
            return Ok(None);
        }
        if plane.now_ms < h.at_ms + hold_ms || held_by_record(plane, &h.id, hash).await? {
            return Ok(Some(h.id.clone()));
        }
    }
    Ok(holder_in_stores(plane, hash)
        .await?
        .map(|loaded| loaded.record.id().as_str().to_owned())
        .filter(|holder| holder != id))
}

async fn held_by_record<S: KvStore>(
    plane: &DataPlane<'_, S>,
    id: &str,
    hash: &EmailHash,
) -> Result<bool, Error> {
    match CustomerId::parse(id) {
        Ok(id) => crate::customers::holds(plane, &id, hash).await,
        Err(_) => Ok(false),
    }
}

fn unexpected(what: &str) -> Error {
    Error::Store(crate::store::StoreError::new(
        "email object",
        format!("the email's object answered {what}"),
    ))
}

/// Runs one request in the email's object, which holds its lock: waits out a write of
/// the mapping less than a second old, acts in the object's phase (`memo::acting_phase`)
/// and keeps the holder it decided on.
pub async fn run<S: KvStore, M: Memo, W: Waiter>(
    stores: &Stores<S>,
    memo: &M,
    waiter: &W,
    request: EmailRequest,
    (clock, hold_ms): (ObjectClock, u64),
) -> Result<ClaimAnswer, Error> {
    let hash = EmailHash::from_hex(&request.hash)
        .ok_or_else(|| Error::invalid(Input::Email, "not an email hash"))?;
    let now_ms = memo::paced(memo, waiter, &email_key(&hash), clock.now_ms).await?;
    let record = memo::acting_phase(memo, request.record).await?;
    let (phase, record) = routing_of(record)?;
    let seen = memo::remembering(stores, memo, ObjectClock { now_ms, ..clock });
    let plane = DataPlane::new(&seen, phase, now_ms)
        .with_old_store_catching_up(record.old_store_diverged)
        .with_new_store_behind(record.new_store_diverged)
        .with_old_store_retired(record.finalized_at.is_some());
    let held = memo.recall_holder().await?;
    let (answer, holder) = decide(&plane, &hash, held.clone(), request.op, hold_ms).await?;
    if holder != held {
        memo.remember_holder(holder.as_ref()).await?;
    }
    Ok(answer)
}

/// Decides one op in the email's object, which holds its lock. `held` is who it granted
/// the email to last; the result is the answer and who holds it now.
///
/// A grant younger than `hold_ms` (the time a claiming request may still be writing its
/// record plus the consistency window) binds even though KV may not show the record
/// yet; an older one is checked against KV, where the holder's record has either landed
/// or never will.
pub async fn decide<S: KvStore>(
    plane: &DataPlane<'_, S>,
    hash: &EmailHash,
    held: Option<Holder>,
    op: EmailOp,
    hold_ms: u64,
) -> Result<(ClaimAnswer, Option<Holder>), Error> {
    let now_ms = plane.now_ms;
    match op {
        EmailOp::Claim { id } => {
            let target = CustomerId::parse(&id).map_err(|_| unexpected("no customer id"))?;
            // Every grant starts the hold again: the claimant is about to write its record.
            let granted = Some(Holder {
                id: id.clone(),
                at_ms: now_ms,
            });
            let regrant = held.as_ref().is_some_and(|h| h.id == id);
            if regrant && crate::customers::mapped_id(plane, hash).await? == Some(target.clone()) {
                // No mapping to write: a retry, or an ensure finding its own record.
                return Ok((ClaimAnswer::Granted, granted));
            }
            if let Some(holder) = other_holder(plane, hash, held.as_ref(), &id, hold_ms).await? {
                return Ok((ClaimAnswer::HeldBy { id: holder }, held));
            }
            plane.apply(&[mapping_change(hash, &target)]).await?;
            Ok((ClaimAnswer::Granted, granted))
        }
        EmailOp::Point { id } => {
            let target = CustomerId::parse(&id).map_err(|_| unexpected("no customer id"))?;
            if !crate::customers::holds(plane, &target, hash).await? {
                return Ok((ClaimAnswer::Released, held));
            }
            if let Some(rival) = other_holder(plane, hash, held.as_ref(), &id, hold_ms).await? {
                return Ok((ClaimAnswer::HeldBy { id: rival }, held));
            }
            if crate::customers::mapped_id(plane, hash).await? != Some(target.clone()) {
                plane.apply(&[mapping_change(hash, &target)]).await?;
            }
            let holder = Holder {
                id,
                at_ms: held.map_or(0, |h| h.at_ms),
            };
            Ok((ClaimAnswer::Granted, Some(holder)))
        }
        EmailOp::Unpoint { id } => {
            let target = CustomerId::parse(&id).map_err(|_| unexpected("no customer id"))?;
            let names_id = crate::customers::mapped_id(plane, hash).await? == Some(target.clone());
            // Granted within the hold, the email is `id`'s though KV may not show its
            // record holding it yet: the audit read a record from before the change.
            let granted_lately = held
                .as_ref()
                .is_some_and(|h| h.id == id && now_ms < h.at_ms + hold_ms);
            if !names_id || granted_lately || crate::customers::holds(plane, &target, hash).await? {
                return Ok((ClaimAnswer::Released, held));
            }
            plane
                .apply(&[Change::Remove {
                    key: email_key(hash),
                }])
                .await?;
            Ok((ClaimAnswer::Released, held.filter(|h| h.id != id)))
        }
        EmailOp::Release { id } => {
            let names_id = match &held {
                Some(h) => h.id == id,
                None => crate::customers::mapped_id(plane, hash)
                    .await?
                    .is_some_and(|mapped| mapped.as_str() == id),
            };
            if !names_id {
                return Ok((ClaimAnswer::Released, held));
            }
            plane
                .apply(&[Change::Remove {
                    key: email_key(hash),
                }])
                .await?;
            Ok((ClaimAnswer::Released, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::domain::{customer_key, Email};
    use crate::phase::Phase;
    use crate::store::{MemoryStore, PutOptions};

    /// The email audit read a customer's record from before it took a new email, and
    /// would remove the new email's mapping as naming a customer that holds another.
    #[test]
    fn an_unpoint_keeps_a_mapping_the_object_granted_within_the_hold() {
        let stores = Stores {
            old: MemoryStore::default(),
            new: MemoryStore::default(),
        };
        let id = CustomerId::parse("a").unwrap();
        let hash = Email::parse("new@x.io").unwrap().hash();
        let record = br#"{"customerId":"a","email":"old@x.io"}"#;
        stores
            .new
            .insert(&customer_key(&id), record, PutOptions::default());
        stores
            .new
            .insert(&email_key(&hash), b"a", PutOptions::default());
        let held = Some(Holder {
            id: "a".into(),
            at_ms: 9_000,
        });
        let unpoint = || EmailOp::Unpoint { id: "a".into() };
        let within = DataPlane::new(&stores, Phase::Complete, 10_000);
        let (_, holder) = block_on(decide(&within, &hash, held.clone(), unpoint(), 5_000)).unwrap();
        assert!(stores.new.peek(&email_key(&hash)).is_some());
        assert_eq!(holder, held);
        // Past the hold KV shows the record as it is: a mapping it does not hold goes.
        let past = DataPlane::new(&stores, Phase::Complete, 20_000);
        block_on(decide(&past, &hash, held, unpoint(), 5_000)).unwrap();
        assert!(stores.new.peek(&email_key(&hash)).is_none());
    }
}
