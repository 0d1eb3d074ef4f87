//! JSON that keeps every number as its text. serde_json reads a number into an f64 (or a
//! u64/i64), so `12345678901234567890123`, `0.30000000000000000444` and `1e2` would come
//! back as `1.2345678901234568e+22`, `0.3` and `100.0`. A customer record is served and
//! written back exactly as stored (docs/design.md §2), so records and the bodies merged
//! into them are held in this tree instead.
//!
//! serde_json still decides what is JSON: text is checked by it first, then read here.
//! Why not serde_json's `arbitrary_precision` feature: it respells exponents (`1e2` and
//! `1E2` become `1e+2`), and, being one feature for the whole build, it would make
//! workers-rs hand KV metadata to JavaScript with every number turned into an object.

use indexmap::IndexMap;
use serde::de::{Error as _, IgnoredAny};
use serde_json::Value;

/// An object's fields in their order. A key given twice keeps its first place and its
/// last value, as serde_json's `preserve_order` map does.
pub type JsonObject = IndexMap<String, Json>;

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(JsonNumber),
    String(String),
    Array(Vec<Json>),
    Object(JsonObject),
}

/// A number's text as it was written. Only the reader makes one, so it is always valid
/// JSON; two spellings of one value (`1e2`, `100`) are different numbers here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonNumber(String);

impl JsonNumber {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Containers nested deeper than serde_json reads (its recursion limit) are refused.
const MAX_DEPTH: usize = 128;

/// Reads one JSON value. What serde_json refuses is refused, with its error; numbers of
/// any size are kept, as text needs no range.
pub fn parse(bytes: &[u8]) -> Result<Json, serde_json::Error> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| serde_json::Error::custom("invalid unicode code point"))?;
    serde_json::from_str::<IgnoredAny>(text)?;
    Reader { text, at: 0 }.value(0)
}

/// Whether serde_json reads `bytes` as JSON (what [`parse`] checks first), building nothing.
/// Unlike [`parse`] it sets no limit to nesting: [`canonical_field`] does.
pub fn is_json(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok())
}

/// Reads one JSON value that must be an object (`Ok(None)` when it is JSON of another kind).
pub fn parse_object(bytes: &[u8]) -> Result<Option<JsonObject>, serde_json::Error> {
    Ok(match parse(bytes)? {
        Json::Object(fields) => Some(fields),
        _ => None,
    })
}

impl Json {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// The value as a `serde_json::Value`: numbers lose their spelling (and one past an
    /// f64's range becomes null). For tests and inspection, never for what is stored or
    /// sent.
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => serde_json::from_str(n.as_str()).unwrap_or(Value::Null),
            Json::String(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(fields) => Value::Object(object_to_value(fields)),
        }
    }

    /// Compact JSON, as serde_json writes it, numbers as they were written.
    pub fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(n.as_str()),
            Json::String(s) => write_string(out, s),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(fields) => write_object(out, fields),
        }
    }
}

pub fn object_to_value(fields: &JsonObject) -> serde_json::Map<String, Value> {
    fields
        .iter()
        .map(|(name, value)| (name.clone(), value.to_value()))
        .collect()
}

pub fn write_object(out: &mut String, fields: &JsonObject) {
    out.push('{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, name);
        out.push(':');
        value.write(out);
    }
    out.push('}');
}

pub fn object_text(fields: &JsonObject) -> String {
    let mut out = String::new();
    write_object(&mut out, fields);
    out
}

/// Whether `text`, if it is JSON ([`is_json`]), is exactly what writing what [`parse`]
/// reads gives ([`Json::write`]): no whitespace between tokens, every escape the one
/// serde_json writes, no key twice in one object, nesting no deeper than [`parse`] takes.
/// Such text can be sent as it is, without writing it anew (a read hit's record:
/// BENCHMARKS.md §3).
pub fn is_canonical(text: &[u8]) -> bool {
    scan_canonical(text, []).is_some()
}

/// For canonical text ([`is_canonical`]; `None` otherwise): the value of the top-level
/// object's field `name` when it is a string without escapes, as the bytes between its
/// quotes (`Some(None)` when it is missing or anything else). A scan, with no tree built;
/// each object's keys are sorted once, when it closes, to find one given twice.
pub fn canonical_field<'a>(text: &'a [u8], name: &str) -> Option<Option<&'a [u8]>> {
    canonical_fields(text, [name]).map(|[field]| field)
}

/// [`canonical_field`] for several fields, in one scan.
pub fn canonical_fields<'a, const N: usize>(
    text: &'a [u8],
    names: [&str; N],
) -> Option<[Option<&'a [u8]>; N]> {
    scan_canonical(text, names.map(str::as_bytes))
}

fn scan_canonical<'a, const N: usize>(
    text: &'a [u8],
    names: [&[u8]; N],
) -> Option<[Option<&'a [u8]>; N]> {
    enum Open<'a> {
        Object(Vec<&'a [u8]>),
        Array,
    }
    let mut open = Vec::new();
    let mut key_next = false;
    // Set between a top-level key of `names` and its value: which one.
    let mut named = None;
    let mut found = [None; N];
    let mut at = 0;
    while let Some(&byte) = text.get(at) {
        match byte {
            b'"' => {
                let end = canonical_string_end(text, at)?;
                let inner = &text[at + 1..end - 1];
                if key_next {
                    let Some(Open::Object(keys)) = open.last_mut() else {
                        return None;
                    };
                    keys.push(inner);
                    named = match open.len() {
                        1 => names.iter().position(|name| *name == inner),
                        _ => None,
                    };
                    key_next = false;
                } else if let Some(i) = named.take() {
                    found[i] = Some(inner).filter(|inner| !inner.contains(&b'\\'));
                }
                at = end;
                continue;
            }
            b'{' | b'[' => {
                open.push(if byte == b'{' {
                    Open::Object(Vec::new())
                } else {
                    Open::Array
                });
                key_next = byte == b'{';
                // Where `parse` refuses (its recursion limit), this text is not a record.
                if open.len() >= MAX_DEPTH {
                    return None;
                }
            }
            b'}' | b']' => {
                if let Some(Open::Object(mut keys)) = open.pop() {
                    keys.sort_unstable();
                    if keys.windows(2).any(|pair| pair[0] == pair[1]) {
                        return None;
                    }
                }
            }
            b',' => key_next = matches!(open.last(), Some(Open::Object(_))),
            b':' => {
                key_next = false;
                at += 1;
                continue; // `named` holds for the value that follows
            }
            b' ' | b'\t' | b'\n' | b'\r' => return None,
            // Numbers and literals are written as they were read.
            _ => {}
        }
        named = None;
        at += 1;
    }
    Some(found)
}

/// Past the end of the string that starts at `start`, if each of its escapes is the
/// one serde_json writes: a short one, or `\u00xx` in lowercase for a control character
/// that has none.
fn canonical_string_end(text: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        match *text.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => match *text.get(at + 1)? {
                b'"' | b'\\' | b'b' | b't' | b'n' | b'f' | b'r' => at += 2,
                b'u' => {
                    let [b'0', b'0', high @ (b'0' | b'1'), low] = *text.get(at + 2..at + 6)? else {
                        return None;
                    };
                    let low = match low {
                        b'0'..=b'9' => low - b'0',
                        b'a'..=b'f' => low - b'a' + 10,
                        _ => return None,
                    };
                    let code = (high - b'0') << 4 | low;
                    if matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                        return None;
                    }
                    at += 6;
                }
                _ => return None,
            },
            _ => at += 1,
        }
    }
}

/// A string escaped exactly as serde_json escapes it.
fn write_string(out: &mut String, text: &str) {
    // Serialising a string cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

/// Walks text serde_json has already accepted, so it only has to find where each value
/// ends; it still answers an error rather than panic if it meets anything else.
struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Result<u8, serde_json::Error> {
        self.text
            .as_bytes()
            .get(self.at)
            .copied()
            .ok_or_else(|| serde_json::Error::custom("unexpected end of JSON"))
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Ok(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), serde_json::Error> {
        self.skip_whitespace();
        if self.peek()? != byte {
            return Err(serde_json::Error::custom("unexpected character in JSON"));
        }
        self.at += 1;
        Ok(())
    }

    /// The value at the cursor, inside `depth` containers.
    fn value(&mut self, depth: usize) -> Result<Json, serde_json::Error> {
        self.skip_whitespace();
        let first = self.peek()?;
        if matches!(first, b'[' | b'{') && depth + 1 >= MAX_DEPTH {
            return Err(serde_json::Error::custom("recursion limit exceeded"));
        }
        Ok(match first {
            b'{' => Json::Object(self.object(depth + 1)?),
            b'[' => Json::Array(self.array(depth + 1)?),
            b'"' => Json::String(self.string()?),
            b't' => self.literal("true", Json::Bool(true))?,
            b'f' => self.literal("false", Json::Bool(false))?,
            b'n' => self.literal("null", Json::Null)?,
            _ => Json::Number(self.number()?),
        })
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, serde_json::Error> {
        if !self.text[self.at..].starts_with(word) {
            return Err(serde_json::Error::custom("unexpected word in JSON"));
        }
        self.at += word.len();
        Ok(value)
    }

    fn number(&mut self) -> Result<JsonNumber, serde_json::Error> {
        let start = self.at;
        while matches!(
            self.peek(),
            Ok(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.at += 1;
        }
        if start == self.at {
            return Err(serde_json::Error::custom("expected a JSON value"));
        }
        Ok(JsonNumber(self.text[start..self.at].to_owned()))
    }

    fn string(&mut self) -> Result<String, serde_json::Error> {
        let start = self.at;
        self.at += 1;
        let mut escaped = false;
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.at += 2;
                }
                _ => self.at += 1,
            }
        }
        self.at += 1;
        let token = &self.text[start..self.at];
        if escaped {
            // Escapes are decoded by serde_json, which refuses what it refuses elsewhere
            // (a lone surrogate).
            serde_json::from_str(token)
        } else {
            Ok(token[1..token.len() - 1].to_owned())
        }
    }

    fn array(&mut self, depth: usize) -> Result<Vec<Json>, serde_json::Error> {
        self.at += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek()? == b']' {
            self.at += 1;
            return Ok(items);
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                _ => {
                    self.expect(b']')?;
                    return Ok(items);
                }
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<JsonObject, serde_json::Error> {
        self.at += 1;
        let mut fields = JsonObject::new();
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
            return Ok(fields);
        }
        loop {
            self.skip_whitespace();
            if self.peek()? != b'"' {
                return Err(serde_json::Error::custom("expected a field name in JSON"));
            }
            let name = self.string()?;
            self.expect(b':')?;
            let value = self.value(depth)?;
            fields.insert(name, value);
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                _ => {
                    self.expect(b'}')?;
                    return Ok(fields);
                }
            }
        }
    }
}

/// Carries a JSON object between the worker and its objects as its text (a JSON string
/// on the wire), so that its numbers keep their text there too.
pub mod object_as_text {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::JsonObject;

    pub fn serialize<S: Serializer>(fields: &JsonObject, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::object_text(fields))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<JsonObject, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_object(text.as_bytes())
            .map_err(D::Error::custom)?
            .ok_or_else(|| D::Error::custom("expected the text of a JSON object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(text: &str) -> String {
        let mut out = String::new();
        parse(text.as_bytes()).unwrap().write(&mut out);
        out
    }

    #[test]
    fn numbers_keep_their_text_and_the_rest_is_written_as_serde_json_writes_it() {
        let text = r#"{"a":1e2,"b":[1E+2,-0,0.30000000000000000444,12345678901234567890123],"c":"\u00e9\n\"","d":null,"e":true,"f":{}}"#;
        let expected = text.replace(r#"\u00e9"#, "é");
        assert_eq!(round_trip(text), expected);
        assert_eq!(
            round_trip(" [ 1 , { \"x\" : 1.50 } ] "),
            r#"[1,{"x":1.50}]"#
        );
    }

    #[test]
    fn a_key_given_twice_keeps_its_first_place_and_last_value() {
        assert_eq!(round_trip(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn what_serde_json_refuses_is_refused() {
        for text in [
            &b"{"[..],
            b"[1,]",
            b"01",
            b"1.",
            b"\"\\ud800\"",
            b"\"\xff\"",
            b"[1] x",
            b"",
        ] {
            assert!(parse(text).is_err(), "{}", String::from_utf8_lossy(text));
            assert!(serde_json::from_slice::<Value>(text).is_err());
        }
    }

    #[test]
    fn nesting_stops_where_serde_json_stops() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for depth in [126, 127, 128, 129] {
            let text = nested(depth);
            assert_eq!(
                parse(text.as_bytes()).is_ok(),
                serde_json::from_str::<Value>(&text).is_ok(),
                "depth {depth}"
            );
        }
        assert!(parse(nested(100_000).as_bytes()).is_err());
    }

    #[test]
    fn numbers_past_an_f64_are_kept() {
        assert_eq!(round_trip("[1e400,-1e400]"), "[1e400,-1e400]");
        assert_eq!(parse(b"1e400").unwrap().to_value(), Value::Null);
    }

    /// JSON text with numbers in every spelling, odd strings, repeated keys and
    /// whitespace anywhere.
    fn json_text() -> impl Strategy<Value = String> {
        let space = "[ \t\n\r]{0,2}";
        let leaf = prop_oneof![
            "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            "\"([a-zé ]|\\\\[nt\"/\\\\]|\\\\u00e9|\\\\ud83d\\\\ude00){0,6}\"",
        ];
        leaf.prop_recursive(4, 32, 4, move |inner| {
            let item = (space, inner, space).prop_map(|(a, v, b)| format!("{a}{v}{b}"));
            let key = prop_oneof![Just("\"a\""), Just("\"b\""), Just("\"\\u0061\"")];
            prop_oneof![
                prop::collection::vec(item.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec((key, item), 0..4).prop_map(|fields| {
                    let fields: Vec<String> =
                        fields.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    /// What serde_json reads, read here: the same verdict and the same value.
    fn reads_as_serde_json_does(text: &str) -> Result<(), TestCaseError> {
        let ours = parse(text.as_bytes());
        match serde_json::from_str::<Value>(text) {
            // Compared as text: a map's equality would ignore the order of its keys.
            Ok(value) => prop_assert_eq!(
                serde_json::to_string(&ours.unwrap().to_value()).unwrap(),
                serde_json::to_string(&value).unwrap()
            ),
            // Text keeps a number past an f64's range, which serde_json cannot hold.
            Err(e) if e.to_string().starts_with("number out of range") => {
                prop_assert!(ours.is_ok())
            }
            Err(_) => prop_assert!(ours.is_err(), "accepted {text:?}"),
        }
        Ok(())
    }

    /// What `is_canonical` says of `text` is true: the text is then exactly what is
    /// written for what it reads; and what is written is always canonical.
    fn canonical_is_what_is_written(text: &str) -> Result<(), TestCaseError> {
        let Ok(Json::Object(fields)) = parse(text.as_bytes()) else {
            return Ok(());
        };
        let written = object_text(&fields);
        if is_canonical(text.as_bytes()) {
            prop_assert_eq!(&written, text);
        }
        prop_assert!(is_canonical(written.as_bytes()), "{written}");
        Ok(())
    }

    #[test]
    fn canonical_text_is_recognised() {
        for (text, canonical) in [
            (r#"{"a":1,"b":[true,null,"x"],"c":{"a":-1.50e3}}"#, true),
            (r#"{"a":"\"\\\b\t\n\f\r\u0000\u001f","b":"é😀/"}"#, true),
            (r#"{"a":1, "b":2}"#, false),
            ("{\"a\":1}\n", false),
            (r#"{"a":1,"a":2}"#, false),
            (r#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#, true),
            (r#"{"a":"\/"}"#, false),
            (r#"{"a":"\u00e9"}"#, false),
            (r#"{"a":"\u000A"}"#, false),
            (r#"{"a":"\u000a"}"#, false),
            (r#"{"\u0061":1}"#, false),
        ] {
            assert_eq!(is_canonical(text.as_bytes()), canonical, "{text}");
            canonical_is_what_is_written(text).unwrap();
        }
    }

    #[test]
    fn nesting_is_canonical_only_as_deep_as_parse_reads() {
        for depth in [1, 2, 126, 127, 128, 129, 1000] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let object = format!(r#"{{"a":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
            for text in [text, object] {
                assert_eq!(
                    is_canonical(text.as_bytes()),
                    parse(text.as_bytes()).is_ok(),
                    "{depth}"
                );
            }
        }
    }

    #[test]
    fn many_keys_are_checked_for_a_repeat_in_one_sort() {
        let keys: Vec<String> = (0..20_000).map(|i| format!(r#""k{i}":0"#)).collect();
        let text = format!("{{{}}}", keys.join(","));
        assert!(is_canonical(text.as_bytes()));
        let repeated = format!(r#"{{{},"k7":1}}"#, keys.join(","));
        assert!(!is_canonical(repeated.as_bytes()));
    }

    #[test]
    fn a_top_level_string_field_is_found_by_the_scan() {
        let text = br#"{"a":{"customerId":"inner"},"customerId":"c1","b":["customerId"]}"#;
        assert_eq!(canonical_field(text, "customerId"), Some(Some(&b"c1"[..])));
        for (text, found) in [
            (&br#"{"customerId":1}"#[..], None),
            (br#"{"customerId":"c\"1"}"#, None),
            (br#"{"x":{"customerId":"c1"}}"#, None),
            (br#"{"x":"customerId","y":"c1"}"#, None),
            (br#"{"customerId":["c1"]}"#, None),
            (br#"{"customerId":{"customerId":"c1"}}"#, None),
        ] {
            assert_eq!(canonical_field(text, "customerId"), Some(found), "{text:?}");
        }
        assert_eq!(
            canonical_field(br#"{"customerId": "c1"}"#, "customerId"),
            None
        );
    }

    /// Compact text from JSON of every kind: whitespace dropped where serde_json would.
    fn compact_json_text() -> impl Strategy<Value = String> {
        json_text().prop_map(|text| match parse(text.as_bytes()) {
            Ok(Json::Object(fields)) => object_text(&fields),
            _ => text,
        })
    }

    proptest! {
        #[test]
        fn what_is_canonical_is_sent_unchanged(text in json_text()) {
            canonical_is_what_is_written(&text)?;
        }

        #[test]
        fn what_is_written_is_canonical(text in compact_json_text()) {
            canonical_is_what_is_written(&text)?;
        }

        #[test]
        fn reads_json_as_serde_json_does(text in json_text()) {
            reads_as_serde_json_does(&text)?;
        }

        #[test]
        fn refuses_what_serde_json_refuses(text in "[\\[\\]{}:,\" a-c0-9eE+.\\-\\\\nutrlfs]{0,30}") {
            reads_as_serde_json_does(&text)?;
        }
    }
}
