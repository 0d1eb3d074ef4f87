//! The customer operations, written against the phase-routed [`DataPlane`] so that each
//! reads and writes exactly where the current phase says. Email mappings are hints: a
//! mapping counts only when the record it points to still holds that email, so a stale or
//! orphaned mapping can never hand out the wrong customer.

use serde_json::Value;

use crate::domain::json::{Json, JsonObject};
use crate::domain::{
    customer_key, email_key, mapping_target, CustomerId, CustomerRecord, Email, EmailHash,
};
use crate::error::{Error, Input};
use crate::migration::dataplane::{Change, DataPlane, Found};
use crate::store::{KvStore, StoreName, StoredValue};
use crate::time::{parse_rfc3339_ms, rfc3339};
use crate::writes::claims::{Claim, ClaimSender, Claims};

/// A record as read, with the metadata it was stored with (kept on update).
pub struct Loaded {
    pub record: CustomerRecord,
    pub metadata: Option<Value>,
    /// The store the record was read from; a change to it writes that store first.
    pub served_by: StoreName,
}

/// A record as a read answers it.
pub enum Answer {
    /// The stored bytes, which are the record's own text (`CustomerRecord::is_own_text`).
    AsStored(Vec<u8>),
    Loaded(Loaded),
}

/// How many derived ids `ensure`/`create` try for one email before giving up.
pub const DERIVED_ID_ATTEMPTS: usize = 5;

pub async fn get<S: KvStore>(plane: &DataPlane<'_, S>, id: &CustomerId) -> Result<Loaded, Error> {
    find(plane, id)
        .await?
        .ok_or_else(|| Error::CustomerNotFound(Some(id.as_str().to_owned())))
}

/// The customer holding `email`, which the caller wrote as `raw`.
pub async fn get_by_email<S: KvStore>(
    plane: &DataPlane<'_, S>,
    email: &Email,
    raw: &str,
) -> Result<Loaded, Error> {
    holder_of(plane, email, raw)
        .await?
        .ok_or(Error::CustomerNotFound(None))
}

/// Creates the record `id` holding `body` (docs/design.md §12: runs in `id`'s object).
/// The email, if any, is claimed first, so that a failure between the two leaves at
/// worst a claim and a mapping the record does not back, never a record its email
/// cannot find.
pub async fn create<S: KvStore, T: ClaimSender>(
    plane: &DataPlane<'_, S>,
    claims: &Claims<'_, T>,
    id: &CustomerId,
    mut body: JsonObject,
    max_record_bytes: usize,
) -> Result<Loaded, Error> {
    let email = parse_email_field(&body)?;
    let body_email = body.get("email").cloned();
    body.shift_remove("customerId");
    if find(plane, id).await?.is_some() {
        return Err(Error::CustomerExists(format!(
            "customer '{id}' already exists"
        )));
    }
    let mut record = CustomerRecord::from_input(id.clone(), body)?;
    let now = rfc3339(plane.now_ms);
    for field in ["createdAt", "updatedAt"] {
        if !record.has_field(field) {
            record.set_timestamp(field, now.clone());
        }
    }
    let bytes = record.to_bytes_within(max_record_bytes)?;
    if let Some(email) = &email {
        refuse_if_legacy_holder(plane, email, raw_email(body_email.as_ref()), id).await?;
        if let Claim::HeldBy(_) = claims.claim(&email.hash(), id).await? {
            return Err(Error::EmailTaken);
        }
    }
    store_new(plane, record, bytes).await
}

/// What `ensure` found at one derived id.
pub enum Ensured {
    Created(Loaded),
    Found(Loaded),
    /// The record at this id holds another email: try the next derived id.
    IdHoldsAnotherEmail,
    /// Another customer holds the email.
    EmailHeldBy(CustomerId),
}

/// `ensureCustomerAccount` at one id derived from `email` (in that id's object): the
/// record there if it holds the email, else a new one if the email is free.
pub async fn ensure<S: KvStore, T: ClaimSender>(
    plane: &DataPlane<'_, S>,
    claims: &Claims<'_, T>,
    id: &CustomerId,
    email: &Email,
    mut body: JsonObject,
    max_record_bytes: usize,
) -> Result<Ensured, Error> {
    let found = find(plane, id).await?;
    if let Some(found) = &found {
        if found.record.email().as_ref() != Some(email) {
            return Ok(Ensured::IdHoldsAnotherEmail);
        }
    }
    // Invalid input is refused before the claim writes anything.
    body.shift_remove("customerId");
    if found.is_none() {
        let raw = raw_email(body.get("email"));
        if let Some(holder) = legacy_holder(plane, email, raw).await? {
            return Ok(Ensured::EmailHeldBy(holder.record.id().clone()));
        }
    }
    let mut record = CustomerRecord::from_input(id.clone(), body)?;
    let now = rfc3339(plane.now_ms);
    record.set_timestamp("createdAt", now.clone());
    record.set_timestamp("updatedAt", now);
    let bytes = record.to_bytes_within(max_record_bytes)?;
    // A claim both refuses an email another customer holds and (re)writes the mapping a
    // previous attempt may have left out.
    if let Claim::HeldBy(holder) = claims.claim(&email.hash(), id).await? {
        return Ok(Ensured::EmailHeldBy(holder));
    }
    if let Some(found) = found {
        return Ok(Ensured::Found(found));
    }
    Ok(Ensured::Created(store_new(plane, record, bytes).await?))
}

/// Merges `patch` into the record (in its object); moves the email's claim when the
/// email changes.
pub async fn update<S: KvStore, T: ClaimSender>(
    plane: &DataPlane<'_, S>,
    claims: &Claims<'_, T>,
    id: &CustomerId,
    patch: JsonObject,
    max_record_bytes: usize,
) -> Result<Loaded, Error> {
    let Loaded {
        mut record,
        metadata,
        served_by,
    } = get(plane, id).await?;
    let previous_email = record.email();
    let previous_updated = record.updated_at().and_then(parse_rfc3339_ms);
    let patched_email = patch.get("email").cloned();
    record.apply_patch(patch)?;
    // Versions only move forward, even if this isolate's clock is behind the last writer's.
    let stamp = previous_updated.map_or(plane.now_ms, |prev| plane.now_ms.max(prev + 1));
    record.set_timestamp("updatedAt", rfc3339(stamp));
    let bytes = record.to_bytes_within(max_record_bytes)?;

    let new_email = record.email();
    let email_changed = new_email != previous_email;
    if email_changed {
        if let Some(email) = &new_email {
            refuse_if_legacy_holder(plane, email, raw_email(patched_email.as_ref()), id).await?;
            if let Claim::HeldBy(_) = claims.claim(&email.hash(), id).await? {
                return Err(Error::EmailTaken);
            }
        }
    }
    let everywhere = plane
        .apply_after_read(
            &[record_change(&record, bytes, metadata.clone())],
            served_by,
        )
        .await?;
    if let (true, true, Some(old)) = (email_changed, everywhere, &previous_email) {
        claims.release(&old.hash(), id).await?;
    }
    Ok(Loaded {
        record,
        metadata,
        served_by,
    })
}

/// Makes `id`'s record `value` in every store the phase writes: an operator settling a
/// conflict (docs/design.md §6, "Settling"). The email the value holds is claimed first,
/// whichever store served the customer, so a value naming an email another customer
/// holds is refused in every phase; afterwards every email either side held that the
/// value does not is released.
pub async fn replace<S: KvStore, T: ClaimSender>(
    plane: &DataPlane<'_, S>,
    claims: &Claims<'_, T>,
    id: &CustomerId,
    value: StoredValue,
    sides: [Option<&StoredValue>; 2],
) -> Result<(), Error> {
    let key = customer_key(id);
    let email_of = |bytes: &[u8]| CustomerRecord::from_stored(bytes).ok()?.email();
    let chosen = email_of(&value.bytes);
    if let Some(email) = &chosen {
        let raw = serde_json::from_slice::<Value>(&value.bytes)
            .ok()
            .and_then(|v| v["email"].as_str().map(str::to_owned))
            .unwrap_or_default();
        refuse_if_legacy_holder(plane, email, &raw, id).await?;
        if let Claim::HeldBy(_) = claims.claim(&email.hash(), id).await? {
            return Err(Error::EmailTaken);
        }
    }
    let mut released: Vec<Email> = sides
        .into_iter()
        .flatten()
        .filter_map(|side| email_of(&side.bytes))
        .filter(|email| Some(email) != chosen.as_ref())
        .collect();
    released.dedup();
    let served = plane.read(&key).await?;
    let change = Change::Put {
        key,
        bytes: value.bytes,
        metadata: value.metadata,
    };
    let everywhere = match served {
        Some(found) => plane.apply_after_read(&[change], found.store).await?,
        None => plane.apply(&[change]).await.map(|()| true)?,
    };
    if everywhere {
        for email in &released {
            claims.release(&email.hash(), id).await?;
        }
    }
    Ok(())
}

/// Deletes the record (a tombstone where the phase keeps one) and then releases its
/// email (in its object). A corrupt record can be deleted too; it has no email to
/// release.
pub async fn delete<S: KvStore, T: ClaimSender>(
    plane: &DataPlane<'_, S>,
    claims: &Claims<'_, T>,
    id: &CustomerId,
) -> Result<(), Error> {
    let key = customer_key(id);
    let found = plane
        .read(&key)
        .await?
        .ok_or_else(|| Error::CustomerNotFound(Some(id.as_str().to_owned())))?;
    let email = CustomerRecord::from_stored(&found.value.bytes)
        .ok()
        .and_then(|r| r.email());
    let everywhere = plane
        .apply_after_read(&[Change::Remove { key }], found.store)
        .await?;
    // The email is released only once no store a reader may go to holds the record
    // under it: a mapping removed earlier could leave that record unfindable by it.
    // A mapping left behind is harmless (it counts only when its record holds the
    // email) and the email audit removes it.
    if let (true, Some(email)) = (everywhere, email) {
        claims.release(&email.hash(), id).await?;
    }
    Ok(())
}

/// The record `id` as a read answers it: the stored bytes themselves when they are its
/// own text, which saves building the record and writing it anew; else loaded.
pub async fn get_answer<S: KvStore>(
    plane: &DataPlane<'_, S>,
    id: &CustomerId,
) -> Result<Answer, Error> {
    let found = plane
        .read(&customer_key(id))
        .await?
        .ok_or_else(|| Error::CustomerNotFound(Some(id.as_str().to_owned())))?;
    if CustomerRecord::is_own_text(&found.value.bytes, id) {
        return Ok(Answer::AsStored(found.value.bytes));
    }
    Ok(Answer::Loaded(loaded(found, id)?))
}

async fn find<S: KvStore>(
    plane: &DataPlane<'_, S>,
    id: &CustomerId,
) -> Result<Option<Loaded>, Error> {
    match plane.read(&customer_key(id)).await? {
        Some(found) => loaded(found, id).map(Some),
        None => Ok(None),
    }
}

/// The record `id` from what a read found under its key.
fn loaded(found: Found, id: &CustomerId) -> Result<Loaded, Error> {
    let Found {
        value: StoredValue { bytes, metadata },
        store: served_by,
    } = found;
    let record = CustomerRecord::from_stored(&bytes)?;
    if record.id() != id {
        return Err(Error::CorruptRecord(
            "the record under this id names another customerId".to_owned(),
        ));
    }
    Ok(Loaded {
        record,
        metadata,
        served_by,
    })
}

/// The record `id` if it holds `email`.
pub async fn find_holding<S: KvStore>(
    plane: &DataPlane<'_, S>,
    id: &CustomerId,
    email: &Email,
) -> Result<Option<Loaded>, Error> {
    Ok(find(plane, id)
        .await?
        .filter(|loaded| loaded.record.email().as_ref() == Some(email)))
}

/// Whether the record `id` holds an email with this hash (a corrupt one holds none).
pub async fn holds<S: KvStore>(
    plane: &DataPlane<'_, S>,
    id: &CustomerId,
    hash: &EmailHash,
) -> Result<bool, Error> {
    match find(plane, id).await {
        Ok(found) => Ok(found
            .is_some_and(|loaded| loaded.record.email().map(|e| e.hash()).as_ref() == Some(hash))),
        Err(err) if err.is_corrupt_record() => Ok(false),
        Err(err) => Err(err),
    }
}

/// The customer that holds `email`: the mapping's target, if that record has the email.
pub async fn owner_of<S: KvStore>(
    plane: &DataPlane<'_, S>,
    email: &Email,
) -> Result<Option<Loaded>, Error> {
    holder_in_stores(plane, &email.hash()).await
}

/// The customer holding `email`, written as `raw` by the caller: by its mapping, else by
/// a legacy mapping of one of `raw`'s un-normalised forms ([`legacy_holder`]).
pub async fn holder_of<S: KvStore>(
    plane: &DataPlane<'_, S>,
    email: &Email,
    raw: &str,
) -> Result<Option<Loaded>, Error> {
    match owner_of(plane, email).await? {
        Some(owner) => Ok(Some(owner)),
        None => legacy_holder(plane, email, raw).await,
    }
}

/// A legacy customer whose mapping was hashed from an un-normalised form of `raw` and
/// whose record holds `email`: looked for before an email is judged free, so neither a
/// create nor an email change takes the address of a customer the email audit has not
/// re-keyed yet (docs/design.md §2, "Legacy mappings"). Costs a read per form, and none
/// when `raw` is already normalised.
pub async fn legacy_holder<S: KvStore>(
    plane: &DataPlane<'_, S>,
    email: &Email,
    raw: &str,
) -> Result<Option<Loaded>, Error> {
    for hash in email.legacy_hashes(raw) {
        let Some(id) = mapped_id(plane, &hash).await? else {
            continue;
        };
        match find(plane, &id).await {
            Ok(Some(loaded)) if loaded.record.email().as_ref() == Some(email) => {
                return Ok(Some(loaded))
            }
            Ok(_) => {}
            Err(err) if err.is_corrupt_record() => {}
            Err(err) => return Err(err),
        }
    }
    Ok(None)
}

/// `EmailTaken` if a legacy customer other than `id` holds `email`.
async fn refuse_if_legacy_holder<S: KvStore>(
    plane: &DataPlane<'_, S>,
    email: &Email,
    raw: &str,
    id: &CustomerId,
) -> Result<(), Error> {
    match legacy_holder(plane, email, raw).await? {
        Some(holder) if holder.record.id() != id => Err(Error::EmailTaken),
        _ => Ok(()),
    }
}

/// The email field as the caller wrote it (empty when it is not a string).
fn raw_email(field: Option<&Json>) -> &str {
    field.and_then(Json::as_str).unwrap_or_default()
}

/// The customer the stores show holding the email with this hash: the mapping's target,
/// if that record holds an email with the hash.
pub async fn holder_in_stores<S: KvStore>(
    plane: &DataPlane<'_, S>,
    hash: &EmailHash,
) -> Result<Option<Loaded>, Error> {
    let key = email_key(hash);
    let found = plane.read(&key).await?;
    let served_by = found.as_ref().map(|f| f.store);
    if let Some(id) = found.and_then(|f| mapping_target(&f.value.bytes)) {
        if let Some(holder) = holder_named(plane, &id, hash).await? {
            return Ok(Some(holder));
        }
    }
    // A mapping is only a hint, and the one the read path found may be stale where the
    // other store's is current: a customer living in the new store gave the email up in
    // phase 0, where its next holder's mapping went to the old store (docs/design.md
    // §16). A read more, only when the first mapping did not check out.
    let other = match served_by {
        Some(store) => plane.read_other_store(store, &key).await?,
        None => plane.read_elsewhere(&key).await?,
    };
    match other.and_then(|value| mapping_target(&value.bytes)) {
        Some(id) => holder_named(plane, &id, hash).await,
        None => Ok(None),
    }
}

/// The record `id`, if it holds an email with this hash.
async fn holder_named<S: KvStore>(
    plane: &DataPlane<'_, S>,
    id: &CustomerId,
    hash: &EmailHash,
) -> Result<Option<Loaded>, Error> {
    match find(plane, id).await {
        Ok(Some(loaded)) if loaded.record.email().map(|e| e.hash()).as_ref() == Some(hash) => {
            Ok(Some(loaded))
        }
        Ok(_) => Ok(None),
        // A corrupt record cannot prove it holds the email; it must not block others.
        Err(err) if err.is_corrupt_record() => Ok(None),
        Err(err) => Err(err),
    }
}

/// The customer the mapping of the email with this hash names.
pub async fn mapped_id<S: KvStore>(
    plane: &DataPlane<'_, S>,
    hash: &EmailHash,
) -> Result<Option<CustomerId>, Error> {
    let key = email_key(hash);
    let value = match plane.read(&key).await? {
        Some(found) => found.value,
        // A mapping is only a hint — it counts when its record, read through the
        // phase's read path, holds the email — so one the store read first lacks may
        // be taken from the other: a write that reached only one store then still
        // finds its customer.
        None => match plane.read_elsewhere(&key).await? {
            Some(value) => value,
            None => return Ok(None),
        },
    };
    Ok(mapping_target(&value.bytes))
}

/// `cus_` + 24 hex digits of the email hash, then `_2`, `_3`, … for the rare collision.
pub fn derived_ids(email: &Email) -> impl Iterator<Item = CustomerId> {
    let stem = format!("cus_{}", &email.hash().as_str()[..24]);
    (1..=DERIVED_ID_ATTEMPTS).filter_map(move |n| {
        let raw = if n == 1 {
            stem.clone()
        } else {
            format!("{stem}_{n}")
        };
        CustomerId::parse(&raw).ok()
    })
}

pub fn parse_email_field(body: &JsonObject) -> Result<Option<Email>, Error> {
    match body.get("email") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(raw)) => Email::parse(raw)
            .map(Some)
            .map_err(|m| Error::invalid(Input::Email, m)),
        Some(_) => Err(Error::invalid(Input::Email, "email must be a string")),
    }
}

/// Writes a new record (its email's mapping is written by the claim before it).
async fn store_new<S: KvStore>(
    plane: &DataPlane<'_, S>,
    record: CustomerRecord,
    bytes: Vec<u8>,
) -> Result<Loaded, Error> {
    let change = record_change(&record, bytes, None);
    let served_by = plane.phase_for(change.key()).authoritative_store();
    plane.apply_to_absent_key(&[change]).await?;
    Ok(Loaded {
        record,
        metadata: None,
        served_by,
    })
}

fn record_change(record: &CustomerRecord, bytes: Vec<u8>, metadata: Option<Value>) -> Change {
    Change::Put {
        key: customer_key(record.id()),
        bytes,
        metadata,
    }
}

pub fn mapping_change(hash: &EmailHash, id: &CustomerId) -> Change {
    Change::Put {
        key: email_key(hash),
        bytes: id.as_str().as_bytes().to_vec(),
        metadata: None,
    }
}
