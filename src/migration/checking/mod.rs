//! Checking the stores against each other: verification key by key, and the audit of
//! the email mappings.

pub mod emails;
pub mod verify;
