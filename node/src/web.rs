//! The web client: a page, a script and a stylesheet built from `node/web/app/` (TypeScript,
//! bundled by `npm run build`) and embedded here at compile time, so a bare `troupe` binary
//! serves a usable chat at `/` without Node.js, a CDN or a second server.
//!
//! `node/web/dist/` is committed; the web test suite rebuilds it and fails when the
//! committed copy is stale.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("../web/dist/index.html");
const APP_JS: &str = include_str!("../web/dist/app.js");
const STYLE_CSS: &str = include_str!("../web/dist/style.css");

/// The page may only load its own script and style, talk to the node it came from (the
/// WebSocket, whose `ws:` scheme older browsers do not count as `'self'`, and the HTTP
/// uploads), and show media from that node (or `blob:`/`data:` previews): a message body can
/// never smuggle in a script or pull from elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self' ws: wss:; img-src 'self' blob: data:; media-src 'self' blob:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the chat page.
pub async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

/// `GET /app.js`: the page's script.
pub async fn script() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /style.css`: the page's stylesheet.
pub async fn stylesheet() -> Response {
    asset(STYLE_CSS, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary; revalidating is cheap next to a stale client.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
