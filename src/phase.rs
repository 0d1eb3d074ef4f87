//! The phase oracle: the phase table of the migration (docs/design.md §3) and every
//! question the rest of the code asks about a phase or a move between two phases. No
//! other module compares phases by number; each rule below has a table test.

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

/// A phase is stored and shown as its number.
impl serde::Serialize for Phase {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.number())
    }
}

impl<'de> serde::Deserialize<'de> for Phase {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = u8::deserialize(deserializer)?;
        Phase::from_number(number.into())
            .ok_or_else(|| serde::de::Error::custom(format!("no phase {number}")))
    }
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

    /// The store a write must reach first; its failure fails the request.
    pub fn authoritative_store(self) -> StoreName {
        self.routing().writes[0]
    }

    /// The store written after the authoritative one, if the phase writes both.
    pub fn secondary_store(self) -> Option<StoreName> {
        self.routing().writes.get(1).copied()
    }

    /// Whether every write reaches both stores (phases 1 to 3).
    pub fn writes_both(self) -> bool {
        self.secondary_store().is_some()
    }

    /// Whether writes reach `store` at all.
    pub fn writes_to(self, store: StoreName) -> bool {
        self.routing().writes.contains(&store)
    }

    /// How many stores a write reaches.
    pub fn stores_written(self) -> usize {
        self.routing().writes.len()
    }

    /// The store reads try first.
    pub fn primary_read_store(self) -> StoreName {
        self.routing().reads[0]
    }

    /// The store reads never look at, if there is one.
    pub fn unread_store(self) -> Option<StoreName> {
        [StoreName::New, StoreName::Old]
            .into_iter()
            .find(|s| !self.reads_from(*s))
    }

    /// Whether reads ever reach `store`.
    pub fn reads_from(self, store: StoreName) -> bool {
        self.routing().reads.contains(&store)
    }

    /// The store a read that missed in the first one tries next, if any.
    pub fn fallback_store(self) -> Option<StoreName> {
        self.routing().reads.get(1).copied()
    }

    /// Whether reads may be served by the old store after missing in the new one.
    pub fn falls_back(self) -> bool {
        self.routing().reads.len() > 1
    }

    /// Whether the cron trigger migrates old data in this phase.
    pub fn cron_backfills(self) -> bool {
        self == Phase::Backfill
    }

    /// Whether a backfill batch may copy old data into the new store: only while every
    /// write reaches both stores, so a copy racing a write is caught by its re-read of
    /// the old store (docs/design.md §6). In phase 0 copies would go stale at the next
    /// write; from phase 4 on writers skip the old store.
    pub fn backfill_allowed(self) -> bool {
        self.writes_both()
    }

    /// Whether the old store may serve as the source of a copy into the new store (a
    /// repair, a read-repair check's correction): every writer writes it. From phase 4
    /// on nobody does, so such a copy could overwrite a write it would never notice.
    pub fn old_store_is_a_copy_source(self) -> bool {
        self.writes_to(StoreName::Old)
    }

    /// Whether the reverse sync may run after a rollback from phase 4 or 5: every write
    /// reaches both stores and reads still go to the new store first (docs/design.md §9).
    pub fn reverse_sync_allowed(self) -> bool {
        self.writes_both() && self.primary_read_store() == StoreName::New
    }

    /// Whether a read served by the old store is repaired into the new one: only while
    /// every write reaches both stores (docs/design.md §5).
    pub fn read_repairs(self) -> bool {
        self.writes_both()
    }

    /// Whether a clean full verification made now shows the new store caught up: every
    /// write reaches it again.
    pub fn verification_can_clear_new_store_divergence(self) -> bool {
        self.writes_to(StoreName::New)
    }

    /// Whether this is the verification period before the old store stops being read:
    /// reads still fall back, writes no longer reach the old store (phase 4).
    pub fn is_verification_period(self) -> bool {
        self.falls_back() && !self.writes_to(StoreName::Old)
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

    /// The phase one step up, if any.
    pub fn next(self) -> Option<Phase> {
        Phase::from_number(u64::from(self.number()) + 1)
    }

    /// The phase one step down, if any.
    pub fn previous(self) -> Option<Phase> {
        u64::from(self.number())
            .checked_sub(1)
            .and_then(Phase::from_number)
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

/// A change of phase, `from` to `to`: the questions the gates and the phase record ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub from: Phase,
    pub to: Phase,
}

impl Move {
    pub fn new(from: Phase, to: Phase) -> Self {
        Self { from, to }
    }

    /// Whether the move goes to a lower phase.
    pub fn goes_back(self) -> bool {
        self.to < self.from
    }

    /// Whether the move goes to a higher phase.
    pub fn goes_forward(self) -> bool {
        self.to > self.from
    }

    /// Whether the move skips phases: only adjacent phases are safe side by side.
    pub fn skips_phases(self) -> bool {
        self.from.number().abs_diff(self.to.number()) > 1
    }

    /// Whether reads start to go to another store first.
    pub fn moves_reads(self) -> bool {
        self.from.primary_read_store() != self.to.primary_read_store()
    }

    /// Whether reads start to go to the new store first.
    pub fn sends_reads_to_new(self) -> bool {
        self.moves_reads() && self.to.primary_read_store() == StoreName::New
    }

    /// Whether reads start to go back to the old store first.
    pub fn sends_reads_to_old(self) -> bool {
        self.moves_reads() && self.to.primary_read_store() == StoreName::Old
    }

    /// Whether writes stop reaching the old store (into phase 4 or 5).
    pub fn stops_writing_old(self) -> bool {
        self.from.writes_to(StoreName::Old) && !self.to.writes_to(StoreName::Old)
    }

    /// Whether the move starts writing the new store (out of phase 0).
    pub fn starts_writing_new(self) -> bool {
        !self.from.writes_to(StoreName::New) && self.to.writes_to(StoreName::New)
    }

    /// Whether writes stop reaching the new store (into phase 0).
    pub fn stops_writing_new(self) -> bool {
        self.from.writes_to(StoreName::New) && !self.to.writes_to(StoreName::New)
    }

    /// Whether reads stop reaching the old store at all (into phase 5).
    pub fn stops_reading_old(self) -> bool {
        self.from.reads_from(StoreName::Old) && !self.to.reads_from(StoreName::Old)
    }

    /// Whether a rollback may take this move in one step, without the usual gates: from
    /// phase 4 or 5 into phase 2 or 3 reads stay on the new store first and every write
    /// keeps reaching it, in every phase isolates may be in meanwhile; the old store only
    /// starts to be written again, which the reverse sync then completes.
    pub fn is_rollback_jump(self) -> bool {
        !self.from.writes_to(StoreName::Old) && self.to.reverse_sync_allowed()
    }

    /// The lowest phase at or above `target` that a rollback from `from` reaches in one
    /// jump (see [`Move::is_rollback_jump`]), if there is one.
    pub fn rollback_jump_towards(from: Phase, target: Phase) -> Option<Phase> {
        Phase::ALL
            .into_iter()
            .filter(|p| *p >= target)
            .find(|p| Move::new(from, *p).is_rollback_jump())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of docs/design.md §3, restated so a change to `routing` must be deliberate.
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

    /// Each named question, phase by phase 0 to 5.
    #[test]
    fn named_questions_match_the_table() {
        type Question = fn(Phase) -> bool;
        let table: [(&str, Question, [bool; 6]); 9] = [
            (
                "writes_both",
                Phase::writes_both,
                [false, true, true, true, false, false],
            ),
            (
                "falls_back",
                Phase::falls_back,
                [false, false, true, true, true, false],
            ),
            (
                "cron_backfills",
                Phase::cron_backfills,
                [false, false, false, true, false, false],
            ),
            (
                "backfill_allowed",
                Phase::backfill_allowed,
                [false, true, true, true, false, false],
            ),
            (
                "old_store_is_a_copy_source",
                Phase::old_store_is_a_copy_source,
                [true, true, true, true, false, false],
            ),
            (
                "reverse_sync_allowed",
                Phase::reverse_sync_allowed,
                [false, false, true, true, false, false],
            ),
            (
                "read_repairs",
                Phase::read_repairs,
                [false, true, true, true, false, false],
            ),
            (
                "verification_can_clear_new_store_divergence",
                Phase::verification_can_clear_new_store_divergence,
                [false, true, true, true, true, true],
            ),
            (
                "is_verification_period",
                Phase::is_verification_period,
                [false, false, false, false, true, false],
            ),
        ];
        for (name, question, expected) in table {
            let answers: Vec<bool> = Phase::ALL.into_iter().map(question).collect();
            assert_eq!(answers, expected, "{name}");
        }
        let stores = |f: fn(Phase) -> Option<StoreName>| Phase::ALL.map(f);
        assert_eq!(
            stores(Phase::secondary_store),
            [None, Some(New), Some(Old), Some(Old), None, None]
        );
        assert_eq!(
            stores(Phase::unread_store),
            [Some(New), Some(New), None, None, None, Some(Old)]
        );
        assert_eq!(
            Phase::ALL.map(Phase::authoritative_store),
            [Old, Old, New, New, New, New]
        );
        assert_eq!(
            Phase::ALL.map(Phase::primary_read_store),
            [Old, Old, New, New, New, New]
        );
    }

    /// Each question about a move, for every move between two phases.
    #[test]
    fn move_questions_match_the_table() {
        let moves = |question: fn(Move) -> bool| -> Vec<(u8, u8)> {
            let mut found = Vec::new();
            for from in Phase::ALL {
                for to in Phase::ALL {
                    if from != to && question(Move::new(from, to)) {
                        found.push((from.number(), to.number()));
                    }
                }
            }
            found
        };
        let to_any = |targets: &[u8], froms: &[u8]| -> Vec<(u8, u8)> {
            let mut all = Vec::new();
            for f in froms {
                for t in targets {
                    if f != t {
                        all.push((*f, *t));
                    }
                }
            }
            all.sort();
            all
        };
        assert_eq!(
            moves(Move::sends_reads_to_new),
            to_any(&[2, 3, 4, 5], &[0, 1])
        );
        assert_eq!(
            moves(Move::sends_reads_to_old),
            to_any(&[0, 1], &[2, 3, 4, 5])
        );
        assert_eq!(
            moves(Move::stops_writing_old),
            to_any(&[4, 5], &[0, 1, 2, 3])
        );
        assert_eq!(
            moves(Move::stops_writing_new),
            to_any(&[0], &[1, 2, 3, 4, 5])
        );
        assert_eq!(
            moves(Move::stops_reading_old),
            to_any(&[5], &[0, 1, 2, 3, 4])
        );
        assert_eq!(moves(Move::is_rollback_jump), to_any(&[2, 3], &[4, 5]));
        let jump = |from, to| Move::rollback_jump_towards(from, to).map(Phase::number);
        assert_eq!(jump(Phase::Complete, Phase::Legacy), Some(2));
        assert_eq!(jump(Phase::Complete, Phase::Backfill), Some(3));
        assert_eq!(jump(Phase::Complete, Phase::NewPrimary), None);
        assert_eq!(jump(Phase::NewPrimary, Phase::DualWrite), Some(2));
        assert_eq!(jump(Phase::Backfill, Phase::Legacy), None);
        assert!(Move::new(Phase::DualWrite, Phase::Legacy).goes_back());
        assert!(!Move::new(Phase::DualWrite, Phase::DualWrite).goes_back());
        assert!(!Move::new(Phase::DualWrite, Phase::ReadNew).goes_back());
        assert!(Move::new(Phase::DualWrite, Phase::ReadNew).goes_forward());
        assert!(!Move::new(Phase::DualWrite, Phase::DualWrite).goes_forward());
        assert!(Move::new(Phase::DualWrite, Phase::Backfill).skips_phases());
        assert!(!Move::new(Phase::Backfill, Phase::ReadNew).skips_phases());
    }

    #[test]
    fn numbers_round_trip() {
        for phase in Phase::ALL {
            assert_eq!(Phase::from_number(phase.number().into()), Some(phase));
        }
        assert_eq!(Phase::from_number(6), None);
    }
}
