//! Secrets kept out of logs, errors and answers: what identifies a service stays
//! readable, what grants access to it does not.

/// What a secret is shown as.
pub const HIDDEN: &str = "…";

/// What a secret check header value is shown as; sent back in an update, it keeps the
/// stored value.
pub const SECRET: &str = "•••";

/// A URL with only what identifies the service: scheme, host and port. A path becomes
/// `/…`; user info, query and fragment are dropped. Slack's incoming-webhook URL
/// carries its secret in the path: `https://hooks.slack.com/services/T0/B0/XYZ` is
/// shown as `https://hooks.slack.com/…`. Text that is not a URL is hidden whole.
pub fn url(text: &str) -> String {
    let Ok(parsed) = url::Url::parse(text) else {
        return HIDDEN.to_owned();
    };
    let Some(host) = parsed.host_str() else {
        return format!("{}:{HIDDEN}", parsed.scheme());
    };
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let rest = if parsed.path() == "/" && parsed.query().is_none() {
        ""
    } else {
        "/…"
    };
    format!("{}://{host}{port}{rest}", parsed.scheme())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_service_and_lose_their_secrets() {
        assert_eq!(
            url("https://hooks.slack.com/services/T0/B0/XYZsecret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            url("http://user:pw@10.0.0.7:9093/api?token=abc#x"),
            "http://10.0.0.7:9093/…"
        );
        assert_eq!(url("https://example.com/"), "https://example.com");
        assert_eq!(
            url("https://example.com/?k=secret"),
            "https://example.com/…"
        );
        assert_eq!(url("not a url with a secret"), "…");
        assert_eq!(url("mailto:ops@example.com"), "mailto:…");
    }
}
