//! The repair journal drained through the customers' objects (docs/design.md §12): a
//! journaled customer record is repaired in its object, on the object's memory of its
//! own writes, so no repair decides on a KV read older than a write the object made.
//! Email mappings are repaired in place: a mapping is only ever copied where it is
//! missing, never decided between (`repair::in_place`).

use crate::domain::{CustomerId, CUSTOMER_PREFIX};
use crate::migration::healing::repair::{self, Repaired, Repairs};
use crate::migration::state::phase_record::CurrentPhase;
use crate::store::{KvStore, StoreError, StoreName, StoreResult, Stores};
use crate::writes::object::{CustomerOp, WriteRequest, Written};
use crate::writes::Writers;

pub struct ThroughObjects<'a, S, W> {
    pub stores: &'a Stores<S>,
    pub writers: &'a W,
    pub current: &'a CurrentPhase,
    pub now_ms: u64,
}

impl<S: KvStore, W: Writers> Repairs for ThroughObjects<'_, S, W> {
    async fn repair(&self, key: &str, lagging: Option<StoreName>) -> StoreResult<Repaired> {
        let customer = key
            .strip_prefix(CUSTOMER_PREFIX)
            .and_then(|raw| CustomerId::parse(raw).ok());
        let Some(id) = customer else {
            return repair::in_place(self.stores, self.current.phase, key, lagging, self.now_ms)
                .await;
        };
        let request = WriteRequest {
            record: self.current.state.clone(),
            op: CustomerOp::Repair { lagging },
            // A repair copies what is stored; it writes no record of its own.
            max_record_bytes: usize::MAX,
        };
        match self.writers.write(&id, request).await.result {
            Ok(Written::Repaired { repair }) => Ok(repair),
            Ok(_) => Err(StoreError::new("customer object", "answered another op")),
            Err(_) => Ok(Repaired::Deferred),
        }
    }
}
