//! The Access team's signing keys (its JWKS), as one isolate keeps them: fetched when
//! first needed, again after an hour, and again when an assertion names a key the copy
//! lacks — which is how a key rotation arrives (docs/design.md §14). An unknown key can
//! force a fetch at most every `REFETCH_AFTER_MS`, so forged assertions cannot turn the
//! worker into a loop of subrequests.

use std::cell::{Cell, RefCell};

use futures::future::LocalBoxFuture;
use jwt_simple::prelude::RS256PublicKey;
use serde_json::Value;

use crate::http::ApiError;

/// How long a fetched key set is used without asking again.
pub const KEYS_TTL_MS: u64 = 3600 * 1000;
/// The least time between two fetches caused by an unknown key or a failure.
pub const REFETCH_AFTER_MS: u64 = 5 * 1000;

/// Reads a URL's body; the platform's `fetch`, or a test's fake.
pub trait KeyFetcher {
    fn get(&self, url: &str) -> LocalBoxFuture<'_, Result<String, String>>;
}

struct KeySet {
    url: String,
    keys: Vec<(String, RS256PublicKey)>,
    fetched_ms: u64,
}

impl KeySet {
    fn find(&self, url: &str, kid: &str) -> Option<RS256PublicKey> {
        if self.url != url {
            return None;
        }
        self.keys
            .iter()
            .find(|(id, _)| id == kid)
            .map(|(_, key)| key.clone())
    }
}

/// The isolate's copy of the key set and the means to fetch it.
pub struct AccessKeys {
    fetcher: Option<Box<dyn KeyFetcher>>,
    set: RefCell<Option<KeySet>>,
    last_fetch_ms: Cell<Option<u64>>,
}

impl Default for AccessKeys {
    /// Keys that can never be fetched: for a worker without Access.
    fn default() -> Self {
        Self {
            fetcher: None,
            set: RefCell::new(None),
            last_fetch_ms: Cell::new(None),
        }
    }
}

impl AccessKeys {
    pub fn new(fetcher: Box<dyn KeyFetcher>) -> Self {
        Self {
            fetcher: Some(fetcher),
            ..Self::default()
        }
    }

    /// The key `kid` of the set published at `url`: `Ok(None)` when the set does not
    /// hold it, an error when no set could ever be read.
    pub async fn key(
        &self,
        url: &str,
        kid: &str,
        now_ms: u64,
    ) -> Result<Option<RS256PublicKey>, ApiError> {
        let (cached, fresh) = match &*self.set.borrow() {
            Some(set) => (
                set.find(url, kid),
                set.url == url && now_ms.saturating_sub(set.fetched_ms) < KEYS_TTL_MS,
            ),
            None => (None, false),
        };
        if cached.is_some() && fresh {
            return Ok(cached);
        }
        // Without any set every request may ask (one arriving while the first fetch is
        // under way must not fail for it); with one, an unknown key asks at most every
        // few seconds.
        let has_set = self.set.borrow().as_ref().is_some_and(|set| set.url == url);
        let may_fetch = !has_set
            || self
                .last_fetch_ms
                .get()
                .is_none_or(|last| now_ms.saturating_sub(last) >= REFETCH_AFTER_MS);
        if may_fetch {
            self.refresh(url, now_ms).await;
        }
        match &*self.set.borrow() {
            Some(set) if set.url == url => Ok(set.find(url, kid)),
            _ => Err(ApiError::new(
                503,
                "access_keys_unavailable",
                "the Access team's signing keys cannot be fetched; try again shortly",
            )),
        }
    }

    /// Replaces the set with the one at `url`; on a failure the previous set stays, as
    /// its keys stay valid for days after a rotation.
    async fn refresh(&self, url: &str, now_ms: u64) {
        self.last_fetch_ms.set(Some(now_ms));
        let Some(fetcher) = &self.fetcher else {
            return;
        };
        let Ok(body) = fetcher.get(url).await else {
            return;
        };
        if let Some(keys) = parse_key_set(&body) {
            *self.set.borrow_mut() = Some(KeySet {
                url: url.to_owned(),
                keys,
                fetched_ms: now_ms,
            });
        }
    }
}

/// The RS256 signing keys of a JWKS document, each by its `kid`; keys of another kind
/// or use are skipped. `None` when the document is not a JWKS at all.
pub fn parse_key_set(body: &str) -> Option<Vec<(String, RS256PublicKey)>> {
    let document: Value = serde_json::from_str(body).ok()?;
    let keys = document.get("keys")?.as_array()?;
    Some(
        keys.iter()
            .filter_map(|jwk| {
                let kid = jwk.get("kid")?.as_str()?.to_owned();
                let key = RS256PublicKey::from_jwk(&jwk.to_string()).ok()?;
                Some((kid, key))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use std::rc::Rc;

    /// A JWKS endpoint whose document the test changes, counting its fetches.
    #[derive(Clone)]
    struct Endpoint {
        body: Rc<RefCell<Result<String, String>>>,
        fetches: Rc<Cell<u32>>,
    }

    impl Default for Endpoint {
        fn default() -> Self {
            Self {
                body: Rc::new(RefCell::new(Err("not published yet".into()))),
                fetches: Rc::default(),
            }
        }
    }

    impl KeyFetcher for Endpoint {
        fn get(&self, _url: &str) -> LocalBoxFuture<'_, Result<String, String>> {
            self.fetches.set(self.fetches.get() + 1);
            let body = self.body.borrow().clone();
            Box::pin(async move { body })
        }
    }

    const URL: &str = "https://team.cloudflareaccess.com/cdn-cgi/access/certs";

    fn jwk(kid: &str) -> Value {
        let pem = include_str!("../../tests/fixtures/access/key-a.pub.pem");
        let key = RS256PublicKey::from_pem(pem).unwrap().with_key_id(kid);
        serde_json::from_str(&key.to_jwk()).unwrap()
    }

    fn set(kids: &[&str]) -> Result<String, String> {
        let keys: Vec<Value> = kids.iter().map(|kid| jwk(kid)).collect();
        Ok(serde_json::json!({ "keys": keys }).to_string())
    }

    #[test]
    fn fetches_once_then_serves_from_the_copy_until_it_is_an_hour_old() {
        let endpoint = Endpoint::default();
        *endpoint.body.borrow_mut() = set(&["k1"]);
        let keys = AccessKeys::new(Box::new(endpoint.clone()));
        for now in [0, 1_000, KEYS_TTL_MS - 1] {
            assert!(block_on(keys.key(URL, "k1", now)).unwrap().is_some());
        }
        assert_eq!(endpoint.fetches.get(), 1);
        assert!(block_on(keys.key(URL, "k1", KEYS_TTL_MS))
            .unwrap()
            .is_some());
        assert_eq!(endpoint.fetches.get(), 2);
    }

    #[test]
    fn an_unknown_key_fetches_again_but_not_more_than_every_few_seconds() {
        let endpoint = Endpoint::default();
        *endpoint.body.borrow_mut() = set(&["k1"]);
        let keys = AccessKeys::new(Box::new(endpoint.clone()));
        assert!(block_on(keys.key(URL, "k1", 0)).unwrap().is_some());
        // The team rotates: k2 signs from now on, k1 stays published.
        *endpoint.body.borrow_mut() = set(&["k2", "k1"]);
        // Within the refetch interval an unknown key is simply unknown.
        assert!(block_on(keys.key(URL, "k2", 1_000)).unwrap().is_none());
        assert_eq!(endpoint.fetches.get(), 1);
        assert!(block_on(keys.key(URL, "k2", REFETCH_AFTER_MS))
            .unwrap()
            .is_some());
        assert!(block_on(keys.key(URL, "k1", REFETCH_AFTER_MS))
            .unwrap()
            .is_some());
        // A forged kid, again and again, costs one fetch per interval.
        for now in REFETCH_AFTER_MS..REFETCH_AFTER_MS + 4_000 {
            assert!(block_on(keys.key(URL, "forged", now)).unwrap().is_none());
        }
        assert_eq!(endpoint.fetches.get(), 2);
    }

    #[test]
    fn a_failed_fetch_keeps_the_previous_keys_and_without_any_is_a_503() {
        let endpoint = Endpoint::default();
        *endpoint.body.borrow_mut() = Err("connection refused".into());
        let keys = AccessKeys::new(Box::new(endpoint.clone()));
        let err = block_on(keys.key(URL, "k1", 0)).unwrap_err();
        assert_eq!((err.status, err.code), (503, "access_keys_unavailable"));
        // With no set yet, the next request asks again at once.
        *endpoint.body.borrow_mut() = set(&["k1"]);
        assert!(block_on(keys.key(URL, "k1", 1)).unwrap().is_some());
        *endpoint.body.borrow_mut() = Ok("<html>maintenance</html>".into());
        let later = 1 + KEYS_TTL_MS;
        assert!(block_on(keys.key(URL, "k1", later)).unwrap().is_some());
        assert_eq!(endpoint.fetches.get(), 3);
    }

    #[test]
    fn skips_keys_that_are_not_rs256_signing_keys() {
        let mut encryption = jwk("enc");
        encryption["use"] = "enc".into();
        let mut ec = jwk("ec");
        ec["kty"] = "EC".into();
        let doc = serde_json::json!({ "keys": [encryption, ec, jwk("good"), {"kty": "RSA"}] });
        let keys = parse_key_set(&doc.to_string()).unwrap();
        let kids: Vec<&str> = keys.iter().map(|(kid, _)| kid.as_str()).collect();
        assert_eq!(kids, ["good"]);
        assert!(parse_key_set("[]").is_none());
        assert!(parse_key_set("not json").is_none());
    }
}
