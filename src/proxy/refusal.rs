//! nginx's refusal of a client certificate, which comes in HTTP rather than in TLS.
//!
//! With `ssl_verify_client on` nginx completes the handshake whatever certificate it gets (or
//! none) and refuses at the first request, with a small `400` HTML page whose title names the
//! reason. A TLS client that judges by the handshake alone thinks it was accepted: `certgate
//! probe` and client mode both read the page to know better. Only such pages are read, and
//! only as far as [`PAGE_LIMIT`]; every other body streams through untouched.

use super::{Proxy, ProxyBody, ProxyError, Upstream};
use crate::config::{ListenerConfig, ModeConfig};
use http_body_util::{BodyExt, Limited};
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::StatusCode;

/// The most of a body read to recognise nginx's page; its own pages are under 300 bytes.
pub const PAGE_LIMIT: usize = 4096;

/// Why nginx refused our certificate, from the words of its 400 page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateRefusal {
    /// "400 The SSL certificate error" (nginx's internal 495): a certificate came and did
    /// not verify (another CA, expired, revoked, a chain too deep); nginx's error log says
    /// which ("client SSL certificate verify error: ...").
    Invalid,
    /// "400 No required SSL certificate was sent" (nginx's internal 496).
    Missing,
}

impl CertificateRefusal {
    const ALL: [CertificateRefusal; 2] = [CertificateRefusal::Invalid, CertificateRefusal::Missing];

    /// The reason as nginx words it, in the page's title and body.
    pub fn nginx_words(self) -> &'static str {
        match self {
            CertificateRefusal::Invalid => "The SSL certificate error",
            CertificateRefusal::Missing => "No required SSL certificate was sent",
        }
    }

    /// The refusal a response stands for, if it is one: status 400 and nginx's words.
    pub fn recognise(status: StatusCode, body: &[u8]) -> Option<CertificateRefusal> {
        if status != StatusCode::BAD_REQUEST {
            return None;
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(PAGE_LIMIT)]);
        CertificateRefusal::ALL
            .into_iter()
            .find(|refusal| text.contains(refusal.nginx_words()))
    }
}

/// Whether a response may be nginx's refusal page, judged from its head: a 400 with an
/// HTML body whose announced length fits [`PAGE_LIMIT`] (nginx always announces it).
pub fn may_be_refusal_page(status: StatusCode, headers: &HeaderMap) -> bool {
    let html = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    let small = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|length| length <= PAGE_LIMIT);
    status == StatusCode::BAD_REQUEST && html && small
}

/// The `<title>` of an HTML page, whitespace collapsed; what a 400 said when it is not one
/// of the refusals above ("400 Bad Request" from nginx).
pub fn html_title(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(PAGE_LIMIT)]);
    let lower = text.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    let title = text[start..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!title.is_empty()).then_some(title)
}

/// What client mode needs to say whose certificate an upstream refused.
pub(super) struct RefusalWatch {
    /// The certificate file we present, if the listener has one.
    our_certificate: Option<String>,
}

impl RefusalWatch {
    /// Client mode only: server mode's backends are plain HTTP and see no certificate of ours.
    pub(super) fn for_listener(listener: &ListenerConfig) -> Option<RefusalWatch> {
        match &listener.mode {
            ModeConfig::Client(client) => Some(RefusalWatch {
                our_certificate: client
                    .identity
                    .as_ref()
                    .map(|(cert, _)| cert.value.display().to_string()),
            }),
            ModeConfig::Server(_) => None,
        }
    }

    /// The log sentence for a refusal by `upstream`.
    fn explain(&self, refusal: CertificateRefusal, upstream: &str) -> String {
        let answered = format!("it answered 400 \"{}\"", refusal.nginx_words());
        match (refusal, &self.our_certificate) {
            (CertificateRefusal::Invalid, Some(cert)) => format!(
                "upstream {upstream} refused our client certificate {cert} after the handshake: {answered}, nginx's answer when the certificate does not verify against its ssl_client_certificate (another CA, expired, revoked, or a chain longer than its ssl_verify_depth; its error log names which); the 400 was passed to the client"
            ),
            (CertificateRefusal::Invalid, None) => format!(
                "upstream {upstream} refused the client certificate after the handshake: {answered}; the 400 was passed to the client"
            ),
            (CertificateRefusal::Missing, None) => format!(
                "upstream {upstream} requires a client certificate and this listener sends none: {answered}; set cert and key for this listener; the 400 was passed to the client"
            ),
            (CertificateRefusal::Missing, Some(cert)) => format!(
                "upstream {upstream} says no client certificate was sent although this listener presents {cert}: {answered}; its error log has the reason (a server block for another name, or a key type it does not accept); the 400 was passed to the client"
            ),
        }
    }
}

impl Proxy {
    /// The body to send on for an upstream response, after reading it when it may be the
    /// upstream's refusal of our certificate (then it is logged, and passed on unchanged).
    pub(super) async fn watch_for_refusal(
        &self,
        upstream: &Upstream,
        parts: &hyper::http::response::Parts,
        body: hyper::body::Incoming,
        client: std::net::SocketAddr,
        failed: &mut Option<super::Side>,
    ) -> Result<ProxyBody, ProxyError> {
        let Some(watch) = &self.refusal_watch else {
            return Ok(ProxyBody::Upstream(body));
        };
        if !may_be_refusal_page(parts.status, &parts.headers) {
            return Ok(ProxyBody::Upstream(body));
        }
        let read = Limited::new(body, PAGE_LIMIT).collect();
        let page = match tokio::time::timeout(self.response_timeout, read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(error)) => {
                return Err(ProxyError::Upstream(format!(
                    "upstream {} failed while sending a 400 page: {error}",
                    upstream.display
                )))
            }
            Err(_) => {
                return Err(ProxyError::UpstreamTimeout(format!(
                    "upstream {} sent the head of a 400 page but not its body within {:?}",
                    upstream.display, self.response_timeout
                )))
            }
        };
        if let Some(refusal) = CertificateRefusal::recognise(parts.status, &page) {
            let side = super::Side::Upstream;
            self.log_failure(client, side, &watch.explain(refusal, &upstream.display));
            *failed = Some(side);
        }
        Ok(ProxyBody::local(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVALID: &str = "<html>\r\n<head><title>400 The SSL certificate error</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>The SSL certificate error</center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n";

    #[test]
    fn recognises_nginx_pages_by_their_words_and_status_only() {
        assert_eq!(
            CertificateRefusal::recognise(StatusCode::BAD_REQUEST, INVALID.as_bytes()),
            Some(CertificateRefusal::Invalid)
        );
        let missing = INVALID.replace(
            "The SSL certificate error",
            "No required SSL certificate was sent",
        );
        assert_eq!(
            CertificateRefusal::recognise(StatusCode::BAD_REQUEST, missing.as_bytes()),
            Some(CertificateRefusal::Missing)
        );
        assert_eq!(
            CertificateRefusal::recognise(StatusCode::OK, INVALID.as_bytes()),
            None
        );
        assert_eq!(
            html_title(INVALID.as_bytes()).as_deref(),
            Some("400 The SSL certificate error")
        );
        assert_eq!(html_title(b"no page"), None);
    }

    #[test]
    fn only_small_html_400s_are_read() {
        let head = |status: u16, kind: &str, length: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, kind.parse().unwrap());
            if !length.is_empty() {
                headers.insert(CONTENT_LENGTH, length.parse().unwrap());
            }
            may_be_refusal_page(StatusCode::from_u16(status).unwrap(), &headers)
        };
        assert!(head(400, "text/html", "215"));
        assert!(!head(400, "text/html", "100000"));
        assert!(!head(400, "text/html", ""));
        assert!(!head(400, "application/json", "20"));
        assert!(!head(200, "text/html", "215"));
    }
}
