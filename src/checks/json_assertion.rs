//! Assertions on a JSON response body (central checks): a path into the document, a
//! comparison and an expected value, e.g. `checks[0].state == "ok"` or `queue.depth < 100`.

use std::cmp::Ordering;

use crate::pb::JsonAssertion;
use serde_json::Value;

/// One step of a path: an object key or an array index.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Exists,
}

/// A parsed assertion.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonRule {
    path: Vec<Step>,
    op: Op,
    expected: Value,
    /// As written, for messages: `checks[0].state == "ok"`.
    text: String,
}

/// Why an assertion cannot be used; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonRuleError {
    /// `op` is not a comparison fleetmon knows.
    #[error("op `{0}` is not one of ==, !=, <, <=, >, >=, exists")]
    UnknownOp(String),
    /// An ordering comparison against something that has no order.
    #[error("`{0}` cannot be ordered: compare with a number or a string")]
    Unordered(String),
    /// `a..b` or `.a`: a path step with no key.
    #[error("`{0}` has an empty key: write e.g. checks[0].state")]
    EmptyKey(String),
    /// `a[1` or `a]`.
    #[error("`{0}` has an unclosed or stray `[`")]
    Bracket(String),
    /// `a[x]`: the index is not a number.
    #[error("`{index}` in `{path}` is not an array index")]
    NotAnIndex {
        /// The bracketed text, e.g. `[x]`.
        index: String,
        /// The whole path.
        path: String,
    },
}

/// How a body breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonMismatch {
    /// The path leads nowhere in the body.
    #[error("{rule}: the body has no such value")]
    Missing {
        /// The rule as written.
        rule: String,
    },
    /// The value at the path does not compare as the rule says.
    #[error("{rule}: found {found}")]
    Found {
        /// The rule as written.
        rule: String,
        /// The value found, as JSON.
        found: String,
    },
}

fn parse_path(path: &str) -> Result<Vec<Step>, JsonRuleError> {
    let path = path.strip_prefix('$').unwrap_or(path);
    let path = path.strip_prefix('.').unwrap_or(path);
    let mut steps = Vec::new();
    if path.is_empty() {
        return Ok(steps);
    }
    for segment in path.split('.') {
        let (key, mut rest) = match segment.find('[') {
            Some(at) => segment.split_at(at),
            None => (segment, ""),
        };
        if !key.is_empty() {
            steps.push(Step::Key(key.to_owned()));
        } else if rest.is_empty() {
            return Err(JsonRuleError::EmptyKey(path.to_owned()));
        }
        while !rest.is_empty() {
            let close = rest
                .find(']')
                .filter(|_| rest.starts_with('['))
                .ok_or_else(|| JsonRuleError::Bracket(path.to_owned()))?;
            let index = rest[1..close]
                .parse::<usize>()
                .map_err(|_| JsonRuleError::NotAnIndex {
                    index: rest[..=close].to_owned(),
                    path: path.to_owned(),
                })?;
            steps.push(Step::Index(index));
            rest = &rest[close + 1..];
        }
    }
    Ok(steps)
}

impl JsonRule {
    /// Parses an assertion; the error says what is wrong with it.
    pub fn parse(assertion: &JsonAssertion) -> Result<JsonRule, JsonRuleError> {
        let op = match assertion.op.as_str() {
            "" | "==" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "exists" => Op::Exists,
            other => return Err(JsonRuleError::UnknownOp(other.to_owned())),
        };
        let expected = serde_json::from_str(&assertion.value)
            .unwrap_or_else(|_| Value::String(assertion.value.clone()));
        if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge)
            && !(expected.is_number() || expected.is_string())
        {
            return Err(JsonRuleError::Unordered(assertion.value.clone()));
        }
        let path = parse_path(&assertion.path)?;
        let text = match op {
            Op::Exists => format!("{} exists", assertion.path),
            _ => format!(
                "{} {} {}",
                assertion.path,
                if assertion.op.is_empty() {
                    "=="
                } else {
                    &assertion.op
                },
                expected
            ),
        };
        Ok(JsonRule {
            path,
            op,
            expected,
            text,
        })
    }

    /// `Err` says how `body` breaks the rule.
    pub fn check(&self, body: &Value) -> Result<(), JsonMismatch> {
        let mut node = body;
        for step in &self.path {
            let next = match step {
                Step::Key(key) => node.get(key),
                Step::Index(index) => node.get(index),
            };
            node = match next {
                Some(next) => next,
                None => {
                    return Err(JsonMismatch::Missing {
                        rule: self.text.clone(),
                    });
                }
            };
        }
        let ordering = compare(node, &self.expected);
        let holds = match self.op {
            Op::Exists => true,
            Op::Eq => ordering == Some(Ordering::Equal),
            Op::Ne => ordering != Some(Ordering::Equal),
            Op::Lt => ordering == Some(Ordering::Less),
            Op::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
            Op::Gt => ordering == Some(Ordering::Greater),
            Op::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
        };
        if holds {
            Ok(())
        } else {
            Err(JsonMismatch::Found {
                rule: self.text.clone(),
                found: node.to_string(),
            })
        }
    }
}

/// Numbers by value, strings by text, anything else only equal or not.
fn compare(found: &Value, expected: &Value) -> Option<Ordering> {
    match (found, expected) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (a, b) if a == b => Some(Ordering::Equal),
        _ => None,
    }
}

/// The first rule `body` breaks (or that it is not JSON), as a message.
pub fn first_broken(rules: &[JsonRule], body: &[u8]) -> Option<String> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(error) => return Some(format!("body is not JSON: {error}")),
    };
    rules
        .iter()
        .find_map(|rule| rule.check(&value).err())
        .map(|mismatch| mismatch.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str, op: &str, value: &str) -> JsonRule {
        JsonRule::parse(&JsonAssertion {
            path: path.into(),
            op: op.into(),
            value: value.into(),
        })
        .unwrap()
    }

    #[test]
    fn paths_comparisons_and_messages() {
        let body: Value = serde_json::from_str(
            r#"{"status":"ok","queue":{"depth":42},"checks":[{"state":"up"},{"state":"down"}]}"#,
        )
        .unwrap();
        assert_eq!(rule("status", "", "ok").check(&body), Ok(()));
        assert_eq!(rule("$.status", "==", "\"ok\"").check(&body), Ok(()));
        assert_eq!(rule("queue.depth", "<", "100").check(&body), Ok(()));
        assert_eq!(rule("queue.depth", ">=", "42.0").check(&body), Ok(()));
        assert_eq!(rule("checks[1].state", "!=", "up").check(&body), Ok(()));
        assert_eq!(rule("checks[0]", "exists", "").check(&body), Ok(()));
        assert_eq!(
            rule("checks[1].state", "==", "up")
                .check(&body)
                .unwrap_err()
                .to_string(),
            r#"checks[1].state == "up": found "down""#
        );
        assert_eq!(
            rule("queue.size", "<", "10")
                .check(&body)
                .unwrap_err()
                .to_string(),
            "queue.size < 10: the body has no such value"
        );
        assert_eq!(
            first_broken(&[rule("a", "", "1")], b"<html>"),
            Some("body is not JSON: expected value at line 1 column 1".to_owned())
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        let parse = |path: &str, op: &str, value: &str| {
            JsonRule::parse(&JsonAssertion {
                path: path.into(),
                op: op.into(),
                value: value.into(),
            })
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            parse("a", "~=", "1"),
            "op `~=` is not one of ==, !=, <, <=, >, >=, exists"
        );
        assert_eq!(
            parse("a[x]", "", "1"),
            "`[x]` in `a[x]` is not an array index"
        );
        assert_eq!(
            parse("a", "<", "true"),
            "`true` cannot be ordered: compare with a number or a string"
        );
        assert_eq!(parse("a[1", "", "1"), "`a[1` has an unclosed or stray `[`");
        assert_eq!(
            parse("a..b", "", "1"),
            "`a..b` has an empty key: write e.g. checks[0].state"
        );
    }
}
