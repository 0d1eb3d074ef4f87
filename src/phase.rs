//! The phase table of the migration (DESIGN §3) in one place: which store each phase
//! writes (authoritative first) and reads (first tried first).

use crate::store::StoreName::{self, New, Old};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Legacy = 0,
    DualWrite = 1,
    ReadNew = 2,
    Backfill = 3,
    NewPrimary = 4,
    Complete = 5,
}

/// Where a phase sends reads and writes. The first store of each list is the
/// authoritative one: its failure fails the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routing {
    pub writes: &'static [StoreName],
    pub reads: &'static [StoreName],
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Legacy,
        Phase::DualWrite,
        Phase::ReadNew,
        Phase::Backfill,
        Phase::NewPrimary,
        Phase::Complete,
    ];

    pub fn routing(self) -> Routing {
        let (writes, reads): (&'static [StoreName], &'static [StoreName]) = match self {
            Phase::Legacy => (&[Old], &[Old]),
            Phase::DualWrite => (&[Old, New], &[Old]),
            Phase::ReadNew => (&[New, Old], &[New, Old]),
            Phase::Backfill => (&[New, Old], &[New, Old]),
            Phase::NewPrimary => (&[New], &[New, Old]),
            Phase::Complete => (&[New], &[New]),
        };
        Routing { writes, reads }
    }

    /// Whether the cron trigger migrates old data in this phase.
    pub fn cron_backfills(self) -> bool {
        self == Phase::Backfill
    }

    /// Whether a delete leaves a tombstone in the new store rather than removing the key.
    /// From phase 1 on the new store may be read (now or after a move) while the old store
    /// still holds the record, so a plain delete there could be undone by a fallback read
    /// or the backfill; a tombstone also lets a rollback carry the delete back.
    pub fn tombstones_deletes(self) -> bool {
        self != Phase::Legacy
    }

    /// The store reads try first.
    pub fn primary_read_store(self) -> StoreName {
        self.routing().reads[0]
    }

    /// Whether this phase or an adjacent one (which isolates that have not yet seen a
    /// phase change may still be in) reads `store` first.
    pub fn read_first_nearby(self, store: StoreName) -> bool {
        let n = u64::from(self.number());
        [n.checked_sub(1), Some(n), Some(n + 1)]
            .into_iter()
            .flatten()
            .filter_map(Phase::from_number)
            .any(|p| p.primary_read_store() == store)
    }

    /// Whether reads may be served by the old store after missing in the new one.
    pub fn falls_back(self) -> bool {
        self.routing().reads.len() > 1
    }

    pub fn number(self) -> u8 {
        self as u8
    }

    pub fn from_number(n: u64) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| u64::from(p.number()) == n)
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Legacy => "legacy",
            Phase::DualWrite => "dual_write",
            Phase::ReadNew => "read_new",
            Phase::Backfill => "backfill",
            Phase::NewPrimary => "new_primary",
            Phase::Complete => "complete",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of DESIGN §3, restated so a change to `routing` must be deliberate.
    #[test]
    fn routing_matches_the_design_table() {
        let expected: [(&[StoreName], &[StoreName]); 6] = [
            (&[Old], &[Old]),
            (&[Old, New], &[Old]),
            (&[New, Old], &[New, Old]),
            (&[New, Old], &[New, Old]),
            (&[New], &[New, Old]),
            (&[New], &[New]),
        ];
        for (phase, (writes, reads)) in Phase::ALL.into_iter().zip(expected) {
            assert_eq!(phase.routing(), Routing { writes, reads }, "{phase:?}");
        }
    }

    #[test]
    fn adjacent_phases_always_share_a_written_store() {
        // Isolates see a phase change at different moments: two adjacent phases run side
        // by side, so a write acknowledged by one must reach a store the other reads first.
        for pair in Phase::ALL.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                a.routing().writes.contains(&b.primary_read_store()),
                "{a:?}->{b:?}"
            );
            assert!(
                b.routing().writes.contains(&a.primary_read_store()),
                "{b:?}->{a:?}"
            );
        }
    }

    #[test]
    fn only_phase_3_may_leave_its_second_store_behind() {
        let tolerant: Vec<Phase> = Phase::ALL
            .into_iter()
            .filter(|p| p.routing().writes.len() == 2)
            .filter(|p| !p.read_first_nearby(p.routing().writes[1]))
            .collect();
        assert_eq!(tolerant, [Phase::Backfill]);
    }

    #[test]
    fn numbers_round_trip() {
        for phase in Phase::ALL {
            assert_eq!(Phase::from_number(phase.number().into()), Some(phase));
        }
        assert_eq!(Phase::from_number(6), None);
    }
}
