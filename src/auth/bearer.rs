//! Bearer tokens: HS256 JWTs signed with a shared secret.

use jwt_simple::prelude::*;
use jwt_simple::JWTError;

use super::{Caller, Role};
use crate::domain::CustomerId;
use crate::http::ApiError;

#[derive(Debug, Serialize, Deserialize)]
struct RoleClaim {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

/// Clock skew tolerated between the token issuer and this worker.
pub const CLOCK_SKEW_SECS: u64 = 30;

/// What a token must hold beyond a valid signature (docs/http-api.md, "Auth"). The
/// secret is shared with the OTP service, so the issuer and audience, when set, keep
/// its other tokens out; the longest lifetime per role keeps a leaked token from
/// working for ever.
#[derive(Debug, Clone)]
pub struct TokenRules {
    pub secret: Vec<u8>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Seconds from `iat` a token of each role may live, and be used.
    pub max_lifetime_secs: RoleLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleLimits {
    pub customer: u64,
    pub service: u64,
    pub admin: u64,
}

impl RoleLimits {
    /// A customer's session as the OTP service issues it; services and admins mint
    /// short-lived tokens.
    pub const DEFAULT: RoleLimits = RoleLimits {
        customer: 30 * 24 * 3600,
        service: 24 * 3600,
        admin: 12 * 3600,
    };

    fn of(&self, role: Role) -> u64 {
        match role {
            Role::Customer => self.customer,
            Role::Service => self.service,
            Role::Admin => self.admin,
        }
    }
}

impl TokenRules {
    /// Only the signature and the default lifetimes.
    pub fn new(secret: Vec<u8>) -> Self {
        Self {
            secret,
            issuer: None,
            audience: None,
            max_lifetime_secs: RoleLimits::DEFAULT,
        }
    }
}
/// Longest `sub` accepted; a customer's `sub` must moreover be a valid customer id.
const MAX_SUBJECT_LEN: usize = 256;

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(401, code, message)
}

/// Verifies the `Authorization` header at `now_secs` and names the caller.
pub fn authenticate(
    authorization: Option<&str>,
    rules: &TokenRules,
    now_secs: u64,
) -> Result<Caller, ApiError> {
    let token = authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            unauthorized(
                "missing_token",
                "an Authorization: Bearer token is required",
            )
        })?;

    let key = HS256Key::from_bytes(&rules.secret);
    let only = |value: &Option<String>| value.as_ref().map(|v| [v.clone()].into());
    let options = VerificationOptions {
        time_tolerance: Some(Duration::from_secs(CLOCK_SKEW_SECS)),
        artificial_time: Some(UnixTimeStamp::from_secs(now_secs)),
        allowed_issuers: only(&rules.issuer),
        allowed_audiences: only(&rules.audience),
        ..Default::default()
    };
    let claims = key
        .verify_token::<RoleClaim>(token, Some(options))
        .map_err(|err| match err.downcast_ref::<JWTError>() {
            Some(JWTError::TokenHasExpired) => {
                unauthorized("token_expired", "the token has expired")
            }
            Some(JWTError::WeakKey) => {
                ApiError::internal("JWT_SECRET is too short (12 bytes at least)")
            }
            _ => unauthorized("invalid_token", "the token is not valid"),
        })?;

    let (Some(issued_at), Some(expires_at)) = (claims.issued_at, claims.expires_at) else {
        return Err(unauthorized(
            "invalid_token",
            "the token needs both iat and exp claims",
        ));
    };
    let subject = claims
        .subject
        .filter(|s| !s.is_empty() && s.len() <= MAX_SUBJECT_LEN)
        .ok_or_else(|| unauthorized("invalid_token", "the token has no usable sub claim"))?;
    let role = match claims.custom.role.as_deref() {
        None | Some("customer") => Role::Customer,
        Some("service") => Role::Service,
        Some("admin") => Role::Admin,
        Some(_) => return Err(unauthorized("invalid_token", "the token's role is unknown")),
    };
    let max = rules.max_lifetime_secs.of(role);
    let lifetime = expires_at.as_secs().saturating_sub(issued_at.as_secs());
    let age = now_secs.saturating_sub(issued_at.as_secs());
    if lifetime > max || age > max.saturating_add(CLOCK_SKEW_SECS) {
        return Err(unauthorized(
            "invalid_token",
            &format!(
                "a {} token may live at most {max} s from its iat",
                role.name()
            ),
        ));
    }
    if role == Role::Customer && CustomerId::parse(&subject).is_err() {
        return Err(unauthorized(
            "invalid_token",
            "a customer token's sub must be a customer id",
        ));
    }
    Ok(Caller { subject, role })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-test-secret-of-sufficient-length";
    const NOW: u64 = 1_800_000_000;

    fn token(role: Option<&str>, sub: Option<&str>, exp_in: Option<i64>) -> String {
        let mut claims = Claims::with_custom_claims(
            RoleClaim {
                role: role.map(str::to_owned),
            },
            Duration::from_secs(60),
        );
        claims.issued_at = Some(UnixTimeStamp::from_secs(NOW - 10));
        claims.invalid_before = None;
        claims.expires_at = exp_in.map(|d| UnixTimeStamp::from_secs((NOW as i64 + d) as u64));
        claims.subject = sub.map(str::to_owned);
        HS256Key::from_bytes(SECRET).authenticate(claims).unwrap()
    }

    fn rules() -> TokenRules {
        TokenRules::new(SECRET.to_vec())
    }

    fn bearer(t: &str) -> Option<String> {
        Some(format!("Bearer {t}"))
    }

    #[test]
    fn accepts_a_valid_token_and_defaults_to_customer() {
        let caller = authenticate(
            bearer(&token(None, Some("c1"), Some(60))).as_deref(),
            &rules(),
            NOW,
        );
        assert_eq!(
            caller.unwrap(),
            Caller {
                subject: "c1".into(),
                role: Role::Customer
            }
        );
        let admin = authenticate(
            bearer(&token(Some("admin"), Some("ops"), Some(60))).as_deref(),
            &rules(),
            NOW,
        );
        assert_eq!(admin.unwrap().role, Role::Admin);
    }

    #[test]
    fn refuses_bad_tokens_with_the_right_code() {
        let code = |auth: Option<String>| {
            authenticate(auth.as_deref(), &rules(), NOW)
                .unwrap_err()
                .code
        };
        assert_eq!(code(None), "missing_token");
        assert_eq!(code(Some("Basic abc".into())), "missing_token");
        assert_eq!(
            code(bearer(&token(None, Some("c1"), Some(-3600)))),
            "token_expired"
        );
        assert_eq!(
            code(bearer(&token(None, Some("c1"), None))),
            "invalid_token"
        );
        assert_eq!(code(bearer(&token(None, None, Some(60)))), "invalid_token");
        assert_eq!(
            code(bearer(&token(Some("root"), Some("c1"), Some(60)))),
            "invalid_token"
        );
        assert_eq!(
            code(bearer(&token(None, Some("not\nan id"), Some(60)))),
            "invalid_token"
        );
        assert_eq!(code(bearer("a.b.c")), "invalid_token");
        let forged = HS256Key::from_bytes(b"another-secret-entirely")
            .authenticate(Claims::create(Duration::from_secs(60)).with_subject("c1"))
            .unwrap();
        assert_eq!(code(bearer(&forged)), "invalid_token");
    }

    #[test]
    fn refuses_an_algorithm_swap() {
        let valid = token(Some("admin"), Some("ops"), Some(60));
        let payload = valid.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT"} with no signature
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        let err = authenticate(bearer(&none).as_deref(), &rules(), NOW).unwrap_err();
        assert_eq!(err.code, "invalid_token");
    }

    /// Signs `claims` as they are, `iat` and `exp` included.
    fn signed(claims: JWTClaims<RoleClaim>) -> Option<String> {
        bearer(&HS256Key::from_bytes(SECRET).authenticate(claims).unwrap())
    }

    fn claims(role: &str, iat: Option<u64>, exp: Option<u64>) -> JWTClaims<RoleClaim> {
        let mut claims = Claims::with_custom_claims(
            RoleClaim {
                role: Some(role.to_owned()),
            },
            Duration::from_secs(60),
        )
        .with_subject("c1");
        claims.issued_at = iat.map(UnixTimeStamp::from_secs);
        claims.invalid_before = None;
        claims.expires_at = exp.map(UnixTimeStamp::from_secs);
        claims
    }

    #[test]
    fn refuses_tokens_that_never_expire_or_live_too_long() {
        let code = |auth: Option<String>, rules: &TokenRules| {
            authenticate(auth.as_deref(), rules, NOW).map(|c| c.role)
        };
        let rules = rules();
        // exp = 2^64 − 1 and no iat.
        let forever = signed(claims("customer", None, Some(u64::MAX)));
        assert_eq!(code(forever, &rules).unwrap_err().code, "invalid_token");
        let forever = signed(claims("customer", Some(NOW - 10), Some(u64::MAX)));
        assert_eq!(code(forever, &rules).unwrap_err().code, "invalid_token");
        // An admin token of a day, while admins may have 12 hours.
        let day = signed(claims("admin", Some(NOW - 10), Some(NOW + 86_400)));
        assert_eq!(code(day.clone(), &rules).unwrap_err().code, "invalid_token");
        // A customer's may: 30 days by default.
        let day = signed(claims("customer", Some(NOW - 10), Some(NOW + 86_400)));
        assert_eq!(code(day, &rules).unwrap(), Role::Customer);
        // Issued too long ago, however far its exp.
        let old = signed(claims("service", Some(NOW - 2 * 86_400), Some(NOW + 60)));
        assert_eq!(code(old, &rules).unwrap_err().code, "invalid_token");
        // Issued in the future.
        let future = signed(claims("service", Some(NOW + 3600), Some(NOW + 7200)));
        assert_eq!(code(future, &rules).unwrap_err().code, "invalid_token");
    }

    #[test]
    fn checks_issuer_and_audience_when_configured() {
        let rules = TokenRules {
            issuer: Some("otp-auth".into()),
            audience: Some("customer-api".into()),
            ..rules()
        };
        let with = |iss: Option<&str>, aud: Option<&str>| {
            let mut claims = claims("service", Some(NOW - 10), Some(NOW + 60));
            claims.issuer = iss.map(str::to_owned);
            claims = match aud {
                Some(aud) => claims.with_audience(aud),
                None => claims,
            };
            authenticate(signed(claims).as_deref(), &rules, NOW)
        };
        assert!(with(Some("otp-auth"), Some("customer-api")).is_ok());
        for (iss, aud) in [
            (Some("elsewhere"), Some("customer-api")),
            (Some("otp-auth"), Some("billing")),
            (None, Some("customer-api")),
            (Some("otp-auth"), None),
        ] {
            let err = with(iss, aud).unwrap_err();
            assert_eq!(err.code, "invalid_token", "{iss:?} {aud:?}");
        }
        // Without the settings, foreign claims are not judged.
        let open = super::tests::rules();
        let mut claims = claims("service", Some(NOW - 10), Some(NOW + 60));
        claims.issuer = Some("elsewhere".into());
        assert!(authenticate(signed(claims).as_deref(), &open, NOW).is_ok());
    }
}
