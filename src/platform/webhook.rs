//! Delivers alerts (`crate::alerts`) to `ALERT_WEBHOOK_URL`, after the response, through
//! the invocation's `wait_until`; a delivery that fails is logged, never retried.

use worker::{Fetch, Headers, Method, Request, RequestInit};

use crate::alerts::{self, Alert};
use crate::logging::Level;

/// Where the alerts say they come from.
const SOURCE: &str = "customer-kv-migration";

pub async fn deliver(url: String, alerts: Vec<Alert>, threshold: Level) {
    for alert in alerts {
        let outcome = post(&url, &alerts::webhook_body(SOURCE, &alert).to_string()).await;
        if let Err(problem) = outcome {
            let fields = serde_json::json!({ "kind": alert.kind, "problem": problem });
            super::log(threshold, Level::Warn, "alert_undelivered", fields, None);
        }
    }
}

async fn post(url: &str, body: &str) -> Result<(), String> {
    let headers = Headers::new();
    headers
        .set("Content-Type", "application/json")
        .map_err(|_| "headers")?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(wasm_bindgen::JsValue::from_str(body)));
    let request = Request::new_with_init(url, &init).map_err(|_| "the URL is not valid")?;
    // The webhook's own error text may echo the URL, which holds its secret: status only.
    match Fetch::Request(request).send().await {
        Ok(response) if response.status_code() < 300 => Ok(()),
        Ok(response) => Err(format!("answered {}", response.status_code())),
        Err(_) => Err("unreachable".to_owned()),
    }
}
