//! The customer operations, written against the phase-routed [`DataPlane`] so that each
//! reads and writes exactly where the current phase says. Email mappings are hints: a
//! mapping counts only when the record it points to still holds that email, so a stale or
//! orphaned mapping can never hand out the wrong customer.

use serde_json::{Map, Value};

use crate::domain::{customer_key, email_key, mapping_target, CustomerId, CustomerRecord, Email};
use crate::error::{Error, Input};
use crate::migration::dataplane::{Change, DataPlane, Found};
use crate::store::{KvStore, StoreName, StoredValue};
use crate::time::{parse_rfc3339_ms, rfc3339};

/// A record as read, with the metadata it was stored with (kept on update).
pub struct Loaded {
    pub record: CustomerRecord,
    pub metadata: Option<Value>,
    /// The store the record was read from; a change to it writes that store first.
    pub served_by: StoreName,
}

/// How many derived ids `ensure`/`create` try for one email before giving up.
const DERIVED_ID_ATTEMPTS: usize = 5;

pub async fn get<S: KvStore>(plane: &DataPlane<'_, S>, id: &CustomerId) -> Result<Loaded, Error> {
    find(plane, id)
        .await?
        .ok_or_else(|| Error::CustomerNotFound(Some(id.as_str().to_owned())))
}

pub async fn get_by_email<S: KvStore>(
    plane: &DataPlane<'_, S>,
    email: &Email,
) -> Result<Loaded, Error> {
    owner_of(plane, email)
        .await?
        .ok_or(Error::CustomerNotFound(None))
}

/// Creates a record. Without a `customerId`, one is derived from the email.
pub async fn create<S: KvStore>(
    plane: &DataPlane<'_, S>,
    mut body: Map<String, Value>,
) -> Result<Loaded, Error> {
    let email = parse_email_field(&body)?;
    let id = match body.get("customerId") {
        Some(Value::String(raw)) => {
            CustomerId::parse(raw).map_err(|m| Error::invalid(Input::CustomerId, m))?
        }
        Some(_) => return Err(Error::invalid(Input::Body, "customerId must be a string")),
        None => {
            let email = email
                .as_ref()
                .ok_or_else(|| Error::invalid(Input::Body, "customerId or email is required"))?;
            free_derived_id(plane, email).await?
        }
    };
    body.remove("customerId");
    if find(plane, &id).await?.is_some() {
        return Err(Error::CustomerExists(format!(
            "customer '{id}' already exists"
        )));
    }
    if let Some(email) = &email {
        if owner_of(plane, email).await?.is_some() {
            return Err(Error::EmailTaken);
        }
    }
    let mut record = CustomerRecord::from_input(id, body)?;
    let now = rfc3339(plane.now_ms);
    for field in ["createdAt", "updatedAt"] {
        if !record.has_field(field) {
            record.set_timestamp(field, now.clone());
        }
    }
    store_new(plane, record).await
}

/// `ensureCustomerAccount`: the customer holding `email`, created if there is none.
/// Returns whether it was created. Safe to retry and to race: concurrent calls for one
/// email derive the same id.
pub async fn ensure<S: KvStore>(
    plane: &DataPlane<'_, S>,
    mut body: Map<String, Value>,
) -> Result<(Loaded, bool), Error> {
    let email = parse_email_field(&body)?
        .ok_or_else(|| Error::invalid(Input::Body, "email is required"))?;
    if let Some(existing) = owner_of(plane, &email).await? {
        return Ok((existing, false));
    }
    // A previous attempt may have written the record but not the mapping.
    for id in derived_ids(&email) {
        match find(plane, &id).await? {
            None => {
                body.remove("customerId");
                let mut record = CustomerRecord::from_input(id, body)?;
                let now = rfc3339(plane.now_ms);
                record.set_timestamp("createdAt", now.clone());
                record.set_timestamp("updatedAt", now);
                return Ok((store_new(plane, record).await?, true));
            }
            Some(found) if found.record.email().as_ref() == Some(&email) => {
                let mapping = mapping_change(&email, found.record.id());
                plane.apply(&[mapping]).await?;
                return Ok((found, false));
            }
            Some(_) => continue,
        }
    }
    Err(Error::CustomerExists(
        "no free customer id could be derived from that email".to_owned(),
    ))
}

/// Merges `patch` into the record; moves the email mapping when the email changes.
pub async fn update<S: KvStore>(
    plane: &DataPlane<'_, S>,
    id: &CustomerId,
    patch: Map<String, Value>,
) -> Result<Loaded, Error> {
    let Loaded {
        mut record,
        metadata,
        served_by,
    } = get(plane, id).await?;
    let previous_email = record.email();
    let previous_updated = record.updated_at().and_then(parse_rfc3339_ms);
    record.apply_patch(patch)?;
    // Versions only move forward, even if this isolate's clock is behind the last writer's.
    let stamp = previous_updated.map_or(plane.now_ms, |prev| plane.now_ms.max(prev + 1));
    record.set_timestamp("updatedAt", rfc3339(stamp));

    let new_email = record.email();
    let mut changes = Vec::new();
    if new_email != previous_email {
        if let Some(email) = &new_email {
            if let Some(holder) = owner_of(plane, email).await? {
                if holder.record.id() != id {
                    return Err(Error::EmailTaken);
                }
            }
            changes.push(mapping_change(email, id));
        }
    }
    changes.push(record_change(&record, metadata.clone()));
    let mut cleanup = Vec::new();
    if new_email != previous_email {
        if let Some(old) = &previous_email {
            if mapping_points_to(plane, old, id).await? {
                cleanup.push(Change::Remove {
                    key: email_key(&old.hash()),
                });
            }
        }
    }
    apply_then_clean_up(plane, &changes, &cleanup, served_by).await?;
    Ok(Loaded {
        record,
        metadata,
        served_by,
    })
}

/// Deletes the record (a tombstone where the phase keeps one) and then its mapping.
/// A corrupt record can be deleted too; it has no email to unmap.
pub async fn delete<S: KvStore>(plane: &DataPlane<'_, S>, id: &CustomerId) -> Result<(), Error> {
    let key = customer_key(id);
    let found = plane
        .read(&key)
        .await?
        .ok_or_else(|| Error::CustomerNotFound(Some(id.as_str().to_owned())))?;
    let email = CustomerRecord::from_stored(&found.value.bytes)
        .ok()
        .and_then(|r| r.email());
    let removal = [Change::Remove { key }];
    let mut cleanup = Vec::new();
    if let Some(email) = email {
        if mapping_points_to(plane, &email, id).await? {
            cleanup.push(Change::Remove {
                key: email_key(&email.hash()),
            });
        }
    }
    apply_then_clean_up(plane, &removal, &cleanup, found.store).await
}

/// Applies `changes`, then — only once they reached every store the phase writes —
/// removes the mappings they made obsolete. A mapping removed while some store still
/// held the record under that email would leave the record unfindable by it, should
/// reads come to that store; a mapping left behind is harmless (a mapping counts only
/// when its record holds the email) and the email audit removes it.
async fn apply_then_clean_up<S: KvStore>(
    plane: &DataPlane<'_, S>,
    changes: &[Change],
    cleanup: &[Change],
    served_by: StoreName,
) -> Result<(), Error> {
    let everywhere = plane.apply_after_read(changes, served_by).await?;
    if everywhere && !cleanup.is_empty() {
        plane.apply_after_read(cleanup, served_by).await?;
    }
    Ok(())
}

async fn find<S: KvStore>(
    plane: &DataPlane<'_, S>,
    id: &CustomerId,
) -> Result<Option<Loaded>, Error> {
    let Some(Found {
        value: StoredValue { bytes, metadata },
        store: served_by,
    }) = plane.read(&customer_key(id)).await?
    else {
        return Ok(None);
    };
    let record = CustomerRecord::from_stored(&bytes)?;
    if record.id() != id {
        return Err(Error::CorruptRecord(format!(
            "record under '{id}' names another customerId"
        )));
    }
    Ok(Some(Loaded {
        record,
        metadata,
        served_by,
    }))
}

/// The customer that holds `email`: the mapping's target, if that record has the email.
async fn owner_of<S: KvStore>(
    plane: &DataPlane<'_, S>,
    email: &Email,
) -> Result<Option<Loaded>, Error> {
    let Some(id) = mapped_id(plane, email).await? else {
        return Ok(None);
    };
    match find(plane, &id).await {
        Ok(Some(loaded)) if loaded.record.email().as_ref() == Some(email) => Ok(Some(loaded)),
        Ok(_) => Ok(None),
        // A corrupt record cannot prove it holds the email; it must not block others.
        Err(err) if err.is_corrupt_record() => Ok(None),
        Err(err) => Err(err),
    }
}

async fn mapped_id<S: KvStore>(
    plane: &DataPlane<'_, S>,
    email: &Email,
) -> Result<Option<CustomerId>, Error> {
    let key = email_key(&email.hash());
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

async fn mapping_points_to<S: KvStore>(
    plane: &DataPlane<'_, S>,
    email: &Email,
    id: &CustomerId,
) -> Result<bool, Error> {
    Ok(mapped_id(plane, email).await?.as_ref() == Some(id))
}

async fn free_derived_id<S: KvStore>(
    plane: &DataPlane<'_, S>,
    email: &Email,
) -> Result<CustomerId, Error> {
    for id in derived_ids(email) {
        if find(plane, &id).await?.is_none() {
            return Ok(id);
        }
    }
    Err(Error::CustomerExists(
        "no free customer id could be derived from that email".to_owned(),
    ))
}

/// `cus_` + 24 hex digits of the email hash, then `_2`, `_3`, … for the rare collision.
fn derived_ids(email: &Email) -> impl Iterator<Item = CustomerId> {
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

fn parse_email_field(body: &Map<String, Value>) -> Result<Option<Email>, Error> {
    match body.get("email") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(raw)) => Email::parse(raw)
            .map(Some)
            .map_err(|m| Error::invalid(Input::Email, m)),
        Some(_) => Err(Error::invalid(Input::Email, "email must be a string")),
    }
}

/// Writes a new record: the mapping first, so a failure between the two leaves at worst
/// an unused mapping (ignored, since the record does not hold the email), never a record
/// its email cannot find.
async fn store_new<S: KvStore>(
    plane: &DataPlane<'_, S>,
    record: CustomerRecord,
) -> Result<Loaded, Error> {
    let mut changes = Vec::new();
    if let Some(email) = record.email() {
        changes.push(mapping_change(&email, record.id()));
    }
    changes.push(record_change(&record, None));
    plane.apply_to_absent_key(&changes).await?;
    Ok(Loaded {
        record,
        metadata: None,
        served_by: plane.phase.authoritative_store(),
    })
}

fn record_change(record: &CustomerRecord, metadata: Option<Value>) -> Change {
    Change::Put {
        key: customer_key(record.id()),
        bytes: record.to_bytes(),
        metadata,
    }
}

fn mapping_change(email: &Email, id: &CustomerId) -> Change {
    Change::Put {
        key: email_key(&email.hash()),
        bytes: id.as_str().as_bytes().to_vec(),
        metadata: None,
    }
}
