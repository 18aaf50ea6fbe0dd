//! Raw input (TOML file, nginx syntax or command-line flags) -> one validated [`Config`].
//!
//! Every source produces a [`ListenerSpec`]: a bag of keys, each remembering where it came
//! from, so every error names the file, line and key (or the flag). Validation is the same
//! code for `run`, `check` and the single-listener commands; it reads no file but the config.
//!
//! The jobs, one file each: [`origin`] (where a value came from, and errors naming it),
//! [`spec`] (raw values with their origin), [`keys`] (the table of settings), [`model`] (the
//! validated types), [`key_uri`] (PKCS#11 key URIs, as text) and `validate` (spec -> model,
//! per mode, each value parsed once by `validate::values`).

pub mod ciphers;
mod file;
pub mod key_uri;
pub mod keys;
pub mod model;
pub mod nginx;
pub mod origin;
pub mod spec;
pub mod template;
mod validate;

pub use model::*;
pub use origin::{ConfigError, Located, Origin};
pub use spec::{ListenerSpec, SpecValue};
pub(crate) use validate::values::parse_size;
pub use validate::values::{join_host_port, HostPort, TlsVersion};

use std::path::{Path, PathBuf};

/// The syntax of a config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Toml,
    Nginx,
}

/// Reads and validates a config file, in `format` or (None) the one its content shows.
pub fn load_file(path: &Path, format: Option<Format>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::general(format!("cannot read config file {}: {e}", path.display()))
    })?;
    let format = format.unwrap_or(if nginx::looks_like_nginx(&text) {
        Format::Nginx
    } else {
        Format::Toml
    });
    match format {
        Format::Toml => file::parse(path, &text),
        Format::Nginx => nginx::load(path, &text),
    }
}

/// A path setting's text from a config file, resolved as [`resolve_relative`] says; a token
/// key's URI (RFC 7512) is no path and stays as written.
pub(crate) fn resolve_path_setting(base: &Path, text: &str) -> String {
    if key_uri::is_uri(text) {
        return text.to_string();
    }
    resolve_relative(base, text).to_string_lossy().into_owned()
}

/// A path from a config file is relative to the file's directory, as nginx's are to its prefix.
pub fn resolve_relative(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_in_a_key_uri_never_shows_in_debug_output() {
        let config = file::parse(
            Path::new("/etc/certgate.toml"),
            "[[listener]]\nmode = \"server\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:1\"\ncert = \"c.pem\"\nkey = \"pkcs11:object=k?pin-value=s3cret\"\nverify_client = \"off\"\n",
        )
        .unwrap();
        let debug = format!("{:?}", config.listeners[0]);
        assert!(debug.contains("pkcs11:object=k?pin-value=#"), "{debug}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn the_default_pkcs11_module_goes_to_token_keys_that_name_none() {
        let listener = |name: &str, key: &str| {
            format!("[[listener]]\nname = \"{name}\"\nmode = \"server\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:1\"\ncert = \"c.pem\"\nkey = \"{key}\"\nverify_client = \"off\"\n")
        };
        let text = [
            listener("none", "pkcs11:object=k"),
            listener("own", "pkcs11:object=k?module-path=/own.so"),
            listener("file", "k.pem"),
        ]
        .concat();
        let config = file::parse(Path::new("/etc/certgate.toml"), &text)
            .unwrap()
            .with_default_pkcs11_module(Some(Path::new("/default.so")));
        let keys: Vec<KeySource> = config
            .listeners
            .iter()
            .map(|l| match &l.mode {
                ModeConfig::Server(server) => server.key.value.clone(),
                ModeConfig::Client(_) => unreachable!(),
            })
            .collect();
        let module = |key: &KeySource| match key {
            KeySource::Token(uri) => uri.module_path.clone(),
            KeySource::File(_) => None,
        };
        assert_eq!(module(&keys[0]), Some(PathBuf::from("/default.so")));
        assert_eq!(module(&keys[1]), Some(PathBuf::from("/own.so")));
        assert_eq!(keys[2], KeySource::File(PathBuf::from("/etc/k.pem")));
    }
}
