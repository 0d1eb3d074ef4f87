//! [`KvStore`] over a Workers KV binding: the only code that calls `worker::kv`.

use js_sys::{Array, Function, Map, Promise, Reflect, JSON};
use serde_json::Value;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::kv::{KvError, KvStore as WorkersKvBinding};
use worker::Env;

use crate::logging::Level;
use crate::store::{
    KvStore, ListPage, ListedKey, PutOptions, StoreError, StoreResult, StoredValue,
};

pub struct WorkersKv {
    /// `None` for a namespace whose binding was removed (OTP_AUTH_KV once the migration
    /// is finalized, docs/design.md §9): every operation on it fails.
    binding: Option<WorkersKvBinding>,
    /// The same namespace as a JavaScript object, for the bulk read.
    raw: JsValue,
}

impl WorkersKv {
    pub fn from_env(env: &Env, name: &str) -> worker::Result<Self> {
        Ok(Self {
            binding: Some(env.kv(name)?),
            raw: Reflect::get(env, &JsValue::from_str(name))?,
        })
    }

    /// The namespace, or an unbound one if the worker has no such binding.
    pub fn from_env_or_unbound(env: &Env, name: &str) -> Self {
        Self::from_env(env, name).unwrap_or(Self {
            binding: None,
            raw: JsValue::UNDEFINED,
        })
    }

    fn bound(&self, operation: &'static str) -> StoreResult<&WorkersKvBinding> {
        self.binding
            .as_ref()
            .ok_or_else(|| StoreError::new(operation, "the namespace is not bound"))
    }

    /// `getWithMetadata(keys, "text")`: one operation for up to 100 keys. A missing key
    /// comes back as `null`, or as an entry whose value is `null`.
    async fn bulk_get_with_metadata(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<(String, Option<Value>)>>, JsValue> {
        let method: Function =
            Reflect::get(&self.raw, &JsValue::from_str("getWithMetadata"))?.dyn_into()?;
        let names: Array = keys.iter().map(|k| JsValue::from_str(k)).collect();
        let promise: Promise = method
            .call2(&self.raw, &names, &JsValue::from_str("text"))?
            .dyn_into()?;
        let map: Map = JsFuture::from(promise).await?.dyn_into()?;
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            let entry = map.get(&JsValue::from_str(key));
            if entry.is_null() || entry.is_undefined() {
                entries.push(None);
                continue;
            }
            let Some(text) = Reflect::get(&entry, &JsValue::from_str("value"))?.as_string() else {
                entries.push(None);
                continue;
            };
            let metadata = Reflect::get(&entry, &JsValue::from_str("metadata"))?;
            let metadata = if metadata.is_null() || metadata.is_undefined() {
                None
            } else {
                JSON::stringify(&metadata)?
                    .as_string()
                    .and_then(|json| serde_json::from_str(&json).ok())
            };
            entries.push(Some((text, metadata)));
        }
        Ok(entries)
    }
}

fn failed(operation: &'static str) -> impl Fn(KvError) -> StoreError {
    move |err| {
        let message = err.to_string();
        // KV's answer to more than one write a second to one key.
        let rate_limited = message.contains("429") || message.contains("Too Many Requests");
        StoreError {
            rate_limited,
            ..StoreError::new(operation, message)
        }
    }
}

impl KvStore for WorkersKv {
    async fn get(&self, key: &str) -> StoreResult<Option<StoredValue>> {
        let (bytes, metadata) = self
            .bound("get")?
            .get(key)
            .bytes_with_metadata::<Value>()
            .await
            .map_err(failed("get"))?;
        Ok(bytes.map(|bytes| StoredValue { bytes, metadata }))
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<StoredValue>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.bound("bulk get")?;
        let found = self.bulk_get_with_metadata(keys).await.map_err(|err| {
            let message = format!("bulk read failed: {err:?}");
            // KV's answer to values that add up to more than 25 MB: `read_many` splits.
            let too_large = message.contains("413");
            if too_large {
                // A warning whatever LOG_LEVEL says: it names a value too large to read
                // with its neighbours, which an operator should know of.
                let fields = match keys {
                    [only] => serde_json::json!({ "splitKeys": 1, "key": only }),
                    _ => serde_json::json!({ "splitKeys": keys.len() }),
                };
                super::log(Level::Warn, Level::Warn, "kv_bulk_read_split", fields, None);
            }
            StoreError {
                too_large,
                ..StoreError::new("get", message)
            }
        })?;
        let mut values = Vec::with_capacity(keys.len());
        for (key, entry) in keys.iter().zip(found) {
            let value = match entry {
                // Bulk reads decode values as UTF-8; a replacement character may stand for
                // bytes that were not, so such a value is read again as bytes to copy it
                // exactly. Legacy binary values are rare; this costs one read each.
                Some((text, _)) if text.contains('\u{FFFD}') => self.get(key).await?,
                Some((text, metadata)) => Some(StoredValue {
                    bytes: text.into_bytes(),
                    metadata,
                }),
                None => None,
            };
            values.push(value);
        }
        Ok(values)
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> StoreResult<()> {
        let mut put = self
            .bound("put")?
            .put_bytes(key, value)
            .map_err(failed("put"))?;
        if let Some(expiration) = options.expiration {
            put = put.expiration(expiration);
        }
        if let Some(metadata) = options.metadata {
            put = put.metadata(metadata).map_err(failed("put"))?;
        }
        put.execute().await.map_err(failed("put"))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.bound("delete")?
            .delete(key)
            .await
            .map_err(failed("delete"))
    }

    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> StoreResult<ListPage> {
        let mut list = self
            .bound("list")?
            .list()
            .prefix(prefix.to_owned())
            .limit(u64::from(limit.clamp(1, 1000)));
        if let Some(cursor) = cursor {
            list = list.cursor(cursor.to_owned());
        }
        let page = list.execute().await.map_err(failed("list"))?;
        Ok(ListPage {
            keys: page
                .keys
                .into_iter()
                .map(|k| ListedKey {
                    name: k.name,
                    expiration: k.expiration,
                    metadata: k.metadata,
                })
                .collect(),
            cursor: if page.list_complete {
                None
            } else {
                page.cursor
            },
            complete: page.list_complete,
        })
    }
}
