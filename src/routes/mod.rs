//! Which handler a method and path go to. Paths are matched segment by segment after
//! percent-decoding; a known path with the wrong method is a 405 naming the right ones.

pub mod admin;
pub mod backfill;
pub mod backup;
pub mod customer;
pub mod emails;
pub mod rollback;
pub mod verify;

use percent_encoding::percent_decode_str;

use crate::http::ApiError;
use crate::http::Method;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Me,
    Create,
    Ensure,
    ByEmail(String),
    GetCustomer(String),
    UpdateCustomer(String),
    DeleteCustomer(String),
    MigrationStatus,
    ChangePhase,
    Repair,
    Backfill,
    BackfillControl(crate::migration::copying::backfill::Control),
    Verify,
    Emails,
    Rollback,
    Audit,
    Export,
    Import,
}

/// A request no route takes: the error, and for a 405 the methods the path accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoute {
    pub error: ApiError,
    pub allow: Option<String>,
}

impl From<ApiError> for NoRoute {
    fn from(error: ApiError) -> Self {
        Self { error, allow: None }
    }
}

pub fn route(method: &Method, path: &str) -> Result<Route, NoRoute> {
    let trimmed = path.trim_end_matches('/');
    let segments: Vec<String> = trimmed
        .split('/')
        .skip(1)
        .map(|s| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| ApiError::bad_request("invalid_path", "the path is not valid UTF-8"))
        })
        .collect::<Result<_, ApiError>>()?;
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    use Method::*;
    let (allowed, chosen): (&[&str], Option<Route>) = match parts.as_slice() {
        ["health"] => (&["GET"], (*method == Get).then_some(Route::Health)),
        ["customer"] => (&["POST"], (*method == Post).then_some(Route::Create)),
        ["customer", "me"] => (&["GET"], (*method == Get).then_some(Route::Me)),
        ["customer", "ensure"] => (&["POST"], (*method == Post).then_some(Route::Ensure)),
        ["customer", "by-email", email] => (
            &["GET"],
            (*method == Get).then(|| Route::ByEmail((*email).to_owned())),
        ),
        ["customer", id] => {
            let id = (*id).to_owned();
            let chosen = match method {
                Get => Some(Route::GetCustomer(id)),
                Patch => Some(Route::UpdateCustomer(id)),
                Delete => Some(Route::DeleteCustomer(id)),
                _ => None,
            };
            (&["GET", "PATCH", "DELETE"], chosen)
        }
        ["admin", "migrate", "status"] => {
            (&["GET"], (*method == Get).then_some(Route::MigrationStatus))
        }
        ["admin", "migrate", "phase"] => {
            (&["POST"], (*method == Post).then_some(Route::ChangePhase))
        }
        ["admin", "migrate", "repair"] => (&["POST"], (*method == Post).then_some(Route::Repair)),
        ["admin", "migrate", "rollback"] => {
            (&["POST"], (*method == Post).then_some(Route::Rollback))
        }
        ["admin", "migrate", "audit"] => (&["GET"], (*method == Get).then_some(Route::Audit)),
        ["admin", "migrate", "export"] => (&["GET"], (*method == Get).then_some(Route::Export)),
        ["admin", "migrate", "import"] => (&["POST"], (*method == Post).then_some(Route::Import)),
        ["admin", "migrate", "emails"] => (&["POST"], (*method == Post).then_some(Route::Emails)),
        ["admin", "migrate", "verify"] => (&["POST"], (*method == Post).then_some(Route::Verify)),
        ["admin", "migrate", "backfill"] => {
            (&["POST"], (*method == Post).then_some(Route::Backfill))
        }
        ["admin", "migrate", "backfill", action] => {
            let control = match *action {
                "pause" => crate::migration::copying::backfill::Control::Pause,
                "resume" => crate::migration::copying::backfill::Control::Resume,
                "reset" => crate::migration::copying::backfill::Control::Reset,
                _ => return Err(ApiError::new(404, "route_not_found", "no such route").into()),
            };
            (
                &["POST"],
                (*method == Post).then_some(Route::BackfillControl(control)),
            )
        }
        _ => {
            return Err(ApiError::new(404, "route_not_found", "no such route").into());
        }
    };
    chosen.ok_or_else(|| NoRoute {
        error: ApiError::new(
            405,
            "method_not_allowed",
            format!("this path accepts {}", allowed.join(", ")),
        ),
        allow: Some(allowed.join(", ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_known_paths_and_decodes_segments() {
        assert_eq!(route(&Method::Get, "/health"), Ok(Route::Health));
        assert_eq!(route(&Method::Get, "/customer/me"), Ok(Route::Me));
        assert_eq!(
            route(&Method::Get, "/customer/by-email/a%40b.io"),
            Ok(Route::ByEmail("a@b.io".into()))
        );
        assert_eq!(
            route(&Method::Delete, "/customer/c1/"),
            Ok(Route::DeleteCustomer("c1".into()))
        );
    }

    #[test]
    fn tells_404_from_405() {
        assert_eq!(route(&Method::Get, "/nope").unwrap_err().error.status, 404);
        assert_eq!(
            route(&Method::Get, "/customer/a/b")
                .unwrap_err()
                .error
                .status,
            404
        );
        let refusal = route(&Method::Other("PUT".into()), "/customer/x").unwrap_err();
        assert_eq!(refusal.error.status, 405);
        assert_eq!(refusal.allow.as_deref(), Some("GET, PATCH, DELETE"));
        assert_eq!(
            route(&Method::Get, "/admin/migrate/phase")
                .unwrap_err()
                .error
                .status,
            405
        );
        assert!(route(&Method::Get, "/customer/%FF").is_err());
    }
}
