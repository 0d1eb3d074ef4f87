//! The two key families both stores share. Nothing else builds a store key for customer data.

use super::{CustomerId, EmailHash};

pub const CUSTOMER_PREFIX: &str = "customer_";
pub const EMAIL_PREFIX: &str = "email_to_customer_";

pub fn customer_key(id: &CustomerId) -> String {
    format!("{CUSTOMER_PREFIX}{id}")
}

pub fn email_key(hash: &EmailHash) -> String {
    format!("{EMAIL_PREFIX}{}", hash.as_str())
}

/// The customer an email mapping's value names, if it names a valid id. A mapping is
/// only a hint: it counts when that customer's record holds the email.
pub fn mapping_target(value: &[u8]) -> Option<CustomerId> {
    CustomerId::parse(String::from_utf8_lossy(value).trim()).ok()
}

/// Whether a key is a customer record (which keeps a tombstone when deleted from the
/// new store; an email mapping is simply removed).
pub fn is_customer_key(key: &str) -> bool {
    key.starts_with(CUSTOMER_PREFIX)
}

/// Whether a key belongs to one of the families the migration moves.
pub fn is_migrated_key(key: &str) -> bool {
    key.starts_with(CUSTOMER_PREFIX) || key.starts_with(EMAIL_PREFIX)
}
