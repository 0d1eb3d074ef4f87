//! Domain types that parse at the edge: once a value of these types exists it is valid,
//! so no invalid id or email can reach a store key.

mod customer_id;
mod email;
pub mod json;
mod keys;
pub mod record;

pub use customer_id::CustomerId;
pub use email::{Email, EmailHash};
pub use keys::{
    customer_key, email_key, is_customer_key, is_migrated_key, mapping_target, CUSTOMER_PREFIX,
    EMAIL_PREFIX,
};
pub use record::{CustomerRecord, RecordError, Tombstone, DEFAULT_MAX_RECORD_BYTES};
