//! Secret header values of HTTP checks (`http.secret_headers`). A collector seals each
//! value with AES-256-GCM under a key every collector shares (`[check_secrets]
//! key_file`) before the definition reaches the checks topic, so the topic and the
//! writers' `checks` table hold ciphertext only. It opens them only into the check sets
//! it sends agents over mutual TLS, and operators read every value as
//! [`crate::redact::SECRET`].
//!
//! A sealed value is `fleetmon-sealed:v1:KEY_ID:BASE64`, the base64 of a random 96-bit
//! nonce, the ciphertext and the tag. The check id and the header name are the
//! associated data, so a value moved to another check or header does not open. `KEY_ID`
//! (the first 8 hex digits of the key's SHA-256) names the key that sealed it, so a
//! collector holding another key says so.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::Digest as _;

use crate::pb::{CheckDefinition, HttpCheck, check_definition};

/// File name of the key in a certificates directory (`fleetmon certs init`).
pub const KEY_FILE: &str = "check-secrets.key";

/// Bytes of a key.
const KEY_LEN: usize = 32;

/// What starts a sealed value.
const PREFIX: &str = "fleetmon-sealed:v1:";

/// Why secret header values could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The key file could not be read.
    #[error("cannot read the check secrets key {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file is not one base64 line of 32 bytes.
    #[error(
        "{path} is not a check secrets key: it must hold the base64 of 32 random bytes (make one with `fleetmon certs new-secret-key`)"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// Others than the owner may read the key file.
    #[error(
        "{path} may be read by others than its owner (mode {mode:o}): `chmod 600 {path}`, then start again"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A check has secret headers and this collector holds no key.
    #[error(
        "`check.http.secret_headers` needs a key on the collector: set `[check_secrets] key_file` on every collector to one file (`fleetmon certs new-secret-key`)"
    )]
    NoKey,
    /// A stored value is not a sealed value.
    #[error("`check.http.secret_headers.{header}` of check `{check}` is not sealed")]
    NotSealed {
        /// The check.
        check: String,
        /// The header.
        header: String,
    },
    /// A stored value was sealed with another key.
    #[error(
        "`check.http.secret_headers.{header}` of check `{check}` was sealed with key {sealed_with}, and this collector holds key {held}: give every collector the same `[check_secrets] key_file`, or set the value again"
    )]
    OtherKey {
        /// The check.
        check: String,
        /// The header.
        header: String,
        /// The id of the key that sealed it.
        sealed_with: String,
        /// The id of the key held.
        held: String,
    },
    /// A stored value does not open: altered, or moved from another check or header.
    #[error(
        "`check.http.secret_headers.{header}` of check `{check}` does not open with key {held}: it was altered or copied from another check; set the value again"
    )]
    Corrupt {
        /// The check.
        check: String,
        /// The header.
        header: String,
        /// The id of the key held.
        held: String,
    },
    /// An update keeps a value (sent as `•••`) the check does not have.
    #[error(
        "`check.http.secret_headers.{header}` is `•••` (keep the stored value), but check `{check}` has no stored value for it: give the value"
    )]
    NothingToKeep {
        /// The check.
        check: String,
        /// The header.
        header: String,
    },
}

/// The key that seals and opens secret header values.
pub struct SecretKey {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("id", &self.id).finish()
    }
}

/// Writes a new random key (base64, mode 0600) to `path`; refuses to replace one
/// unless `force`.
pub fn write_new_key(path: &Path, force: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut bytes = [0u8; KEY_LEN];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| std::io::Error::other("no randomness"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(file, "{}", STANDARD.encode(bytes))?;
    file.sync_all()
}

impl SecretKey {
    /// Reads the key in `path`: one line, the base64 of 32 bytes, readable by its owner
    /// only.
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        use std::os::unix::fs::PermissionsExt as _;
        let read = |source| SecretsError::Read {
            path: path.to_owned(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretsError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let malformed = || SecretsError::Malformed {
            path: path.to_owned(),
        };
        let bytes = STANDARD.decode(text.trim()).map_err(|_| malformed())?;
        if bytes.len() != KEY_LEN {
            return Err(malformed());
        }
        Self::from_bytes(&bytes).ok_or_else(malformed)
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).ok()?);
        let digest = sha2::Sha256::digest(bytes);
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Some(SecretKey { key, id })
    }

    /// The key's id: the first 8 hex digits of its SHA-256.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn seal_value(&self, check: &str, header: &str, value: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system has randomness");
        let mut sealed = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(check, header)),
                &mut sealed,
            )
            .expect("a header value fits AES-GCM");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.id, STANDARD.encode(bytes))
    }

    fn open_value(&self, check: &str, header: &str, sealed: &str) -> Result<String, SecretsError> {
        let not_sealed = || SecretsError::NotSealed {
            check: check.to_owned(),
            header: header.to_owned(),
        };
        let (key_id, body) = sealed
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(not_sealed)?;
        if key_id != self.id {
            return Err(SecretsError::OtherKey {
                check: check.to_owned(),
                header: header.to_owned(),
                sealed_with: key_id.to_owned(),
                held: self.id.clone(),
            });
        }
        let corrupt = || SecretsError::Corrupt {
            check: check.to_owned(),
            header: header.to_owned(),
            held: self.id.clone(),
        };
        let mut bytes = STANDARD.decode(body).map_err(|_| corrupt())?;
        if bytes.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let mut sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| corrupt())?;
        let plain = self
            .key
            .open_in_place(
                nonce,
                Aad::from(associated_data(check, header)),
                &mut sealed,
            )
            .map_err(|_| corrupt())?;
        String::from_utf8(plain.to_vec()).map_err(|_| corrupt())
    }
}

fn associated_data(check: &str, header: &str) -> Vec<u8> {
    let mut data = check.as_bytes().to_vec();
    data.push(0);
    data.extend_from_slice(header.to_ascii_lowercase().as_bytes());
    data
}

fn http_mut(definition: &mut CheckDefinition) -> Option<&mut HttpCheck> {
    match &mut definition.kind {
        Some(check_definition::Kind::Http(http)) => Some(http),
        _ => None,
    }
}

fn http(definition: &CheckDefinition) -> Option<&HttpCheck> {
    match &definition.kind {
        Some(check_definition::Kind::Http(http)) => Some(http),
        _ => None,
    }
}

/// Whether `definition` has secret header values.
pub fn has_secrets(definition: &CheckDefinition) -> bool {
    http(definition).is_some_and(|http| !http.secret_headers.is_empty())
}

/// `definition` with every secret header value shown as [`crate::redact::SECRET`].
pub fn masked(mut definition: CheckDefinition) -> CheckDefinition {
    if let Some(http) = http_mut(&mut definition) {
        for value in http.secret_headers.values_mut() {
            *value = crate::redact::SECRET.to_owned();
        }
    }
    definition
}

/// The key a collector holds, if any.
#[derive(Debug, Clone, Default)]
pub struct CheckSecrets {
    key: Option<std::sync::Arc<SecretKey>>,
}

impl CheckSecrets {
    /// Secrets sealed and opened with `key`; `None`: a check with secret headers is
    /// refused.
    pub fn new(key: Option<SecretKey>) -> Self {
        CheckSecrets {
            key: key.map(std::sync::Arc::new),
        }
    }

    /// The key's id, if a key is held.
    pub fn key_id(&self) -> Option<&str> {
        self.key.as_deref().map(SecretKey::id)
    }

    fn key(&self) -> Result<&SecretKey, SecretsError> {
        self.key.as_deref().ok_or(SecretsError::NoKey)
    }

    /// `definition` (values in clear) with every secret header value sealed.
    pub fn seal(&self, definition: CheckDefinition) -> Result<CheckDefinition, SecretsError> {
        self.each_value(definition, |key, check, header, value| {
            Ok(key.seal_value(check, header, value))
        })
    }

    /// `definition` (as stored) with every secret header value in clear.
    pub fn open(&self, definition: &CheckDefinition) -> Result<CheckDefinition, SecretsError> {
        self.each_value(definition.clone(), SecretKey::open_value)
    }

    /// `definition` with every secret header value replaced by what `change` makes of
    /// it with the key (none needed when there are none).
    fn each_value(
        &self,
        mut definition: CheckDefinition,
        change: impl Fn(&SecretKey, &str, &str, &str) -> Result<String, SecretsError>,
    ) -> Result<CheckDefinition, SecretsError> {
        if !has_secrets(&definition) {
            return Ok(definition);
        }
        let key = self.key()?;
        let check = definition.id.clone();
        let http = http_mut(&mut definition).expect("has_secrets: an HTTP check");
        for (header, value) in &mut http.secret_headers {
            *value = change(key, &check, header, value)?;
        }
        Ok(definition)
    }

    /// `definition` from an operator, with every value sent as [`crate::redact::SECRET`]
    /// replaced by the value `stored` (as stored) has for that header, opened.
    pub fn keep_stored(
        &self,
        mut definition: CheckDefinition,
        stored: Option<&CheckDefinition>,
    ) -> Result<CheckDefinition, SecretsError> {
        let check = definition.id.clone();
        let stored = stored.and_then(self::http);
        let Some(http) = http_mut(&mut definition) else {
            return Ok(definition);
        };
        for (header, value) in &mut http.secret_headers {
            if value != crate::redact::SECRET {
                continue;
            }
            let kept = stored
                .and_then(|stored| stored.secret_headers.get(header))
                .ok_or_else(|| SecretsError::NothingToKeep {
                    check: check.clone(),
                    header: header.clone(),
                })?;
            *value = self.key()?.open_value(&check, header, kept)?;
        }
        Ok(definition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: &str, secret: &[(&str, &str)]) -> CheckDefinition {
        CheckDefinition {
            id: id.to_owned(),
            kind: Some(check_definition::Kind::Http(HttpCheck {
                url: "https://api.example/".to_owned(),
                secret_headers: secret
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn holding(byte: u8) -> CheckSecrets {
        CheckSecrets::new(SecretKey::from_bytes(&[byte; KEY_LEN]))
    }

    fn value(definition: &CheckDefinition, header: &str) -> String {
        http(definition).unwrap().secret_headers[header].clone()
    }

    #[test]
    fn a_sealed_value_holds_no_clear_text_and_opens_only_where_it_was_sealed() {
        let secrets = holding(7);
        let plain = check("api", &[("Authorization", "Bearer s3cret")]);
        let sealed = secrets.seal(plain.clone()).unwrap();
        let stored = value(&sealed, "Authorization");
        assert!(stored.starts_with("fleetmon-sealed:v1:"), "{stored}");
        assert!(!stored.contains("s3cret"), "{stored}");
        assert_eq!(secrets.open(&sealed).unwrap(), plain);
        // Sealed twice, two different texts (a fresh nonce each time).
        assert_ne!(
            value(&secrets.seal(plain.clone()).unwrap(), "Authorization"),
            stored
        );

        let moved = check("other", &[("Authorization", &stored)]);
        assert!(matches!(
            secrets.open(&moved),
            Err(SecretsError::Corrupt { .. })
        ));
        let error = holding(8).open(&sealed).unwrap_err();
        assert!(matches!(error, SecretsError::OtherKey { .. }), "{error}");
        assert!(
            error.to_string().contains(&format!(
                "was sealed with key {}",
                secrets.key_id().unwrap()
            )),
            "{error}"
        );
        assert!(matches!(
            CheckSecrets::default().seal(plain),
            Err(SecretsError::NoKey)
        ));
    }

    #[test]
    fn an_update_sending_the_mask_keeps_the_stored_value() {
        let secrets = holding(7);
        let stored = secrets
            .seal(check("api", &[("Authorization", "Bearer s3cret")]))
            .unwrap();
        let shown = masked(stored.clone());
        assert_eq!(value(&shown, "Authorization"), "•••");
        let kept = secrets.keep_stored(shown, Some(&stored)).unwrap();
        assert_eq!(value(&kept, "Authorization"), "Bearer s3cret");

        let new_header = check("api", &[("X-Key", "•••")]);
        let error = secrets.keep_stored(new_header, Some(&stored)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`check.http.secret_headers.X-Key` is `•••` (keep the stored value), but check `api` has no stored value for it: give the value"
        );
    }

    #[test]
    fn a_key_file_is_one_base64_line_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        write_new_key(&path, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let key = SecretKey::load(&path).unwrap();
        assert_eq!(key.id().len(), 8);
        assert!(
            write_new_key(&path, false).is_err(),
            "replaced without force"
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = SecretKey::load(&path).unwrap_err().to_string();
        assert!(error.contains("(mode 644): `chmod 600"), "{error}");

        std::fs::write(&path, "c2hvcnQ=\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = SecretKey::load(&path).unwrap_err().to_string();
        assert!(error.ends_with("is not a check secrets key: it must hold the base64 of 32 random bytes (make one with `fleetmon certs new-secret-key`)"), "{error}");
    }
}
