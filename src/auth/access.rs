//! Admin sign-in through Cloudflare Access (docs/design.md §14): the edge puts a JWT in
//! `Cf-Access-Jwt-Assertion`, signed with RS256 by the team's rotating keys; it is
//! trusted only once its signature, issuer (the team domain), audience (the Access
//! application's tag) and lifetime check out, and it makes an admin only of an identity
//! or group the operator listed.

use jwt_simple::prelude::*;
use jwt_simple::JWTError;
use serde_json::Value;

use super::keys::AccessKeys;
use super::{Caller, Role, CLOCK_SKEW_SECS};
use crate::http::ApiError;

/// Who may administer the migration, and how to check an assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRules {
    /// `https://<team>.cloudflareaccess.com`: the assertions' issuer, and where the
    /// keys are published.
    pub team_domain: String,
    /// The Access application's audience tags; an assertion must carry one.
    pub audiences: Vec<String>,
    pub admins: Vec<Identity>,
    /// Groups whose members are admins, as the identity provider names them in the
    /// assertion's `custom.groups` claim.
    pub admin_groups: Vec<String>,
}

/// An allowed identity: anyone the Access policy admits, an email, every address of a
/// domain, or a service token's client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anyone,
    Exactly(String),
    Domain(String),
}

impl Identity {
    fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim().to_ascii_lowercase();
        match raw.as_str() {
            "" => Err("an empty entry".into()),
            "*" => Ok(Identity::Anyone),
            _ => match raw.strip_prefix("*@") {
                Some(domain) if !domain.is_empty() && !domain.contains(['@', '*']) => {
                    Ok(Identity::Domain(domain.to_owned()))
                }
                Some(_) => Err("a domain entry must read *@example.com".into()),
                None if raw.contains('*') => Err("only * and *@domain may hold a *".into()),
                None => Ok(Identity::Exactly(raw)),
            },
        }
    }

    fn admits(&self, identity: &str) -> bool {
        let identity = identity.to_ascii_lowercase();
        match self {
            Identity::Anyone => true,
            Identity::Exactly(who) => *who == identity,
            Identity::Domain(domain) => identity
                .rsplit_once('@')
                .is_some_and(|(local, at)| !local.is_empty() && at == domain),
        }
    }
}

fn list(raw: Option<&str>) -> impl Iterator<Item = &str> {
    raw.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

impl AccessRules {
    /// The rules from `ACCESS_TEAM_DOMAIN`, `ACCESS_AUD`, `ACCESS_ADMINS` and
    /// `ACCESS_ADMIN_GROUPS`; `None` when Access is not configured.
    pub fn from_settings(
        team_domain: Option<&str>,
        audiences: Option<&str>,
        admins: Option<&str>,
        admin_groups: Option<&str>,
    ) -> Result<Option<Self>, String> {
        let Some(team_domain) = team_domain.map(str::trim).filter(|d| !d.is_empty()) else {
            return Ok(None);
        };
        let team_domain = team_domain.trim_end_matches('/');
        let team_domain = if team_domain.contains("://") {
            team_domain.to_owned()
        } else {
            format!("https://{team_domain}")
        };
        // Plain http only for a key server on this machine (local tests).
        let local = ["http://127.0.0.1:", "http://localhost:"];
        if !team_domain.starts_with("https://") && !local.iter().any(|l| team_domain.starts_with(l))
        {
            return Err("ACCESS_TEAM_DOMAIN must be https://<team>.cloudflareaccess.com".into());
        }
        let audiences: Vec<String> = list(audiences).map(str::to_owned).collect();
        if audiences.is_empty() {
            return Err("ACCESS_AUD must name the Access application's audience tag".into());
        }
        let admins = list(admins)
            .map(Identity::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|problem| format!("ACCESS_ADMINS holds {problem}"))?;
        let admin_groups: Vec<String> = list(admin_groups).map(str::to_owned).collect();
        if admins.is_empty() && admin_groups.is_empty() {
            return Err(
                "ACCESS_ADMINS or ACCESS_ADMIN_GROUPS must say who is an admin (* for anyone Access admits)"
                    .into(),
            );
        }
        Ok(Some(Self {
            team_domain,
            audiences,
            admins,
            admin_groups,
        }))
    }

    /// Where the team publishes its signing keys.
    pub fn certs_url(&self) -> String {
        format!("{}/cdn-cgi/access/certs", self.team_domain)
    }

    fn is_admin(&self, identity: &str, groups: &[String]) -> bool {
        self.admins.iter().any(|allowed| allowed.admits(identity))
            || groups.iter().any(|group| self.admin_groups.contains(group))
    }
}

/// The claims of an application token beyond the registered ones: a user's `email`, a
/// service token's `common_name` (its client id), the token `type`, and the identity
/// provider's claims under `custom`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AccessClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    common_name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom: Option<Value>,
}

fn refused(message: &str) -> ApiError {
    ApiError::new(401, "invalid_access_token", message)
}

/// Verifies an Access assertion at `now_ms` and names the admin it signs in.
pub async fn verify(
    assertion: &str,
    rules: &AccessRules,
    keys: &AccessKeys,
    now_ms: u64,
) -> Result<Caller, ApiError> {
    let metadata = Token::decode_metadata(assertion)
        .map_err(|_| refused("the Access assertion is not a JWT"))?;
    if metadata.algorithm() != "RS256" {
        return Err(refused("an Access assertion is signed with RS256"));
    }
    let kid = metadata
        .key_id()
        .ok_or_else(|| refused("the Access assertion names no signing key"))?;
    let key = keys
        .key(&rules.certs_url(), kid, now_ms)
        .await?
        .ok_or_else(|| {
            refused("the Access assertion is signed by a key the team does not publish")
        })?;
    let options = VerificationOptions {
        time_tolerance: Some(Duration::from_secs(CLOCK_SKEW_SECS)),
        artificial_time: Some(UnixTimeStamp::from_secs(now_ms / 1000)),
        allowed_issuers: Some([rules.team_domain.clone()].into()),
        allowed_audiences: Some(rules.audiences.iter().cloned().collect()),
        ..Default::default()
    };
    let claims = key
        .verify_token::<AccessClaims>(assertion, Some(options))
        .map_err(|err| match err.downcast_ref::<JWTError>() {
            Some(JWTError::TokenHasExpired) => ApiError::new(
                401,
                "access_token_expired",
                "the Access assertion has expired; sign in again",
            ),
            Some(JWTError::RequiredIssuerMismatch | JWTError::RequiredIssuerMissing) => {
                refused("the Access assertion was issued by another team")
            }
            Some(JWTError::RequiredAudienceMismatch | JWTError::RequiredAudienceMissing) => {
                refused("the Access assertion is for another application")
            }
            _ => refused("the Access assertion is not valid"),
        })?;
    if claims.expires_at.is_none() {
        return Err(refused("the Access assertion has no exp claim"));
    }
    let custom = claims.custom;
    if custom.kind.as_deref().is_some_and(|kind| kind != "app") {
        return Err(refused("only an application token signs in"));
    }
    let identity = [custom.email.as_deref(), custom.common_name.as_deref()]
        .into_iter()
        .flatten()
        .find(|who| !who.is_empty())
        .ok_or_else(|| refused("the Access assertion names no identity"))?
        .to_owned();
    let groups = groups_of(custom.custom.as_ref());
    if !rules.is_admin(&identity, &groups) {
        return Err(ApiError::forbidden(
            "this Access identity may not administer the migration",
        ));
    }
    Ok(Caller {
        subject: identity,
        role: Role::Admin,
    })
}

/// The identity provider's groups, a list or a single name.
fn groups_of(custom: Option<&Value>) -> Vec<String> {
    match custom.and_then(|c| c.get("groups")) {
        Some(Value::Array(groups)) => groups
            .iter()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(group)) => vec![group.clone()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(admins: &str, groups: &str) -> Result<Option<AccessRules>, String> {
        AccessRules::from_settings(
            Some("team.cloudflareaccess.com/"),
            Some("aud-1, aud-2"),
            Some(admins),
            Some(groups),
        )
    }

    #[test]
    fn reads_the_settings_and_refuses_incomplete_ones() {
        let parsed = rules("Ops@Example.com, *@corp.example, 1a2b.access", "")
            .unwrap()
            .unwrap();
        assert_eq!(parsed.team_domain, "https://team.cloudflareaccess.com");
        assert_eq!(parsed.audiences, ["aud-1", "aud-2"]);
        assert_eq!(
            parsed.certs_url(),
            "https://team.cloudflareaccess.com/cdn-cgi/access/certs"
        );
        assert_eq!(AccessRules::from_settings(None, None, None, None), Ok(None));
        assert!(rules("", "").is_err(), "nobody named");
        assert!(rules("*@", "").is_err());
        assert!(rules("a*@x.com", "").is_err());
        assert!(rules("", "sre").unwrap().is_some());
        let no_aud =
            AccessRules::from_settings(Some("t.cloudflareaccess.com"), None, Some("*"), None);
        assert!(no_aud.is_err());
        let http = AccessRules::from_settings(Some("http://t.example"), Some("a"), Some("*"), None);
        assert!(http.is_err());
        let local =
            AccessRules::from_settings(Some("http://127.0.0.1:8787"), Some("a"), Some("*"), None);
        assert!(local.unwrap().is_some());
    }

    #[test]
    fn admits_listed_identities_domains_and_groups_only() {
        let rules = rules("ops@example.com, *@corp.example, 1a2b.access", "sre")
            .unwrap()
            .unwrap();
        let admin = |who: &str, groups: &[&str]| {
            let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            rules.is_admin(who, &groups)
        };
        assert!(admin("OPS@example.com", &[]));
        assert!(admin("anyone@corp.example", &[]));
        assert!(admin("1a2b.access", &[]));
        assert!(admin("someone@example.com", &["sre"]));
        assert!(!admin("someone@example.com", &["sales"]));
        assert!(!admin("ops@example.com.evil", &[]));
        assert!(!admin("x@notcorp.example", &[]));
        assert!(!admin("@corp.example", &[]));
        assert!(!admin("other.access", &[]));
        let anyone = self::rules("*", "").unwrap().unwrap();
        assert!(anyone.is_admin("whoever@wherever", &[]));
    }

    #[test]
    fn reads_groups_as_a_list_or_a_name() {
        assert_eq!(
            groups_of(Some(&serde_json::json!({"groups": ["a", 1, "b"]}))),
            ["a", "b"]
        );
        assert_eq!(groups_of(Some(&serde_json::json!({"groups": "a"}))), ["a"]);
        assert!(groups_of(None).is_empty());
    }
}
