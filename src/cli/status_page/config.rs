//! `status.toml`: what the status page serves and where it reads it. Only what a page
//! lists is ever published; every field is checked at start and a bad one is named.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use fleetmon::config::ConfigError;
use serde::Deserialize;

/// Longest page title, group or display name (characters).
const MAX_NAME_CHARS: usize = 100;
/// Most checks one config may publish (every refresh reads each of them).
const MAX_CHECKS: usize = 500;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusConfig {
    /// Where pages are served (default 127.0.0.1:8088).
    #[serde(default = "default_listen")]
    pub(crate) listen: SocketAddr,
    /// Seconds between two snapshots of the database (1 to 300, default 5): requests
    /// are answered from the latest one, never by a query of their own.
    #[serde(default = "default_refresh")]
    pub(crate) refresh_seconds: u64,
    /// The address people reach the pages by, e.g. `https://status.example.com`: the
    /// feed's links (default: relative links only).
    #[serde(default)]
    pub(crate) public_url: Option<String>,
    /// HTTPS with this certificate and key (default: plain HTTP, for a proxy in front).
    #[serde(default)]
    pub(crate) tls: Option<HttpsFiles>,
    /// The database, read with a role that can only read.
    pub(crate) postgres: StatusPostgres,
    /// The pages.
    pub(crate) pages: Vec<PageConfig>,
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpsFiles {
    /// The server certificate chain (PEM).
    pub(crate) cert: PathBuf,
    /// Its key (PEM).
    pub(crate) key: PathBuf,
}

/// `[postgres]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusPostgres {
    /// Connection URL of the read-only role (libpq's `sslmode` as the writer reads it).
    pub(crate) url: String,
    /// The writer's schema (default `fleetmon`).
    #[serde(default = "default_schema")]
    pub(crate) schema: String,
    /// CA bundle (PEM) for `sslmode=verify-ca`/`verify-full`.
    #[serde(default)]
    pub(crate) ca: Option<PathBuf>,
    /// Client certificate (PEM), with `key`.
    #[serde(default)]
    pub(crate) cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[serde(default)]
    pub(crate) key: Option<PathBuf>,
}

impl StatusPostgres {
    pub(crate) fn tls_files(&self) -> fleetmon::postgres::PgTlsFiles<'_> {
        fleetmon::postgres::PgTlsFiles {
            url: &self.url,
            ca: self.ca.as_deref(),
            cert: self.cert.as_deref(),
            key: self.key.as_deref(),
        }
    }
}

/// One `[[pages]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageConfig {
    /// Where it is served: `/` or `/NAME` (its JSON, feed and badges below it).
    pub(crate) path: String,
    /// Its heading and title.
    pub(crate) title: String,
    /// A line under the title.
    #[serde(default)]
    pub(crate) description: String,
    /// Its groups of checks, in order.
    pub(crate) groups: Vec<GroupConfig>,
    /// Show the incidents quorum outages open by themselves (default); when false, only
    /// those an operator opened or posted an update to.
    #[serde(default = "default_true")]
    pub(crate) automatic_incidents: bool,
}

/// One `[[pages.groups]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupConfig {
    /// Its heading.
    pub(crate) name: String,
    /// Its checks, in order.
    pub(crate) checks: Vec<PublishedCheck>,
}

/// One published check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishedCheck {
    /// The check's id (`fleetmon checks list`).
    pub(crate) id: String,
    /// What the public sees it called.
    pub(crate) name: String,
    /// Show the check's target (URL, host) under its name (default: never).
    #[serde(default)]
    pub(crate) show_target: bool,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8088))
}

fn default_refresh() -> u64 {
    5
}

fn default_true() -> bool {
    true
}

fn default_schema() -> String {
    "fleetmon".to_owned()
}

impl StatusConfig {
    /// Reads `path` with `FLEETMON_STATUS__…` overrides, then validates it.
    pub(crate) fn load(
        path: &std::path::Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        fleetmon::config::load::<StatusConfig>(Some(path), "FLEETMON_STATUS", env)?.validate()
    }

    /// Checks ranges and consistency; each error names the field and the fix.
    pub(crate) fn validate(self) -> Result<Self, ConfigError> {
        if !(1..=300).contains(&self.refresh_seconds) {
            return Err(ConfigError::field(
                "refresh_seconds",
                format!("is {}: use 1 to 300", self.refresh_seconds),
            ));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError::field(
                "public_url",
                format!("`{url}` is not an http:// or https:// address"),
            ));
        }
        fleetmon::postgres::validate_schema_name(&self.postgres.schema)?;
        self.postgres.tls_files().validate()?;
        if self.pages.is_empty() {
            return Err(ConfigError::field(
                "pages",
                "is empty: add a [[pages]] with a path, a title and [[pages.groups]]",
            ));
        }
        let mut paths = HashSet::new();
        let mut published = 0;
        for (p, page) in self.pages.iter().enumerate() {
            let at = |field: &str| format!("pages[{p}].{field}");
            let rest = page.path.strip_prefix('/');
            let legal = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
            if !rest.is_some_and(|rest| rest.len() <= 40 && rest.chars().all(legal))
                || matches!(rest, Some("api" | "badge" | "feed.atom" | "static"))
            {
                return Err(ConfigError::field(
                    &at("path"),
                    format!(
                        "`{}` is not `/` or `/NAME` (NAME: up to 40 of [a-z0-9-], not api, badge, feed.atom or static)",
                        page.path
                    ),
                ));
            }
            if !paths.insert(page.path.as_str()) {
                return Err(ConfigError::field(
                    &at("path"),
                    format!("`{}` is the path of an earlier page", page.path),
                ));
            }
            name(&at("title"), &page.title)?;
            if page.description.chars().count() > 500 {
                return Err(ConfigError::field(
                    &at("description"),
                    "is longer than 500 characters",
                ));
            }
            if page.groups.is_empty() {
                return Err(ConfigError::field(
                    &at("groups"),
                    "is empty: a page shows at least one group of checks",
                ));
            }
            let mut ids = HashSet::new();
            for (g, group) in page.groups.iter().enumerate() {
                name(&at(&format!("groups[{g}].name")), &group.name)?;
                for (c, check) in group.checks.iter().enumerate() {
                    let field = at(&format!("groups[{g}].checks[{c}]"));
                    if fleetmon::checks::definition::validate_id(&check.id).is_err() {
                        return Err(ConfigError::field(
                            &format!("{field}.id"),
                            format!(
                                "`{}` is not a check id: ids are lowercase letters, digits and `-` (`fleetmon checks list` shows them)",
                                check.id
                            ),
                        ));
                    }
                    if !ids.insert(check.id.as_str()) {
                        return Err(ConfigError::field(
                            &format!("{field}.id"),
                            format!("`{}` is already on this page", check.id),
                        ));
                    }
                    name(&format!("{field}.name"), &check.name)?;
                    published += 1;
                }
            }
        }
        if published > MAX_CHECKS {
            return Err(ConfigError::field(
                "pages",
                format!("publish {published} checks: at most {MAX_CHECKS}"),
            ));
        }
        Ok(self)
    }

    /// Every published check id, once.
    pub(crate) fn check_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .pages
            .iter()
            .flat_map(|page| &page.groups)
            .flat_map(|group| &group.checks)
            .map(|check| check.id.clone())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// A non-empty display name of at most [`MAX_NAME_CHARS`] without control characters.
fn name(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::field(field, "is empty"));
    }
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(ConfigError::field(
            field,
            format!("is longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ConfigError::field(field, "holds a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<StatusConfig, ConfigError> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        StatusConfig::load(file.path(), Vec::new())
    }

    const PAGE: &str = "[postgres]\nurl = \"postgres://r@db/fleetmon\"\n\
        [[pages]]\npath = \"/\"\ntitle = \"Status\"\n\
        [[pages.groups]]\nname = \"Web\"\nchecks = [{ id = \"shop\", name = \"Shop\" }]\n";

    #[test]
    fn the_packaged_config_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/etc/status-page.toml");
        let config = StatusConfig::load(&path, Vec::new()).unwrap();
        assert_eq!(config.check_ids(), ["api", "shop-home"]);
        assert_eq!(config.listen, default_listen());
    }

    #[test]
    fn bad_pages_are_refused_naming_the_field_and_the_fix() {
        assert!(load(PAGE).is_ok());
        let refused = |from: &str, to: &str| load(&PAGE.replace(from, to)).unwrap_err().to_string();
        assert_eq!(
            refused("path = \"/\"", "path = \"/api\""),
            "invalid config: `pages[0].path` `/api` is not `/` or `/NAME` (NAME: up to 40 of [a-z0-9-], not api, badge, feed.atom or static)"
        );
        assert_eq!(
            refused("id = \"shop\"", "id = \"Shop Home\""),
            "invalid config: `pages[0].groups[0].checks[0].id` `Shop Home` is not a check id: ids are lowercase letters, digits and `-` (`fleetmon checks list` shows them)"
        );
        assert_eq!(
            refused("name = \"Shop\"", "name = \"\""),
            "invalid config: `pages[0].groups[0].checks[0].name` is empty"
        );
        assert_eq!(
            refused("[postgres]", "refresh_seconds = 0\n[postgres]"),
            "invalid config: `refresh_seconds` is 0: use 1 to 300"
        );
        assert_eq!(
            refused("db/fleetmon", "db/fleetmon?sslmode=verify-full"),
            "invalid config: `postgres.ca` is required by sslmode=verify-full in postgres.url: set it to the CA bundle that signed the server's certificate"
        );
        let twice = format!(
            "{PAGE}[[pages]]\npath = \"/\"\ntitle = \"Again\"\n[[pages.groups]]\nname = \"W\"\nchecks = []\n"
        );
        assert_eq!(
            load(&twice).unwrap_err().to_string(),
            "invalid config: `pages[1].path` `/` is the path of an earlier page"
        );
    }
}
