//! The TOML config file for `certgate run` and `certgate check`.
//!
//! ```toml
//! [[listener]]
//! name = "server-a"
//! mode = "server"
//! listen = "0.0.0.0:443"
//! upstream = "http://127.0.0.1:8000"
//! cert = "server.crt"
//! key = "server.key"
//! client_ca = "ca.crt"
//! verify_depth = 2
//! set_header = [["X-SSL-CERT", "$http_x_ssl_cert"]]
//! ```
//!
//! The file is walked with its spans kept, so an error points at the line of the key.

use super::{resolve_path_setting, Config, ConfigError, ListenerSpec, Origin, SpecValue};
use std::path::Path;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses config text; `path` names the file in errors and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let origin = |span: std::ops::Range<usize>, key: &str| Origin::File {
        path: path.to_path_buf(),
        line: line_of(text, span.start),
        key: key.to_string(),
    };
    let document = DeTable::parse(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        ConfigError::general(format!("{}:{line}: {}", path.display(), e.message().trim()))
    })?;
    let base = path.parent().unwrap_or(Path::new("."));

    let mut specs = Vec::new();
    for (key, value) in document.get_ref().iter() {
        if key.get_ref() != "listener" {
            return Err(ConfigError::at(
                &origin(key.span(), key.get_ref()),
                "unknown top-level key; listeners are declared as [[listener]] tables",
            ));
        }
        let DeValue::Array(tables) = value.get_ref() else {
            return Err(ConfigError::at(
                &origin(key.span(), "listener"),
                "write listeners as [[listener]] tables",
            ));
        };
        for table in tables.iter() {
            let DeValue::Table(entries) = table.get_ref() else {
                return Err(ConfigError::at(
                    &origin(table.span(), "listener"),
                    "write listeners as [[listener]] tables",
                ));
            };
            let mut spec = ListenerSpec {
                origin: Some(origin(table.span(), "listener")),
                ..ListenerSpec::default()
            };
            fill(&mut spec, entries, &origin, base)?;
            specs.push(spec);
        }
    }
    Config::from_specs(specs)
}

/// Records every key of one table into `spec`; nested route tables become route specs.
fn fill(
    spec: &mut ListenerSpec,
    entries: &DeTable<'_>,
    origin: &dyn Fn(std::ops::Range<usize>, &str) -> Origin,
    base: &Path,
) -> Result<(), ConfigError> {
    for (key, value) in entries.iter() {
        let name = key.get_ref().as_ref();
        let here = origin(key.span(), name);
        let value = match (name, value.get_ref()) {
            ("route", DeValue::Array(tables)) => {
                let mut routes = Vec::new();
                for table in tables.iter() {
                    let DeValue::Table(route_entries) = table.get_ref() else {
                        return Err(ConfigError::at(
                            &here,
                            "write routes as [[listener.route]] tables",
                        ));
                    };
                    let mut route = ListenerSpec::route(origin(table.span(), "route"));
                    fill(&mut route, route_entries, origin, base)?;
                    routes.push(route);
                }
                SpecValue::Routes(routes)
            }
            _ => spec_value(name, value, &here, base)?,
        };
        spec.set(name, here, value)?;
    }
    Ok(())
}

fn spec_value(
    key: &str,
    value: &Spanned<DeValue<'_>>,
    here: &Origin,
    base: &Path,
) -> Result<SpecValue, ConfigError> {
    let text = |text: &str| {
        if super::keys::is_path(key) {
            resolve_path_setting(base, text)
        } else {
            text.to_string()
        }
    };
    match value.get_ref() {
        DeValue::String(value) => Ok(SpecValue::Text(text(value))),
        DeValue::Boolean(b) => Ok(SpecValue::Bool(*b)),
        DeValue::Integer(n) => n
            .as_str()
            .parse::<i64>()
            .map(SpecValue::Integer)
            .map_err(|_| ConfigError::at(here, "expected a decimal number")),
        DeValue::Array(items) if key == "set_header" => items
            .iter()
            .map(|item| header_pair(item.get_ref()).ok_or_else(|| {
                ConfigError::at(
                    here,
                    "each set_header entry is [\"Name\", \"value\"] or { name = \"Name\", value = \"value\" }",
                )
            }))
            .collect::<Result<_, _>>()
            .map(SpecValue::Headers),
        DeValue::Array(items) => items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::String(value) => Ok(text(value)),
                _ => Err(ConfigError::at(here, "expected a list of strings")),
            })
            .collect::<Result<_, _>>()
            .map(SpecValue::List),
        _ => Err(ConfigError::at(here, "unexpected kind of value")),
    }
}

fn header_pair(item: &DeValue<'_>) -> Option<(String, String)> {
    let text = |v: &Spanned<DeValue<'_>>| match v.get_ref() {
        DeValue::String(s) => Some(s.to_string()),
        _ => None,
    };
    match item {
        DeValue::Array(pair) if pair.len() == 2 => Some((text(&pair[0])?, text(&pair[1])?)),
        DeValue::Table(table) if table.len() == 2 => {
            let find = |wanted: &str| {
                table
                    .iter()
                    .find(|(k, _)| k.get_ref() == wanted)
                    .and_then(|(_, v)| text(v))
            };
            Some((find("name")?, find("value")?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        parse(Path::new("/etc/certgate.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err =
            error_of("[[listener]]\nmode = \"server\"\nlisten = \"127.0.0.1:1\"\ncertt = \"x\"\n");
        assert!(
            err.starts_with("/etc/certgate.toml:4: key 'certt': unknown key 'certt'"),
            "{err}"
        );
    }

    #[test]
    fn bad_address_names_its_line() {
        let err = error_of(
            "[[listener]]\nmode = \"client\"\nlisten = \"nowhere\"\nupstream = \"a:1\"\nca = \"c\"\n",
        );
        assert!(
            err.starts_with("/etc/certgate.toml:3: key 'listen': bad listen address"),
            "{err}"
        );
    }

    #[test]
    fn unknown_variable_in_header_rule_is_refused() {
        let err = error_of(
            "[[listener]]\nmode = \"client\"\nlisten = \"127.0.0.1:0\"\nupstream = \"a:1\"\nca = \"c\"\nset_header = [[\"X-A\", \"$nope\"]]\n",
        );
        assert!(err.contains(":6: key 'set_header'"), "{err}");
        assert!(err.contains("unknown variable $nope"), "{err}");
    }

    #[test]
    fn toml_syntax_error_names_line() {
        let err = error_of("[[listener]]\nmode = \n");
        assert!(err.starts_with("/etc/certgate.toml:2:"), "{err}");
    }

    #[test]
    fn cipher_list_leaving_nothing_is_refused() {
        let err = error_of(
            "[[listener]]\nmode = \"client\"\nlisten = \"127.0.0.1:0\"\nupstream = \"a:1\"\nca = \"c\"\nmax_tls_version = \"TLSv1.2\"\nciphers = \"RC4:!HIGH\"\n",
        );
        assert!(err.contains(":7: key 'ciphers': cipher list"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let config = parse(
            Path::new("/etc/certgate/certgate.toml"),
            "[[listener]]\nmode = \"client\"\nlisten = \"127.0.0.1:0\"\nupstream = \"a:1\"\nca = \"ca.pem\"\n",
        )
        .unwrap();
        let super::super::ModeConfig::Client(client) = &config.listeners[0].mode else {
            panic!("client mode expected");
        };
        assert_eq!(
            client.ca.as_ref().unwrap().value,
            Path::new("/etc/certgate/ca.pem")
        );
    }
}
