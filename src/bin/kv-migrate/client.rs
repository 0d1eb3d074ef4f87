//! HTTP to the worker's admin API, and the admin token it needs.

use jwt_simple::prelude::*;
use serde_json::Value;

use crate::credentials::Connection;
use crate::outcome::{CommandResult, Failure};
use crate::retry::{with_retries, RetryPolicy};

/// Largest answer read (an export page of 1,000 keys fits many times over).
const MAX_ANSWER_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct RoleClaim {
    role: String,
}

/// A JWT like the ones the OTP auth service issues, signed with the shared secret.
pub fn mint_token(secret: &str, role: &str, sub: &str, minutes: u64) -> CommandResult<String> {
    let claims = Claims::with_custom_claims(
        RoleClaim {
            role: role.to_owned(),
        },
        Duration::from_mins(minutes),
    )
    .with_subject(sub);
    HS256Key::from_bytes(secret.as_bytes())
        .authenticate(claims)
        .map_err(|e| Failure::Other(format!("could not sign a token: {e}")))
}

pub struct Client {
    connection: Connection,
    retry: RetryPolicy,
    agent: ureq::Agent,
}

/// What the worker answered.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn json(&self) -> CommandResult<Value> {
        serde_json::from_str(&self.body).map_err(|_| {
            Failure::Other(format!(
                "the worker answered {} with a body that is not JSON",
                self.status
            ))
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The answer as JSON if it is a success; otherwise the failure its status means,
    /// with the worker's error message.
    pub fn success(self) -> CommandResult<Value> {
        if (200..300).contains(&self.status) {
            return self.json();
        }
        Err(self.failure())
    }

    pub fn failure(&self) -> Failure {
        let message = self
            .json()
            .ok()
            .and_then(|v| {
                let code = v["error"]["code"].as_str()?.to_owned();
                let message = v["error"]["message"].as_str()?.to_owned();
                Some(format!("{code}: {message}"))
            })
            .unwrap_or_else(|| format!("the worker answered {}", self.status));
        Failure::from_status(self.status, message)
    }
}

impl Client {
    pub fn new(connection: Connection, retry: RetryPolicy) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(120)))
            .build();
        Self {
            connection,
            retry,
            agent: config.into(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.connection.base_url
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> String {
        format!("{}{path}{}", self.connection.base_url, encode_query(query))
    }

    /// The admin token, and the Access service token when the profile names one.
    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let request = match &self.connection.token {
            Some(token) => request.header("Authorization", format!("Bearer {}", token.expose())),
            None => request,
        };
        match &self.connection.access {
            Some(access) => request
                .header("CF-Access-Client-Id", &access.client_id)
                .header("CF-Access-Client-Secret", access.client_secret.expose()),
            None => request,
        }
    }

    /// A GET: reads are safe to repeat, so a 5xx or a lost connection is retried.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> CommandResult<Answer> {
        let url = self.url(path, query);
        self.retrying(&format!("GET {path}"), || {
            Self::read(self.authorize(self.agent.get(&url)).call())
        })
    }

    /// A POST made once: a phase move, a backfill control. Its first attempt may have
    /// acted before the answer was lost, so it is never repeated.
    pub fn post_json(&self, path: &str, body: &Value) -> CommandResult<Answer> {
        self.post(path, &[], "application/json", body.to_string().into_bytes())
    }

    /// A POST that resumes from the worker's checkpoint (a backfill batch, a verification
    /// call, the email audit, a rollback round), so repeating it after a 5xx or a lost
    /// connection does no harm.
    pub fn post_json_resumable(&self, path: &str, body: &Value) -> CommandResult<Answer> {
        let body = body.to_string();
        self.retrying(&format!("POST {path}"), || {
            let request = self.authorize(self.agent.post(self.url(path, &[])));
            Self::read(
                request
                    .content_type("application/json")
                    .send(body.as_bytes()),
            )
        })
    }

    /// A POST made once (see [`Client::post_json`]).
    pub fn post(
        &self,
        path: &str,
        query: &[(&str, &str)],
        content_type: &str,
        body: Vec<u8>,
    ) -> CommandResult<Answer> {
        let request = self.authorize(self.agent.post(self.url(path, query)));
        Self::read(request.content_type(content_type).send(&body[..]))
    }

    fn retrying(
        &self,
        what: &str,
        attempt: impl FnMut() -> CommandResult<Answer>,
    ) -> CommandResult<Answer> {
        with_retries(self.retry, what, attempt, std::thread::sleep, |notice| {
            eprintln!("{notice}")
        })
    }

    fn read(
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> CommandResult<Answer> {
        let mut response = result.map_err(|e| Failure::Unreachable(format!("{e}")))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| Failure::Unreachable(format!("reading the answer: {e}")))?;
        Ok(Answer {
            status,
            body,
            headers,
        })
    }
}

fn encode_query(pairs: &[(&str, &str)]) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect();
    if encoded.is_empty() {
        String::new()
    } else {
        format!("?{}", encoded.join("&"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::credentials::{AccessToken, Secret};

    /// A worker that answers each connection with the next of `statuses`: `{"ok":true}`
    /// for a 200, a store failure otherwise.
    fn scripted_worker(statuses: Vec<u16>) -> (String, mpsc::Receiver<String>) {
        let answers = statuses
            .into_iter()
            .map(|status| {
                let body = if status == 200 {
                    r#"{"ok":true}"#
                } else {
                    r#"{"error":{"code":"store_unavailable","message":"retry"}}"#
                };
                (status, body.to_owned())
            })
            .collect();
        crate::fake_worker::answering(answers)
    }

    /// A client of `url` whose retries wait milliseconds, not seconds.
    pub(crate) fn client(url: String, access: Option<AccessToken>) -> Client {
        let fast = RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        };
        let connection = Connection {
            base_url: url,
            token: Some(Secret::new("the.admin.jwt")),
            access,
        };
        Client::new(connection, fast)
    }

    #[test]
    fn a_get_answered_503_is_tried_again_and_succeeds() {
        let (url, heads) = scripted_worker(vec![503, 200]);
        let answer = client(url, None).get("/admin/migrate/status", &[]).unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.success().unwrap()["ok"], true);
        let first = heads.recv().unwrap();
        assert!(first.starts_with("get /admin/migrate/status "), "{first}");
        assert!(first.contains("authorization: bearer the.admin.jwt"));
        assert!(!first.contains("cf-access-client-id"));
        assert!(heads
            .recv()
            .unwrap()
            .starts_with("get /admin/migrate/status "));
    }

    #[test]
    fn a_resumable_post_is_tried_again_but_a_phase_move_is_not() {
        let (url, heads) = scripted_worker(vec![503, 200, 503]);
        let client = client(url, None);
        let batch = client
            .post_json_resumable("/admin/migrate/backfill", &serde_json::json!({}))
            .unwrap();
        assert_eq!(batch.status, 200);
        assert_eq!(heads.iter().take(2).count(), 2);
        let phase = client
            .post_json("/admin/migrate/phase", &serde_json::json!({ "phase": 1 }))
            .unwrap();
        assert_eq!(phase.status, 503, "a phase move is made once");
        assert!(heads
            .recv()
            .unwrap()
            .starts_with("post /admin/migrate/phase "));
    }

    #[test]
    fn an_access_service_token_goes_with_every_request() {
        let (url, heads) = scripted_worker(vec![200]);
        let access = AccessToken {
            client_id: "id.access".into(),
            client_secret: Secret::new("access-secret"),
        };
        client(url, Some(access))
            .get("/admin/migrate/status", &[])
            .unwrap();
        let head = heads.recv().unwrap();
        assert!(head.contains("cf-access-client-id: id.access"), "{head}");
        assert!(
            head.contains("cf-access-client-secret: access-secret"),
            "{head}"
        );
    }

    #[test]
    fn a_worker_that_stays_down_is_reported_unreachable() {
        // Bound, then closed: nothing listens on the port.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let failure = client(format!("http://127.0.0.1:{port}"), None)
            .get("/admin/migrate/status", &[])
            .err()
            .expect("nothing listens");
        assert_eq!(failure.exit_code(), 6);
    }
}
