//! The raw settings of a listener, before validation: each value with its origin.

use super::keys;
use super::origin::{ConfigError, Located, Origin};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One raw setting.
#[derive(Clone, Debug)]
pub enum SpecValue {
    Text(String),
    Integer(i64),
    Bool(bool),
    /// Ordered `set_header NAME VALUE` rules.
    Headers(Vec<(String, String)>),
    /// A repeatable setting (`--allow-cn a --allow-cn b`, `allow_cn = ["a", "b"]`).
    List(Vec<String>),
    /// `[[listener.route]]` tables.
    Routes(Vec<ListenerSpec>),
}

/// The raw settings of one listener (or of one route in it), before validation. Keys are the
/// config file's names.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    pub(super) values: BTreeMap<&'static str, Located<SpecValue>>,
    /// Where the listener itself was declared, for errors about missing keys.
    pub origin: Option<Origin>,
    pub(super) keys: &'static [keys::Key],
}

impl Default for ListenerSpec {
    fn default() -> Self {
        ListenerSpec {
            values: BTreeMap::new(),
            origin: None,
            keys: keys::KEYS,
        }
    }
}

impl ListenerSpec {
    /// An empty route spec (`[[listener.route]]`).
    pub fn route(origin: Origin) -> ListenerSpec {
        ListenerSpec {
            values: BTreeMap::new(),
            origin: Some(origin),
            keys: keys::ROUTE_KEYS,
        }
    }

    /// Records a setting. `key` must be one of the known keys.
    pub fn set(&mut self, key: &str, origin: Origin, value: SpecValue) -> Result<(), ConfigError> {
        let keys = self.keys;
        let key = keys.iter().find(|k| k.key == key).ok_or_else(|| {
            let known: Vec<&str> = keys.iter().map(|k| k.key).collect();
            ConfigError::at(
                &origin,
                format!("unknown key '{key}'; known keys: {}", known.join(", ")),
            )
        })?;
        let key = key.key;
        if self.values.contains_key(key) {
            return Err(ConfigError::at(&origin, format!("'{key}' is set twice")));
        }
        self.values.insert(key, Located { value, origin });
        Ok(())
    }

    pub(super) fn missing(&self, key: &str, what: &str) -> ConfigError {
        let message = format!("missing '{key}' ({what})");
        match &self.origin {
            Some(origin) => ConfigError::at(origin, message),
            None => ConfigError::general(message),
        }
    }

    /// Where the first of `keys` that is set came from.
    pub(super) fn origin_of(&self, keys: &[&str]) -> Option<Origin> {
        keys.iter()
            .find_map(|k| self.values.get(k))
            .map(|v| v.origin.clone())
    }

    pub(super) fn take(&mut self, key: &str) -> Option<Located<SpecValue>> {
        self.values.remove(key)
    }

    pub(super) fn text(&mut self, key: &str) -> Result<Option<Located<String>>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Located {
                value: SpecValue::Text(text),
                origin,
            }) => Ok(Some(Located {
                value: text,
                origin,
            })),
            Some(other) => Err(ConfigError::at(&other.origin, "expected a string")),
        }
    }

    /// A list setting; a single string counts as a list of one.
    pub(super) fn list(&mut self, key: &str) -> Result<Option<Located<Vec<String>>>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Located {
                value: SpecValue::List(items),
                origin,
            }) => Ok(Some(Located {
                value: items,
                origin,
            })),
            Some(Located {
                value: SpecValue::Text(text),
                origin,
            }) => Ok(Some(Located {
                value: vec![text],
                origin,
            })),
            Some(other) => Err(ConfigError::at(&other.origin, "expected a list of strings")),
        }
    }

    pub(super) fn paths(&mut self, key: &str) -> Result<Vec<Located<PathBuf>>, ConfigError> {
        Ok(match self.list(key)? {
            None => Vec::new(),
            Some(list) => list
                .value
                .into_iter()
                .map(|p| Located {
                    value: PathBuf::from(p),
                    origin: list.origin.clone(),
                })
                .collect(),
        })
    }

    pub(super) fn required_text(
        &mut self,
        key: &str,
        what: &str,
    ) -> Result<Located<String>, ConfigError> {
        self.text(key)?.ok_or_else(|| self.missing(key, what))
    }

    pub(super) fn path(&mut self, key: &str) -> Result<Option<Located<PathBuf>>, ConfigError> {
        Ok(self.text(key)?.map(|text| Located {
            value: PathBuf::from(text.value),
            origin: text.origin,
        }))
    }

    pub(super) fn flag(&mut self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.take(key) {
            None => Ok(default),
            Some(Located {
                value: SpecValue::Bool(b),
                ..
            }) => Ok(b),
            Some(other) => Err(ConfigError::at(&other.origin, "expected true or false")),
        }
    }

    pub(super) fn integer(&mut self, key: &str) -> Result<Option<Located<i64>>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Located {
                value: SpecValue::Integer(n),
                origin,
            }) => Ok(Some(Located { value: n, origin })),
            Some(Located {
                value: SpecValue::Text(text),
                origin,
            }) => match text.parse() {
                Ok(n) => Ok(Some(Located { value: n, origin })),
                Err(_) => Err(ConfigError::at(
                    &origin,
                    format!("expected a number, found \"{text}\""),
                )),
            },
            Some(other) => Err(ConfigError::at(&other.origin, "expected a number")),
        }
    }

    /// Keys that make no sense for the chosen mode are an error rather than silently ignored.
    pub(super) fn refuse(&mut self, key: &str, why: &str) -> Result<(), ConfigError> {
        match self.take(key) {
            Some(value) => Err(ConfigError::at(&value.origin, why.to_string())),
            None => Ok(()),
        }
    }
}
