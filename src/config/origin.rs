//! Where a configuration value came from, and the error that names it.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration value came from.
#[derive(Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(String),
    File {
        path: PathBuf,
        line: usize,
        key: String,
    },
    /// An nginx directive.
    Directive {
        path: PathBuf,
        line: usize,
        name: String,
    },
    Default,
}

/// Debug output leaves out line numbers, so that two configs with the same settings print
/// the same even when lines moved (see [`crate::config::ListenerConfig::same_settings`]).
impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "Flag({flag})"),
            Origin::File { path, key, .. } => write!(f, "File({}, {key})", path.display()),
            Origin::Directive { path, name, .. } => {
                write!(f, "Directive({}, {name})", path.display())
            }
            Origin::Default => write!(f, "Default"),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "{flag}"),
            Origin::File { path, line, key } => {
                write!(f, "{}:{line}: key '{key}'", path.display())
            }
            Origin::Directive { path, line, name } => {
                write!(f, "{}:{line}: {name}", path.display())
            }
            Origin::Default => write!(f, "default"),
        }
    }
}

/// A value with its origin, kept on anything that may still fail after validation
/// (a file that will not load, an address that will not bind).
#[derive(Clone, Debug)]
pub struct Located<T> {
    pub value: T,
    pub origin: Origin,
}

/// A configuration mistake, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: Option<Origin>,
    pub message: String,
}

impl ConfigError {
    pub fn at(origin: &Origin, message: impl Into<String>) -> Self {
        ConfigError {
            origin: Some(origin.clone()),
            message: message.into(),
        }
    }

    pub fn general(message: impl Into<String>) -> Self {
        ConfigError {
            origin: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(origin) => write!(f, "{origin}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}
