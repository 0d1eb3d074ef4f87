use std::fmt;

/// A customer id. New customers get 1–128 characters of `[A-Za-z0-9_-]`
/// ([`parse_new`](Self::parse_new)); a legacy record may carry any id that fits in a
/// key with room for the migration's own keys about it ([`parse`](Self::parse),
/// docs/design.md §2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerId(String);

impl CustomerId {
    pub const MAX_LEN: usize = 128;

    /// The longest stored id: its key (`customer_<id>`, 9 bytes more) plus the longest
    /// working key the migration derives from it (a read-repair check,
    /// `__migration/settle/<key>/<13-digit due>`, 33 bytes more) fit KV's 512 bytes.
    pub const MAX_STORED_BYTES: usize = 512 - 9 - 33;

    /// An id as a stored record, a token or a path may carry it: new ids, and legacy
    /// ids outside the alphabet (an address, a space, any script), which stay reachable
    /// percent-encoded in the path. Never empty, never a control character, never
    /// longer than [`MAX_STORED_BYTES`](Self::MAX_STORED_BYTES).
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > Self::MAX_STORED_BYTES {
            return Err(format!(
                "customerId must be 1 to {} bytes long",
                Self::MAX_STORED_BYTES
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err("customerId may not contain control characters".into());
        }
        Ok(Self(raw.to_owned()))
    }

    /// An id for a new customer: 1–128 characters of `[A-Za-z0-9_-]`, and not one of the
    /// words `/customer/{id}` shares with other routes (`/customer/me`,
    /// `/customer/ensure`), which would leave the customer reachable only
    /// percent-encoded.
    pub fn parse_new(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(format!(
                "customerId must be 1 to {} characters long",
                Self::MAX_LEN
            ));
        }
        if !Self::in_alphabet(raw) {
            return Err("customerId may only contain letters, digits, '_' and '-'".into());
        }
        if Self::RESERVED.contains(&raw) {
            return Err(format!(
                "customerId may not be {raw:?}: that path is a route"
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// Whether an id is made of the new ids' alphabet: such an id is safe to repeat in
    /// an error message, where a legacy id (perhaps an address) is not.
    pub fn in_alphabet(raw: &str) -> bool {
        raw.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
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
    fn new_ids_keep_the_alphabet() {
        for bad in ["", "a b", "a/b", "é", "x.y", "a@b.io", &"a".repeat(129)] {
            assert!(CustomerId::parse_new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn legacy_ids_outside_the_alphabet_are_read() {
        for odd in [
            "a b",
            "a/b",
            "é",
            "x.y",
            "ann@example.com",
            &"a".repeat(129),
        ] {
            assert!(CustomerId::parse(odd).is_ok(), "{odd:?} refused");
        }
        assert!(CustomerId::parse(&"a".repeat(CustomerId::MAX_STORED_BYTES)).is_ok());
    }

    #[test]
    fn a_stored_id_never_makes_a_key_too_long() {
        for bad in ["", "a\u{0}", "a\nb", "\u{7f}"] {
            assert!(CustomerId::parse(bad).is_err(), "{bad:?} accepted");
        }
        let longest = "é".repeat(CustomerId::MAX_STORED_BYTES / 2);
        let id = CustomerId::parse(&longest).unwrap();
        let key = crate::domain::keys::customer_key(&id);
        let derived = [
            crate::migration::keys::journal_entry(&key),
            crate::migration::keys::fallback_entry(&key),
            crate::migration::keys::read_repair_check(&key, 9_999_999_999_999),
            crate::migration::keys::preexisting(&key),
        ];
        for derived in derived.iter().chain([&key]) {
            assert!(derived.len() <= crate::store::MAX_KEY_BYTES, "{derived}");
        }
        let too_long = "a".repeat(CustomerId::MAX_STORED_BYTES + 1);
        assert!(CustomerId::parse(&too_long).is_err());
    }
}
