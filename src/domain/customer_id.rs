use std::fmt;

/// A customer id: 1–128 characters of `[A-Za-z0-9_-]`, so it is always safe inside a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerId(String);

impl CustomerId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(format!(
                "customerId must be 1 to {} characters long",
                Self::MAX_LEN
            ));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if !raw.chars().all(allowed) {
            return Err("customerId may only contain letters, digits, '_' and '-'".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!(CustomerId::parse("cust_0001-AbZ").is_ok());
        assert!(CustomerId::parse(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn rejects_anything_that_could_escape_a_key() {
        for bad in ["", "a b", "a/b", "é", "x.y", "a\u{0}", &"a".repeat(129)] {
            assert!(CustomerId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
