//! The agent's private key and certificate, replaced together (enrollment, renewal) so
//! that a crash at any point leaves a key and a certificate that belong together.
//!
//! A replacement stages both files beside the real ones (`agent-key.pem.new`,
//! `agent.pem.new`, each written, fsynced), then renames the key into place, then the
//! certificate, then fsyncs the folder. A crash between the two renames leaves the new
//! key with the old certificate, and the new certificate staged: [`recover`], run at
//! every start, finishes the job. [`check`] then refuses a pair that still does not
//! match, naming the files.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Why the key and certificate could not be written or do not belong together.
#[derive(Debug, thiserror::Error)]
pub enum KeyPairError {
    /// A file could not be read, written, renamed or synced.
    #[error("cannot {action} {}: {source}", .path.display())]
    File {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key or the certificate cannot be parsed.
    #[error("cannot read the agent's key or certificate ({}, {}): {source}", .key.display(), .cert.display())]
    Unreadable {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// What is wrong.
        source: fleetmon::pki::PkiError,
    },
    /// The certificate was issued for another key.
    #[error(
        "{} does not belong to {} (their public keys differ): put back the certificate \
         issued for this key, or enroll again (fleetmon-agent enroll)",
        .cert.display(),
        .key.display()
    )]
    Mismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
}

fn file_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyPairError {
    let path = path.to_owned();
    move |source| KeyPairError::File {
        action,
        path,
        source,
    }
}

/// Where a file is staged before it replaces `path`.
fn staged(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

fn write_synced(path: &Path, contents: &str, mode: u32) -> Result<(), KeyPairError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(file_error("write", path))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(file_error("write", path))
}

fn sync_folder(path: &Path) -> Result<(), KeyPairError> {
    let folder = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(folder)
        .and_then(|dir| dir.sync_all())
        .map_err(file_error("sync", folder))
}

/// The steps of [`replace`], in order (tests stop after each one, as a crash would).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Both new files written beside the real ones, fsynced.
    Staged,
    /// The key renamed into place.
    KeyPublished,
    /// The certificate renamed into place, the folder fsynced.
    Done,
}

/// Replaces the key (mode 0600) and the certificate (0644) together.
pub fn replace(key: &Path, key_pem: &str, cert: &Path, cert_pem: &str) -> Result<(), KeyPairError> {
    replace_until(key, key_pem, cert, cert_pem, Step::Done)
}

/// [`replace`], stopping after `last`.
pub fn replace_until(
    key: &Path,
    key_pem: &str,
    cert: &Path,
    cert_pem: &str,
    last: Step,
) -> Result<(), KeyPairError> {
    let (staged_key, staged_cert) = (staged(key), staged(cert));
    write_synced(&staged_key, key_pem, 0o600)?;
    write_synced(&staged_cert, cert_pem, 0o644)?;
    sync_folder(key)?;
    if last == Step::Staged {
        return Ok(());
    }
    std::fs::rename(&staged_key, key).map_err(file_error("replace", key))?;
    if last == Step::KeyPublished {
        return Ok(());
    }
    std::fs::rename(&staged_cert, cert).map_err(file_error("replace", cert))?;
    sync_folder(cert)
}

/// Finishes or undoes a replacement a crash interrupted: a staged certificate whose
/// key is in place (or staged beside it) is moved in; anything staged that does not
/// complete a pair is removed. Returns whether anything was staged.
pub fn recover(key: &Path, cert: &Path) -> Result<bool, KeyPairError> {
    let (staged_key, staged_cert) = (staged(key), staged(cert));
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    let (Some(new_cert), found_key) = (read(&staged_cert), read(&staged_key)) else {
        // A staged key alone: the crash came before the certificate was staged.
        if staged_key.exists() {
            std::fs::remove_file(&staged_key).map_err(file_error("remove", &staged_key))?;
            return Ok(true);
        }
        return Ok(false);
    };
    let belongs =
        |key_pem: &str| fleetmon::pki::key_matches_certificate(key_pem, &new_cert).unwrap_or(false);
    if found_key.as_deref().is_some_and(belongs) {
        // Crashed before the key's rename: publish both, key first.
        std::fs::rename(&staged_key, key).map_err(file_error("replace", key))?;
    } else if found_key.is_some() {
        std::fs::remove_file(&staged_key).map_err(file_error("remove", &staged_key))?;
    }
    match read(key) {
        Some(current) if belongs(&current) => {
            std::fs::rename(&staged_cert, cert).map_err(file_error("replace", cert))?;
        }
        _ => std::fs::remove_file(&staged_cert).map_err(file_error("remove", &staged_cert))?,
    }
    sync_folder(cert)?;
    Ok(true)
}

/// Refuses a key and certificate that do not belong together, naming both files.
pub fn check(key: &Path, cert: &Path) -> Result<(), KeyPairError> {
    let key_pem = std::fs::read_to_string(key).map_err(file_error("read", key))?;
    let cert_pem = std::fs::read_to_string(cert).map_err(file_error("read", cert))?;
    match fleetmon::pki::key_matches_certificate(&key_pem, &cert_pem) {
        Ok(true) => Ok(()),
        Ok(false) => Err(KeyPairError::Mismatch {
            key: key.to_owned(),
            cert: cert.to_owned(),
        }),
        Err(source) => Err(KeyPairError::Unreadable {
            key: key.to_owned(),
            cert: cert.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use fleetmon::identity::Role;
    use fleetmon::pki::{CertificateAuthority, LeafSpec};

    fn issued(ca: &CertificateAuthority) -> (String, String) {
        let cert = ca.issue(&LeafSpec::client(Role::Agent, "a")).unwrap();
        (cert.key_pem, cert.cert_pem)
    }

    #[test]
    fn a_crash_at_any_step_leaves_a_matching_pair_old_or_new() {
        let ca = CertificateAuthority::generate("test").unwrap();
        for last in [Step::Staged, Step::KeyPublished, Step::Done] {
            let dir = tempfile::tempdir().unwrap();
            let (key, cert) = (
                dir.path().join("agent-key.pem"),
                dir.path().join("agent.pem"),
            );
            let (old_key, old_cert) = issued(&ca);
            replace(&key, &old_key, &cert, &old_cert).unwrap();
            let (new_key, new_cert) = issued(&ca);
            replace_until(&key, &new_key, &cert, &new_cert, last).unwrap();
            if last == Step::KeyPublished {
                assert!(
                    matches!(check(&key, &cert), Err(KeyPairError::Mismatch { .. })),
                    "the crash point the recovery is for"
                );
            }
            recover(&key, &cert).unwrap();
            check(&key, &cert).unwrap_or_else(|e| panic!("after {last:?}: {e}"));
            let now = std::fs::read_to_string(&cert).unwrap();
            assert!(now == old_cert || now == new_cert, "after {last:?}");
            assert!(!staged(&key).exists() && !staged(&cert).exists());
        }
    }

    #[test]
    fn a_mismatched_pair_is_refused_naming_both_files() {
        let ca = CertificateAuthority::generate("test").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (
            dir.path().join("agent-key.pem"),
            dir.path().join("agent.pem"),
        );
        let (one_key, _) = issued(&ca);
        let (_, other_cert) = issued(&ca);
        replace(&key, &one_key, &cert, &other_cert).unwrap();
        assert_eq!(
            check(&key, &cert).unwrap_err().to_string(),
            format!(
                "{} does not belong to {} (their public keys differ): put back the certificate \
                 issued for this key, or enroll again (fleetmon-agent enroll)",
                cert.display(),
                key.display()
            )
        );
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
