//! What one cron invocation does.

use serde::Serialize;

use super::control;
use super::repair::{self, RepairReport};
use crate::error::ApiError;
use crate::phase::Phase;
use crate::store::{KvStore, Stores};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CronReport {
    pub phase: u8,
    pub repair: RepairReport,
}

/// Drains the repair journal, in every phase: keys out of sync are a risk whichever
/// store reads come from.
pub async fn run<S: KvStore>(
    stores: &Stores<S>,
    default_phase: Phase,
    now_ms: u64,
) -> Result<CronReport, ApiError> {
    // The stored phase, not an isolate's cached copy: a cron run is rare and must act on
    // the freshest state.
    let current = control::load(&stores.new, default_phase).await?;
    let repair = repair::drain(stores, now_ms, repair::ENTRIES_PER_RUN).await?;
    Ok(CronReport {
        phase: current.phase.number(),
        repair,
    })
}
