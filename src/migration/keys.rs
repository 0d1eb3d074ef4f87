//! Every key of the migration's own state, all in `CUSTOMER_KV` under `__migration/`, a
//! prefix that neither key family of the customer data can take (docs/design.md §2).
//! Stored names are part of a running migration's state: they never change.

use crate::migration::copying::copy::Direction;
use crate::store::MAX_KEY_BYTES;

/// Every key of the migration's own state starts with this.
pub const MIGRATION_PREFIX: &str = "__migration/";
/// The phase record (`state::phase_record`).
pub const PHASE: &str = "__migration/phase";
/// The audit log, one key per entry, newest first (`state::audit`).
pub const AUDIT_PREFIX: &str = "__migration/audit/";
/// The repair journal, one key per customer-data key out of sync (`healing::journal`).
pub const JOURNAL_PREFIX: &str = "__migration/journal/";
/// Fallback hits, one key per customer-data key read from the old store.
pub const FALLBACK_PREFIX: &str = "__migration/fallback/";
/// Read-repair copies awaiting their check (`healing::read_repair`).
pub const READ_REPAIR_CHECK_PREFIX: &str = "__migration/settle/";
/// The verification in progress and the last full one (`checking::verify`).
pub const VERIFICATION: &str = "__migration/verify";
pub const LAST_FULL_VERIFICATION: &str = "__migration/verify-last-full";
/// The email audit in progress, real and dry run (`checking::emails`).
pub const EMAIL_AUDIT: &str = "__migration/emails";
pub const EMAIL_AUDIT_DRY_RUN: &str = "__migration/emails-dry-run";

/// The inventory of the new store before the migration (`checking::inventory`).
pub const INVENTORY: &str = "__migration/inventory";
/// Where a purge of the new store stands (`state::purge`), and a dry run's.
pub const PURGE: &str = "__migration/purge";
pub const PURGE_DRY_RUN: &str = "__migration/purge-dry-run";
/// Marks of keys the new store held before the migration, one per key.
pub const PREEXISTING_PREFIX: &str = "__migration/preexisting/";

/// Conflicts the backfill could not order, one entry per key (`checking::conflicts`).
pub const CONFLICT_PREFIX: &str = "__migration/conflict/";
/// An email conflict or orphan the email audit found (`checking::email_issues`).
pub const EMAIL_ISSUE_PREFIX: &str = "__migration/email-issue/";

/// The mark of `key`: see [`about`].
pub fn preexisting(key: &str) -> String {
    about(PREEXISTING_PREFIX, key)
}

/// The conflict entry of `key`: see [`about`].
pub fn conflict(key: &str) -> String {
    about(CONFLICT_PREFIX, key)
}

/// The email audit's entry about mapping `key`: see [`about`].
pub fn email_issue(key: &str) -> String {
    about(EMAIL_ISSUE_PREFIX, key)
}

/// A working key about a customer-data `key`: its name after the prefix, or, where that
/// would pass KV's 512-byte key limit, `#` and the SHA-256 of the name (no customer-data
/// key starts with `#`). Its value names the key where that matters.
fn about(prefix: &str, key: &str) -> String {
    if prefix.len() + key.len() <= MAX_KEY_BYTES {
        format!("{prefix}{key}")
    } else {
        use sha2::{Digest, Sha256};
        format!("{prefix}#{}", hex::encode(Sha256::digest(key)))
    }
}

/// The checkpoint of the backfill or the reverse sync (`copying::backfill`).
pub fn checkpoint(direction: Direction) -> &'static str {
    match direction {
        Direction::Forward => "__migration/backfill",
        Direction::Reverse => "__migration/reverse-sync",
    }
}

/// The run lease of the backfill or the reverse sync.
pub fn lease(direction: Direction) -> &'static str {
    match direction {
        Direction::Forward => "__migration/backfill-lease",
        Direction::Reverse => "__migration/reverse-sync-lease",
    }
}

pub fn journal_entry(key: &str) -> String {
    format!("{JOURNAL_PREFIX}{key}")
}

pub fn fallback_entry(key: &str) -> String {
    format!("{FALLBACK_PREFIX}{key}")
}

/// One entry per copy, so that checking one never removes another's: a key may be
/// read-repaired at two locations before either copy is visible at the other.
pub fn read_repair_check(key: &str, due_ms: u64) -> String {
    format!("{READ_REPAIR_CHECK_PREFIX}{key}/{due_ms}")
}

/// The customer-data key a read-repair check entry names.
pub fn read_repair_checked_key(entry: &str) -> &str {
    let suffix = entry
        .strip_prefix(READ_REPAIR_CHECK_PREFIX)
        .unwrap_or(entry);
    suffix.rsplit_once('/').map_or(suffix, |(key, _)| key)
}

/// Whether `key` belongs to the migration's own state rather than customer data.
pub fn is_migration_state(key: &str) -> bool {
    key.starts_with(MIGRATION_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_migration_state() {
        let keys = [
            PHASE.to_owned(),
            checkpoint(Direction::Forward).to_owned(),
            checkpoint(Direction::Reverse).to_owned(),
            lease(Direction::Forward).to_owned(),
            lease(Direction::Reverse).to_owned(),
            journal_entry("customer_a"),
            fallback_entry("customer_a"),
            read_repair_check("customer_a", 5),
            VERIFICATION.to_owned(),
            LAST_FULL_VERIFICATION.to_owned(),
            EMAIL_AUDIT.to_owned(),
            EMAIL_AUDIT_DRY_RUN.to_owned(),
            format!("{AUDIT_PREFIX}0"),
            preexisting("customer_a"),
            conflict(&format!("customer_{}", "a".repeat(500))),
        ];
        assert!(keys.iter().all(|k| is_migration_state(k)));
    }

    #[test]
    fn a_check_entry_names_its_key() {
        let entry = read_repair_check("customer_a/b", 1_700);
        assert_eq!(read_repair_checked_key(&entry), "customer_a/b");
    }
}
