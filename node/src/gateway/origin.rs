//! Which web pages may open a WebSocket to the node. Browsers send `Origin` on every
//! WebSocket handshake and a page cannot forge it, so checking it stops another site's page
//! from using a visitor's browser to talk to the node (cross-site WebSocket hijacking).
//! Clients that are not browsers send no `Origin` and are let through: they hold their own
//! credentials, and `Origin` means nothing to them.

use axum::http::{HeaderMap, header};

/// The pages allowed to connect, from `gateway.allowed_origins`.
#[derive(Debug, Clone, PartialEq)]
pub enum OriginPolicy {
    /// Any page (`*`): for development, or a node behind a proxy that checks.
    Any,
    /// Pages served by the node itself (the `Origin`'s host is the request's `Host`), and
    /// these origins (`https://chat.example.com`), compared exactly.
    SameHostAnd(Vec<String>),
}

impl OriginPolicy {
    /// Reads the setting: `*`, or a comma-separated list of origins (empty: the node's own
    /// pages only).
    pub fn parse(setting: &str) -> OriginPolicy {
        if setting.trim() == "*" {
            return OriginPolicy::Any;
        }
        let origins = setting
            .split(',')
            .map(|origin| origin.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|origin| !origin.is_empty())
            .collect();
        OriginPolicy::SameHostAnd(origins)
    }

    /// Whether a handshake with these headers may go on.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let OriginPolicy::SameHostAnd(allowed) = self else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim().to_ascii_lowercase();
        if allowed.contains(&origin) {
            return true;
        }
        // `null` (a sandboxed or file page) has no host and is refused here.
        let host = origin.split_once("://").map(|(_, rest)| rest);
        let request_host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_ascii_lowercase);
        matches!((host, request_host), (Some(host), Some(request_host)) if host == request_host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn the_nodes_own_pages_and_listed_origins_pass_others_do_not() {
        let policy = OriginPolicy::parse(" https://chat.example.com/ , https://m.example.com");
        assert!(policy.allows(&headers(None, "node:7878")), "no Origin: not a browser");
        assert!(policy.allows(&headers(Some("http://node:7878"), "node:7878")), "its own page");
        assert!(policy.allows(&headers(Some("https://Chat.Example.com"), "node:7878")));
        assert!(policy.allows(&headers(Some("https://m.example.com"), "node:7878")));
        assert!(!policy.allows(&headers(Some("https://evil.example"), "node:7878")));
        assert!(!policy.allows(&headers(Some("http://node:7879"), "node:7878")), "another port is another origin");
        assert!(!policy.allows(&headers(Some("null"), "node:7878")));
        assert!(OriginPolicy::parse("*").allows(&headers(Some("https://evil.example"), "node:7878")));
        assert_eq!(OriginPolicy::parse(""), OriginPolicy::SameHostAnd(vec![]));
    }
}
