//! `GET /admin/`: the operator dashboard, three static files embedded in the worker
//! (docs/design.md §15). They hold no data and no secret: the page reads and acts
//! through `/admin/migrate/*`, which keeps its own admin sign-in. With Cloudflare Access
//! configured the page itself is also served only to a signed-in admin.

use crate::app::Config;
use crate::auth::admin_caller;
use crate::auth::keys::AccessKeys;
use crate::http::{ApiError, ApiRequest, ApiResponse};

/// What the dashboard's routes serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    /// `/admin`: to `/admin/`, so the page's relative URLs resolve under it.
    Redirect,
    Page,
    Script,
    Style,
}

/// Where the page lives; `/admin` redirects here.
pub const PAGE_PATH: &str = "/admin/";

const PAGE: &str = include_str!("../../dashboard/index.html");
const SCRIPT: &str = include_str!("../../dashboard/app.js");
const STYLE: &str = include_str!("../../dashboard/style.css");

/// Only the page's own files run or style it, it talks to its own origin only, and no
/// other site may frame it (clickjacking the phase controls) or read where it came from.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

impl Asset {
    /// The asset a path names under `/admin/`, if any.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "app.js" => Some(Asset::Script),
            "style.css" => Some(Asset::Style),
            _ => None,
        }
    }

    pub fn template(self) -> &'static str {
        match self {
            Asset::Redirect => "/admin",
            Asset::Page => PAGE_PATH,
            Asset::Script => "/admin/app.js",
            Asset::Style => "/admin/style.css",
        }
    }

    fn content(self) -> Option<(&'static str, &'static str)> {
        match self {
            Asset::Redirect => None,
            Asset::Page => Some(("text/html; charset=utf-8", PAGE)),
            Asset::Script => Some(("text/javascript; charset=utf-8", SCRIPT)),
            Asset::Style => Some(("text/css; charset=utf-8", STYLE)),
        }
    }
}

/// Serves `asset`. With Access configured, only to a caller `admin_caller` accepts as
/// an admin: the edge adds the assertion to the browser's navigation.
pub async fn serve(
    asset: Asset,
    request: &ApiRequest,
    config: &Config,
    keys: &AccessKeys,
    now_ms: u64,
) -> Result<ApiResponse, ApiError> {
    let Some((content_type, text)) = asset.content() else {
        // Holds nothing: no sign-in needed to be sent on.
        return Ok(
            ApiResponse::json(308, serde_json::json!({ "location": PAGE_PATH }))
                .with_header("Location", PAGE_PATH.to_owned()),
        );
    };
    let sign_in = &config.admin_sign_in;
    if sign_in.access.is_some() {
        admin_caller(request, &config.tokens, sign_in, keys, now_ms)
            .await?
            .require_admin()?;
    }
    Ok(ApiResponse::raw(content_type, text.as_bytes().to_vec())
        .with_header(
            "Content-Security-Policy",
            CONTENT_SECURITY_POLICY.to_owned(),
        )
        .with_header("X-Content-Type-Options", "nosniff".to_owned())
        .with_header("Referrer-Policy", "no-referrer".to_owned())
        .with_header("X-Frame-Options", "DENY".to_owned())
        .with_header("Cross-Origin-Opener-Policy", "same-origin".to_owned())
        // Small files that change with each deploy: always revalidated, never kept by
        // a shared cache.
        .with_header("Cache-Control", "no-cache, private".to_owned()))
}
