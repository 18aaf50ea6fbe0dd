//! Request paths as nginx sees them when it matches a `location`: percent-decoded, with `//`
//! merged and `.`/`..` resolved. Route rules are matched on this form so that `//admin`,
//! `/%61dmin` or `/api/../admin` cannot slip past the rules of `/admin`.
//!
//! A backend may still read a path otherwise than that matcher did (`/admin;x/secret` is
//! `/admin/secret` to Tomcat, `/admin%2fsecret` is one segment here and two to a backend that
//! decodes before splitting). [`canonical`] is the strict listeners' guard: it refuses such
//! paths and gives the one form that is both judged and sent upstream.

use crate::config::RouteMatch;

/// The normalised form of a request path, or `None` for a path nginx would answer 400 to
/// (a bad `%` escape, a NUL byte, or `..` above the root).
pub fn normalize(path: &str) -> Option<String> {
    let decoded = percent_decode(path.as_bytes())?;
    if decoded.contains(&0) {
        return None;
    }
    let decoded = String::from_utf8_lossy(&decoded);
    resolve(decoded.split('/'))
}

/// Whether a route's path takes a (normalised) request path. A route path ending in `/`, and
/// any route path under [`RouteMatch::Prefix`] (nginx's `location`), is a string prefix;
/// otherwise `/a/b` takes `/a/b`, `/a/b/` and `/a/b/...` but never `/a/bc`.
pub fn covers(route: &str, path: &str, matching: RouteMatch) -> bool {
    let Some(rest) = path.strip_prefix(route) else {
        return false;
    };
    matching == RouteMatch::Prefix
        || route.ends_with('/')
        || rest.is_empty()
        || rest.starts_with('/')
}

/// Why a strict listener refuses a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// nginx refuses it too: a bad `%` escape, a NUL byte, or `..` above the root.
    Malformed,
    /// `;` in a segment: path parameters, which Java servers (and others) strip.
    PathParameter,
    /// `\` or `%5C`, a path separator to Windows servers and some frameworks.
    Backslash,
    /// `%2F`: one segment to the route matcher, two to a backend that decodes first.
    EscapedSlash,
    /// `%25` followed by hex digits (`%2561`): an escape again to a backend that decodes twice.
    DoubleEscape,
    /// Escapes that decode to no UTF-8 text (overlong forms like `%C0%AF` were once `/`).
    NotUtf8,
}

impl Refusal {
    /// What the path has, for the 400 body and the log.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Malformed => "a bad %-escape, a NUL byte or a \"..\" above the root",
            Refusal::PathParameter => "a path parameter (\";\" in a segment)",
            Refusal::Backslash => "a backslash (\"\\\" or %5C)",
            Refusal::EscapedSlash => "an escaped slash (%2F)",
            Refusal::DoubleEscape => "a double escape (%25 followed by hex digits, as in %2561)",
            Refusal::NotUtf8 => "escapes that do not decode to UTF-8",
        }
    }
}

/// The path a strict listener judges and forwards: escapes of unreserved characters decoded,
/// other escapes kept (in upper case), `//` merged and `.`/`..` resolved, as Envoy's
/// `normalize_path` and `merge_slashes` do; or why it is refused, for anything a backend
/// could read as another path. Its [`normalize`]d form is the request's own.
pub fn canonical(path: &str) -> Result<String, Refusal> {
    let decoded = percent_decode(path.as_bytes()).ok_or(Refusal::Malformed)?;
    if decoded.contains(&0) {
        return Err(Refusal::Malformed);
    }
    let decoded = String::from_utf8(decoded).map_err(|_| Refusal::NotUtf8)?;
    if path.contains("%2f") || path.contains("%2F") {
        return Err(Refusal::EscapedSlash);
    }
    if decoded.contains('\\') {
        return Err(Refusal::Backslash);
    }
    if decoded.contains(';') {
        return Err(Refusal::PathParameter);
    }
    if has_escape(&decoded) {
        return Err(Refusal::DoubleEscape);
    }
    let segments = path
        .split('/')
        .map(decode_unreserved)
        .collect::<Option<Vec<String>>>()
        .ok_or(Refusal::Malformed)?;
    resolve(segments.iter().map(String::as_str)).ok_or(Refusal::Malformed)
}

/// Joins path segments, dropping empty ones and `.`, and resolving `..`; `None` for `..`
/// above the root. A path ending in `/`, `.` or `..` keeps a trailing slash.
fn resolve<'a>(parts: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in parts {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop()?;
                trailing_slash = true;
            }
            other => segments.push(other),
        }
    }
    let mut normalized = String::new();
    for segment in &segments {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        normalized.push('/');
    }
    Some(normalized)
}

/// RFC 3986's unreserved characters, whose escapes mean the same as the characters.
fn unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// A segment with escapes of unreserved characters decoded and the others upper-cased.
fn decode_unreserved(segment: &str) -> Option<String> {
    let mut out = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 1..at + 3)?;
        let byte = u8::from_str_radix(hex, 16).ok()?;
        if unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push_str(&hex.to_ascii_uppercase());
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// Whether text holds a `%XX` escape.
fn has_escape(text: &str) -> bool {
    text.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

fn percent_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes.get(index + 1..index + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::{canonical, covers, normalize, Refusal};
    use crate::config::RouteMatch;

    #[test]
    fn plain_paths_are_unchanged() {
        assert_eq!(normalize("/api/v1/items").as_deref(), Some("/api/v1/items"));
        assert_eq!(normalize("/api/").as_deref(), Some("/api/"));
        assert_eq!(normalize("/").as_deref(), Some("/"));
    }

    #[test]
    fn disguises_of_admin_all_normalise_to_it() {
        for disguise in [
            "//admin/x",
            "/%61dmin/x",
            "/./admin/x",
            "/api/../admin/x",
            "/admin//x",
        ] {
            assert_eq!(
                normalize(disguise).as_deref(),
                Some("/admin/x"),
                "{disguise}"
            );
        }
    }

    #[test]
    fn escaping_the_root_or_bad_escapes_are_refused() {
        assert_eq!(normalize("/../etc"), None);
        assert_eq!(normalize("/a%2"), None);
        assert_eq!(normalize("/a%zz"), None);
        assert_eq!(normalize("/a%00b"), None);
    }

    #[test]
    fn trailing_dots_keep_a_trailing_slash() {
        assert_eq!(normalize("/a/b/..").as_deref(), Some("/a/"));
        assert_eq!(normalize("/a/.").as_deref(), Some("/a/"));
    }

    #[test]
    fn segment_matching_stops_at_segment_boundaries() {
        let segment = RouteMatch::Segment;
        for path in ["/admin/health", "/admin/health/", "/admin/health/deep"] {
            assert!(covers("/admin/health", path, segment), "{path}");
        }
        for path in [
            "/admin/healthsecret",
            "/admin/health-internal/users",
            "/admin",
        ] {
            assert!(!covers("/admin/health", path, segment), "{path}");
        }
        // A route ending in / is a string prefix either way; / takes everything.
        assert!(covers("/api/", "/api/x", segment));
        assert!(!covers("/api/", "/api", segment));
        assert!(covers("/", "/anything", segment));
        // nginx's string prefix.
        assert!(covers(
            "/admin/health",
            "/admin/healthsecret",
            RouteMatch::Prefix
        ));
    }

    #[test]
    fn canonical_refuses_what_backends_read_differently() {
        for (path, refusal) in [
            ("/admin;x/secret", Refusal::PathParameter),
            ("/admin%3bx/secret", Refusal::PathParameter),
            ("/admin/secret;jsessionid=1", Refusal::PathParameter),
            ("/admin\\secret", Refusal::Backslash),
            ("/admin%5csecret", Refusal::Backslash),
            ("/admin%5Csecret", Refusal::Backslash),
            ("/admin%2fsecret", Refusal::EscapedSlash),
            ("/admin%2Fsecret", Refusal::EscapedSlash),
            ("/%2561dmin/secret", Refusal::DoubleEscape),
            ("/admin%252fsecret", Refusal::DoubleEscape),
            ("/%c0%afadmin", Refusal::NotUtf8),
            ("/a%zz", Refusal::Malformed),
            ("/a%00", Refusal::Malformed),
            ("/../admin", Refusal::Malformed),
        ] {
            assert_eq!(canonical(path), Err(refusal), "{path}");
        }
    }

    #[test]
    fn canonical_decodes_unreserved_escapes_only_and_resolves_dots() {
        for (path, expected) in [
            ("/admin/users", "/admin/users"),
            ("/%61dmin/users", "/admin/users"),
            ("//admin/./users/", "/admin/users/"),
            ("/api/../admin/users", "/admin/users"),
            ("/x/%2e%2E/admin/%2E", "/admin/"),
            ("/a%3fb/c%20d", "/a%3Fb/c%20d"),
            ("/100%25", "/100%25"),
            ("/caf\u{e9}", "/caf\u{e9}"),
        ] {
            let sent = canonical(path).unwrap_or_else(|e| panic!("{path}: {e:?}"));
            assert_eq!(sent, expected, "{path}");
            // What is sent reads, decoded, as what was judged.
            assert_eq!(normalize(&sent), normalize(path), "{path}");
        }
    }
}
