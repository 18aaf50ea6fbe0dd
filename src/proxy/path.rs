//! Request paths as nginx sees them when it matches a `location`: percent-decoded, with `//`
//! merged and `.`/`..` resolved. Route rules are matched on this form so that `//admin`,
//! `/%61dmin` or `/api/../admin` cannot slip past the rules of `/admin`.

use crate::config::RouteMatch;

/// The normalised form of a request path, or `None` for a path nginx would answer 400 to
/// (a bad `%` escape, a NUL byte, or `..` above the root).
pub fn normalize(path: &str) -> Option<String> {
    let decoded = percent_decode(path.as_bytes())?;
    if decoded.contains(&0) {
        return None;
    }
    let decoded = String::from_utf8_lossy(&decoded);
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/') {
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
    let mut normalized = String::with_capacity(decoded.len());
    for segment in &segments {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        normalized.push('/');
    }
    Some(normalized)
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
    use super::{covers, normalize};
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
}
