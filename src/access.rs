//! Who may pass: allow-lists over a verified client identity.
//!
//! Rules name subject CNs, Os and OUs, DNS SANs, URI SANs (SPIFFE IDs with `*` for one path
//! segment and `**` for the rest) and SHA-256 pins of the certificate or of its public key.
//! Any matching rule admits the peer; an empty rule set admits every verified certificate,
//! as ghostunnel's `--allow-*` flags do.

use crate::tls::identity::PeerIdentity;
use base64::Engine;
use std::fmt;

/// Why an allow-rule value (a URI or DNS pattern, a pin) is not one; each message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("\"{0}\" is not a URI (expected scheme://authority/path)")]
    NotAUri(String),
    #[error("\"{0}\": the authority (trust domain) must be given exactly")]
    InexactAuthority(String),
    #[error("\"{0}\": '**' may only be the last path segment")]
    DoubleStarNotLast(String),
    #[error("\"{0}\": '*' must be a whole path segment")]
    PartialStarSegment(String),
    #[error("\"{0}\": '*' is only allowed as the whole first label (*.example.com)")]
    BadDnsWildcard(String),
    #[error("\"{0}\" is not a SHA-256 pin (64 hex digits or base64)")]
    NotAPin(String),
    #[error("\"{0}\" is not a SHA-256 pin: it must be 32 bytes")]
    PinLength(String),
}

/// A URI SAN pattern: exact scheme and authority, then path segments where `*` matches one
/// segment and a final `**` matches any remaining ones (at least one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriPattern {
    text: String,
    prefix: String,
    segments: Vec<String>,
}

impl UriPattern {
    pub fn parse(text: &str) -> Result<UriPattern, RuleError> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| RuleError::NotAUri(text.to_string()))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || authority.contains('*') {
            return Err(RuleError::InexactAuthority(text.to_string()));
        }
        let segments: Vec<String> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').map(str::to_string).collect()
        };
        if let Some(position) = segments.iter().position(|s| s == "**") {
            if position + 1 != segments.len() {
                return Err(RuleError::DoubleStarNotLast(text.to_string()));
            }
        }
        if segments
            .iter()
            .any(|s| s.contains('*') && s != "*" && s != "**")
        {
            return Err(RuleError::PartialStarSegment(text.to_string()));
        }
        Ok(UriPattern {
            text: text.to_string(),
            prefix: format!(
                "{}://{}",
                scheme.to_ascii_lowercase(),
                authority.to_ascii_lowercase()
            ),
            segments,
        })
    }

    pub fn matches(&self, uri: &str) -> bool {
        let Some((scheme, rest)) = uri.split_once("://") else {
            return false;
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            authority.to_ascii_lowercase()
        ) != self.prefix
        {
            return false;
        }
        let actual: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        let mut index = 0;
        for pattern in &self.segments {
            match pattern.as_str() {
                "**" => return actual.len() > index,
                "*" if index < actual.len() && !actual[index].is_empty() => {}
                exact if index < actual.len() && actual[index] == exact => {}
                _ => return false,
            }
            index += 1;
        }
        index == actual.len()
    }
}

/// A DNS SAN pattern: exact (case-insensitive) or `*.domain` for exactly one more label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsPattern(String);

impl DnsPattern {
    pub fn parse(text: &str) -> Result<DnsPattern, RuleError> {
        let lower = text.trim().to_ascii_lowercase();
        let body = lower.strip_prefix("*.").unwrap_or(&lower);
        if body.is_empty() || body.contains('*') {
            return Err(RuleError::BadDnsWildcard(text.to_string()));
        }
        Ok(DnsPattern(lower))
    }

    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        match self.0.strip_prefix("*.") {
            Some(domain) => name
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == domain),
            None => name == self.0,
        }
    }
}

/// Parses a SHA-256 pin: 64 hex digits (colons allowed) or 44 base64 characters.
pub fn parse_pin(text: &str) -> Result<[u8; 32], RuleError> {
    let compact: String = text.trim().chars().filter(|c| *c != ':').collect();
    let bytes = if compact.len() == 64 && compact.chars().all(|c| c.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&compact[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| RuleError::NotAPin(text.to_string()))?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| RuleError::NotAPin(text.to_string()))?
    };
    bytes
        .try_into()
        .map_err(|_| RuleError::PinLength(text.to_string()))
}

/// One listener's or route's allow-list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRules {
    pub common_names: Vec<String>,
    pub organizations: Vec<String>,
    pub org_units: Vec<String>,
    pub dns: Vec<DnsPattern>,
    pub uris: Vec<UriPattern>,
    /// SHA-256 of the certificate or of its SubjectPublicKeyInfo.
    pub pins: Vec<[u8; 32]>,
}

impl AccessRules {
    pub fn is_empty(&self) -> bool {
        self.common_names.is_empty()
            && self.organizations.is_empty()
            && self.org_units.is_empty()
            && self.dns.is_empty()
            && self.uris.is_empty()
            && self.pins.is_empty()
    }

    /// Whether the identity passes: any rule matching is enough; no rules admit anyone.
    pub fn allows(&self, peer: &PeerIdentity) -> bool {
        if self.is_empty() {
            return true;
        }
        let any = |wanted: &[String], have: &[String]| wanted.iter().any(|w| have.contains(w));
        any(&self.common_names, &peer.subject.common_names)
            || any(&self.organizations, &peer.subject.organizations)
            || any(&self.org_units, &peer.subject.org_units)
            || self
                .dns
                .iter()
                .any(|p| peer.dns_names.iter().any(|n| p.matches(n)))
            || self
                .uris
                .iter()
                .any(|p| peer.uris.iter().any(|u| p.matches(u)))
            || self
                .pins
                .iter()
                .any(|pin| *pin == peer.sha256 || *pin == peer.spki_sha256)
    }
}

impl fmt::Display for AccessRules {
    /// `cn=[a, b] uri=[spiffe://x/*]`: the rule set, for the log line of a refusal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let mut add = |kind: &str, items: Vec<String>| {
            if !items.is_empty() {
                parts.push(format!("{kind}=[{}]", items.join(", ")));
            }
        };
        add("cn", self.common_names.clone());
        add("o", self.organizations.clone());
        add("ou", self.org_units.clone());
        add("dns", self.dns.iter().map(|d| d.0.clone()).collect());
        add("uri", self.uris.iter().map(|u| u.text.clone()).collect());
        add(
            "pin-sha256",
            self.pins
                .iter()
                .map(|p| crate::tls::identity::lowercase_hex(p))
                .collect(),
        );
        if parts.is_empty() {
            f.write_str("(no rules: any verified certificate)")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_single_segment_wildcard() {
        let p = UriPattern::parse("spiffe://example.org/ns/*/sa/api").unwrap();
        assert!(p.matches("spiffe://example.org/ns/prod/sa/api"));
        assert!(!p.matches("spiffe://example.org/ns/prod/extra/sa/api"));
        assert!(!p.matches("spiffe://other.org/ns/prod/sa/api"));
        assert!(!p.matches("spiffe://example.org/ns//sa/api"));
    }

    #[test]
    fn spiffe_rest_wildcard_needs_at_least_one_segment() {
        let p = UriPattern::parse("spiffe://example.org/ns/prod/**").unwrap();
        assert!(p.matches("spiffe://example.org/ns/prod/sa/api"));
        assert!(p.matches("spiffe://example.org/ns/prod/x"));
        assert!(!p.matches("spiffe://example.org/ns/prod"));
        assert!(!p.matches("spiffe://example.org/ns/staging/x"));
    }

    #[test]
    fn exact_uri_and_trust_domain_case() {
        let p = UriPattern::parse("spiffe://Example.org/svc").unwrap();
        assert!(p.matches("spiffe://example.org/svc"));
        assert!(!p.matches("spiffe://example.org/svc/more"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(UriPattern::parse("spiffe://example.org/**/x").is_err());
        assert!(UriPattern::parse("spiffe://example.org/a*").is_err());
        assert!(UriPattern::parse("not a uri").is_err());
        assert!(DnsPattern::parse("a.*.com").is_err());
    }

    #[test]
    fn dns_wildcard_is_one_label() {
        let p = DnsPattern::parse("*.svc.local").unwrap();
        assert!(p.matches("api.svc.local"));
        assert!(!p.matches("a.b.svc.local"));
        assert!(!p.matches("svc.local"));
    }

    #[test]
    fn pins_in_hex_and_base64() {
        let hex = "00".repeat(31) + "ff";
        assert_eq!(parse_pin(&hex).unwrap()[31], 0xff);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(parse_pin(&b64).unwrap(), [7u8; 32]);
        assert!(parse_pin("abcd").is_err());
    }
}
