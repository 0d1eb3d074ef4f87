//! Fetches the Access team's signing keys for `auth::keys`.

use futures::future::LocalBoxFuture;
use worker::{Fetch, Method, Request};

use crate::auth::keys::KeyFetcher;
use crate::logging::Level;

pub struct FetchKeys;

impl KeyFetcher for FetchKeys {
    fn get(&self, url: &str) -> LocalBoxFuture<'_, Result<String, String>> {
        let url = url.to_owned();
        Box::pin(async move {
            let fetched = async {
                let request = Request::new(&url, Method::Get).map_err(|e| e.to_string())?;
                let mut response = Fetch::Request(request)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                match response.status_code() {
                    200 => response.text().await.map_err(|e| e.to_string()),
                    status => Err(format!("status {status}")),
                }
            }
            .await;
            if let Err(problem) = &fetched {
                // The URL is the team's public key endpoint; the problem holds no secret.
                let fields = serde_json::json!({ "url": url, "problem": problem });
                super::log(
                    Level::Warn,
                    Level::Warn,
                    "access_keys_unavailable",
                    fields,
                    None,
                );
            }
            fetched
        })
    }
}
