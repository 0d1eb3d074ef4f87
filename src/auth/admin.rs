//! How an admin proves who they are on the routes that need one (docs/design.md §14).
//! With neither Access nor an admin secret configured — local development — an admin
//! token signed with the OTP service's `JWT_SECRET` is enough; once either is set, that
//! secret no longer opens the migration's controls, so a leak of the OTP service is not
//! a leak of them.

use super::access::{self, AccessRules};
use super::keys::AccessKeys;
use super::{authenticate, Caller, TokenRules};
use crate::http::{ApiError, ApiRequest, Method};

/// The least length of `ADMIN_JWT_SECRET`: 256 bits, as HS256 deserves.
pub const MIN_ADMIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminSignIn {
    /// Cloudflare Access, when configured (`ACCESS_*`).
    pub access: Option<AccessRules>,
    /// The secret admin tokens are signed with instead of `JWT_SECRET`
    /// (`ADMIN_JWT_SECRET`).
    pub admin_secret: Option<Vec<u8>>,
}

impl AdminSignIn {
    /// Whether an admin token signed with the OTP service's secret opens `/admin`.
    pub fn shares_the_otp_secret(&self) -> bool {
        self.access.is_none() && self.admin_secret.is_none()
    }

    /// What `/admin/migrate/ready` and the docs call the arrangement.
    pub fn describe(&self) -> &'static str {
        match (&self.access, &self.admin_secret) {
            (Some(_), Some(_)) => "access-or-admin-secret",
            (Some(_), None) => "access",
            (None, Some(_)) => "admin-secret",
            (None, None) => "shared-secret",
        }
    }
}

/// The caller of a route that needs an admin. Whether they are one is decided by the
/// route (a 403 for a verified non-admin); here, only who they are.
pub async fn admin_caller(
    request: &ApiRequest,
    tokens: &TokenRules,
    sign_in: &AdminSignIn,
    keys: &AccessKeys,
    now_ms: u64,
) -> Result<Caller, ApiError> {
    let assertion = request
        .access_assertion
        .as_deref()
        .filter(|a| !a.is_empty());
    if let (Some(rules), Some(assertion)) = (&sign_in.access, assertion) {
        // The browser adds Access's cookie, and so the assertion, to any request, even
        // one another site's page makes: only reads are taken from such a page.
        let reads = matches!(request.method, Method::Get);
        if !reads && request.provenance.is_cross_origin() {
            return Err(ApiError::forbidden(
                "an admin action signed in through Access must come from this site's own pages",
            ));
        }
        return access::verify(assertion, rules, keys, now_ms).await;
    }
    let authorization = request.authorization.as_deref();
    let now_secs = now_ms / 1000;
    match &sign_in.admin_secret {
        Some(secret) => {
            let rules = TokenRules {
                secret: secret.clone(),
                ..tokens.clone()
            };
            authenticate(authorization, &rules, now_secs).map_err(|err| match err.code {
                "missing_token" | "invalid_token" => ApiError::new(
                    401,
                    err.code,
                    format!(
                        "{}: admin routes take {}",
                        err.message,
                        if sign_in.access.is_some() {
                            "a Cloudflare Access sign-in or a token signed with ADMIN_JWT_SECRET"
                        } else {
                            "a token signed with ADMIN_JWT_SECRET"
                        }
                    ),
                ),
                _ => err,
            })
        }
        None if sign_in.access.is_some() => Err(ApiError::new(
            401,
            "access_required",
            "admin routes take a Cloudflare Access sign-in (Cf-Access-Jwt-Assertion)",
        )),
        None => authenticate(authorization, tokens, now_secs),
    }
}
