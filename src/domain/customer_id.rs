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

    /// An id for a new customer: also not one of the words `/customer/{id}` shares with
    /// other routes (`/customer/me`, `/customer/ensure`), which would leave the customer
    /// unreachable by id. Stored legacy ids are read with [`parse`](Self::parse).
    pub fn parse_new(raw: &str) -> Result<Self, String> {
        let id = Self::parse(raw)?;
        if Self::RESERVED.contains(&raw) {
            return Err(format!(
                "customerId may not be {raw:?}: that path is a route"
            ));
        }
        Ok(id)
    }

    const RESERVED: [&'static str; 2] = ["me", "ensure"];

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
    fn new_customers_may_not_take_a_route_word() {
        assert!(CustomerId::parse_new("me").is_err());
        assert!(CustomerId::parse_new("ensure").is_err());
        assert!(CustomerId::parse_new("Me").is_ok());
        assert!(
            CustomerId::parse("me").is_ok(),
            "a legacy record stays readable"
        );
    }

    #[test]
    fn rejects_anything_that_could_escape_a_key() {
        for bad in ["", "a b", "a/b", "é", "x.y", "a\u{0}", &"a".repeat(129)] {
            assert!(CustomerId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
