//! A webhook's `body_template`: `{{name}}` placeholders replaced by values written as
//! JSON string content (quotes, backslashes and control characters escaped), so a
//! template that is JSON with its placeholders inside strings stays JSON whatever the
//! values hold.

/// `template` with each `{{name}}` of `values` replaced; unknown names are left as
/// they are.
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        // A JSON string of `value`, without its quotes.
        let quoted = serde_json::Value::from(*value).to_string();
        let inner = &quoted[1..quoted.len() - 1];
        out = out.replace(&format!("{{{{{name}}}}}"), inner);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_string_content_so_the_body_stays_json() {
        let body = render(
            r#"{"text": "{{title}}\n{{text}}", "n": {{count}}}"#,
            &[
                ("title", "fleetmon: [opened] check_down shop"),
                ("text", "cause: \"503\" \\ <b>\nnext"),
                ("count", "2"),
            ],
        );
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json["text"],
            "fleetmon: [opened] check_down shop\ncause: \"503\" \\ <b>\nnext"
        );
        assert_eq!(json["n"], 2);
    }
}
