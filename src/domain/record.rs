//! The customer record. It is kept as the JSON object it was stored as, so every field —
//! known or unknown, including explicit nulls, key order and the text of its numbers —
//! survives a round trip; the fields the product relies on are checked when a record
//! enters and read through typed accessors.

use serde_json::Value;

use super::json::{self, Json, JsonObject};
use super::{CustomerId, Email};

#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRecord {
    id: CustomerId,
    fields: JsonObject,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RecordError {
    /// Stored bytes that are not a customer record (not JSON, or no valid `customerId`).
    Corrupt(String),
    /// Input with a field of the wrong type or an invalid id/email.
    InvalidField { field: String, message: String },
    /// A write through the API would store more than the record cap allows.
    TooLarge { bytes: usize, limit: usize },
}

/// The most bytes a record written through the API may take, by default: 100 records then
/// always fit one 25 MB bulk read (docs/design.md §2, "Record size").
pub const DEFAULT_MAX_RECORD_BYTES: usize = 256 * 1024;

/// The JSON type each known field must have when it comes in through the API.
#[derive(Clone, Copy)]
enum FieldKind {
    Text,
    List,
    Timestamp,
    Email,
    AnyJson,
}

const KNOWN_FIELDS: &[(&str, FieldKind)] = &[
    ("name", FieldKind::Text),
    ("email", FieldKind::Email),
    ("companyName", FieldKind::Text),
    ("plan", FieldKind::Text),
    ("tier", FieldKind::Text),
    ("status", FieldKind::Text),
    ("subscriptions", FieldKind::List),
    ("flairs", FieldKind::List),
    ("displayName", FieldKind::Text),
    ("config", FieldKind::AnyJson),
    ("features", FieldKind::AnyJson),
    ("createdAt", FieldKind::Timestamp),
    ("updatedAt", FieldKind::Timestamp),
];

impl CustomerRecord {
    /// Reads a stored value. Lenient: legacy records may carry odd field types, and the
    /// API returns them as they are; only a value that is not a record at all is corrupt.
    pub fn from_stored(bytes: &[u8]) -> Result<Self, RecordError> {
        let fields = json::parse_object(bytes)
            .map_err(|e| RecordError::Corrupt(format!("stored value is not JSON: {e}")))?
            .ok_or_else(|| RecordError::Corrupt("stored value is not a JSON object".into()))?;
        let id = match fields.get("customerId") {
            Some(Json::String(raw)) => CustomerId::parse(raw).map_err(RecordError::Corrupt)?,
            _ => {
                return Err(RecordError::Corrupt(
                    "stored record has no string customerId".into(),
                ))
            }
        };
        Ok(Self { id, fields })
    }

    /// Whether `bytes` are a record of `id` that [`CustomerRecord::from_stored`] reads and
    /// [`CustomerRecord::to_bytes`] would write back byte for byte: an answer can then send
    /// them as they are, without building the record (a read hit: BENCHMARKS.md §3).
    /// Anything it is unsure of is `false`, and goes the way of every other record.
    pub fn is_own_text(bytes: &[u8], id: &CustomerId) -> bool {
        bytes.first() == Some(&b'{')
            && json::canonical_field(bytes, "customerId") == Some(Some(id.as_str().as_bytes()))
            && json::is_json(bytes)
    }

    /// What [`CustomerRecord::from_stored`] then [`CustomerRecord::updated_at`] give for
    /// `bytes`, read by a scan without building the record, where the text is canonical
    /// and holds a plain `updatedAt`: a copy compares the versions of every record it
    /// writes (BENCHMARKS.md §3). `None` when unsure: then parse the record.
    pub fn scanned_updated_at(bytes: &[u8]) -> Option<&str> {
        if bytes.first() != Some(&b'{') {
            return None;
        }
        let [Some(id), Some(at)] = json::canonical_fields(bytes, ["customerId", "updatedAt"])?
        else {
            return None;
        };
        let id = std::str::from_utf8(id).ok()?;
        if CustomerId::parse(id).is_err() || !json::is_json(bytes) {
            return None;
        }
        std::str::from_utf8(at).ok()
    }

    /// Builds a new record from API input: every known field must have its type.
    pub fn from_input(id: CustomerId, mut fields: JsonObject) -> Result<Self, RecordError> {
        match fields.get("customerId") {
            None => {}
            Some(Json::String(given)) if given == id.as_str() => {}
            Some(_) => return Err(invalid("customerId", "must equal the record's id")),
        }
        check_known_fields(&fields, false)?;
        trim_email(&mut fields);
        fields.insert("customerId".into(), Json::String(id.to_string()));
        Ok(Self { id, fields })
    }

    /// Takes each of `other`'s top-level fields in place of its own, keeping the fields
    /// only it holds: the field-wise merge of a settled conflict (docs/design.md §6).
    pub fn overlay(&mut self, other: &CustomerRecord) {
        for (name, value) in &other.fields {
            self.fields.insert(name.clone(), value.clone());
        }
    }

    /// Merges a patch (RFC 7386: `null` removes a field, objects merge recursively).
    pub fn apply_patch(&mut self, patch: JsonObject) -> Result<(), RecordError> {
        if let Some(given) = patch.get("customerId") {
            if given.as_str() != Some(self.id.as_str()) {
                return Err(invalid("customerId", "cannot be changed"));
            }
        }
        check_known_fields(&patch, true)?;
        for (name, value) in patch {
            merge_field(&mut self.fields, name, value);
        }
        trim_email(&mut self.fields);
        Ok(())
    }

    pub fn id(&self) -> &CustomerId {
        &self.id
    }

    /// The email as a normalised address, if the record holds a valid one.
    pub fn email(&self) -> Option<Email> {
        self.fields
            .get("email")
            .and_then(Json::as_str)
            .and_then(|raw| Email::parse(raw).ok())
    }

    pub fn updated_at(&self) -> Option<&str> {
        self.fields.get("updatedAt").and_then(Json::as_str)
    }

    pub fn set_timestamp(&mut self, field: &str, rfc3339: String) {
        self.fields.insert(field.to_owned(), Json::String(rfc3339));
    }

    pub fn has_field(&self, field: &str) -> bool {
        self.fields.contains_key(field)
    }

    /// The record as a `serde_json::Value`, whose numbers lose their spelling: for tests
    /// and inspection only; what is stored and sent is [`Self::to_bytes`].
    pub fn to_value(&self) -> Value {
        Value::Object(json::object_to_value(&self.fields))
    }

    /// The record as compact JSON, every number as it was written.
    pub fn to_text(&self) -> String {
        json::object_text(&self.fields)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_text().into_bytes()
    }

    /// The bytes to store, if they fit `limit`.
    pub fn to_bytes_within(&self, limit: usize) -> Result<Vec<u8>, RecordError> {
        let bytes = self.to_bytes();
        if bytes.len() > limit {
            return Err(RecordError::TooLarge {
                bytes: bytes.len(),
                limit,
            });
        }
        Ok(bytes)
    }
}

/// Carries a record between a customer's object and the worker as its text (a JSON
/// string on the wire), so that its numbers keep their text there too.
pub mod record_as_text {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{CustomerRecord, RecordError};

    pub fn serialize<S: Serializer>(
        record: &CustomerRecord,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&record.to_text())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<CustomerRecord, D::Error> {
        let text = String::deserialize(deserializer)?;
        CustomerRecord::from_stored(text.as_bytes()).map_err(|err| match err {
            RecordError::Corrupt(message) => D::Error::custom(message),
            RecordError::InvalidField { message, .. } => D::Error::custom(message),
            RecordError::TooLarge { bytes, limit } => {
                D::Error::custom(format!("record of {bytes} bytes over {limit}"))
            }
        })
    }
}

/// The marker a delete leaves in the new store so that neither a fallback read nor the
/// backfill can bring the record back from the old store.
pub struct Tombstone;

impl Tombstone {
    const FIELD: &'static str = "__tombstone";

    pub fn bytes(deleted_at_rfc3339: &str) -> Vec<u8> {
        serde_json::json!({ Self::FIELD: { "deletedAt": deleted_at_rfc3339 } })
            .to_string()
            .into_bytes()
    }

    /// When the customer was deleted, in milliseconds, if the marker says.
    pub fn deleted_at_ms(bytes: &[u8]) -> Option<u64> {
        let marker: Value = serde_json::from_slice(bytes).ok()?;
        let at = marker.get(Self::FIELD)?.get("deletedAt")?.as_str()?;
        crate::time::parse_rfc3339_ms(at)
    }

    pub fn is_tombstone(bytes: &[u8]) -> bool {
        // Cheap prefix test first: records are far more common than tombstones.
        bytes.starts_with(b"{\"__tombstone\"")
            && matches!(serde_json::from_slice::<Value>(bytes),
                Ok(Value::Object(map)) if map.len() == 1 && map.contains_key(Self::FIELD))
    }
}

fn invalid(field: &str, message: &str) -> RecordError {
    RecordError::InvalidField {
        field: field.to_owned(),
        message: format!("{field} {message}"),
    }
}

fn check_known_fields(fields: &JsonObject, nulls_allowed: bool) -> Result<(), RecordError> {
    for (name, kind) in KNOWN_FIELDS {
        let Some(value) = fields.get(*name) else {
            continue;
        };
        if value.is_null() && nulls_allowed {
            continue;
        }
        check_kind(name, *kind, value)?;
    }
    Ok(())
}

fn check_kind(name: &str, kind: FieldKind, value: &Json) -> Result<(), RecordError> {
    match kind {
        FieldKind::AnyJson => Ok(()),
        FieldKind::Text if matches!(value, Json::String(_)) => Ok(()),
        FieldKind::Text => Err(invalid(name, "must be a string")),
        FieldKind::List if matches!(value, Json::Array(_)) => Ok(()),
        FieldKind::List => Err(invalid(name, "must be an array")),
        FieldKind::Timestamp => match value.as_str() {
            Some(text) if crate::time::is_rfc3339(text) => Ok(()),
            _ => Err(invalid(name, "must be an RFC 3339 timestamp string")),
        },
        FieldKind::Email => match value.as_str() {
            Some(text) => {
                Email::parse(text)
                    .map(|_| ())
                    .map_err(|message| RecordError::InvalidField {
                        field: "email".into(),
                        message,
                    })
            }
            None => Err(invalid(name, "must be a string")),
        },
    }
}

/// Stores the email trimmed, as the user typed it otherwise; lookups use its normal form.
fn trim_email(fields: &mut JsonObject) {
    if let Some(Json::String(email)) = fields.get_mut("email") {
        let trimmed = super::email::js_trim(email);
        if trimmed.len() != email.len() {
            *email = trimmed.to_owned();
        }
    }
}

fn merge_field(target: &mut JsonObject, name: String, patch: Json) {
    match patch {
        Json::Null => {
            // The other fields keep their order.
            target.shift_remove(&name);
        }
        Json::Object(patch_fields) => {
            let slot = target
                .entry(name)
                .or_insert_with(|| Json::Object(JsonObject::new()));
            if !matches!(slot, Json::Object(_)) {
                *slot = Json::Object(JsonObject::new());
            }
            if let Json::Object(existing) = slot {
                for (inner_name, inner_value) in patch_fields {
                    merge_field(existing, inner_name, inner_value);
                }
            }
        }
        other => {
            target.insert(name, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn own_text_is_what_is_read_and_written_back_unchanged() {
        let id = CustomerId::parse("c1").unwrap();
        for (text, own) in [
            (
                r#"{"customerId":"c1","n":1e2,"a":{"customerId":"x"},"s":"é\n"}"#,
                true,
            ),
            (r#"{"n":-0,"customerId":"c1"}"#, true),
            (r#"{"customerId":"c2"}"#, false),
            (r#"{"customerId": "c1"}"#, false),
            (r#"{"customerId":"c1","customerId":"c1"}"#, false),
            (r#"{"customerId":"c1",}"#, false),
            (r#"{"customerId":"c1""#, false),
            (r#"{"customerId":"c1"}x"#, false),
            (r#"{"customerId":"c\u0031"}"#, false),
            (r#"{"a":{"customerId":"c1"}}"#, false),
            (r#"{"customerId":1}"#, false),
            (r#"["customerId","c1"]"#, false),
            ("{\"customerId\":\"c1\",\"replacement\":\"\u{FFFD}\"}", true),
        ] {
            assert_eq!(
                CustomerRecord::is_own_text(text.as_bytes(), &id),
                own,
                "{text}"
            );
            if own {
                let record = CustomerRecord::from_stored(text.as_bytes()).unwrap();
                assert_eq!(record.id(), &id);
                assert_eq!(record.to_bytes(), text.as_bytes());
            }
        }
        assert!(!CustomerRecord::is_own_text(
            b"{\"customerId\":\"c1\",\"x\":\"\xff\"}",
            &id
        ));
        // As deep as the reader goes, and one level past it (a corrupt record).
        for depth in [126, 127, 128, 200] {
            let text = format!(
                r#"{{"customerId":"c1","a":{}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            assert_eq!(
                CustomerRecord::is_own_text(text.as_bytes(), &id),
                CustomerRecord::from_stored(text.as_bytes()).is_ok(),
                "{depth}"
            );
        }
    }

    /// Record-like text: `customerId` (not always first, not always a string, at times
    /// twice), odd strings (control characters, DEL, U+2028, every escape), numbers in
    /// any spelling, nesting to past the reader's limit, and whitespace here and there.
    fn record_text() -> impl Strategy<Value = String> {
        let string = "\"([a-z\u{7f}\u{2028}\u{1}é]|\\\\[nt\"/\\\\bfr]|\\\\u00(0[0-9a-fA-F]|1f|e9|22|5c)){0,5}\"";
        let value = prop_oneof![
            string.prop_map(|s| s),
            "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?",
            (120usize..=130).prop_map(|depth| format!(
                "{}{}",
                "[".repeat(depth),
                "]".repeat(depth)
            )),
            Just("{\"customerId\":\"c1\"}".to_owned()),
            Just("null".to_owned()),
            Just("\"2026-01-02T03:04:05.678Z\"".to_owned()),
        ];
        let id = prop_oneof![
            Just("\"c1\"".to_owned()),
            Just("\"c2\"".to_owned()),
            Just("1".to_owned())
        ];
        let key = prop_oneof![
            Just("\"a\""),
            Just("\"b\""),
            Just("\"customerId\""),
            Just("\"updatedAt\"")
        ];
        let space = prop_oneof![8 => Just(""), 1 => Just(" "), 1 => Just("\n")];
        (
            id,
            prop::collection::vec((key, value, space), 0..4),
            0usize..4,
        )
            .prop_map(|(id, fields, at)| {
                let mut parts: Vec<String> = fields
                    .into_iter()
                    .map(|(k, v, s)| format!("{k}:{s}{v}"))
                    .collect();
                parts.insert(at.min(parts.len()), format!("\"customerId\":{id}"));
                format!("{{{}}}", parts.join(","))
            })
    }

    proptest! {
        #[test]
        fn own_text_is_read_and_written_back_byte_for_byte(text in record_text()) {
            let id = CustomerId::parse("c1").unwrap();
            let read = CustomerRecord::from_stored(text.as_bytes());
            if CustomerRecord::is_own_text(text.as_bytes(), &id) {
                let record = read.expect("own text is a record");
                prop_assert_eq!(record.id(), &id);
                prop_assert_eq!(record.to_bytes(), text.as_bytes().to_vec());
            } else if let Some(record) = read.ok().filter(|r| r.id() == &id) {
                // What the worker writes back is always its own text.
                prop_assert!(CustomerRecord::is_own_text(&record.to_bytes(), &id));
            }
        }
    }

    proptest! {
        #[test]
        fn a_scanned_version_is_the_parsed_one(text in record_text()) {
            if let Some(at) = CustomerRecord::scanned_updated_at(text.as_bytes()) {
                let record = CustomerRecord::from_stored(text.as_bytes());
                let record = record.expect("scanned text is a record");
                prop_assert_eq!(record.updated_at(), Some(at));
            }
        }
    }

    #[test]
    fn a_version_is_scanned_only_where_the_scan_is_sure() {
        let at = "2026-01-02T03:04:05.678Z";
        for (text, scanned) in [
            (
                format!(r#"{{"customerId":"c1","updatedAt":"{at}"}}"#),
                Some(at),
            ),
            (
                format!(r#"{{"updatedAt":"{at}","n":1,"customerId":"c1"}}"#),
                Some(at),
            ),
            (
                format!(r#"{{"a":{{"updatedAt":"x"}},"customerId":"c1","updatedAt":"{at}"}}"#),
                Some(at),
            ),
            // Unsure, so parsed: no plain updatedAt, an escape, whitespace, an id that is
            // not one, not JSON, a key twice.
            (r#"{"customerId":"c1"}"#.to_owned(), None),
            (r#"{"customerId":"c1","updatedAt":7}"#.to_owned(), None),
            (
                r#"{"customerId":"c1","updatedAt":"\u0032"}"#.to_owned(),
                None,
            ),
            (
                format!(r#"{{"customerId":"c1", "updatedAt":"{at}"}}"#),
                None,
            ),
            (format!(r#"{{"customerId":"","updatedAt":"{at}"}}"#), None),
            (
                format!(r#"{{"customerId":"c1","updatedAt":"{at}",}}"#),
                None,
            ),
            (
                format!(r#"{{"customerId":"c1","updatedAt":"{at}","updatedAt":"{at}"}}"#),
                None,
            ),
        ] {
            assert_eq!(
                CustomerRecord::scanned_updated_at(text.as_bytes()),
                scanned,
                "{text}"
            );
        }
    }

    fn fields(value: Value) -> JsonObject {
        json::parse_object(value.to_string().as_bytes())
            .unwrap()
            .expect("test input is an object")
    }

    #[test]
    fn stored_records_round_trip_byte_for_byte() {
        let raw = br#"{"customerId":"c1","zeta":null,"name":7,"nested":{"b":1,"a":[1.5,"x"]}}"#;
        let record = CustomerRecord::from_stored(raw).unwrap();
        assert_eq!(record.to_bytes(), raw.to_vec());
    }

    #[test]
    fn corrupt_values_are_reported_not_panicked() {
        for raw in [
            &b"{not json"[..],
            b"[]",
            b"{\"customerId\":5}",
            b"{\"customerId\":\"a\\nb\"}",
            b"{\"customerId\":\"\"}",
            b"",
        ] {
            assert!(matches!(
                CustomerRecord::from_stored(raw),
                Err(RecordError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn input_checks_known_field_types_and_keeps_unknown_fields() {
        let id = CustomerId::parse("c1").unwrap();
        let err = CustomerRecord::from_input(id.clone(), fields(json!({"name": 3}))).unwrap_err();
        assert!(matches!(err, RecordError::InvalidField { field, .. } if field == "name"));
        let record =
            CustomerRecord::from_input(id, fields(json!({"email": " A@B.io ", "x": {"y": 1}})))
                .unwrap();
        assert_eq!(
            record.to_value(),
            json!({"email": "A@B.io", "x": {"y": 1}, "customerId": "c1"})
        );
        assert_eq!(record.email().unwrap().as_str(), "a@b.io");
    }

    #[test]
    fn patch_merges_recursively_and_null_removes() {
        let mut record = CustomerRecord::from_stored(
            br#"{"customerId":"c1","name":"A","config":{"theme":"dark","lang":"en"}}"#,
        )
        .unwrap();
        record
            .apply_patch(fields(
                json!({"name": null, "config": {"lang": "fr"}, "new": 1}),
            ))
            .unwrap();
        assert_eq!(
            record.to_value(),
            json!({"customerId":"c1","config":{"theme":"dark","lang":"fr"},"new":1})
        );
        assert!(record
            .apply_patch(fields(json!({"customerId": "other"})))
            .is_err());
    }

    #[test]
    fn numbers_keep_their_text_through_a_patch() {
        let mut record = CustomerRecord::from_stored(
            br#"{"customerId":"c1","n":12345678901234567890123,"gone":1,"x":{"e":1E+2,"z":-0},"last":0.30000000000000000444}"#,
        )
        .unwrap();
        let patch = json::parse_object(br#"{"gone":null,"x":{"m":1e2},"d":1.00}"#)
            .unwrap()
            .unwrap();
        record.apply_patch(patch).unwrap();
        assert_eq!(
            record.to_text(),
            r#"{"customerId":"c1","n":12345678901234567890123,"x":{"e":1E+2,"z":-0,"m":1e2},"last":0.30000000000000000444,"d":1.00}"#
        );
    }

    #[test]
    fn tombstones_are_recognised_and_records_are_not() {
        let tombstone = Tombstone::bytes("2026-01-01T00:00:00Z");
        assert!(Tombstone::is_tombstone(&tombstone));
        assert!(!Tombstone::is_tombstone(br#"{"customerId":"c1"}"#));
        assert!(!Tombstone::is_tombstone(
            br#"{"__tombstone":{},"customerId":"c1"}"#
        ));
    }
}
