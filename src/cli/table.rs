//! Plain-text tables for the terminal.

/// Prints `items` as the CLI's lists do: a JSON array of `to_json` with `--json`
/// (`json`), `empty` when there are none, else a table of `row` under `headers`.
pub(crate) fn print_list<T>(
    json: bool,
    items: &[T],
    to_json: impl Fn(&T) -> serde_json::Value,
    empty: &str,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        let values: Vec<serde_json::Value> = items.iter().map(to_json).collect();
        println!("{}", serde_json::to_string_pretty(&values)?);
    } else if items.is_empty() {
        println!("{empty}");
    } else {
        let rows: Vec<Vec<String>> = items.iter().map(row).collect();
        print!("{}", render(headers, &rows));
    }
    Ok(())
}

/// Renders rows under headers, columns padded to their widest cell.
pub(crate) fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Bytes as a short human number (KiB, MiB, GiB).
pub(crate) fn bytes(value: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = value;
    let mut unit = 0;
    while v >= 1024.0 && unit < units.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

/// How long ago `t` was, shortly: `4s`, `3m`, `2h`, `5d`.
pub(crate) fn ago(t: Option<prost_types::Timestamp>) -> String {
    let Some(t) = t.and_then(|t| std::time::SystemTime::try_from(t).ok()) else {
        return "-".to_owned();
    };
    let secs = std::time::SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// RFC 3339 text of a timestamp.
pub(crate) fn rfc3339(t: Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// `location=eu-west,role=edge`, sorted; `-` when there are none.
pub(crate) fn labels(labels: &std::collections::HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if pairs.is_empty() {
        return "-".to_owned();
    }
    pairs.sort();
    pairs.join(",")
}

/// Escapes text for HTML and XML.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A time given as RFC 3339 (`2026-12-24T22:00:00Z`), or with `dates`, also a UTC date
/// (`2026-12-24`, its midnight).
pub(crate) fn parse_time(text: &str, dates: bool) -> Result<prost_types::Timestamp, String> {
    use time::format_description::well_known::Rfc3339;
    let parsed = time::OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .or_else(|| {
            let date_format = time::macros::format_description!("[year]-[month]-[day]");
            dates
                .then(|| time::Date::parse(text, &date_format).ok())
                .flatten()
                .map(|day| day.midnight().assume_utc())
        });
    let Some(time) = parsed else {
        return Err(if dates {
            format!(
                "`{text}` is not a date or an RFC 3339 time: write e.g. 2026-11-01 or 2026-12-24T22:00:00Z"
            )
        } else {
            format!("`{text}` is not an RFC 3339 time: write e.g. 2026-12-24T22:00:00Z")
        });
    };
    Ok(prost_types::Timestamp {
        seconds: time.unix_timestamp(),
        nanos: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let table = render(
            &["AGENT", "CPU"],
            &[
                vec!["web-1".into(), "12.5%".into()],
                vec!["db".into(), "3%".into()],
            ],
        );
        assert_eq!(table, "AGENT  CPU\nweb-1  12.5%\ndb     3%\n");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
    }
}
