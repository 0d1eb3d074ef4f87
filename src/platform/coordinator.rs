//! The coordinator Durable Object (docs/design.md §11): one instance, named
//! [`INSTANCE`], applies the phase record's ops one at a time, and [`DoRegister`], the
//! worker's side of it. The decisions are the core's (`coordinator::apply`); this file
//! only carries ops and replies and keeps the last record in the object's storage.

use futures::lock::Mutex;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use super::kv::WorkersKv;
use crate::error::Error;
use crate::migration::checking::comparisons::{self, CompareAnswer, CompareOp};
use crate::migration::checking::emails_fanout::{self, AuditAnswer, AuditOp};
use crate::migration::checking::fanned_out;
use crate::migration::copying::fanout::tally::{self, TallyAnswer, TallyOp, TallyStore};
use crate::migration::state::coordinator::{
    self, unavailable, PhaseRegister, RecordOp, RecordOutcome, Refusal, Reply,
};
use crate::migration::state::ledger::{self, LedgerOp, LedgerReply, RunLedger};
use crate::migration::state::phase_record::PhaseState;
use crate::store::{StoreError, StoreResult, StoredValue};

/// The binding, and the name of the one instance every worker talks to.
pub const BINDING: &str = "COORDINATOR";
const INSTANCE: &str = "migration";
/// Where the object keeps the record it last wrote.
const KEPT_RECORD: &str = "phase-record";
/// The path of run-ledger ops (every other request is a record op).
const LEDGER_PATH: &str = "/ledger";
/// The path of tally ops (docs/design.md §13).
const TALLY_PATH: &str = "/tally";
/// The path of a fanned-out verification's ops (docs/design.md §13).
const COMPARE_PATH: &str = "/compare";
/// The path of a fanned-out email audit's ops, a real one's and a dry run's.
const AUDIT_PATH: &str = "/audit";
const DRY_AUDIT_PATH: &str = "/audit-dry";

#[durable_object]
pub struct Coordinator {
    state: State,
    env: Env,
    /// Ops wait here: awaiting KV lets other requests into the object, so the lock, not
    /// the runtime, makes them one at a time.
    lock: Mutex<()>,
}

impl DurableObject for Coordinator {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            lock: Mutex::new(()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if req.path() == TALLY_PATH {
            let Some(op) = super::object_request::<TallyOp>(&mut req).await else {
                return Response::error("not a tally op", 400);
            };
            let _held = self.lock.lock().await;
            let storage = ObjectStorage(self.state.storage());
            return Response::from_json(&tally::apply(&storage, op).await);
        }
        if req.path() == COMPARE_PATH {
            let Some(op) = super::object_request::<CompareOp>(&mut req).await else {
                return Response::error("not a comparison op", 400);
            };
            let _held = self.lock.lock().await;
            let storage = ObjectStorage(self.state.storage());
            return Response::from_json(&comparisons::apply(&storage, op).await);
        }
        if req.path() == AUDIT_PATH || req.path() == DRY_AUDIT_PATH {
            let Some(op) = super::object_request::<AuditOp>(&mut req).await else {
                return Response::error("not an email audit op", 400);
            };
            let space = emails_fanout::space(req.path() == DRY_AUDIT_PATH);
            let _held = self.lock.lock().await;
            let storage = ObjectStorage(self.state.storage());
            return Response::from_json(&fanned_out::apply(&storage, space, op).await);
        }
        if req.path() == LEDGER_PATH {
            let Some(op) = super::object_request::<LedgerOp>(&mut req).await else {
                return Response::error("not a ledger op", 400);
            };
            let _held = self.lock.lock().await;
            return Response::from_json(&self.ledger(op).await);
        }
        let Some(op) = super::object_request::<RecordOp>(&mut req).await else {
            return Response::error("not a record op", 400);
        };
        let _held = self.lock.lock().await;
        let reply: Reply = self.apply(op).await.map_err(Refusal::from);
        Response::from_json(&reply)
    }
}

impl Coordinator {
    async fn apply(&self, op: RecordOp) -> std::result::Result<RecordOutcome, Error> {
        let config = super::config(&self.env).map_err(unavailable)?;
        let new_store = WorkersKv::from_env(&self.env, "CUSTOMER_KV")
            .map_err(|e| unavailable(e.to_string()))?;
        let storage = self.state.storage();
        let kept: Option<PhaseState> = storage
            .get(KEPT_RECORD)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let applied =
            coordinator::apply(&new_store, config.default_phase, kept.clone(), op).await?;
        if applied.record != kept {
            let Some(record) = &applied.record else {
                return Ok(applied.outcome);
            };
            storage
                .put(KEPT_RECORD, record)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
        }
        Ok(applied.outcome)
    }
}

impl Coordinator {
    /// One op on the run ledger (`ledger::apply`), kept under `ledger/<key>`.
    async fn ledger(&self, op: LedgerOp) -> LedgerReply {
        let failed = |e: worker::Error| StoreError::new("ledger", e.to_string());
        let key = match &op {
            LedgerOp::Get { key } | LedgerOp::Put { key, .. } | LedgerOp::Delete { key } => {
                format!("ledger/{key}")
            }
        };
        let storage = self.state.storage();
        let stored: Option<StoredValue> = storage.get(&key).await.map_err(failed)?;
        let (reply, after) = ledger::apply(&op, stored, super::now_ms());
        match after {
            Some(Some(value)) => storage.put(&key, value).await.map_err(failed)?,
            Some(None) => {
                storage.delete(&key).await.map_err(failed)?;
            }
            None => {}
        }
        reply
    }
}

/// The object's storage as the tally (`tally/…`), a fanned-out verification
/// (`compare/…`) and email audit (`audit/…`, `audit-dry/…`) keep their entries in it.
struct ObjectStorage(worker::Storage);

fn storage_failed(err: worker::Error) -> StoreError {
    StoreError::new("coordinator storage", err.to_string())
}

impl TallyStore for ObjectStorage {
    async fn get(&self, key: &str) -> StoreResult<Option<String>> {
        self.0.get(key).await.map_err(storage_failed)
    }

    async fn put(&self, key: &str, value: String) -> StoreResult<()> {
        self.0.put(key, value).await.map_err(storage_failed)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.0.delete(key).await.map(|_| ()).map_err(storage_failed)
    }

    async fn list(&self, prefix: &str, limit: u32) -> StoreResult<Vec<(String, String)>> {
        let options = worker::ListOptions::new()
            .prefix(prefix)
            .limit(limit.min(1_000) as usize);
        let map = self
            .0
            .list_with_options(options)
            .await
            .map_err(storage_failed)?;
        let mut entries = Vec::new();
        for entry in map.entries() {
            let pair = js_sys::Array::from(&entry.map_err(|_| storage_failed("list".into()))?);
            let (Some(key), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string())
            else {
                continue;
            };
            entries.push((key, value));
        }
        Ok(entries)
    }
}

/// The worker's side of the run ledger: each op is one request to the coordinator.
pub struct DoLedger {
    env: Env,
}

impl DoLedger {
    pub fn new(env: &Env) -> Self {
        Self { env: env.clone() }
    }

    async fn send_op(&self, op: &LedgerOp) -> Result<LedgerReply> {
        super::call_object(&self.env, (BINDING, INSTANCE), LEDGER_PATH, op).await
    }
}

impl RunLedger for DoLedger {
    async fn send(&self, op: LedgerOp) -> LedgerReply {
        self.send_op(&op).await.unwrap_or_else(|err| {
            Err(StoreError::new(
                "ledger",
                format!("the coordinator did not answer: {err}"),
            ))
        })
    }
}

/// The worker's side: each op is one request to the coordinator. The binding is looked
/// up when an op is sent, so a worker without it still serves the customer API.
pub struct DoRegister {
    env: Env,
}

impl DoRegister {
    pub fn new(env: &Env) -> Self {
        Self { env: env.clone() }
    }

    async fn send(&self, op: &RecordOp) -> Result<Reply> {
        super::call_object(&self.env, (BINDING, INSTANCE), "/apply", op).await
    }
}

impl DoRegister {
    /// One op on the object's storage at `path`; `what` names it in the error when the
    /// object does not answer.
    async fn store_op<T: serde::de::DeserializeOwned>(
        &self,
        (path, what): (&str, &'static str),
        op: &impl serde::Serialize,
    ) -> StoreResult<T> {
        let reply: Result<StoreResult<T>> =
            super::call_object(&self.env, (BINDING, INSTANCE), path, op).await;
        reply.unwrap_or_else(|err| {
            Err(StoreError::new(
                what,
                format!("the coordinator did not answer: {err}"),
            ))
        })
    }
}

impl PhaseRegister for DoRegister {
    async fn tally(&self, op: TallyOp) -> StoreResult<TallyAnswer> {
        self.store_op((TALLY_PATH, "tally"), &op).await
    }

    async fn compare(&self, op: CompareOp) -> StoreResult<CompareAnswer> {
        self.store_op((COMPARE_PATH, "comparisons"), &op).await
    }

    async fn audit(&self, dry_run: bool, op: AuditOp) -> StoreResult<AuditAnswer> {
        let path = if dry_run { DRY_AUDIT_PATH } else { AUDIT_PATH };
        self.store_op((path, "email audit"), &op).await
    }

    async fn apply(&self, op: RecordOp) -> std::result::Result<RecordOutcome, Error> {
        match self.send(&op).await {
            Ok(reply) => reply.map_err(Error::from),
            Err(err) => Err(unavailable(format!(
                "the coordinator did not answer: {err}"
            ))),
        }
    }
}
