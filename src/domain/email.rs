use sha2::{Digest, Sha256};

/// An email address, trimmed and lowercased: the form every mapping is hashed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

/// Lowercase hex SHA-256 of a normalised [`Email`]; the suffix of a mapping key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailHash(String);

impl Email {
    /// RFC 5321 caps a path at 256 octets, which leaves 254 for the address.
    pub const MAX_LEN: usize = 254;

    /// Normalises as the OTP service does, `email.toLowerCase().trim()` in JavaScript
    /// (so both hash an address the same), then refuses what no address holds:
    /// whitespace inside, control characters and invisible format characters.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let normalised = js_trim(&raw.to_lowercase()).to_owned();
        if normalised.is_empty() || normalised.len() > Self::MAX_LEN {
            return Err(format!(
                "email must be 1 to {} characters long",
                Self::MAX_LEN
            ));
        }
        let Some((local, domain)) = normalised.split_once('@') else {
            return Err("email must look like local@domain".into());
        };
        let well_formed = !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && !normalised.chars().any(char::is_whitespace);
        if !well_formed {
            return Err("email must look like local@domain".into());
        }
        if normalised.chars().any(|c| c.is_control() || is_format(c)) {
            return Err("email may not hold control or invisible characters".into());
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> EmailHash {
        EmailHash::of_normalised(&self.0)
    }

    /// The hashes a legacy writer may have stored this email's mapping under instead of
    /// [`Email::hash`], from `raw` as the caller wrote it: as given, trimmed only, and
    /// lowercased only (docs/design.md §2). Empty when `raw` is already normalised.
    pub fn legacy_hashes(&self, raw: &str) -> Vec<EmailHash> {
        let mut forms: Vec<String> = Vec::new();
        for form in [raw.to_owned(), js_trim(raw).to_owned(), raw.to_lowercase()] {
            if form != self.0 && !forms.contains(&form) {
                forms.push(form);
            }
        }
        forms.iter().map(|f| EmailHash::of_normalised(f)).collect()
    }
}

/// JavaScript's `String.prototype.trim`: its WhiteSpace and LineTerminator sets, which
/// differ from Rust's `trim` (U+FEFF is only JavaScript's, U+0085 only Rust's).
pub(crate) fn js_trim(text: &str) -> &str {
    text.trim_matches(|c: char| {
        matches!(
            c,
            '\u{9}'..='\u{d}'
                | ' '
                | '\u{a0}'
                | '\u{1680}'
                | '\u{2000}'..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
        )
    })
}

/// Unicode's format characters (general category Cf): invisible, so an address holding
/// one looks like another that does not.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

impl EmailHash {
    /// Hashes text exactly as given. Legacy mappings were sometimes written from an
    /// un-normalised email; the email audit needs their hashes to find them.
    pub fn of_normalised(text: &str) -> Self {
        Self(hex::encode(Sha256::digest(text.as_bytes())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A hash as [`EmailHash::as_str`] gave it: 64 lowercase hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let well_formed =
            text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        well_formed.then(|| Self(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_forms_are_the_raw_text_trimmed_or_lowercased() {
        let raw = "  Mixed.Case@Example.COM ";
        let email = Email::parse(raw).unwrap();
        let hashes = email.legacy_hashes(raw);
        let expected: Vec<EmailHash> = [raw, "Mixed.Case@Example.COM", "  mixed.case@example.com "]
            .iter()
            .map(|f| EmailHash::of_normalised(f))
            .collect();
        assert_eq!(hashes, expected);
        assert!(email.legacy_hashes("mixed.case@example.com").is_empty());
        assert_eq!(email.legacy_hashes("Mixed.Case@Example.COM").len(), 1);
    }

    #[test]
    fn normalises_before_hashing() {
        let a = Email::parse("  Alice@Example.COM ").unwrap();
        let b = Email::parse("alice@example.com").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        // sha256("alice@example.com")
        assert_eq!(
            a.hash().as_str(),
            "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976"
        );
    }

    #[test]
    fn trims_as_javascript_does() {
        // U+FEFF is JavaScript whitespace: trimmed, as the OTP service trims it.
        let bom = Email::parse("\u{feff}ada@example.com").unwrap();
        assert_eq!(bom.as_str(), "ada@example.com");
        // U+0085 is not: JavaScript keeps it, and it is a control character: refused.
        assert!(Email::parse("\u{85}ada@example.com").is_err());
        assert!(Email::parse("ada@example.com\u{2029}").is_ok());
    }

    #[test]
    fn refuses_invisible_and_control_characters() {
        for bad in [
            "a\u{200b}da@example.com",
            "ada@exa\u{ad}mple.com",
            "ada@example.com\u{200d}x",
            "a\u{7}da@example.com",
            "ada\u{e0041}@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "   ",
            "no-at-sign",
            "@example.com",
            "a@",
            "a@b@c",
            "a b@c.d",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@x.io", "a".repeat(250))).is_err());
    }
}
