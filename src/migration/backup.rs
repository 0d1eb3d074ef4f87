//! Backups as NDJSON: one line per key with its value (as text where it is UTF-8, else
//! base64), metadata and expiration, so a restore reproduces the key exactly.

use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::is_migrated_key;
use crate::error::Error;
use crate::migration::keys;
use crate::migration::state::audit::{self, AuditEntry};
use crate::store::{
    read_many, KvStore, ListedKey, PutOptions, StoreName, StoreResult, StoredValue, Stores,
    MAX_BULK_KEYS, MAX_KEY_BYTES,
};

/// Workers KV's limits on a key and on its metadata, and how far ahead an expiration
/// must be.
const MAX_METADATA_BYTES: usize = 1024;
const MIN_EXPIRATION_AHEAD_SECS: u64 = 60;

/// What a restore may hold: every line is checked against KV's rules before anything is
/// written, so an import is all or nothing.
#[derive(Debug, Clone, Copy)]
pub struct ImportRules {
    pub now_secs: u64,
    /// Keys outside the two customer families (an OTP service's own keys, say), only
    /// when the admin asks for them.
    pub all_keys: bool,
}

/// One line of a backup as read back (an export writes it with `write_line`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupLine {
    pub key: String,
    /// The value, when it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value in standard base64, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Absolute, in seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u64>,
}

impl BackupLine {
    /// The value's bytes, from whichever of `value` and `base64` the line holds.
    pub fn take_bytes(&mut self) -> Result<Vec<u8>, String> {
        match (self.value.take(), self.base64.take()) {
            (Some(text), None) => Ok(text.into_bytes()),
            (None, Some(encoded)) => BASE64
                .decode(encoded.as_bytes())
                .map_err(|e| format!("base64 is not valid: {e}")),
            _ => Err("exactly one of value and base64 must be given".into()),
        }
    }
}

/// A line ready to write back.
#[derive(Debug, Clone, PartialEq)]
pub struct Restore {
    pub key: String,
    pub bytes: Vec<u8>,
    pub options: PutOptions,
}

impl Restore {
    /// The migration's own state is not restored: it describes the run that made the
    /// backup, not the one restoring it.
    pub fn is_migration_state(&self) -> bool {
        keys::is_migration_state(&self.key)
    }
}

/// Parses a whole NDJSON body, or says which line is wrong and why. Blank lines are
/// skipped.
pub fn parse(body: &[u8], rules: ImportRules) -> Result<Vec<Restore>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
    let mut restores = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line_number = index + 1;
        let restore =
            parse_line(raw, rules).map_err(|problem| format!("line {line_number}: {problem}"))?;
        restores.push(restore);
    }
    Ok(restores)
}

fn parse_line(raw: &str, rules: ImportRules) -> Result<Restore, String> {
    let mut line: BackupLine =
        serde_json::from_str(raw).map_err(|e| format!("not a backup line: {e}"))?;
    let options = check_entry(&line.key, line.metadata.take(), line.expiration, rules)?;
    let bytes = line.take_bytes()?;
    Ok(Restore {
        key: line.key,
        bytes,
        options,
    })
}

/// Checks a key to restore, with its metadata and expiration, against KV's rules and the
/// import's: the same for an NDJSON line and for a raw value.
pub fn check_entry(
    key: &str,
    metadata: Option<Value>,
    expiration: Option<u64>,
    rules: ImportRules,
) -> Result<PutOptions, String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!("the key must be 1 to {MAX_KEY_BYTES} bytes"));
    }
    if key == "." || key == ".." {
        return Err("KV refuses the keys . and ..".into());
    }
    let family = keys::is_migration_state(key) || is_migrated_key(key);
    if !family && !rules.all_keys {
        return Err(
            "the key is not a customer record or email mapping (allKeys=true restores others)"
                .into(),
        );
    }
    if let Some(expiration) = expiration {
        if expiration < rules.now_secs + MIN_EXPIRATION_AHEAD_SECS {
            return Err(format!(
                "the expiration must be at least {MIN_EXPIRATION_AHEAD_SECS} s ahead, as KV requires"
            ));
        }
    }
    if let Some(metadata) = &metadata {
        if serde_json::to_vec(metadata).map_or(0, |m| m.len()) > MAX_METADATA_BYTES {
            return Err(format!(
                "metadata is larger than {MAX_METADATA_BYTES} bytes"
            ));
        }
    }
    Ok(PutOptions {
        expiration,
        metadata: metadata.filter(|m| !m.is_null()),
    })
}

/// Values one export page holds, roughly. A page is built whole in memory and an isolate
/// has 128 MB for everything (each value as read, its NDJSON line, the response's copy
/// for the runtime), so a page stops once its values reach this; a value larger than it
/// (KV holds up to 25 MiB) makes a page of its own.
pub const EXPORT_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// Where an export goes on: the list cursor of the page being worked on (none for the
/// first) and, when a page stopped part-way for its bytes, the last key it exported.
/// Sent to clients as base64url JSON and opaque to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportCursor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl ExportCursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// A cursor an export answered, or `None` for anything else.
    pub fn decode(raw: &str) -> Option<Self> {
        let json = URL_SAFE_NO_PAD.decode(raw.as_bytes()).ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// Of a listed page, the keys not exported yet.
    fn not_done(&self, page: Vec<ListedKey>) -> Vec<ListedKey> {
        let after = self.after.as_deref();
        page.into_iter()
            .filter(|k| after.is_none_or(|after| k.name.as_str() > after))
            .collect()
    }
}

/// One page of an export: NDJSON lines, and where the next page starts.
pub struct ExportPage {
    pub ndjson: Vec<u8>,
    pub cursor: Option<ExportCursor>,
    pub complete: bool,
}

/// One page of keys under `prefix` as backup lines: the two customer families only,
/// unless `all_keys`, or the prefix asks for the migration's own state. One list, then
/// bulk reads until the page holds [`EXPORT_PAGE_BYTES`] of values.
pub async fn export_page<S: KvStore>(
    store: &S,
    (prefix, all_keys): (&str, bool),
    cursor: &ExportCursor,
    limit: u32,
) -> StoreResult<ExportPage> {
    let page = store.list(prefix, cursor.list.as_deref(), limit).await?;
    let include_state = keys::is_migration_state(prefix);
    let wanted = |name: &str| {
        if keys::is_migration_state(name) {
            include_state
        } else {
            all_keys || is_migrated_key(name)
        }
    };
    let listed: Vec<_> = cursor
        .not_done(page.keys)
        .into_iter()
        .filter(|k| wanted(&k.name))
        .collect();
    let mut ndjson = Vec::new();
    let mut reads = ReadSizes::default();
    let mut done = 0;
    while done < listed.len() && reads.value_bytes < EXPORT_PAGE_BYTES {
        let chunk = &listed[done..done + reads.next_len(listed.len() - done)];
        let names: Vec<String> = chunk.iter().map(|k| k.name.clone()).collect();
        let values = read_many(store, &names).await?;
        for (key, value) in chunk.iter().zip(values) {
            // Gone since it was listed (deleted or expired): nothing to back up.
            if let Some(value) = value {
                reads.saw(value.bytes.len());
                write_line(&mut ndjson, &key.name, &value, key.expiration);
            }
        }
        done += chunk.len();
    }
    if done < listed.len() {
        // Stopped for its bytes: the next page lists this one again and goes on after
        // the last key written.
        let next = ExportCursor {
            list: cursor.list.clone(),
            after: Some(listed[done - 1].name.clone()),
        };
        return Ok(ExportPage {
            ndjson,
            cursor: Some(next),
            complete: false,
        });
    }
    let next = page
        .cursor
        .filter(|_| !page.complete)
        .map(|list| ExportCursor {
            list: Some(list),
            after: None,
        });
    Ok(ExportPage {
        ndjson,
        cursor: next,
        complete: page.complete,
    })
}

/// How many keys each bulk read of a page asks for. Sizes are unknown until read, so
/// reads start at one key and at most double, and never ask for more than the page has
/// room for at the largest value seen: a page of large values does not read 100 of them
/// at once.
#[derive(Debug, Default)]
struct ReadSizes {
    last_len: usize,
    largest: usize,
    value_bytes: usize,
}

impl ReadSizes {
    fn next_len(&self, left: usize) -> usize {
        let room = EXPORT_PAGE_BYTES.saturating_sub(self.value_bytes);
        let fits = room / self.largest.max(1);
        (self.last_len * 2)
            .clamp(1, MAX_BULK_KEYS)
            .min(fits.max(1))
            .min(left)
    }

    fn saw(&mut self, value_len: usize) {
        self.largest = self.largest.max(value_len);
        self.value_bytes += value_len;
    }
}

/// Appends the backup line of one value, written straight into the page (a 25 MiB value
/// is not copied into a line first).
pub(crate) fn write_line(
    out: &mut Vec<u8>,
    key: &str,
    stored: &StoredValue,
    expiration: Option<u64>,
) {
    #[derive(Serialize)]
    struct Line<'a> {
        key: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expiration: Option<u64>,
    }
    let (value, base64) = match std::str::from_utf8(&stored.bytes) {
        Ok(text) => (Some(text), None),
        Err(_) => (None, Some(BASE64.encode(&stored.bytes))),
    };
    // Room for the line at once, so a large one does not grow the page by copying.
    out.reserve(stored.bytes.len() + stored.bytes.len() / 3 + key.len() + 64);
    let line = Line {
        key,
        value,
        base64,
        metadata: stored.metadata.as_ref(),
        expiration,
    };
    // Writing into a Vec fails only on a non-string map key, which JSON values lack.
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub written: u64,
    pub already_present: u64,
    /// Lines of the migration's own state, never restored.
    pub skipped_migration_state: u64,
}

/// Writes `lines` into `store_name`: only keys it lacks, or every line with
/// `overwrite`; audited.
pub async fn import<S: KvStore>(
    stores: &Stores<S>,
    store_name: StoreName,
    lines: Vec<Restore>,
    overwrite: bool,
    who: &str,
    now_ms: u64,
) -> Result<Imported, Error> {
    let store = stores.get(store_name);
    let (state, data): (Vec<_>, Vec<_>) = lines.into_iter().partition(|l| l.is_migration_state());
    let mut imported = Imported {
        written: 0,
        already_present: 0,
        skipped_migration_state: state.len() as u64,
    };
    for chunk in data.chunks(MAX_BULK_KEYS) {
        let existing = if overwrite {
            vec![None; chunk.len()]
        } else {
            let names: Vec<String> = chunk.iter().map(|l| l.key.clone()).collect();
            read_many(store, &names).await?
        };
        for (line, existing) in chunk.iter().zip(existing) {
            if existing.is_some() {
                imported.already_present += 1;
                continue;
            }
            store
                .put(&line.key, &line.bytes, line.options.clone())
                .await?;
            imported.written += 1;
        }
    }
    audit_import(stores, store_name, imported, who, now_ms).await?;
    Ok(imported)
}

/// Writes one value given raw (`POST /admin/migrate/import/value`, for a value too large
/// for an NDJSON request), as [`import`] writes a line: only if the store lacks the key
/// unless `overwrite`, never the migration's own state, audited. `bytes` goes to the put
/// as it is, not copied.
pub async fn import_value<S: KvStore>(
    stores: &Stores<S>,
    (store_name, key): (StoreName, &str),
    bytes: &[u8],
    options: PutOptions,
    overwrite: bool,
    (who, now_ms): (&str, u64),
) -> Result<Imported, Error> {
    let store = stores.get(store_name);
    let mut imported = Imported {
        written: 0,
        already_present: 0,
        skipped_migration_state: 0,
    };
    if keys::is_migration_state(key) {
        imported.skipped_migration_state = 1;
    } else if !overwrite && is_present(store, key).await? {
        imported.already_present = 1;
    } else {
        store.put(key, bytes, options).await?;
        imported.written = 1;
    }
    audit_import(stores, store_name, imported, who, now_ms).await?;
    Ok(imported)
}

/// Whether `key` exists, asked of a one-key list rather than a read: the value may be
/// 25 MiB, and the one being imported is already in memory.
async fn is_present<S: KvStore>(store: &S, key: &str) -> StoreResult<bool> {
    // `key` is the first of the keys it prefixes, so it is listed first if it exists.
    let page = store.list(key, None, 1).await?;
    Ok(page.keys.first().is_some_and(|k| k.name == key))
}

async fn audit_import<S: KvStore>(
    stores: &Stores<S>,
    store_name: StoreName,
    imported: Imported,
    who: &str,
    now_ms: u64,
) -> Result<(), Error> {
    let detail = format!(
        "{} keys written to the {} store, {} already there",
        imported.written,
        store_name.as_str(),
        imported.already_present
    );
    audit::append(
        &stores.new,
        &AuditEntry::action(who, "import", now_ms, Some(detail)),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_and_binary_values_round_trip_with_metadata_and_expiration() {
        let cases = [
            (
                b"{\"customerId\":\"c1\"}".to_vec(),
                Some(json!({"v": 1})),
                Some(2_000_000_000),
            ),
            (vec![0xff, 0x00, 0xfe, b'a'], None, None),
            ("naïve ✓".as_bytes().to_vec(), None, Some(NOW + 60)),
        ];
        for (bytes, metadata, expiration) in cases {
            let stored = StoredValue {
                bytes: bytes.clone(),
                metadata: metadata.clone(),
            };
            let mut line = Vec::new();
            write_line(&mut line, "customer_c1", &stored, expiration);
            let restored = parse(&line, RULES).unwrap();
            assert_eq!(
                restored,
                vec![Restore {
                    key: "customer_c1".into(),
                    bytes,
                    options: PutOptions {
                        expiration,
                        metadata
                    },
                }]
            );
        }
    }

    const NOW: u64 = 1_800_000_000;
    const RULES: ImportRules = ImportRules {
        now_secs: NOW,
        all_keys: false,
    };

    #[test]
    fn names_the_line_that_is_wrong() {
        let parse = |body: &[u8]| parse(body, RULES);
        let body = b"{\"key\":\"customer_a\",\"value\":\"1\"}\n\n{\"key\":\"customer_b\"}\n";
        assert_eq!(
            parse(body).unwrap_err(),
            "line 3: exactly one of value and base64 must be given"
        );
        assert!(parse(b"{\"key\":\"\",\"value\":\"x\"}")
            .unwrap_err()
            .contains("key"));
        assert!(parse(b"{\"key\":\"customer_a\",\"base64\":\"%%\"}")
            .unwrap_err()
            .contains("base64"));
        assert!(parse(b"[1]").unwrap_err().starts_with("line 1"));
        assert!(parse(b"{\"key\":\"customer_a\",\"value\":\"x\",\"extra\":1}").is_err());
    }

    #[test]
    fn refuses_what_kv_would_refuse_before_anything_is_written() {
        let ok = r#"{"key":"customer_a","value":"x"}"#;
        let body = |bad: &str| format!("{ok}\n{bad}\n{ok}\n").into_bytes();
        let expired = format!(
            r#"{{"key":"customer_b","value":"x","expiration":{}}}"#,
            NOW + 59
        );
        for bad in [
            r#"{"key":"customer_b","value":"x","expiration":1}"#,
            expired.as_str(),
            r#"{"key":"..","value":"x"}"#,
            r#"{"key":".","value":"x"}"#,
        ] {
            let err = parse(&body(bad), RULES).unwrap_err();
            assert!(err.starts_with("line 2:"), "{bad}: {err}");
        }
    }

    #[test]
    fn only_the_customer_families_unless_asked() {
        for key in [
            "otp_session_attacker",
            " __migration/phase",
            "__Migration/phase",
        ] {
            let line = format!(r#"{{"key":"{key}","value":"x"}}"#);
            assert!(parse(line.as_bytes(), RULES).is_err(), "{key:?} accepted");
            let all = ImportRules {
                all_keys: true,
                ..RULES
            };
            assert!(parse(line.as_bytes(), all).is_ok(), "{key:?} refused");
        }
        let mapping = format!(
            r#"{{"key":"email_to_customer_{}","value":"c1"}}"#,
            "a".repeat(64)
        );
        assert!(parse(mapping.as_bytes(), RULES).is_ok());
    }
}
