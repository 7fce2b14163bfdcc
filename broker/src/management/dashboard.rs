//! The web dashboard, served on the management port: a single page (`assets/`) over the
//! management API, embedded in the binary (`include_str!`), so it needs no network at run time
//! and no build step: plain HTML, CSS and JavaScript, no framework.
//!
//! The page itself needs no login (it holds nothing); it logs in with the broker's users and
//! every figure and action goes through the `/api` routes, with the caller's credentials, so
//! the user tags decide what it shows and allows exactly as they do for any API client.
//!
//! Responses carry a strict Content-Security-Policy (scripts, styles and connections to this
//! origin only; no inline script; no framing), `nosniff`, `no-referrer`, and `no-cache` so an
//! upgraded broker serves its own page.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::Ctx;

const INDEX_HTML: &str = include_str!("assets/index.html");
const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("assets/dashboard.css");
const FAVICON_SVG: &str = include_str!("assets/favicon.svg");

/// The policy every dashboard response carries.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Every file the dashboard serves: its path, its content type and its text.
const ASSETS: [(&str, &str, &str); 5] = [
    ("/", "text/html; charset=utf-8", INDEX_HTML),
    ("/index.html", "text/html; charset=utf-8", INDEX_HTML),
    (
        "/dashboard.js",
        "text/javascript; charset=utf-8",
        DASHBOARD_JS,
    ),
    ("/dashboard.css", "text/css; charset=utf-8", DASHBOARD_CSS),
    ("/favicon.svg", "image/svg+xml", FAVICON_SVG),
];

/// The dashboard's routes, one per file of [`ASSETS`] (no authentication: the page logs in
/// through the API).
pub(super) fn routes() -> Router<Ctx> {
    ASSETS
        .into_iter()
        .fold(Router::new(), |router, (path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        // No CDN, no external origin: every URL the page names is relative.
        for text in [INDEX_HTML, DASHBOARD_JS, DASHBOARD_CSS] {
            for needle in ["http://", "https://", "//cdn", "@import"] {
                let hits: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains(needle) && !l.contains("http://www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{needle} in {hits:?}");
            }
        }
        for file in ["dashboard.js", "dashboard.css", "favicon.svg"] {
            assert!(INDEX_HTML.contains(file), "{file}");
        }
        // No inline script or style: the CSP forbids them.
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains("style="));
    }
}
