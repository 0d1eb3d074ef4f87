//! The migration's own state and how it moves: the phase record (its only writer), the
//! gates a move must pass, the audit log, and rollback planning.

pub mod audit;
pub mod cohort;
pub mod coordinator;
pub mod finalize;
pub mod gates;
pub mod ledger;
pub mod phase_cache;
pub mod phase_record;
pub mod purge;
pub mod rollback;
pub mod tombstones;
pub mod working_keys;
