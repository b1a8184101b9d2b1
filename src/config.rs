//! Configuration loading shared by every binary: a TOML file, then environment
//! overrides, then strict deserialization that rejects unknown keys by name.
//!
//! Any key can be overridden with `<PREFIX>__<SECTION>__<KEY>=value`, for example
//! `FLEETMON_COLLECTOR__KAFKA__BOOTSTRAP_SERVERS=10.0.0.7:9092`. Values are read as TOML
//! (`12`, `true`, `["a", "b"]`) and fall back to a plain string; a value that reads as
//! TOML but lands on a string field (a password of digits, a date-like secret) is taken
//! as the string it was written as, never refused with its value echoed.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// Default Kafka bootstrap servers of the collector and the writer.
pub const DEFAULT_KAFKA: &str = "127.0.0.1:9092";
/// Default topic of host samples.
pub const DEFAULT_HOST_SAMPLES_TOPIC: &str = "fleetmon.host-samples";
/// Default topic of site checks.
pub const DEFAULT_SITE_CHECKS_TOPIC: &str = "fleetmon.site-checks";
/// Seconds between runs of a central check that leaves `interval_seconds` at 0.
pub const DEFAULT_CHECK_INTERVAL_SECONDS: u32 = 60;
/// Default compacted topic of check definitions.
pub const DEFAULT_CHECKS_TOPIC: &str = "fleetmon.checks";
/// Default topic of the audit trail (operators' changes).
pub const DEFAULT_AUDIT_TOPIC: &str = "fleetmon.audit";
/// Default compacted topic of enrollment tokens and agent credentials.
pub const DEFAULT_CREDENTIALS_TOPIC: &str = "fleetmon.credentials";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The merged configuration does not fit the schema (unknown key, wrong type, bad TOML).
    #[error("invalid config{}: {message}", origin.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Invalid {
        /// The file, if one was given.
        origin: Option<PathBuf>,
        /// What is wrong, naming the key.
        message: String,
    },
    /// An environment override names an impossible path.
    #[error("invalid environment override {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or inconsistent; names the field and the fix.
    #[error("invalid config: `{field}` {message}")]
    Field {
        /// Dotted path of the field.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl ConfigError {
    /// A field-level validation error.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ConfigError::Field {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Loads `T` from an optional TOML file and the environment overrides that start
/// with `prefix` followed by `__` (e.g. prefix `FLEETMON_COLLECTOR`).
///
/// The environment is passed in so tests can supply their own.
pub fn load<T: DeserializeOwned>(
    path: Option<&Path>,
    prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let text = match path {
        Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?,
        None => String::new(),
    };
    let invalid = |e: toml::de::Error| ConfigError::Invalid {
        origin: path.map(Path::to_owned),
        message: e.to_string().trim_end().to_owned(),
    };
    let marker = format!("{prefix}__");
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(key, _)| key.starts_with(&marker))
        .collect();
    if overrides.is_empty() {
        // Straight from the file: errors point at the user's own lines.
        return toml::from_str(&text).map_err(invalid);
    }
    overrides.sort();
    let file = text.parse::<Table>().map_err(invalid)?;
    let overrides: Vec<Override> = overrides
        .into_iter()
        .map(|(var, raw)| Override {
            keys: var[marker.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect(),
            typed: parse_value(&raw),
            var,
            raw,
        })
        .collect();
    // Overrides read as plain strings after their typed reading was refused.
    let mut as_text = vec![false; overrides.len()];
    loop {
        let mut table = file.clone();
        for (o, text) in overrides.iter().zip(&as_text) {
            let value = if *text {
                Value::String(o.raw.clone())
            } else {
                o.typed.clone()
            };
            set_path(&mut table, &o.keys, value).map_err(|error| ConfigError::Env {
                var: o.var.clone(),
                message: error.to_string(),
            })?;
        }
        let merged = toml::to_string(&table).map_err(|e| ConfigError::Invalid {
            origin: path.map(Path::to_owned),
            message: e.to_string(),
        })?;
        let error = match toml::from_str(&merged) {
            Ok(config) => return Ok(config),
            Err(error) => error,
        };
        let culprit = error
            .span()
            .and_then(|span| key_at(&merged, span.start))
            .and_then(|key| overrides.iter().position(|o| o.keys.join(".") == key));
        match culprit {
            Some(i) if !as_text[i] && !matches!(overrides[i].typed, Value::String(_)) => {
                as_text[i] = true;
            }
            // Refused as the string it is: say which variable, not the merged document
            // (which would echo every value, secrets included).
            Some(i) => {
                return Err(ConfigError::Env {
                    var: overrides[i].var.clone(),
                    message: error.message().to_owned(),
                });
            }
            None => return Err(invalid(error)),
        }
    }
}

/// One `PREFIX__SECTION__KEY=value` variable.
struct Override {
    var: String,
    keys: Vec<String>,
    raw: String,
    typed: Value,
}

/// The dotted key (`kafka.sasl.password`) of the `key = value` line of a document
/// [`toml::to_string`] wrote, that holds byte `at`.
fn key_at(document: &str, at: usize) -> Option<String> {
    let line_start = document[..at.min(document.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = document[line_start..].lines().next()?;
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    let section = document[..line_start]
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix('[')?.strip_suffix(']'));
    Some(match section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_owned(),
    })
}

/// Deserializes a map of pass-through options (librdkafka properties) whose values may
/// be written as strings, numbers or booleans: `linger.ms = 5` and `"5"` both work.
pub fn string_map<'de, D>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize as _;
    let raw = std::collections::BTreeMap::<String, Value>::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s,
                Value::Integer(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "option `{key}` must be a string, number or boolean, not {}",
                        other.type_str()
                    )));
                }
            };
            Ok((key, text))
        })
        .collect()
}

fn parse_value(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

/// Why an environment override's name does not lead to a config key.
#[derive(Debug, thiserror::Error)]
enum KeyPathError {
    #[error("names no key")]
    NoKey,
    #[error("has an empty key")]
    EmptyKey,
    #[error("`{0}` is not a section")]
    NotASection(String),
}

fn set_path(table: &mut Table, keys: &[String], value: Value) -> Result<(), KeyPathError> {
    match keys {
        [] => Err(KeyPathError::NoKey),
        [key] if key.is_empty() => Err(KeyPathError::EmptyKey),
        [key] => {
            table.insert(key.clone(), value);
            Ok(())
        }
        [section, rest @ ..] => {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            match entry {
                Value::Table(inner) => set_path(inner, rest, value),
                _ => Err(KeyPathError::NotASection(section.clone())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Example {
        #[serde(default)]
        listen: String,
        #[serde(default)]
        kafka: Kafka,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Kafka {
        #[serde(default)]
        bootstrap_servers: String,
        #[serde(default)]
        partitions: i32,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_file_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:7400\"\n[kafka]\npartitions = 3\n",
        )
        .unwrap();
        let config: Example = load(
            Some(&path),
            "FLEETMON_X",
            env(&[
                ("FLEETMON_X__KAFKA__BOOTSTRAP_SERVERS", "10.0.0.1:9092"),
                ("FLEETMON_X__KAFKA__PARTITIONS", "24"),
                ("FLEETMON_OTHER__LISTEN", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:7400");
        assert_eq!(config.kafka.bootstrap_servers, "10.0.0.1:9092");
        assert_eq!(config.kafka.partitions, 24);
    }

    #[test]
    fn values_that_read_as_toml_stay_strings_on_string_fields() {
        // A password of digits, a date-like secret: what was written, not refused.
        let config: Example = load(
            None,
            "FLEETMON_X",
            env(&[
                ("FLEETMON_X__LISTEN", "0012345"),
                ("FLEETMON_X__KAFKA__BOOTSTRAP_SERVERS", "2026-12-06"),
                ("FLEETMON_X__KAFKA__PARTITIONS", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen, "0012345");
        assert_eq!(config.kafka.bootstrap_servers, "2026-12-06");
        assert_eq!(config.kafka.partitions, 7);
        let config: Example =
            load(None, "FLEETMON_X", env(&[("FLEETMON_X__LISTEN", "12345")])).unwrap();
        assert_eq!(config.listen, "12345");

        // A number field given text is refused naming the variable only, and the other
        // overrides' values are not in the message.
        let error = load::<Example>(
            None,
            "FLEETMON_X",
            env(&[
                ("FLEETMON_X__LISTEN", "s3cret-value"),
                ("FLEETMON_X__KAFKA__PARTITIONS", "lots"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("FLEETMON_X__KAFKA__PARTITIONS"), "{error}");
        assert!(!error.contains("s3cret-value"), "{error}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[kafka]\nbootstrap = \"x\"\n").unwrap();
        let error = load::<Example>(Some(&path), "FLEETMON_X", Vec::new()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("unknown field `bootstrap`"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");

        let error =
            load::<Example>(None, "FLEETMON_X", env(&[("FLEETMON_X__LISTN", "x")])).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `listn`"),
            "{error}"
        );
    }
}

/// `[kafka.tls]` of the collector and the writer: TLS to the brokers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTls {
    /// CA bundle (PEM) that signed the brokers' certificates.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for listeners that require one.
    pub cert: Option<PathBuf>,
    /// Its key (PEM).
    pub key: Option<PathBuf>,
}

/// `[kafka.sasl]` of the collector and the writer: SASL (over TLS) to the brokers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    /// `SCRAM-SHA-512` (default), `SCRAM-SHA-256` or `PLAIN`.
    #[serde(default = "default_sasl_mechanism")]
    pub mechanism: String,
    /// The user.
    pub username: String,
    /// The password (or `password_file`; or the environment override of this key).
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

fn default_sasl_mechanism() -> String {
    "SCRAM-SHA-512".to_owned()
}

/// Adds to `options` the librdkafka properties for `tls` and `sasl` (nothing when both
/// are absent), checked: each error names the field. `options` may not also set a
/// different `security.protocol`.
pub fn add_kafka_security(
    tls: Option<&KafkaTls>,
    sasl: Option<&KafkaSasl>,
    options: &mut std::collections::BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    if tls.is_none() && sasl.is_none() {
        return Ok(());
    }
    let protocol = if sasl.is_some() { "SASL_SSL" } else { "SSL" };
    // Validation may run twice (file, then flags): the protocol this set is no conflict.
    if options
        .get("security.protocol")
        .is_some_and(|set| set != protocol)
    {
        return Err(ConfigError::field(
            "kafka.options.\"security.protocol\"",
            "is set as well as kafka.tls / kafka.sasl: keep one of them",
        ));
    }
    let mut set = vec![("security.protocol".to_owned(), protocol.to_owned())];
    if let Some(tls) = tls {
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(ConfigError::field(
                if tls.cert.is_some() {
                    "kafka.tls.key"
                } else {
                    "kafka.tls.cert"
                },
                "is missing: a client certificate needs both kafka.tls.cert and kafka.tls.key",
            ));
        }
        for (field, key, path) in [
            ("kafka.tls.ca", "ssl.ca.location", &tls.ca),
            ("kafka.tls.cert", "ssl.certificate.location", &tls.cert),
            ("kafka.tls.key", "ssl.key.location", &tls.key),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(ConfigError::field(
                        field,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
                set.push((key.to_owned(), path.display().to_string()));
            }
        }
    }
    if let Some(sasl) = sasl {
        if !["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"].contains(&sasl.mechanism.as_str()) {
            return Err(ConfigError::field(
                "kafka.sasl.mechanism",
                format!(
                    "`{}` is not one of SCRAM-SHA-512, SCRAM-SHA-256, PLAIN",
                    sasl.mechanism
                ),
            ));
        }
        if sasl.username.trim().is_empty() {
            return Err(ConfigError::field("kafka.sasl.username", "is empty"));
        }
        let password = match (&sasl.password, &sasl.password_file) {
            (Some(password), None) => password.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| {
                    ConfigError::field(
                        "kafka.sasl.password_file",
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (Some(_), Some(_)) => {
                return Err(ConfigError::field(
                    "kafka.sasl.password",
                    "and kafka.sasl.password_file are both set: keep one",
                ));
            }
            (None, None) => {
                return Err(ConfigError::field(
                    "kafka.sasl.password",
                    "is missing: set it, kafka.sasl.password_file, or its environment override",
                ));
            }
        };
        set.extend([
            ("sasl.mechanisms".to_owned(), sasl.mechanism.clone()),
            ("sasl.username".to_owned(), sasl.username.clone()),
            ("sasl.password".to_owned(), password),
        ]);
    }
    options.extend(set);
    Ok(())
}
