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

    pub fn parse(raw: &str) -> Result<Self, String> {
        let normalised = raw.trim().to_lowercase();
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
            && !normalised
                .chars()
                .any(|c| c.is_whitespace() || c.is_control());
        if !well_formed {
            return Err("email must look like local@domain".into());
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> EmailHash {
        EmailHash::of_normalised(&self.0)
    }
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
