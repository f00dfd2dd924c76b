//! The web client's files as the node serves them: the page, its script and stylesheet,
//! with a content security policy that keeps anything a user typed from running as code.
//! The page's behaviour is tested in a real browser by `node/web/test/e2e/`.

mod common;

use common::{TestNode, header, http_get};

#[tokio::test]
async fn the_page_its_script_and_its_style_are_served_with_a_strict_policy() {
    let node = TestNode::start().await;
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "<script type=\"module\" src=\"/app.js\">"),
        ("/app.js", "text/javascript; charset=utf-8", "troupe.token"),
        ("/style.css", "text/css; charset=utf-8", ".composer"),
    ] {
        let (status, headers, body) = http_get(node.http, path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&headers, "content-type"), Some(content_type), "{path}");
        let body = String::from_utf8(body).expect("text");
        assert!(body.contains(needle), "{path} holds {needle:?}");
        let policy = header(&headers, "content-security-policy").expect("a content security policy");
        assert!(policy.contains("script-src 'self'"), "only the node's own script runs: {policy}");
        assert!(!policy.contains("unsafe-inline"), "no inline script or style: {policy}");
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    }
    let (status, _, _) = http_get(node.http, "/no-such-file.js", &[]).await;
    assert_eq!(status, 404, "only the three files are served");
}
