//! nginx configuration files, read as they are: `certgate run --config nginx.conf`.
//!
//! `parse` reads the syntax (includes expanded), `translate` turns `server` blocks into
//! listener settings with nginx's defaults, and from there the config is validated by the
//! same code as a TOML file. `to_toml` prints the translation for `certgate convert-nginx`.

pub mod parse;
pub mod translate;

use super::{resolve_relative, Config, ConfigError, Located, SpecValue};
use std::path::Path;
use translate::{Section, Translation};

/// Whether a config file's text is nginx syntax rather than TOML: `[[listener]]` tables mean
/// TOML; a block opening (`server {`) or a line ending in `;` means nginx.
pub fn looks_like_nginx(text: &str) -> bool {
    let lines = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty());
    let mut nginx = false;
    for line in lines {
        if line.starts_with('[') {
            return false;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if line.ends_with(';') || (line.ends_with('{') && !first.contains('=')) {
            nginx = true;
        }
    }
    nginx
}

/// Reads and translates an nginx config, without validating the result.
pub fn translate_file(path: &Path) -> Result<Translation, ConfigError> {
    let tree = parse::parse_file(path)?;
    translate::translate(&tree)
}

/// Reads an nginx config into a validated [`Config`]; nginx's relative paths are relative to
/// the main file's directory.
pub fn load(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut translation = translate::translate(&parse::parse_text(path, text, base, 0)?)?;
    for listener in &mut translation.listeners {
        resolve_paths(listener, base);
    }
    let mut config = Config::from_specs(translation.specs()?)?;
    config.access_log = translation.access_log.map(|(file, origin)| Located {
        value: resolve_relative(base, &file),
        origin,
    });
    config.workers = translation
        .workers
        .map(|(value, origin)| Located { value, origin });
    let mut warnings = translation.warnings;
    warnings.append(&mut config.warnings);
    config.warnings = warnings;
    Ok(config)
}

fn resolve_paths(section: &mut Section, base: &Path) {
    for entry in &mut section.entries {
        if let (true, SpecValue::Text(text)) = (super::keys::is_path(entry.key), &entry.value) {
            entry.value = SpecValue::Text(super::resolve_path_setting(base, text));
        }
    }
    for route in &mut section.routes {
        resolve_paths(route, base);
    }
}

/// The translation as a native TOML config, with each directive's comments and origin.
pub fn to_toml(translation: &Translation) -> String {
    let mut out = String::new();
    for warning in &translation.warnings {
        out.push_str(&format!("# warning: {warning}\n"));
    }
    if let Some((file, _)) = &translation.access_log {
        out.push_str(&format!(
            "# access_log {file}: run certgate with --access-log-file {file}\n"
        ));
    }
    if let Some((workers, _)) = &translation.workers {
        out.push_str(&format!(
            "# worker_processes {workers}: run certgate with --workers {workers}\n"
        ));
    }
    if !translation.warnings.is_empty()
        || translation.access_log.is_some()
        || translation.workers.is_some()
    {
        out.push('\n');
    }
    for listener in &translation.listeners {
        section_toml(&mut out, listener, "[[listener]]");
    }
    out
}

fn comment_lines(out: &mut String, comments: &[String]) {
    for comment in comments {
        out.push_str(&format!("# {comment}\n"));
    }
}

fn section_toml(out: &mut String, section: &Section, header: &str) {
    comment_lines(out, &section.comments);
    out.push_str(header);
    if let Some(origin) = &section.origin {
        out.push_str(&format!("  # {}", origin_text(origin)));
    }
    out.push('\n');
    for entry in &section.entries {
        let (from, why) = match &entry.origin {
            crate::config::Origin::Default => (String::new(), entry.comments.join("; ")),
            origin => {
                comment_lines(out, &entry.comments);
                (origin_text(origin), String::new())
            }
        };
        out.push_str(&format!("{} = {}", entry.key, toml_value(&entry.value)));
        match (from.is_empty(), why.is_empty()) {
            (false, _) => out.push_str(&format!("  # {from}")),
            (true, false) => out.push_str(&format!("  # {why}")),
            _ => {}
        }
        out.push('\n');
    }
    out.push('\n');
    for route in &section.routes {
        section_toml(out, route, "[[listener.route]]");
    }
}

fn origin_text(origin: &crate::config::Origin) -> String {
    match origin {
        crate::config::Origin::Directive { path, line, name } => {
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default();
            format!("{name} ({file}:{line})")
        }
        other => other.to_string(),
    }
}

fn toml_value(value: &SpecValue) -> String {
    let string = |s: &str| toml::Value::String(s.to_string()).to_string();
    match value {
        SpecValue::Text(text) => string(text),
        SpecValue::Integer(n) => n.to_string(),
        SpecValue::Bool(b) => b.to_string(),
        SpecValue::List(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| string(i))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        SpecValue::Headers(pairs) => format!(
            "[{}]",
            pairs
                .iter()
                .map(|(n, v)| format!("[{}, {}]", string(n), string(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        SpecValue::Routes(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_nginx;

    #[test]
    fn nginx_and_toml_are_told_apart() {
        assert!(looks_like_nginx("server {\n listen 8080;\n}\n"));
        assert!(looks_like_nginx(
            "# conf.d snippet\ninclude conf.d/*.conf;\n"
        ));
        assert!(!looks_like_nginx("[[listener]]\nmode = \"server\"\n"));
        assert!(!looks_like_nginx("# only a comment; with a semicolon\n"));
    }
}
