//! The worker's log lines: one JSON object each, for Workers Logs to index. Every line is
//! built here from counts, codes and route templates, never from paths, bodies or
//! headers, so no email, token or record content can reach the log (README,
//! "Configuration": `LOG_LEVEL`).

use serde::Serialize;
use serde_json::{json, Map, Value};

/// How much the worker logs (`LOG_LEVEL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "debug" => Some(Self::Debug),
            "info" => Some(Self::Info),
            "warn" | "warning" => Some(Self::Warn),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// One request as the log shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestLog {
    pub method: &'static str,
    /// The route's template (`/customer/by-email/{email}`), never the path itself.
    pub route: &'static str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<u8>,
    /// KV operations the request made in this invocation (its objects' are their own).
    pub kv_operations: u32,
    /// Reads this invocation served from the fallback store (phases 2 to 4).
    #[serde(skip_serializing_if = "is_zero")]
    pub fallback_hits: u32,
    /// A failure's detail as `ApiResponse::detail` keeps it (short, without emails).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl RequestLog {
    /// A 5xx is an error, any other refusal a warning, the rest information.
    pub fn level(&self) -> Level {
        match self.status {
            500.. => Level::Error,
            400..=499 => Level::Warn,
            _ => Level::Info,
        }
    }
}

/// The line for `event` at `level` with `fields` (an object) and, when timed, its
/// duration; `None` when `threshold` filters it out.
pub fn line(
    threshold: Level,
    level: Level,
    event: &str,
    fields: impl Serialize,
    duration_ms: Option<u64>,
) -> Option<String> {
    if level < threshold {
        return None;
    }
    let mut object = Map::new();
    object.insert("level".into(), json!(level));
    object.insert("event".into(), json!(event));
    match serde_json::to_value(fields).unwrap_or(Value::Null) {
        Value::Object(fields) => object.extend(fields),
        Value::Null => {}
        other => {
            object.insert("detail".into(), other);
        }
    }
    if let Some(ms) = duration_ms {
        object.insert("durationMs".into(), json!(ms));
    }
    Some(Value::Object(object).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_filtered_by_level() {
        let log = RequestLog {
            method: "GET",
            route: "/customer/{id}",
            status: 404,
            code: Some("customer_not_found".into()),
            phase: Some(2),
            kv_operations: 3,
            fallback_hits: 0,
            detail: None,
        };
        let text = line(Level::Info, log.level(), "request", &log, Some(12)).unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["level"], "warn");
        assert_eq!(parsed["event"], "request");
        assert_eq!(parsed["route"], "/customer/{id}");
        assert_eq!(parsed["kvOperations"], 3);
        assert_eq!(parsed["durationMs"], 12);
        assert!(
            parsed.get("fallbackHits").is_none(),
            "a count of 0 is left out"
        );
        assert!(line(Level::Error, log.level(), "request", &log, None).is_none());
        assert_eq!(Level::parse(" WARNING "), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
    }
}
