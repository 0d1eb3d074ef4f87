//! How an operator's rule settles a conflict (docs/design.md §6, "Settling"): which value
//! both stores should hold. Pure: the customer's object decides with it on what it reads,
//! and a dry run on what the route reads.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{is_customer_key, CustomerRecord, Tombstone};
use crate::migration::copying::copy::record_newer_than_tombstone;
use crate::store::StoredValue;
use crate::time::{parse_rfc3339_ms, rfc3339};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The old store's value, byte for byte, with its metadata.
    KeepOld,
    /// The new store's value, byte for byte, with its metadata.
    KeepNew,
    /// The record with the later `updatedAt`.
    Newer,
    /// The old record's fields, each field the new record holds replacing its own, stamped
    /// with a new `updatedAt`.
    Merge,
}

/// The side a settled value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chose {
    Old,
    New,
    Merged,
}

/// What a rule makes of a key's two values.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// The stores agree already.
    Agreed,
    /// Both stores should hold this.
    Write { value: StoredValue, chose: Chose },
    /// The rule cannot settle this pair; why, without any value.
    Undecidable(&'static str),
}

/// Settles `key`'s pair by `rule`; `now_ms` stamps a merge.
pub fn resolve(
    rule: Rule,
    key: &str,
    old: Option<&StoredValue>,
    new: Option<&StoredValue>,
    now_ms: u64,
) -> Resolution {
    if !is_customer_key(key) {
        return Resolution::Undecidable(
            "an email mapping is a hint: the email audit points it at the customer whose record holds the email",
        );
    }
    if crate::migration::key_state::agree(old, new) {
        return Resolution::Agreed;
    }
    // A tombstone is an acknowledged delete: no rule writes the customer back over it.
    // Only a record written after the delete (a create over the deleted customer) is
    // newer, and then the tombstone side simply holds no record.
    let deleted = |tomb: Option<&StoredValue>, other: Option<&StoredValue>| match tomb {
        Some(t) if Tombstone::is_tombstone(&t.bytes) => {
            !other.is_some_and(|r| record_newer_than_tombstone(r, t))
        }
        _ => false,
    };
    if deleted(old, new) || deleted(new, old) {
        return Resolution::Undecidable(
            "the customer was deleted: no rule writes a record back over the delete",
        );
    }
    let live = |v: Option<&StoredValue>| v.filter(|v| !Tombstone::is_tombstone(&v.bytes)).cloned();
    let (old, new) = (live(old), live(new));
    let write = |value: StoredValue, chose| Resolution::Write { value, chose };
    match rule {
        Rule::KeepOld => old.map_or(
            Resolution::Undecidable(
                "the old store holds no record; delete the customer through the API",
            ),
            |v| write(v, Chose::Old),
        ),
        Rule::KeepNew => new.map_or(
            Resolution::Undecidable(
                "the new store holds no record; delete the customer through the API",
            ),
            |v| write(v, Chose::New),
        ),
        Rule::Newer | Rule::Merge => {
            let (Some(old), Some(new)) = (old, new) else {
                return Resolution::Undecidable("one store holds no record: keep_old or keep_new");
            };
            let (Ok(old_record), Ok(new_record)) = (
                CustomerRecord::from_stored(&old.bytes),
                CustomerRecord::from_stored(&new.bytes),
            ) else {
                return Resolution::Undecidable("a value is not a record: keep_old or keep_new");
            };
            if old_record.id() != new_record.id() {
                return Resolution::Undecidable("the records name different customerIds");
            }
            let stamp = |r: &CustomerRecord| r.updated_at().and_then(parse_rfc3339_ms);
            let (old_at, new_at) = (stamp(&old_record), stamp(&new_record));
            if rule == Rule::Newer {
                return match (old_at, new_at) {
                    (Some(o), Some(n)) if o > n => write(old, Chose::Old),
                    (Some(o), Some(n)) if n > o => write(new, Chose::New),
                    (Some(_), Some(_)) => {
                        Resolution::Undecidable("both records have the same updatedAt")
                    }
                    _ => Resolution::Undecidable("updatedAt is missing or unreadable on a side"),
                };
            }
            let mut merged = old_record;
            merged.overlay(&new_record);
            // Later than both sides, so every rule of ordering takes it as the last write.
            let after = old_at.max(new_at).map_or(now_ms, |at| now_ms.max(at + 1));
            merged.set_timestamp("updatedAt", rfc3339(after));
            let metadata = new.metadata.or(old.metadata);
            write(
                StoredValue {
                    bytes: merged.to_bytes(),
                    metadata,
                },
                Chose::Merged,
            )
        }
    }
}

/// Whether a pair the operator saw as `seen` (a [`fingerprint`]) holds other values now.
/// A pair that has come to agree has not changed in any way that matters: nothing is
/// left to settle.
pub fn changed_since(
    seen: Option<String>,
    old: Option<&StoredValue>,
    new: Option<&StoredValue>,
) -> bool {
    seen.is_some_and(|seen| seen != fingerprint(old, new))
        && !crate::migration::key_state::agree(old, new)
}

/// A short digest of both sides as they are now: the listing shows it, and a settle
/// given it refuses a key whose values changed since the operator looked.
pub fn fingerprint(old: Option<&StoredValue>, new: Option<&StoredValue>) -> String {
    let mut hash = Sha256::new();
    for side in [old, new] {
        match side {
            None => hash.update([0u8]),
            Some(v) => {
                hash.update([1u8]);
                hash.update((v.bytes.len() as u64).to_be_bytes());
                hash.update(&v.bytes);
                let metadata = v
                    .metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                hash.update((metadata.len() as u64).to_be_bytes());
                hash.update(metadata.as_bytes());
            }
        }
    }
    hash.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> StoredValue {
        StoredValue {
            bytes: text.as_bytes().to_vec(),
            metadata: None,
        }
    }

    const OLD: &str = r#"{"customerId":"c1","email":"a@example.com","name":"Old","plan":"gold","updatedAt":"2026-01-01T00:00:00Z"}"#;
    const NEW: &str = r#"{"customerId":"c1","email":"a@example.com","name":"New","updatedAt":"2026-02-01T00:00:00Z"}"#;

    #[test]
    fn each_rule_picks_its_side() {
        let (old, new) = (value(OLD), value(NEW));
        let pick = |rule| match resolve(rule, "customer_c1", Some(&old), Some(&new), 0) {
            Resolution::Write { chose, value } => (chose, value.bytes),
            other => panic!("{other:?}"),
        };
        assert_eq!(pick(Rule::KeepOld), (Chose::Old, OLD.as_bytes().to_vec()));
        assert_eq!(pick(Rule::KeepNew), (Chose::New, NEW.as_bytes().to_vec()));
        assert_eq!(pick(Rule::Newer), (Chose::New, NEW.as_bytes().to_vec()));
        let (chose, merged) = pick(Rule::Merge);
        assert_eq!(chose, Chose::Merged);
        let merged: serde_json::Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(merged["name"], "New");
        assert_eq!(
            merged["plan"], "gold",
            "a field only the old record holds is kept"
        );
        let stamp = |text: &str| parse_rfc3339_ms(text).unwrap();
        assert!(stamp(merged["updatedAt"].as_str().unwrap()) > stamp("2026-02-01T00:00:00Z"));
    }

    #[test]
    fn what_a_rule_cannot_order_is_left_with_a_reason() {
        let undecided = |rule, key: &str, old: Option<&str>, new: Option<&str>| {
            let (old, new) = (old.map(value), new.map(value));
            matches!(
                resolve(rule, key, old.as_ref(), new.as_ref(), 0),
                Resolution::Undecidable(_)
            )
        };
        let no_stamp = r#"{"customerId":"c1","name":"x"}"#;
        assert!(undecided(
            Rule::Newer,
            "customer_c1",
            Some(no_stamp),
            Some(NEW)
        ));
        assert!(undecided(
            Rule::Merge,
            "customer_c1",
            Some("not json"),
            Some(NEW)
        ));
        assert!(undecided(Rule::KeepOld, "customer_c1", None, Some(NEW)));
        assert!(undecided(
            Rule::KeepNew,
            "email_to_customer_ab",
            Some("c1"),
            Some("c2")
        ));
        let tombstone = String::from_utf8(Tombstone::bytes("2026-03-01T00:00:00Z")).unwrap();
        for rule in [Rule::KeepOld, Rule::KeepNew, Rule::Newer, Rule::Merge] {
            assert!(
                undecided(rule, "customer_c1", Some(OLD), Some(&tombstone)),
                "{rule:?}"
            );
            assert!(
                undecided(rule, "customer_c1", Some(&tombstone), Some(NEW)),
                "{rule:?}"
            );
        }
        let recreated = r#"{"customerId":"c1","updatedAt":"2026-04-01T00:00:00Z"}"#;
        let kept = resolve(
            Rule::KeepOld,
            "customer_c1",
            Some(&value(recreated)),
            Some(&value(&tombstone)),
            0,
        );
        assert!(
            matches!(
                kept,
                Resolution::Write {
                    chose: Chose::Old,
                    ..
                }
            ),
            "a record created after the delete may be kept: {kept:?}"
        );
        let other_id = r#"{"customerId":"c2","updatedAt":"2026-03-01T00:00:00Z"}"#;
        assert!(undecided(
            Rule::Merge,
            "customer_c1",
            Some(OLD),
            Some(other_id)
        ));
        assert_eq!(
            resolve(
                Rule::KeepOld,
                "customer_c1",
                Some(&value(OLD)),
                Some(&value(OLD)),
                0
            ),
            Resolution::Agreed
        );
    }

    #[test]
    fn a_fingerprint_changes_with_either_side() {
        let (old, new) = (value(OLD), value(NEW));
        let seen = fingerprint(Some(&old), Some(&new));
        assert_eq!(seen, fingerprint(Some(&old), Some(&new)));
        assert_ne!(seen, fingerprint(Some(&new), Some(&old)));
        assert_ne!(seen, fingerprint(None, Some(&new)));
        let tagged = StoredValue {
            metadata: Some(serde_json::json!({"v": 1})),
            ..old.clone()
        };
        assert_ne!(seen, fingerprint(Some(&tagged), Some(&new)));
    }
}
