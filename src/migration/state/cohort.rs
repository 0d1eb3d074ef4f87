//! Cohorts (docs/design.md §17): a phase move that reaches a share of the customers, or
//! named ones, before everyone. The record's phase stays where it is; the customers in
//! the cohort are served by the phase one step away. Since two adjacent phases are
//! always safe side by side (§3), anything may still act in either phase of the span:
//! a cohort decides which one a customer's record is served by, never more.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::CUSTOMER_PREFIX;
use crate::error::Error;
use crate::phase::{Move, Phase};

/// A cohort's share is counted in hundredths of a percent.
pub const FULL_SHARE: u16 = 10_000;
/// How many customers a cohort may name: the record is read by every isolate every few
/// seconds, so it stays small.
pub const MAX_NAMED_CUSTOMERS: usize = 100;

/// Who is moved ahead, kept in the phase record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cohort {
    /// The phase the cohort's customers are in: one step from the record's phase.
    pub to: u8,
    /// The share of customers by the hash of their id ([`slot`]), in hundredths of a
    /// percent.
    pub share: u16,
    /// Customers in the cohort whatever their hash.
    #[serde(default)]
    pub customers: Vec<String>,
    pub started_at: u64,
    pub widened_at: u64,
}

impl Cohort {
    /// Whether the customer `id` is in the cohort.
    pub fn includes(&self, id: &str) -> bool {
        slot(id) < self.share || self.customers.iter().any(|named| named == id)
    }

    /// The cohort's phase (a record with an unknown number never reaches here: the
    /// record is refused as corrupt when it is read).
    pub fn phase(&self) -> Option<Phase> {
        Phase::from_number(self.to.into())
    }

    /// The share as operators write it, e.g. `12.5`.
    pub fn percent(&self) -> f64 {
        f64::from(self.share) / 100.0
    }

    /// What the audit says of the cohort: its reach, never the names (a legacy id may be
    /// an address).
    pub fn describe(&self) -> String {
        format!(
            "{}% of customers and {} named customer(s) in phase {}",
            self.percent(),
            self.customers.len(),
            self.to
        )
    }
}

/// Where a customer id falls in 0..10,000: the first eight bytes of the SHA-256 of the
/// id, big-endian, modulo 10,000. Stable across versions and isolates, so widening a
/// share only ever adds customers.
pub fn slot(id: &str) -> u16 {
    let digest = Sha256::digest(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(FULL_SHARE)) as u16
}

/// The phase a key is served by: a customer record of a customer in the cohort goes by
/// the cohort's phase, every other key (mappings, the migration's own) by `base`.
pub fn phase_of_key(base: Phase, cohort: Option<&Cohort>, key: &str) -> Phase {
    let Some(cohort) = cohort else {
        return base;
    };
    match key.strip_prefix(CUSTOMER_PREFIX) {
        Some(id) if cohort.includes(id) => cohort.phase().unwrap_or(base),
        _ => base,
    }
}

/// Parses an operator's percent (0–100, at most two decimals) into a share.
pub fn share_of_percent(percent: f64) -> Result<u16, String> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err("percent must be a number from 0 to 100".to_owned());
    }
    let share = (percent * 100.0).round();
    if (share - percent * 100.0).abs() > 1e-6 {
        return Err("percent takes at most two decimals".to_owned());
    }
    Ok(share as u16)
}

/// The open cohort (if any) widened by `share` and `customers`, or a new one in `to`.
pub fn widened(
    base: Phase,
    open: Option<&Cohort>,
    to: Phase,
    (share, customers): (u16, Vec<String>),
    now_ms: u64,
) -> Result<Cohort, Error> {
    if Move::new(base, to).skips_phases() || to == base || Move::new(base, to).is_rollback_jump() {
        return Err(Error::CohortRefused(format!(
            "a cohort moves customers one phase from phase {}, not to phase {}",
            base.number(),
            to.number()
        )));
    }
    let mut cohort = match open {
        Some(open) if open.to != to.number() => {
            return Err(Error::CohortRefused(format!(
                "the open cohort is in phase {}: widen it, complete it or cancel it before one in phase {}",
                open.to,
                to.number()
            )));
        }
        Some(open) if share < open.share => {
            return Err(Error::CohortRefused(format!(
                "a cohort only widens: it holds {}% of customers; cancel it to take customers back",
                open.percent()
            )));
        }
        Some(open) => Cohort {
            share,
            widened_at: now_ms,
            ..open.clone()
        },
        None => Cohort {
            to: to.number(),
            share,
            customers: Vec::new(),
            started_at: now_ms,
            widened_at: now_ms,
        },
    };
    for id in customers {
        if !cohort.customers.contains(&id) {
            cohort.customers.push(id);
        }
    }
    if cohort.customers.len() > MAX_NAMED_CUSTOMERS {
        return Err(Error::CohortRefused(format!(
            "a cohort names at most {} customers; use a share for more",
            MAX_NAMED_CUSTOMERS
        )));
    }
    if cohort.share == 0 && cohort.customers.is_empty() {
        return Err(Error::CohortRefused(
            "a cohort needs a share of customers or named customers".to_owned(),
        ));
    }
    if open.is_some_and(|open| open.share == cohort.share && open.customers == cohort.customers) {
        return Ok(open.cloned().unwrap_or(cohort));
    }
    Ok(cohort)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort(share: u16, customers: &[&str]) -> Cohort {
        Cohort {
            to: 2,
            share,
            customers: customers.iter().map(|c| (*c).to_owned()).collect(),
            started_at: 1,
            widened_at: 1,
        }
    }

    #[test]
    fn a_share_takes_about_that_many_customers_and_widening_only_adds() {
        let ids: Vec<String> = (0..20_000).map(|n| format!("cust{n}")).collect();
        let ten = cohort(1_000, &[]);
        let half = cohort(5_000, &[]);
        let in_ten = ids.iter().filter(|id| ten.includes(id)).count();
        let in_half = ids.iter().filter(|id| half.includes(id)).count();
        assert!((1_800..2_200).contains(&in_ten), "{in_ten}");
        assert!((9_600..10_400).contains(&in_half), "{in_half}");
        assert!(ids.iter().all(|id| !ten.includes(id) || half.includes(id)));
        assert!(ids.iter().all(|id| cohort(FULL_SHARE, &[]).includes(id)));
        assert!(ids.iter().all(|id| !cohort(0, &[]).includes(id)));
    }

    #[test]
    fn named_customers_are_in_whatever_the_share() {
        let named = cohort(0, &["alice", "a b/c"]);
        assert!(named.includes("alice") && named.includes("a b/c"));
        assert!(!named.includes("bob"));
    }

    #[test]
    fn only_customer_records_of_the_cohort_change_phase() {
        let everyone = cohort(FULL_SHARE, &[]);
        let base = Phase::DualWrite;
        let of = |key| phase_of_key(base, Some(&everyone), key);
        assert_eq!(of("customer_alice"), Phase::ReadNew);
        assert_eq!(of("email_to_customer_abc"), base);
        assert_eq!(of("__migration/phase"), base);
        assert_eq!(phase_of_key(base, None, "customer_alice"), base);
    }

    #[test]
    fn percents_parse_to_shares() {
        assert_eq!(share_of_percent(12.5), Ok(1_250));
        assert_eq!(share_of_percent(0.01), Ok(1));
        assert_eq!(share_of_percent(100.0), Ok(FULL_SHARE));
        assert!(share_of_percent(0.001).is_err());
        assert!(share_of_percent(-1.0).is_err());
        assert!(share_of_percent(100.5).is_err());
        assert!(share_of_percent(f64::NAN).is_err());
    }

    #[test]
    fn the_slot_is_stable() {
        // Changing the hash would move customers between phases on deploy.
        assert_eq!(slot("alice"), slot("alice"));
        let fixed = slot("cust42");
        assert!(fixed < FULL_SHARE);
        assert_eq!(fixed, {
            let d = Sha256::digest(b"cust42");
            (u64::from_be_bytes(d[..8].try_into().unwrap()) % 10_000) as u16
        });
    }
}
