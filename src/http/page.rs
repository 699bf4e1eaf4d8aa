//! The static test page (markup, script, style, and the vendored markdown renderer and HTML
//! sanitizer of `web/vendor/`), embedded in the binary so a single file serves it. No inline
//! script or style: the Content-Security-Policy allows only these files.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");
const MARKED_JS: &str = include_str!("../../web/vendor/marked.umd.js");
const PURIFY_JS: &str = include_str!("../../web/vendor/purify.min.js");

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `GET /`.
pub async fn index() -> impl IntoResponse {
    file("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /app.js`.
pub async fn script() -> impl IntoResponse {
    file("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /app.css`.
pub async fn style() -> impl IntoResponse {
    file("text/css; charset=utf-8", APP_CSS)
}

/// `GET /vendor/marked.js`: marked (markdown to HTML), pinned in web/vendor/README.md.
pub async fn marked() -> impl IntoResponse {
    file("text/javascript; charset=utf-8", MARKED_JS)
}

/// `GET /vendor/purify.js`: DOMPurify (HTML sanitizer), pinned in web/vendor/README.md.
pub async fn purify() -> impl IntoResponse {
    file("text/javascript; charset=utf-8", PURIFY_JS)
}
