//! Writes data points (`crate::metrics`) to Workers Analytics Engine through the optional
//! `METRICS` binding. Without the binding nothing is written and nothing else changes.
//! A write is queued by the runtime, not awaited; one it refuses is logged, never
//! allowed to fail the request or the run.

use worker::{AnalyticsEngineDataPointBuilder, Env};

use crate::logging::Level;
use crate::metrics::DataPoint;

pub const BINDING: &str = "METRICS";

pub fn write(env: &Env, point: &DataPoint, threshold: Level) {
    let Ok(dataset) = env.analytics_engine(BINDING) else {
        return;
    };
    let written = AnalyticsEngineDataPointBuilder::new()
        .indexes([point.index.as_str()])
        .doubles(point.doubles.iter().copied())
        .blobs(point.blobs.iter().map(String::as_str))
        .write_to(&dataset);
    if written.is_err() {
        // The runtime's message is not logged: a point is ours, but a message is not.
        let fields = serde_json::json!({ "problem": "the dataset refused a data point" });
        super::log(threshold, Level::Warn, "metrics_unwritten", fields, None);
    }
}
