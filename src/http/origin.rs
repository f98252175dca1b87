//! The Origin check that stops cross-site WebSocket hijacking (RFC 6455 10.2).
//!
//! Browsers always send `Origin` on a WebSocket handshake, and a page from any site may open a WebSocket to any
//! server, carrying the user's cookies. So a server that serves browsers must refuse origins it does not know.
//! Owns that decision only: requests without `Origin` (non-browser clients) pass, a browser Origin whose host
//! and port equal the request's `Host` passes (the page we served ourselves), and so does any Origin on the
//! configured allow-list. Everything else is refused with 403 by the caller.

use crate::protocol::handshake::RequestHead;

/// Which browser origins may open a WebSocket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    /// Extra origins, compared case-insensitively with the `Origin` header (e.g. `https://chat.example.com`);
    /// `*` allows every origin.
    pub allowed: Vec<String>,
}

impl OriginPolicy {
    /// True if the request may upgrade.
    pub fn allows(&self, head: &RequestHead) -> bool {
        let Some(origin) = head.single_value("origin") else {
            // No Origin at all: not a browser (10.2 applies to browser clients). A repeated Origin is refused below.
            return head.values("origin").next().is_none();
        };
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        if self
            .allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
        {
            return true;
        }
        let host = head
            .single_value("host")
            .and_then(|h| std::str::from_utf8(h).ok());
        match (origin_authority(origin), host) {
            (Some(authority), Some(host)) => same_authority(authority, host),
            _ => false,
        }
    }
}

/// The `host[:port]` of an origin such as `https://example.com:8443`, or `None` for `null` and non-URLs.
fn origin_authority(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return None;
    }
    // An origin has no path, but be lenient with a trailing slash.
    Some(rest.trim_end_matches('/'))
}

/// Compares two `host[:port]` strings, treating a missing port as equal to the default ones.
fn same_authority(origin: &str, host: &str) -> bool {
    let strip_default = |a: &str| -> String {
        let lower = a.to_ascii_lowercase();
        lower
            .strip_suffix(":80")
            .or_else(|| lower.strip_suffix(":443"))
            .map(str::to_owned)
            .unwrap_or(lower)
    };
    strip_default(origin) == strip_default(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::parse_request_head;

    fn head(origin: Option<&str>, host: &str) -> RequestHead {
        let origin = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        let text = format!("GET /ws HTTP/1.1\r\nHost: {host}\r\n{origin}\r\n");
        parse_request_head(text.as_bytes(), 8192).unwrap().unwrap()
    }

    #[test]
    fn no_origin_is_a_non_browser_client_and_passes() {
        assert!(OriginPolicy::default().allows(&head(None, "127.0.0.1:8080")));
    }

    #[test]
    fn same_host_and_port_passes() {
        assert!(
            OriginPolicy::default().allows(&head(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"))
        );
        assert!(OriginPolicy::default().allows(&head(
            Some("https://Chat.Example.com"),
            "chat.example.com:443"
        )));
    }

    #[test]
    fn other_site_or_port_is_refused() {
        assert!(
            !OriginPolicy::default().allows(&head(Some("http://evil.example"), "127.0.0.1:8080"))
        );
        assert!(
            !OriginPolicy::default().allows(&head(Some("http://127.0.0.1:9999"), "127.0.0.1:8080"))
        );
        assert!(!OriginPolicy::default().allows(&head(Some("null"), "127.0.0.1:8080")));
    }

    #[test]
    fn allow_list_admits_named_origins_and_star_admits_all() {
        let policy = OriginPolicy {
            allowed: vec!["http://127.0.0.1:9999".into()],
        };
        assert!(policy.allows(&head(Some("http://127.0.0.1:9999"), "127.0.0.1:8080")));
        let file_pages = OriginPolicy {
            allowed: vec!["null".into()],
        };
        assert!(file_pages.allows(&head(Some("null"), "127.0.0.1:8080")));
        let star = OriginPolicy {
            allowed: vec!["*".into()],
        };
        assert!(star.allows(&head(Some("null"), "127.0.0.1:8080")));
    }
}
