//! Copying keys between the stores: the copy rules, the backfill that pages through the
//! old store, and the same engine run the other way as the reverse sync.

pub mod backfill;
pub mod copy;
pub mod fanout;
pub mod reverse;
