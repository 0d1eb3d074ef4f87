//! Checking the stores against each other: the inventory of what the new store held
//! before the migration, verification key by key, the audit of the email mappings, and
//! the conflicts the backfill left for the operator.

pub mod comparisons;
pub mod conflicts;
pub mod email_issues;
pub mod emails;
pub mod emails_fanout;
pub mod fanned_out;
pub mod inventory;
pub mod resolve;
pub mod settling;
pub mod verify;
pub mod verify_fanout;
