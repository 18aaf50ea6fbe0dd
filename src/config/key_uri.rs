//! RFC 7512 `pkcs11:` URIs, which name a private key on a token wherever a key file is
//! accepted (`pkcs11:token=web;object=server-key?module-path=...&pin-source=file:...`).
//! Only the text: opening the token is `tls::pkcs11`'s job.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Whether a key setting names a token key rather than a file.
pub fn is_uri(text: &str) -> bool {
    text.starts_with("pkcs11:")
}

/// Why a `pkcs11:` URI cannot be used. Every message shows the URI without its PIN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyUriError {
    #[error("\"{uri}\" is not a pkcs11: URI")]
    NotAUri { uri: String },
    #[error("\"{attribute}\" in {uri} has no '='")]
    NoValue { attribute: String, uri: String },
    #[error("{name} in {uri}: {problem}")]
    BadValue {
        name: String,
        uri: String,
        problem: ValueProblem,
    },
    #[error("unknown attribute \"{name}\" in {uri}")]
    UnknownAttribute { name: String, uri: String },
    #[error("{uri} names no key: add object=LABEL or id=%XX to the URI")]
    NoKey { uri: String },
}

/// What is wrong with one attribute's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueProblem {
    #[error("bad percent-escape at \"{0}\"")]
    PercentEscape(String),
    #[error("not UTF-8")]
    NotUtf8,
    #[error("not a number")]
    NotANumber,
}

/// The parts of an RFC 7512 URI that select a key and say how to reach it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyUri {
    /// The URI as written (PIN included: never shown, see the Debug impl).
    pub text: String,
    pub token: Option<String>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub slot_id: Option<u64>,
    /// The module the key is opened with: the URI's `module-path`, or the default module
    /// (`--pkcs11-module`) the config was given.
    pub module_path: Option<PathBuf>,
    pub pin_source: Option<String>,
    pub pin_value: Option<String>,
}

/// Debug output (which `ListenerConfig::same_settings` compares) never shows a PIN written
/// into the URI; it shows a keyed digest of it instead, so a changed PIN still counts as a
/// change.
impl fmt::Debug for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyUri({}, module {:?})",
            digest_pins(&format!("{:?}", self.text)),
            self.module_path
        )
    }
}

fn percent_decode(text: &str) -> Result<Vec<u8>, ValueProblem> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ValueProblem::PercentEscape(text[i..].to_string()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// A key setting as it may be shown: a URI with its `pin-value` masked, a path as it is.
pub fn redacted(text: &str) -> String {
    match text.find("pin-value=") {
        Some(at) => {
            let value_start = at + "pin-value=".len();
            let value_end = text[value_start..]
                .find(['&', ';'])
                .map_or(text.len(), |end| value_start + end);
            format!("{}***{}", &text[..value_start], &text[value_end..])
        }
        None => text.to_string(),
    }
}

/// Replaces each `pin-value` with a digest keyed by a secret of this process: equal PINs
/// give equal text (so configs can be compared) and none can be read back or guessed.
pub fn digest_pins(text: &str) -> String {
    static KEY: OnceLock<aws_lc_rs::hmac::Key> = OnceLock::new();
    let Some(at) = text.find("pin-value=") else {
        return text.to_string();
    };
    let key = KEY.get_or_init(|| {
        let mut secret = [0u8; 32];
        let _ = aws_lc_rs::rand::fill(&mut secret);
        aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret)
    });
    let start = at + "pin-value=".len();
    let end = text[start..]
        .find(['&', ';', '"'])
        .map_or(text.len(), |end| start + end);
    let tag = aws_lc_rs::hmac::sign(key, &text.as_bytes()[start..end]);
    let hex: String = tag.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}#{hex}{}", &text[..start], digest_pins(&text[end..]))
}

impl KeyUri {
    pub fn parse(full_text: &str) -> Result<KeyUri, KeyUriError> {
        // Messages show the URI without its PIN.
        let text = redacted(full_text);
        let rest = full_text
            .strip_prefix("pkcs11:")
            .ok_or_else(|| KeyUriError::NotAUri { uri: text.clone() })?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = KeyUri {
            text: full_text.to_string(),
            ..KeyUri::default()
        };
        let string = |value: &str| -> Result<String, ValueProblem> {
            String::from_utf8(percent_decode(value)?).map_err(|_| ValueProblem::NotUtf8)
        };
        for (separator, part) in [(';', path), ('&', query)] {
            for attribute in part.split(separator).filter(|a| !a.is_empty()) {
                let (name, value) =
                    attribute
                        .split_once('=')
                        .ok_or_else(|| KeyUriError::NoValue {
                            attribute: redacted(attribute),
                            uri: text.clone(),
                        })?;
                let bad = |problem| KeyUriError::BadValue {
                    name: name.to_string(),
                    uri: text.clone(),
                    problem,
                };
                match name {
                    "token" => uri.token = Some(string(value).map_err(bad)?),
                    "object" => uri.object = Some(string(value).map_err(bad)?),
                    "id" => uri.id = Some(percent_decode(value).map_err(bad)?),
                    "slot-id" => {
                        uri.slot_id =
                            Some(value.parse().map_err(|_| bad(ValueProblem::NotANumber))?)
                    }
                    "module-path" => {
                        uri.module_path = Some(PathBuf::from(string(value).map_err(bad)?))
                    }
                    "pin-source" => uri.pin_source = Some(string(value).map_err(bad)?),
                    "pin-value" => uri.pin_value = Some(string(value).map_err(bad)?),
                    // Attributes that only narrow the choice further, or describe it.
                    "type"
                    | "manufacturer"
                    | "model"
                    | "serial"
                    | "library-manufacturer"
                    | "library-description"
                    | "library-version"
                    | "slot-description"
                    | "slot-manufacturer"
                    | "module-name" => {}
                    other => {
                        return Err(KeyUriError::UnknownAttribute {
                            name: other.to_string(),
                            uri: text,
                        })
                    }
                }
            }
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(KeyUriError::NoKey { uri: text });
        }
        Ok(uri)
    }

    /// The URI without any PIN, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(token) = &self.token {
            parts.push(format!("token={token}"));
        }
        if let Some(object) = &self.object {
            parts.push(format!("object={object}"));
        }
        if let Some(id) = &self.id {
            let hex: String = id.iter().map(|b| format!("%{b:02x}")).collect();
            parts.push(format!("id={hex}"));
        }
        format!("pkcs11:{}", parts.join(";"))
    }
}

/// `text` with `module-path=MODULE` added when it is a `pkcs11:` URI that names no module:
/// for the commands that take a key as text (`cert check`, `probe`) and `--pkcs11-module`.
pub fn with_default_module(text: &str, module: &Path) -> String {
    match KeyUri::parse(text) {
        Ok(uri) if uri.module_path.is_none() => {
            let encoded: String = module
                .to_string_lossy()
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'-' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    other => format!("%{other:02X}"),
                })
                .collect();
            let separator = if text.contains('?') { '&' } else { '?' };
            format!("{text}{separator}module-path={encoded}")
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_parsed_as_rfc_7512_says() {
        let uri = KeyUri::parse(
            "pkcs11:token=my%20token;object=server-key;id=%01%a0?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pin",
        )
        .unwrap();
        assert_eq!(uri.token.as_deref(), Some("my token"));
        assert_eq!(uri.object.as_deref(), Some("server-key"));
        assert_eq!(uri.id, Some(vec![0x01, 0xa0]));
        assert_eq!(
            uri.module_path,
            Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(uri.pin_source.as_deref(), Some("file:/etc/pin"));
        assert!(KeyUri::parse("pkcs11:token=t")
            .unwrap_err()
            .to_string()
            .contains("names no key"));
        assert!(KeyUri::parse("pkcs11:object=k;colour=red")
            .unwrap_err()
            .to_string()
            .contains("unknown attribute \"colour\""));
    }

    #[test]
    fn messages_never_show_a_pin() {
        assert_eq!(
            redacted("pkcs11:object=k?pin-value=s3cret&module-path=/m.so"),
            "pkcs11:object=k?pin-value=***&module-path=/m.so"
        );
        for text in [
            "pkcs11:object=k;colour=red?pin-value=s3cret",
            "pkcs11:token=t?pin-value=s3cret",
        ] {
            let error = KeyUri::parse(text).unwrap_err().to_string();
            assert!(!error.contains("s3cret"), "{error}");
        }
        let debug = format!("{:?}", KeyUri::parse("pkcs11:object=k?pin-value=s3cret"));
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn debug_text_compares_pins_without_showing_them() {
        let a = digest_pins("\"pkcs11:object=k?pin-value=s3cret&module-path=/m.so\"");
        assert!(!a.contains("s3cret"), "{a}");
        assert_eq!(
            a,
            digest_pins("\"pkcs11:object=k?pin-value=s3cret&module-path=/m.so\"")
        );
        assert_ne!(
            a,
            digest_pins("\"pkcs11:object=k?pin-value=0ther&module-path=/m.so\"")
        );
        assert!(a.ends_with("&module-path=/m.so\""), "{a}");
    }

    #[test]
    fn a_default_module_is_added_only_where_the_uri_names_none() {
        let module = Path::new("/usr/lib/soft hsm.so");
        assert_eq!(
            with_default_module("pkcs11:object=k", module),
            "pkcs11:object=k?module-path=/usr/lib/soft%20hsm.so"
        );
        let uri = KeyUri::parse(&with_default_module("pkcs11:object=k?pin-value=1", module));
        assert_eq!(uri.unwrap().module_path.as_deref(), Some(module));
        assert_eq!(
            with_default_module("pkcs11:object=k?module-path=/m.so", module),
            "pkcs11:object=k?module-path=/m.so"
        );
        assert_eq!(with_default_module("key.pem", module), "key.pem");
    }
}
