//! Backups as NDJSON: one line per key with its value (as text where it is UTF-8, else
//! base64), metadata and expiration, so a restore reproduces the key exactly.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::is_migrated_key;
use crate::error::Error;
use crate::migration::keys;
use crate::migration::state::audit::{self, AuditEntry};
use crate::store::{
    read_many, KvStore, PutOptions, StoreName, StoreResult, StoredValue, Stores, MAX_BULK_KEYS,
};

/// Workers KV's limits on a key and on its metadata, and how far ahead an expiration
/// must be.
const MAX_KEY_BYTES: usize = 512;
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
    pub fn new(key: &str, stored: &StoredValue, expiration: Option<u64>) -> Self {
        let (value, base64) = match std::str::from_utf8(&stored.bytes) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (None, Some(BASE64.encode(&stored.bytes))),
        };
        Self {
            key: key.to_owned(),
            value,
            base64,
            metadata: stored.metadata.clone(),
            expiration,
        }
    }

    pub fn to_ndjson(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
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
    let line: BackupLine =
        serde_json::from_str(raw).map_err(|e| format!("not a backup line: {e}"))?;
    if line.key.is_empty() || line.key.len() > MAX_KEY_BYTES {
        return Err(format!("the key must be 1 to {MAX_KEY_BYTES} bytes"));
    }
    if line.key == "." || line.key == ".." {
        return Err("KV refuses the keys . and ..".into());
    }
    let family = keys::is_migration_state(&line.key) || is_migrated_key(&line.key);
    if !family && !rules.all_keys {
        return Err(
            "the key is not a customer record or email mapping (allKeys=true restores others)"
                .into(),
        );
    }
    if let Some(expiration) = line.expiration {
        if expiration < rules.now_secs + MIN_EXPIRATION_AHEAD_SECS {
            return Err(format!(
                "the expiration must be at least {MIN_EXPIRATION_AHEAD_SECS} s ahead, as KV requires"
            ));
        }
    }
    let bytes = match (line.value, line.base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => BASE64
            .decode(encoded.as_bytes())
            .map_err(|e| format!("base64 is not valid: {e}"))?,
        _ => return Err("exactly one of value and base64 must be given".into()),
    };
    if let Some(metadata) = &line.metadata {
        if serde_json::to_vec(metadata).map_or(0, |m| m.len()) > MAX_METADATA_BYTES {
            return Err(format!(
                "metadata is larger than {MAX_METADATA_BYTES} bytes"
            ));
        }
    }
    Ok(Restore {
        key: line.key,
        bytes,
        options: PutOptions {
            expiration: line.expiration,
            metadata: line.metadata.filter(|m| !m.is_null()),
        },
    })
}

/// One page of an export: NDJSON lines, and where the next page starts.
pub struct ExportPage {
    pub ndjson: Vec<u8>,
    pub cursor: Option<String>,
    pub complete: bool,
}

/// One page of keys under `prefix` as backup lines: the two customer families only,
/// unless `all_keys`, or the prefix asks for the migration's own state. One list and a
/// bulk read per 100 keys.
pub async fn export_page<S: KvStore>(
    store: &S,
    (prefix, all_keys): (&str, bool),
    cursor: Option<&str>,
    limit: u32,
) -> StoreResult<ExportPage> {
    let page = store.list(prefix, cursor, limit).await?;
    let include_state = keys::is_migration_state(prefix);
    let wanted = |name: &str| {
        if keys::is_migration_state(name) {
            include_state
        } else {
            all_keys || is_migrated_key(name)
        }
    };
    let listed: Vec<_> = page.keys.into_iter().filter(|k| wanted(&k.name)).collect();
    let mut ndjson = Vec::new();
    for chunk in listed.chunks(MAX_BULK_KEYS) {
        let names: Vec<String> = chunk.iter().map(|k| k.name.clone()).collect();
        let values = read_many(store, &names).await?;
        for (key, value) in chunk.iter().zip(values) {
            // Gone since it was listed (deleted or expired): nothing to back up.
            if let Some(value) = value {
                ndjson.extend(BackupLine::new(&key.name, &value, key.expiration).to_ndjson());
            }
        }
    }
    Ok(ExportPage {
        ndjson,
        cursor: page.cursor.filter(|_| !page.complete),
        complete: page.complete,
    })
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
    Ok(imported)
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
            let line = BackupLine::new("customer_c1", &stored, expiration).to_ndjson();
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
