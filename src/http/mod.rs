//! Requests and responses as plain data, so routing and handlers run natively in tests.

use serde_json::Value;

use crate::domain::json::{self, JsonObject};
use crate::domain::CustomerRecord;

mod body;
mod error;

pub use body::{BodyError, BodyLimit, RequestBody, MAX_BODY_BYTES, MAX_VALUE_BYTES};
pub use error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
    Delete,
    Other(String),
}

impl Method {
    /// The method's name (`OTHER` for one the API does not serve).
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Other(_) => "OTHER",
        }
    }

    pub fn parse(raw: &str) -> Self {
        match raw.to_ascii_uppercase().as_str() {
            "GET" | "HEAD" => Method::Get,
            "POST" => Method::Post,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            other => Method::Other(other.to_owned()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    /// The URL path, still percent-encoded.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    pub authorization: Option<String>,
    /// `Cf-Access-Jwt-Assertion`: what Cloudflare Access signed for this request.
    pub access_assertion: Option<String>,
    pub provenance: Provenance,
    pub body: Vec<u8>,
}

/// Where a browser says a request comes from (`Sec-Fetch-Site`, `Origin`), and the host
/// it was sent to. Clients other than browsers send neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    pub fetch_site: Option<String>,
    pub origin: Option<String>,
    pub host: Option<String>,
}

impl Provenance {
    /// Whether a browser sent the request from another site's page: what a credential
    /// the browser adds by itself (Access's cookie) must not be honoured for.
    pub fn is_cross_origin(&self) -> bool {
        if let Some(site) = &self.fetch_site {
            return !matches!(site.trim(), "same-origin" | "none");
        }
        // Browsers without Fetch Metadata still send `Origin` on a cross-origin POST.
        match (&self.origin, &self.host) {
            (None, _) => false,
            (Some(origin), Some(host)) => {
                origin.split_once("://").map(|(_, authority)| authority) != Some(host.as_str())
            }
            (Some(_), None) => true,
        }
    }
}

/// serde's message with the input's own strings left out: `invalid type: string "…"`
/// and `unknown variant `…`` quote what the caller sent, which may be an address or a
/// token (nothing private goes into an error message).
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let string_at = rest.find("string \"").map(|i| (i + "string ".len(), '"'));
        let variant_at = rest.find("variant `").map(|i| (i + "variant ".len(), '`'));
        let next = match (string_at, variant_at) {
            (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        let Some((open, quote)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..open]);
        out.push_str("(not shown)");
        let mut escaped = false;
        let close = rest[open + 1..].char_indices().find(|&(_, c)| {
            let end = c == quote && !escaped;
            escaped = c == '\\' && !escaped;
            end
        });
        match close {
            Some((i, _)) => rest = &rest[open + 1 + i + 1..],
            None => return out,
        }
    }
}

impl ApiRequest {
    pub fn new(method: Method, path: &str) -> Self {
        Self {
            method,
            path: path.to_owned(),
            query: String::new(),
            authorization: None,
            access_assertion: None,
            provenance: Provenance::default(),
            body: Vec::new(),
        }
    }

    /// The value of query parameter `name`, percent-decoded (`+` is a space), if given.
    pub fn query_param(&self, name: &str) -> Result<Option<String>, ApiError> {
        for pair in self.query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            if decode_component(raw_name)? == name {
                return decode_component(raw_value).map(Some);
            }
        }
        Ok(None)
    }

    /// The page size a listing asks for: `default` when absent, else 1 to `max`
    /// (400 `invalid_query` otherwise).
    pub fn limit_param(&self, default: u32, max: u32) -> Result<u32, ApiError> {
        match self.query_param("limit")? {
            None => Ok(default),
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_query", format!("limit must be 1 to {max}"))
                }),
        }
    }

    /// The body as a typed request (an empty body reads as `{}`): 400 `invalid_json`
    /// when it is not JSON, `invalid_body` when it does not fit `T`.
    pub fn json_body<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        let object = json::object_to_value(&self.json_object()?);
        serde_json::from_value(Value::Object(object)).map_err(|e| {
            let why = without_values(&e.to_string());
            ApiError::invalid_body(format!("the body does not fit: {why}"))
        })
    }

    /// The body as a JSON object, its numbers as written (an empty body reads as `{}`):
    /// 400 `invalid_json` when it is not JSON, `invalid_body` when not an object.
    pub fn json_object(&self) -> Result<JsonObject, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonObject::new());
        }
        match json::parse_object(&self.body) {
            Ok(Some(object)) => Ok(object),
            Ok(None) => Err(ApiError::invalid_body("the body must be a JSON object")),
            Err(e) => Err(ApiError::bad_request(
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            )),
        }
    }
}

/// The query string of a URL, without `?` and without any fragment.
pub fn query_of(url: &str) -> &str {
    let without_fragment = url.split('#').next().unwrap_or_default();
    without_fragment
        .split_once('?')
        .map_or("", |(_, query)| query)
}

fn decode_component(raw: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(&raw.replace('+', " "))
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::bad_request("invalid_query", "the query string is not valid UTF-8"))
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    /// The JSON body, unless `raw` replaces it.
    pub body: Value,
    pub headers: Vec<(&'static str, String)>,
    /// What is sent instead of `body`: a body that is not one JSON value (an NDJSON
    /// export), or a record's exact text (`body` is then null: nothing in the worker
    /// reads a record's answer, and building its `Value` cost a read hit more CPU than
    /// its parse; tests read it with [`ApiResponse::parsed`]).
    pub raw: Option<(&'static str, Vec<u8>)>,
    /// An error's detail, for the log, never sent (`ApiError::detail`).
    pub detail: Option<String>,
}

impl ApiResponse {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            headers: Vec::new(),
            raw: None,
            detail: None,
        }
    }

    /// A customer record, sent as its text so that its numbers keep their spelling.
    pub fn record(status: u16, record: &CustomerRecord) -> Self {
        Self::record_text(status, record.to_bytes())
    }

    /// A customer record's text, as [`ApiResponse::record`] writes it.
    pub fn record_text(status: u16, text: Vec<u8>) -> Self {
        Self {
            raw: Some(("application/json", text)),
            ..Self::json(status, Value::Null)
        }
    }

    /// The response with `body` holding what a client parses: a JSON `raw` body (a
    /// record's text) as a `Value`, whose numbers may be rounded. For tests and tools.
    pub fn parsed(mut self) -> Self {
        if let (Value::Null, Some(("application/json", bytes))) = (&self.body, &self.raw) {
            self.body = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        }
        self
    }

    /// A 200 whose body is `bytes` of `content_type`.
    pub fn raw(content_type: &'static str, bytes: Vec<u8>) -> Self {
        Self {
            raw: Some((content_type, bytes)),
            ..Self::ok(Value::Null)
        }
    }

    pub fn ok(body: Value) -> Self {
        Self::json(200, body)
    }

    pub fn error(err: &ApiError) -> Self {
        let response = Self {
            detail: err.detail.clone(),
            ..Self::json(err.status, err.body())
        };
        // KV's rate is one write a second to one key; a claim being written settles as fast.
        if err.status == 429 || err.code == "email_being_claimed" {
            return response.with_header("Retry-After", "1".to_owned());
        }
        response
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl From<ApiError> for ApiResponse {
    fn from(err: ApiError) -> Self {
        ApiResponse::error(&err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_what_lies_between_the_question_mark_and_any_fragment() {
        assert_eq!(query_of("https://w.dev/a?b=1&c=%2F"), "b=1&c=%2F");
        assert_eq!(query_of("https://w.dev/a?b=1#frag?x"), "b=1");
        assert_eq!(query_of("https://w.dev/a#f"), "");
        assert_eq!(query_of("https://w.dev/a"), "");
        assert_eq!(query_of("https://w.dev/?"), "");
    }

    #[test]
    fn query_parameters_are_decoded() {
        let mut request = ApiRequest::new(Method::Get, "/x");
        request.query = "store=old&prefix=a%2Bb+c&cursor=".into();
        assert_eq!(
            request.query_param("store").unwrap().as_deref(),
            Some("old")
        );
        assert_eq!(
            request.query_param("prefix").unwrap().as_deref(),
            Some("a+b c")
        );
        assert_eq!(request.query_param("cursor").unwrap().as_deref(), Some(""));
        assert_eq!(request.query_param("limit").unwrap(), None);
        request.query = "store=%FF".into();
        assert!(request.query_param("store").is_err());
    }
}

#[cfg(test)]
mod value_tests {
    use super::without_values;

    #[test]
    fn what_the_caller_sent_is_left_out_of_serdes_messages() {
        assert_eq!(
            without_values(r#"invalid type: string "alice@example.com", expected a sequence"#),
            "invalid type: string (not shown), expected a sequence"
        );
        assert_eq!(
            without_values(r#"invalid value: string "a\"b@x", expected y"#),
            "invalid value: string (not shown), expected y"
        );
        assert_eq!(
            without_values("unknown variant `bob@x`, expected one of `keep_old`, `keep_new`"),
            "unknown variant (not shown), expected one of `keep_old`, `keep_new`"
        );
        assert_eq!(
            without_values("unknown field `everyone`, expected `to`"),
            "unknown field `everyone`, expected `to`"
        );
        assert_eq!(
            without_values(r#"string "unterminated"#),
            "string (not shown)"
        );
    }
}
