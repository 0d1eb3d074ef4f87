//! Who is calling and what they may do. Customers and services sign in with bearer
//! tokens signed by the OTP service's `JWT_SECRET` (`bearer`); admins, on the routes
//! that need one, through Cloudflare Access or a token signed by a secret of their own
//! when either is configured (`admin`, docs/design.md §14).

pub mod access;
mod admin;
mod bearer;
pub mod keys;

pub use admin::{admin_caller, AdminSignIn, MIN_ADMIN_SECRET_BYTES};
pub use bearer::{authenticate, RoleLimits, TokenRules, CLOCK_SKEW_SECS};

use crate::domain::CustomerId;
use crate::http::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Customer,
    Service,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Service => "service",
            Role::Admin => "admin",
        }
    }
}

/// Who is calling, as proven by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    pub role: Role,
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
/// they are entitled to is set by the services that sell it, and the email by the OTP
/// service, which verifies it (an owner could otherwise claim an address nobody holds
/// yet, and `ensure` would hand its real owner the owner's account).
pub const OWNER_PROTECTED_FIELDS: &[&str] = &[
    "email",
    "plan",
    "tier",
    "status",
    "subscriptions",
    "flairs",
    "features",
];
