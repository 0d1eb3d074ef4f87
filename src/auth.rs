//! Bearer-token authentication (HS256 JWTs shared with the OTP auth service) and the
//! rules of who may touch which record.

use jwt_simple::prelude::*;
use jwt_simple::JWTError;

use crate::domain::CustomerId;
use crate::http::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Customer,
    Service,
    Admin,
}

/// Who is calling, as proven by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    pub role: Role,
}

#[derive(Debug, Serialize, Deserialize)]
struct RoleClaim {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

/// Clock skew tolerated between the token issuer and this worker.
const CLOCK_SKEW_SECS: u64 = 30;
/// Longest `sub` accepted; a customer's `sub` must moreover be a valid customer id.
const MAX_SUBJECT_LEN: usize = 256;

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(401, code, message)
}

/// Verifies the `Authorization` header at `now_secs` and names the caller.
pub fn authenticate(
    authorization: Option<&str>,
    secret: &[u8],
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

    let key = HS256Key::from_bytes(secret);
    let options = VerificationOptions {
        time_tolerance: Some(Duration::from_secs(CLOCK_SKEW_SECS)),
        artificial_time: Some(UnixTimeStamp::from_secs(now_secs)),
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

    if claims.expires_at.is_none() {
        return Err(unauthorized("invalid_token", "the token has no exp claim"));
    }
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
    if role == Role::Customer && CustomerId::parse(&subject).is_err() {
        return Err(unauthorized(
            "invalid_token",
            "a customer token's sub must be a customer id",
        ));
    }
    Ok(Caller { subject, role })
}

impl Caller {
    pub fn is_owner(&self, id: &CustomerId) -> bool {
        self.subject == id.as_str()
    }

    pub fn is_privileged(&self) -> bool {
        matches!(self.role, Role::Service | Role::Admin)
    }

    /// Owners, services and admins may read and update a record.
    pub fn require_owner_or_privileged(&self, id: &CustomerId) -> Result<(), ApiError> {
        if self.is_privileged() || self.is_owner(id) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this token may not access that customer",
            ))
        }
    }

    pub fn require_privileged(&self) -> Result<(), ApiError> {
        if self.is_privileged() {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this action needs a service or admin token",
            ))
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("this action needs an admin token"))
        }
    }
}

/// Fields a customer may not change on their own record: what they pay for and what
/// they are entitled to is set by the services that sell it.
pub const OWNER_PROTECTED_FIELDS: &[&str] = &[
    "plan",
    "tier",
    "status",
    "subscriptions",
    "flairs",
    "features",
];

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

    fn bearer(t: &str) -> Option<String> {
        Some(format!("Bearer {t}"))
    }

    #[test]
    fn accepts_a_valid_token_and_defaults_to_customer() {
        let caller = authenticate(
            bearer(&token(None, Some("c1"), Some(60))).as_deref(),
            SECRET,
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
            SECRET,
            NOW,
        );
        assert_eq!(admin.unwrap().role, Role::Admin);
    }

    #[test]
    fn refuses_bad_tokens_with_the_right_code() {
        let code =
            |auth: Option<String>| authenticate(auth.as_deref(), SECRET, NOW).unwrap_err().code;
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
            code(bearer(&token(None, Some("not an id"), Some(60)))),
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
        let err = authenticate(bearer(&none).as_deref(), SECRET, NOW).unwrap_err();
        assert_eq!(err.code, "invalid_token");
    }
}
