//! [`KvStore`] over a Workers KV binding: the only code that calls `worker::kv`.

use serde_json::Value;
use worker::kv::{KvError, KvStore as WorkersKvBinding};

use crate::store::{
    KvStore, ListPage, ListedKey, PutOptions, StoreError, StoreResult, StoredValue,
};

pub struct WorkersKv(pub WorkersKvBinding);

fn failed(operation: &'static str) -> impl Fn(KvError) -> StoreError {
    move |err| StoreError {
        operation,
        message: err.to_string(),
    }
}

impl KvStore for WorkersKv {
    async fn get(&self, key: &str) -> StoreResult<Option<StoredValue>> {
        let (bytes, metadata) = self
            .0
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
        let mut found = self
            .0
            .get_bulk(keys)
            .text_with_metadata::<Value>()
            .await
            .map_err(failed("get"))?;
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let value = match found.remove(key) {
                // Bulk reads decode values as UTF-8; a replacement character may stand for
                // bytes that were not, so such a value is read again as bytes to copy it
                // exactly. Legacy binary values are rare; this costs one read each.
                Some((Some(text), _)) if text.contains('\u{FFFD}') => self.get(key).await?,
                Some((Some(text), metadata)) => Some(StoredValue {
                    bytes: text.into_bytes(),
                    metadata,
                }),
                _ => None,
            };
            values.push(value);
        }
        Ok(values)
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> StoreResult<()> {
        let mut put = self.0.put_bytes(key, value).map_err(failed("put"))?;
        if let Some(expiration) = options.expiration {
            put = put.expiration(expiration);
        }
        if let Some(metadata) = options.metadata {
            put = put.metadata(metadata).map_err(failed("put"))?;
        }
        put.execute().await.map_err(failed("put"))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.0.delete(key).await.map_err(failed("delete"))
    }

    async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> StoreResult<ListPage> {
        let mut list = self
            .0
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
