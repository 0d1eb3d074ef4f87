//! The migration core: everything that decides how customer data moves between the
//! stores, free of HTTP and of the Workers runtime (docs/design.md §10).

pub mod backup;
pub mod checking;
pub mod copying;
pub mod cron;
pub mod dataplane;
pub mod healing;
pub mod key_state;
pub mod keys;
pub mod state;
pub mod status;
pub mod stored;

use crate::store::{KvStore, ListedKey, StoreResult};

/// A count of the keys under a prefix and the first few of them, read with `list` only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct KeySample {
    pub count: usize,
    /// False when counting stopped at `max_pages` before the end.
    pub exact: bool,
    pub keys: Vec<String>,
}

impl Default for KeySample {
    fn default() -> Self {
        Self {
            count: 0,
            exact: true,
            keys: Vec::new(),
        }
    }
}

/// Counts the keys under `prefix` (the part after it is reported), reading at most
/// `max_pages` pages of 1,000 so a status call has a bounded cost.
pub async fn sample_keys<S: KvStore>(
    store: &S,
    prefix: &str,
    max_pages: u32,
    max_listed: usize,
    mut keep: impl FnMut(&ListedKey) -> bool,
) -> StoreResult<KeySample> {
    let mut sample = KeySample {
        count: 0,
        exact: true,
        keys: Vec::new(),
    };
    let mut cursor: Option<String> = None;
    for page_number in 0..max_pages {
        let page = store.list(prefix, cursor.as_deref(), 1000).await?;
        for key in page.keys.iter().filter(|k| keep(k)) {
            sample.count += 1;
            if sample.keys.len() < max_listed {
                sample.keys.push(key.name[prefix.len()..].to_owned());
            }
        }
        if page.complete {
            return Ok(sample);
        }
        cursor = page.cursor;
        if page_number + 1 == max_pages {
            sample.exact = false;
        }
    }
    Ok(sample)
}
