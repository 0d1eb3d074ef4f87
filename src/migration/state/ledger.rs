//! The migration's run state — the backfill's and the reverse sync's checkpoints and
//! leases, the verification and the email audit in progress — kept in the coordinator's
//! strongly consistent storage rather than KV (docs/design.md §11). A run writes its
//! checkpoint after every chunk, which one KV key would refuse beyond one write a
//! second, and a lease in KV cannot keep a second run out: KV reads are eventually
//! consistent. [`Ledgered`] routes those keys to the ledger and every other key to KV,
//! so the code that keeps run state reads and writes it as before.

use serde::{Deserialize, Serialize};

use crate::migration::copying::copy::Direction;
use crate::migration::keys;
use crate::store::{KvStore, ListPage, PutOptions, StoreError, StoreResult, StoredValue};

/// The operation name of a lease the ledger refused because another run holds it.
pub const LEASE_HELD: &str = "lease";

/// Whether `key` is run state, which the ledger keeps.
pub fn is_run_state(key: &str) -> bool {
    [Direction::Forward, Direction::Reverse]
        .into_iter()
        .any(|d| key == keys::checkpoint(d) || key == keys::lease(d))
        || [
            keys::VERIFICATION,
            keys::LAST_FULL_VERIFICATION,
            keys::EMAIL_AUDIT,
            keys::EMAIL_AUDIT_DRY_RUN,
            keys::PURGE,
            keys::PURGE_DRY_RUN,
        ]
        .contains(&key)
}

/// Whether `key` is a run lease, which the ledger grants to one run at a time.
pub fn is_lease(key: &str) -> bool {
    [Direction::Forward, Direction::Reverse]
        .into_iter()
        .any(|d| key == keys::lease(d))
}

/// One op on the ledger, as it travels to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LedgerOp {
    Get {
        key: String,
    },
    /// For a lease: refused while another unexpired lease is held (see [`Lease`]).
    Put {
        key: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<serde_json::Value>,
    },
    Delete {
        key: String,
    },
}

/// The ledger's answer: a value for a get, nothing otherwise.
pub type LedgerReply = Result<Option<StoredValue>, StoreError>;

/// A run's claim on the backfill or the reverse sync, until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub until: u64,
}

/// Applies `op` to the ledger's entries, `stored` being what `op.key` holds now; returns
/// the reply and what the key should hold after (`None` for nothing, or unchanged).
pub fn apply(
    op: &LedgerOp,
    stored: Option<StoredValue>,
    now_ms: u64,
) -> (LedgerReply, Option<Option<StoredValue>>) {
    match op {
        LedgerOp::Get { .. } => (Ok(stored), None),
        LedgerOp::Put {
            key,
            text,
            metadata,
        } => {
            let held = stored
                .as_ref()
                .and_then(|v| serde_json::from_slice::<Lease>(&v.bytes).ok())
                .is_some_and(|lease| lease.until > now_ms);
            if is_lease(key) && held {
                let refused = StoreError::new(LEASE_HELD, "another run holds the lease");
                return (Err(refused), None);
            }
            let value = StoredValue {
                bytes: text.as_bytes().to_vec(),
                metadata: metadata.clone(),
            };
            (Ok(None), Some(Some(value)))
        }
        LedgerOp::Delete { .. } => (Ok(None), Some(None)),
    }
}

/// Whoever keeps the ledger: the coordinator Durable Object.
#[allow(async_fn_in_trait)]
pub trait RunLedger {
    async fn send(&self, op: LedgerOp) -> LedgerReply;
}

/// A store whose run-state keys live in a ledger, when it has one.
pub struct Ledgered<S, L> {
    pub kv: S,
    pub ledger: Option<L>,
}

impl<S: KvStore, L: RunLedger> Ledgered<S, L> {
    fn ledger_for(&self, key: &str) -> Option<&L> {
        self.ledger.as_ref().filter(|_| is_run_state(key))
    }
}

impl<S: KvStore, L: RunLedger> KvStore for Ledgered<S, L> {
    async fn get(&self, key: &str) -> StoreResult<Option<StoredValue>> {
        match self.ledger_for(key) {
            Some(ledger) => ledger.send(LedgerOp::Get { key: key.into() }).await,
            None => self.kv.get(key).await,
        }
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> StoreResult<()> {
        let Some(ledger) = self.ledger_for(key) else {
            return self.kv.put(key, value, options).await;
        };
        let text = String::from_utf8(value.to_vec())
            .map_err(|_| StoreError::new("ledger put", "run state is UTF-8 JSON"))?;
        let op = LedgerOp::Put {
            key: key.into(),
            text,
            metadata: options.metadata,
        };
        ledger.send(op).await.map(|_| ())
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<StoredValue>>> {
        self.kv.get_many(keys).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        match self.ledger_for(key) {
            Some(ledger) => ledger
                .send(LedgerOp::Delete { key: key.into() })
                .await
                .map(|_| ()),
            None => self.kv.delete(key).await,
        }
    }

    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> StoreResult<ListPage> {
        self.kv.list(prefix, cursor, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, text: &str) -> LedgerOp {
        LedgerOp::Put {
            key: key.into(),
            text: text.into(),
            metadata: None,
        }
    }

    fn value(text: &str) -> Option<StoredValue> {
        Some(StoredValue {
            bytes: text.as_bytes().to_vec(),
            metadata: None,
        })
    }

    #[test]
    fn a_held_lease_refuses_a_second_run_until_it_expires() {
        let lease = keys::lease(Direction::Forward);
        let (reply, after) = apply(&put(lease, r#"{"until":200}"#), None, 100);
        assert!(reply.is_ok() && after == Some(value(r#"{"until":200}"#)));
        let (reply, after) = apply(
            &put(lease, r#"{"until":300}"#),
            value(r#"{"until":200}"#),
            150,
        );
        assert_eq!(reply.unwrap_err().operation, LEASE_HELD);
        assert_eq!(after, None, "nothing changes");
        let (reply, _) = apply(
            &put(lease, r#"{"until":300}"#),
            value(r#"{"until":200}"#),
            200,
        );
        assert!(reply.is_ok(), "an expired lease is free");
    }

    #[test]
    fn checkpoints_are_simply_written() {
        let key = keys::checkpoint(Direction::Forward);
        let (reply, after) = apply(&put(key, "{}"), value(r#"{"until":999}"#), 1);
        assert!(reply.is_ok() && after == Some(value("{}")));
        assert!(is_run_state(key) && !is_lease(key));
        assert!(!is_run_state("customer_c1") && !is_run_state(keys::PHASE));
    }
}
