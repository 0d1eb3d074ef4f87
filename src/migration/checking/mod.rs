//! Checking the stores against each other: the inventory of what the new store held
//! before the migration, verification key by key, and the audit of the email mappings.

pub mod emails;
pub mod inventory;
pub mod verify;
