//! The plain sites file of earlier tools: `URL INTERVAL_SECONDS [REGEX]` per line.

use std::path::Path;

use fleetmon::checks::SiteConfig;
use fleetmon::checks::pattern::Patterns;

/// Why a sites file was refused: names the file, the line and the problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{path}:{line}: {message}")]
pub struct SitesFileError {
    /// The file.
    pub path: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses the plain format earlier tools used: `URL INTERVAL_SECONDS [REGEX]` per
/// line; blank lines and lines starting with `#` are skipped; the regex is the rest
/// of the line (it may contain spaces).
pub fn parse_sites_file(path: &Path, text: &str) -> Result<Vec<SiteConfig>, SitesFileError> {
    let mut sites = Vec::new();
    // Checks each distinct pattern once, however many lines repeat it.
    let mut patterns = Patterns::default();
    for (index, raw) in text.lines().enumerate() {
        let error = |message: String| SitesFileError {
            path: path.display().to_string(),
            line: index + 1,
            message,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, char::is_whitespace);
        let url = parts.next().unwrap_or_default();
        let interval = parts.next().map(str::trim).unwrap_or_default();
        if interval.is_empty() {
            return Err(error(format!(
                "expected `URL INTERVAL_SECONDS [REGEX]`, found only `{url}`"
            )));
        }
        if reqwest::Url::parse(url).map(|u| matches!(u.scheme(), "http" | "https")) != Ok(true) {
            return Err(error(format!("`{url}` is not an http:// or https:// URL")));
        }
        let interval: u64 = match interval.parse() {
            Ok(seconds) if seconds > 0 => seconds,
            _ => {
                return Err(error(format!(
                    "interval `{interval}` is not a positive whole number of seconds"
                )));
            }
        };
        let regex = parts
            .next()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned);
        if let Some(pattern) = &regex
            && let Err(e) = patterns.get(pattern)
        {
            return Err(error(format!("regex `{pattern}` is invalid: {e}")));
        }
        sites.push(SiteConfig {
            interval_seconds: Some(interval),
            regex,
            ..SiteConfig::get(url)
        });
    }
    Ok(sites)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_format_of_earlier_tools_is_read() {
        let text =
            "# checks\nhttps://a.example/ 30\n\nhttp://b.example/health 5 status: (ok|fine) now\n";
        let sites = parse_sites_file(Path::new("sites.txt"), text).unwrap();
        assert_eq!(sites.len(), 2);
        assert_eq!(
            (
                sites[0].url.as_str(),
                sites[0].interval_seconds,
                sites[0].regex.as_deref()
            ),
            ("https://a.example/", Some(30), None)
        );
        assert_eq!(sites[1].regex.as_deref(), Some("status: (ok|fine) now"));
        assert_eq!(sites[1].interval_seconds, Some(5));
    }

    #[test]
    fn a_bad_line_is_named() {
        let cases = [
            (
                "https://a.example/ 30\nftp://x 10\n",
                2,
                "`ftp://x` is not an http:// or https:// URL",
            ),
            (
                "https://a.example/\n",
                1,
                "expected `URL INTERVAL_SECONDS [REGEX]`, found only `https://a.example/`",
            ),
            (
                "\n\nhttps://a.example/ ten\n",
                3,
                "interval `ten` is not a positive whole number of seconds",
            ),
            (
                "https://a.example/ 0\n",
                1,
                "interval `0` is not a positive whole number of seconds",
            ),
        ];
        for (text, line, message) in cases {
            let error = parse_sites_file(Path::new("/etc/fleetmon/sites.txt"), text).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("/etc/fleetmon/sites.txt:{line}: {message}")
            );
        }
        let error =
            parse_sites_file(Path::new("s"), "https://a.example/ 5 (unclosed\n").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("s:1: regex `(unclosed` is invalid: "),
            "{error}"
        );
    }
}
