//! HTTP to the worker's admin API, and the admin token it needs.

use jwt_simple::prelude::*;
use serde_json::Value;

use crate::cli::Global;
use crate::outcome::{CommandResult, Failure};

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

/// Who a locally minted token names, so the audit log says who acted.
fn operator() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .map_or_else(|| "operator".to_owned(), |u| format!("{u} (kv-migrate)"))
}

pub struct Client {
    base: String,
    token: String,
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
    pub fn new(global: &Global) -> CommandResult<Self> {
        // An empty variable counts as unset.
        let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let token =
            match (given(&global.token), given(&global.secret)) {
                (Some(token), _) => token,
                (None, Some(secret)) => mint_token(&secret, "admin", &operator(), 15)?,
                (None, None) => return Err(Failure::Unauthorized(
                    "no token: pass --token (or KV_MIGRATE_TOKEN), or set JWT_SECRET to mint one"
                        .into(),
                )),
            };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(120)))
            .build();
        Ok(Self {
            base: global.url.trim_end_matches('/').to_owned(),
            token,
            agent: config.into(),
        })
    }

    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> CommandResult<Answer> {
        let request = self
            .agent
            .get(format!("{}{path}{}", self.base, encode_query(query)))
            .header("Authorization", format!("Bearer {}", self.token));
        Self::read(request.call())
    }

    pub fn post_json(&self, path: &str, body: &Value) -> CommandResult<Answer> {
        self.post(path, &[], "application/json", body.to_string().into_bytes())
    }

    pub fn post(
        &self,
        path: &str,
        query: &[(&str, &str)],
        content_type: &str,
        body: Vec<u8>,
    ) -> CommandResult<Answer> {
        let request = self
            .agent
            .post(format!("{}{path}{}", self.base, encode_query(query)))
            .header("Authorization", format!("Bearer {}", self.token))
            .content_type(content_type);
        Self::read(request.send(&body[..]))
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
