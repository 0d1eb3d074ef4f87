//! The coordinator of the phase record (docs/design.md §11): one op at a time, each
//! judged against the record its request saw, and never decided on a KV view older than
//! the coordinator's own last write.

mod common;

use common::*;
use customer_kv_migration::migration::state::coordinator::{
    self, LocalRegister, PhaseRegister, RecordOp, RegisterCell,
};
use customer_kv_migration::migration::state::gates::GateFacts;
use customer_kv_migration::migration::state::phase_record::{self, PhaseChangeRequest};
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::{MemoryStore, PutOptions};

fn register<'a>(store: &'a MemoryStore, cell: &'a RegisterCell) -> LocalRegister<'a, MemoryStore> {
    LocalRegister {
        new_store: store,
        default_phase: Phase::Legacy,
        cell,
    }
}

fn move_to(to: Phase) -> PhaseChangeRequest {
    PhaseChangeRequest {
        to,
        force: false,
        reason: None,
        rollback: false,
    }
}

#[test]
fn of_two_moves_judged_on_one_record_only_the_first_applies() {
    let store = MemoryStore::new();
    let cell = RegisterCell::default();
    let register = register(&store, &cell);
    let seen = block_on(coordinator::read(&register, Phase::Legacy)).unwrap();
    let facts = GateFacts::default();
    let (first, after) = block_on(coordinator::change(
        &register,
        &seen,
        move_to(Phase::DualWrite),
        "a",
        &facts,
        START_MS,
    ))
    .unwrap();
    assert_eq!((first.from, first.to), (Phase::Legacy, Phase::DualWrite));
    assert_eq!(after.phase, Phase::DualWrite);
    // The second was judged on the same record: phase 0, before the first move.
    let second = block_on(coordinator::change(
        &register,
        &seen,
        move_to(Phase::DualWrite),
        "b",
        &facts,
        START_MS + 1,
    ));
    let err = second.unwrap_err();
    assert!(
        matches!(&err, customer_kv_migration::error::Error::PhaseMoved(m) if m.contains("now 1") && m.contains("set by a")),
        "{err:?}"
    );
    let stored = block_on(phase_record::load(&store, Phase::Legacy)).unwrap();
    assert_eq!(stored.phase, Phase::DualWrite);
    assert_eq!(stored.state.changed_by, "a");
}

#[test]
fn a_kv_view_older_than_the_coordinators_own_write_does_not_decide() {
    let store = MemoryStore::new();
    let cell = RegisterCell::default();
    let register = register(&store, &cell);
    let seen = block_on(coordinator::read(&register, Phase::Legacy)).unwrap();
    let before = store.peek("__migration/phase");
    assert!(before.is_none());
    block_on(coordinator::change(
        &register,
        &seen,
        move_to(Phase::DualWrite),
        "a",
        &GateFacts::default(),
        START_MS,
    ))
    .unwrap();
    // KV at this location has not caught up: it still lacks the record.
    store.remove("__migration/phase");
    let now = block_on(coordinator::read(&register, Phase::Legacy)).unwrap();
    assert_eq!(
        now.phase,
        Phase::DualWrite,
        "the coordinator keeps its own write"
    );
    // A move judged on the stale view (phase 0) is refused, not applied over phase 1.
    let stale = block_on(coordinator::change(
        &register,
        &seen,
        move_to(Phase::DualWrite),
        "b",
        &GateFacts::default(),
        START_MS + 1,
    ));
    assert!(stale.is_err());
    // A newer record KV shows (written by an earlier version of the worker) is taken.
    let newer =
        serde_json::json!({ "phase": 2, "changedAt": START_MS + 5, "changedBy": "old-worker" });
    block_on(customer_kv_migration::store::KvStore::put(
        &store,
        "__migration/phase",
        newer.to_string().as_bytes(),
        PutOptions::default(),
    ))
    .unwrap();
    let adopted = block_on(coordinator::read(&register, Phase::Legacy)).unwrap();
    assert_eq!(adopted.phase, Phase::ReadNew);
}

#[test]
fn clearing_a_divergence_judged_before_a_move_clears_nothing() {
    let store = MemoryStore::new();
    let cell = RegisterCell::default();
    let register = register(&store, &cell);
    let diverged =
        serde_json::json!({ "phase": 1, "changedAt": START_MS, "newStoreDiverged": true });
    block_on(customer_kv_migration::store::KvStore::put(
        &store,
        "__migration/phase",
        diverged.to_string().as_bytes(),
        PutOptions::default(),
    ))
    .unwrap();
    let judged = block_on(coordinator::read(&register, Phase::Legacy)).unwrap();
    let facts = GateFacts {
        reverse_sync_complete: true,
        ..GateFacts::default()
    };
    block_on(coordinator::change(
        &register,
        &judged,
        move_to(Phase::Legacy),
        "a",
        &facts,
        START_MS + 10,
    ))
    .unwrap();
    let op = RecordOp::ClearNewStoreDivergence {
        judged: judged.state.clone(),
        who: "verifier".into(),
        now_ms: START_MS + 20,
    };
    block_on(register.apply(op)).unwrap();
    let now = block_on(phase_record::load(&store, Phase::Legacy)).unwrap();
    assert_eq!(now.phase, Phase::Legacy);
    assert!(
        now.state.new_store_diverged,
        "a move to phase 0 came after the verification"
    );
}
