//! Bringing keys that went out of sync back together: the repair journal of failed
//! second writes, the checks of read-repair copies, and the record of fallback reads.

pub mod fallback;
pub mod journal;
pub mod read_repair;
pub mod repair;
