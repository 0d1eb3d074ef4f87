//! The HTTP edge: which handler a method and path go to, and the handlers, each of which
//! parses its input, calls one core function and renders the result. Paths are matched
//! segment by segment after percent-decoding; a known path with the wrong method is a
//! 405 naming the right ones.

pub mod admin;
pub mod backfill;
pub mod backup;
mod bodies;
pub mod cohort;
pub mod conflicts;
pub mod customer;
pub mod dashboard;
pub mod emails;
pub mod finalize;
pub mod inventory;
pub mod purge;
pub mod rollback;
pub mod verify;

use percent_encoding::percent_decode_str;

use crate::app::Config;
use crate::auth::Caller;
use crate::http::{ApiError, ApiRequest, ApiResponse, BodyLimit, Method, MAX_VALUE_BYTES};
use crate::migration::copying::fanout::{ChunkQueue, Fanout};
use crate::migration::dataplane::DataPlane;
use crate::migration::state::audit::{self, AuditEntry};
use crate::migration::state::coordinator::PhaseRegister;
use crate::migration::state::phase_cache::PhaseCache;
use crate::migration::state::phase_record::CurrentPhase;
use crate::store::{KvStore, Stores};
use crate::writes::{Writers, Writing};

/// What a handler may use: one authenticated request in the phase it is served in.
pub struct Ctx<'a, S, R, W> {
    pub stores: &'a Stores<S>,
    /// Where the phase record is written (docs/design.md §11).
    pub register: &'a R,
    /// Where customer writes run (docs/design.md §12).
    pub writers: &'a W,
    /// The backfill queue, if the account has one (docs/design.md §13).
    pub queue: Option<&'a dyn ChunkQueue>,
    /// The stores as the phase routes them, for the customer API.
    pub plane: &'a DataPlane<'a, S>,
    pub config: &'a Config,
    pub cache: &'a PhaseCache,
    pub current: &'a CurrentPhase,
    pub caller: &'a Caller,
    pub now_ms: u64,
}

impl<'a, S, R, W> Ctx<'a, S, R, W> {
    /// The queue and the coordinator, when runs fan out on a queue.
    pub fn fanout(&self) -> Option<Fanout<'a, R>> {
        self.queue.map(|queue| Fanout {
            register: self.register,
            queue,
        })
    }

    /// Appends an audit entry of the caller's `action` now; `forced` marks it as going
    /// past a check.
    pub async fn audit(&self, action: &str, detail: String, forced: bool) -> Result<(), ApiError>
    where
        S: KvStore,
    {
        let mut entry = AuditEntry::action(&self.caller.subject, action, self.now_ms, Some(detail));
        entry.forced = forced;
        Ok(audit::append(&self.stores.new, &entry).await?)
    }

    /// The request's writes, as they go to the customers' objects.
    pub fn writing(&self) -> Writing<'a, S, W> {
        Writing {
            writers: self.writers,
            plane: self.plane,
            record: &self.current.state,
            max_record_bytes: self.config.max_record_bytes,
        }
    }
}

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
    Ready,
    ChangePhase,
    Cohort,
    CancelCohort,
    Repair,
    Backfill,
    BackfillControl(crate::migration::copying::backfill::Control),
    BackfillThrottle,
    Verify,
    Inventory,
    Conflicts,
    PruneConflicts,
    SettleConflicts,
    PurgeNew,
    Finalize,
    PurgeWorkingKeys,
    PurgeTombstones,
    Emails,
    EmailIssues,
    Rollback,
    Audit,
    Export,
    Import,
    ImportValue,
    /// The operator dashboard's files (docs/design.md §15).
    Dashboard(dashboard::Asset),
}

impl Route {
    /// The route as logs name it: its path with placeholders, never an id or an email.
    pub fn template(&self) -> &'static str {
        match self {
            Route::Health => "/health",
            Route::Me => "/customer/me",
            Route::Create => "/customer",
            Route::Ensure => "/customer/ensure",
            Route::ByEmail(_) => "/customer/by-email/{email}",
            Route::GetCustomer(_) | Route::UpdateCustomer(_) | Route::DeleteCustomer(_) => {
                "/customer/{id}"
            }
            Route::MigrationStatus => "/admin/migrate/status",
            Route::Ready => "/admin/migrate/ready",
            Route::ChangePhase => "/admin/migrate/phase",
            Route::Cohort => "/admin/migrate/cohort",
            Route::CancelCohort => "/admin/migrate/cohort/cancel",
            Route::Repair => "/admin/migrate/repair",
            Route::Backfill => "/admin/migrate/backfill",
            Route::BackfillControl(_) => "/admin/migrate/backfill/{action}",
            Route::BackfillThrottle => "/admin/migrate/backfill/throttle",
            Route::Verify => "/admin/migrate/verify",
            Route::Inventory => "/admin/migrate/inventory",
            Route::Conflicts => "/admin/migrate/conflicts",
            Route::PruneConflicts => "/admin/migrate/conflicts/prune",
            Route::SettleConflicts => "/admin/migrate/conflicts/settle",
            Route::PurgeNew => "/admin/migrate/purge-new",
            Route::Finalize => "/admin/migrate/finalize",
            Route::PurgeWorkingKeys => "/admin/migrate/finalize/purge",
            Route::PurgeTombstones => "/admin/migrate/finalize/tombstones",
            Route::Emails => "/admin/migrate/emails",
            Route::EmailIssues => "/admin/migrate/emails/issues",
            Route::Rollback => "/admin/migrate/rollback",
            Route::Audit => "/admin/migrate/audit",
            Route::Export => "/admin/migrate/export",
            Route::Import => "/admin/migrate/import",
            Route::ImportValue => "/admin/migrate/import/value",
            Route::Dashboard(asset) => asset.template(),
        }
    }

    /// How large a body this route takes: 64 KiB, refused before the token is checked,
    /// except a raw value, which may be as large as KV takes and so is read only for an
    /// admin.
    pub fn body_limit(&self) -> BodyLimit {
        match self {
            Route::ImportValue => BodyLimit::AfterAdmin(MAX_VALUE_BYTES),
            _ => BodyLimit::DEFAULT,
        }
    }

    /// Whether only an admin may take this route: every `/admin/migrate` route. The
    /// dashboard's files hold no data and decide their own sign-in (`dashboard::serve`).
    pub fn requires_admin(&self) -> bool {
        !matches!(
            self,
            Route::Health
                | Route::Dashboard(_)
                | Route::Me
                | Route::Create
                | Route::Ensure
                | Route::ByEmail(_)
                | Route::GetCustomer(_)
                | Route::UpdateCustomer(_)
                | Route::DeleteCustomer(_)
        )
    }
}

impl Route {
    /// Admin work that reads `OTP_AUTH_KV`, which nothing may once the migration is
    /// finalized (docs/design.md §9, "Finalizing"). An export of it stays allowed: it is
    /// how the operator archives it.
    fn reads_the_old_store(&self) -> bool {
        matches!(
            self,
            Route::Verify | Route::Conflicts | Route::PruneConflicts | Route::SettleConflicts
        )
    }
}

/// Calls the route's handler; `/health` is answered before authentication and never
/// comes here.
pub async fn dispatch<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    route: Route,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    if route.requires_admin() {
        ctx.caller.require_admin()?;
    }
    if route.reads_the_old_store() && ctx.current.state.finalized_at.is_some() {
        return Err(crate::error::Error::Finalized.into());
    }
    match route {
        Route::Health | Route::Dashboard(_) => {
            Err(ApiError::internal("served before authentication"))
        }
        Route::Me => customer::me(ctx).await,
        Route::GetCustomer(id) => customer::get(ctx, &id).await,
        Route::ByEmail(email) => customer::by_email(ctx, &email).await,
        Route::Create => customer::create(ctx, request).await,
        Route::Ensure => customer::ensure(ctx, request).await,
        Route::UpdateCustomer(id) => customer::update(ctx, &id, request).await,
        Route::DeleteCustomer(id) => customer::delete(ctx, &id).await,
        Route::MigrationStatus => admin::status(ctx).await,
        Route::Ready => admin::ready(ctx).await,
        Route::ChangePhase => admin::change_phase(ctx, request).await,
        Route::Cohort => cohort::widen(ctx, request).await,
        Route::CancelCohort => cohort::cancel(ctx, request).await,
        Route::Repair => admin::repair(ctx).await,
        Route::Audit => admin::audit_log(ctx, request).await,
        Route::Backfill => backfill::run_batch(ctx, request).await,
        Route::BackfillControl(action) => backfill::control(ctx, action).await,
        Route::BackfillThrottle => backfill::throttle(ctx, request).await,
        Route::Emails => emails::run(ctx, request).await,
        Route::EmailIssues => emails::issues(ctx, request).await,
        Route::Verify => verify::run(ctx, request).await,
        Route::Inventory => inventory::run(ctx, request).await,
        Route::Conflicts => conflicts::page(ctx, request).await,
        Route::PruneConflicts => conflicts::prune(ctx, request).await,
        Route::SettleConflicts => conflicts::settle(ctx, request).await,
        Route::PurgeNew => purge::run(ctx, request).await,
        Route::Finalize => finalize::run(ctx, request).await,
        Route::PurgeWorkingKeys => finalize::purge_working_keys(ctx, request).await,
        Route::PurgeTombstones => finalize::purge_tombstones(ctx, request).await,
        Route::Rollback => rollback::run(ctx, request).await,
        Route::Export => backup::export(ctx, request).await,
        Route::Import => backup::import(ctx, request).await,
        Route::ImportValue => backup::import_value(ctx, request).await,
    }
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
    // A legacy id that is also a route's word is reached percent-encoded:
    // `/customer/%6De` is the customer `me`, `/customer/me` the caller's own record.
    let raw: Vec<&str> = trimmed.split('/').skip(1).collect();
    let spelled_out = |i: usize| raw.get(i) == parts.get(i);
    use Method::*;
    let (allowed, chosen): (&[&str], Option<Route>) = match parts.as_slice() {
        ["health"] => (&["GET"], (*method == Get).then_some(Route::Health)),
        // The dashboard's page is `/admin/`; `/admin` sends the browser there.
        ["admin"] => {
            let asset = if path.ends_with('/') {
                dashboard::Asset::Page
            } else {
                dashboard::Asset::Redirect
            };
            (
                &["GET"],
                (*method == Get).then_some(Route::Dashboard(asset)),
            )
        }
        ["admin", name] => match dashboard::Asset::named(name) {
            Some(asset) => (
                &["GET"],
                (*method == Get).then_some(Route::Dashboard(asset)),
            ),
            None => return Err(ApiError::new(404, "route_not_found", "no such route").into()),
        },
        ["customer"] => (&["POST"], (*method == Post).then_some(Route::Create)),
        ["customer", "me"] if spelled_out(1) => (&["GET"], (*method == Get).then_some(Route::Me)),
        ["customer", "ensure"] if spelled_out(1) => {
            (&["POST"], (*method == Post).then_some(Route::Ensure))
        }
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
        ["admin", "migrate", "ready"] => (&["GET"], (*method == Get).then_some(Route::Ready)),
        ["admin", "migrate", "phase"] => {
            (&["POST"], (*method == Post).then_some(Route::ChangePhase))
        }
        ["admin", "migrate", "cohort"] => (&["POST"], (*method == Post).then_some(Route::Cohort)),
        ["admin", "migrate", "cohort", "cancel"] => {
            (&["POST"], (*method == Post).then_some(Route::CancelCohort))
        }
        ["admin", "migrate", "repair"] => (&["POST"], (*method == Post).then_some(Route::Repair)),
        ["admin", "migrate", "rollback"] => {
            (&["POST"], (*method == Post).then_some(Route::Rollback))
        }
        ["admin", "migrate", "audit"] => (&["GET"], (*method == Get).then_some(Route::Audit)),
        ["admin", "migrate", "export"] => (&["GET"], (*method == Get).then_some(Route::Export)),
        ["admin", "migrate", "import"] => (&["POST"], (*method == Post).then_some(Route::Import)),
        ["admin", "migrate", "import", "value"] => {
            (&["POST"], (*method == Post).then_some(Route::ImportValue))
        }
        ["admin", "migrate", "emails"] => (&["POST"], (*method == Post).then_some(Route::Emails)),
        ["admin", "migrate", "emails", "issues"] => {
            (&["GET"], (*method == Get).then_some(Route::EmailIssues))
        }
        ["admin", "migrate", "verify"] => (&["POST"], (*method == Post).then_some(Route::Verify)),
        ["admin", "migrate", "inventory"] => {
            (&["POST"], (*method == Post).then_some(Route::Inventory))
        }
        ["admin", "migrate", "conflicts"] => {
            (&["GET"], (*method == Get).then_some(Route::Conflicts))
        }
        ["admin", "migrate", "conflicts", "prune"] => (
            &["POST"],
            (*method == Post).then_some(Route::PruneConflicts),
        ),
        ["admin", "migrate", "finalize"] => {
            (&["POST"], (*method == Post).then_some(Route::Finalize))
        }
        ["admin", "migrate", "finalize", "purge"] => (
            &["POST"],
            (*method == Post).then_some(Route::PurgeWorkingKeys),
        ),
        ["admin", "migrate", "finalize", "tombstones"] => (
            &["POST"],
            (*method == Post).then_some(Route::PurgeTombstones),
        ),
        ["admin", "migrate", "purge-new"] => {
            (&["POST"], (*method == Post).then_some(Route::PurgeNew))
        }
        ["admin", "migrate", "conflicts", "settle"] => (
            &["POST"],
            (*method == Post).then_some(Route::SettleConflicts),
        ),
        ["admin", "migrate", "backfill"] => {
            (&["POST"], (*method == Post).then_some(Route::Backfill))
        }
        ["admin", "migrate", "backfill", "throttle"] => (
            &["POST"],
            (*method == Post).then_some(Route::BackfillThrottle),
        ),
        ["admin", "migrate", "backfill", action] => {
            let control = match *action {
                "pause" => crate::migration::copying::backfill::Control::Pause,
                "resume" => crate::migration::copying::backfill::Control::Resume,
                "reset" => crate::migration::copying::backfill::Control::Reset,
                "retry-failed" => crate::migration::copying::backfill::Control::RetryFailed,
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
    fn a_legacy_id_is_reached_percent_encoded_even_when_it_is_a_routes_word() {
        assert_eq!(
            route(&Method::Get, "/customer/ann%40example.com"),
            Ok(Route::GetCustomer("ann@example.com".into()))
        );
        assert_eq!(
            route(&Method::Patch, "/customer/a%2Fb%20c"),
            Ok(Route::UpdateCustomer("a/b c".into()))
        );
        assert_eq!(
            route(&Method::Get, "/customer/%6De"),
            Ok(Route::GetCustomer("me".into()))
        );
        assert_eq!(
            route(&Method::Delete, "/customer/%65nsure"),
            Ok(Route::DeleteCustomer("ensure".into()))
        );
        assert_eq!(route(&Method::Post, "/customer/ensure"), Ok(Route::Ensure));
    }

    #[test]
    fn every_admin_route_and_only_those_requires_an_admin() {
        let cases = [
            ("GET", "/customer/me"),
            ("GET", "/customer/c1"),
            ("POST", "/customer"),
            ("POST", "/customer/ensure"),
            ("GET", "/customer/by-email/a%40b.io"),
            ("PATCH", "/customer/c1"),
            ("DELETE", "/customer/c1"),
            ("GET", "/admin/migrate/status"),
            ("POST", "/admin/migrate/phase"),
            ("POST", "/admin/migrate/repair"),
            ("POST", "/admin/migrate/rollback"),
            ("GET", "/admin/migrate/audit"),
            ("GET", "/admin/migrate/export"),
            ("POST", "/admin/migrate/import"),
            ("POST", "/admin/migrate/import/value"),
            ("POST", "/admin/migrate/emails"),
            ("POST", "/admin/migrate/verify"),
            ("POST", "/admin/migrate/backfill"),
            ("POST", "/admin/migrate/backfill/pause"),
            ("POST", "/admin/migrate/inventory"),
            ("GET", "/admin/migrate/conflicts"),
            ("POST", "/admin/migrate/conflicts/prune"),
            ("POST", "/admin/migrate/conflicts/settle"),
            ("POST", "/admin/migrate/purge-new"),
            ("POST", "/admin/migrate/finalize"),
            ("POST", "/admin/migrate/finalize/purge"),
            ("POST", "/admin/migrate/cohort"),
            ("POST", "/admin/migrate/cohort/cancel"),
            ("GET", "/admin/migrate/emails/issues"),
        ];
        for (method, path) in cases {
            let route = route(&Method::parse(method), path).unwrap();
            assert_eq!(
                route.requires_admin(),
                path.starts_with("/admin/"),
                "{path}"
            );
        }
    }

    #[test]
    fn the_dashboard_is_served_beside_the_admin_api_without_taking_its_paths() {
        use dashboard::Asset;
        let get = |path: &str| route(&Method::Get, path);
        assert_eq!(get("/admin"), Ok(Route::Dashboard(Asset::Redirect)));
        assert_eq!(get("/admin/"), Ok(Route::Dashboard(Asset::Page)));
        assert_eq!(get("/admin/app.js"), Ok(Route::Dashboard(Asset::Script)));
        assert_eq!(get("/admin/style.css"), Ok(Route::Dashboard(Asset::Style)));
        assert_eq!(get("/admin/migrate/status"), Ok(Route::MigrationStatus));
        assert_eq!(get("/admin/migrate").unwrap_err().error.status, 404);
        assert_eq!(get("/admin/secrets.txt").unwrap_err().error.status, 404);
        assert_eq!(get("/admin/app.js/x").unwrap_err().error.status, 404);
        let refusal = route(&Method::Post, "/admin/").unwrap_err();
        assert_eq!(refusal.error.status, 405);
        assert_eq!(refusal.allow.as_deref(), Some("GET"));
        for path in ["/admin", "/admin/", "/admin/app.js", "/admin/style.css"] {
            let route = get(path).unwrap();
            assert!(!route.requires_admin(), "{path}");
            assert_eq!(route.template(), path, "the log names the file");
        }
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
