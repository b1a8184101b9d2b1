//! What a silence or a maintenance window matches (a check and/or an agent, each one
//! that exists), and the reason it gives.

use crate::api::error::ServiceError;

const CHECK_EXISTS: &str = include_str!("../../sql/check_exists.sql");
const AGENT_EXISTS: &str = include_str!("../../sql/agent_exists.sql");

/// Longest reason of a silence or a maintenance window, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// The reason a silence or a maintenance window gives: at most [`MAX_REASON_CHARS`].
pub fn reason(text: &str) -> Result<(), ServiceError> {
    let chars = text.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(ServiceError::invalid(format!(
            "reason is {chars} characters long: keep it to {MAX_REASON_CHARS} (link to the ticket for more)"
        )));
    }
    Ok(())
}

/// Most label pairs a maintenance window selects by.
pub const MAX_LABELS: usize = 16;

/// What a silence or a maintenance window (`what`) matches: a check and/or an agent,
/// at least one, each known; a window may give agent labels instead (`labels`, `None`
/// for a silence), each pair bounded.
pub async fn check(
    client: &deadpool_postgres::Object,
    what: &str,
    check_id: &str,
    agent_id: &str,
    labels: Option<&std::collections::HashMap<String, String>>,
) -> Result<(), ServiceError> {
    if let Some(labels) = labels {
        if labels.len() > MAX_LABELS {
            return Err(ServiceError::invalid(format!(
                "labels has {} pairs: select by at most {MAX_LABELS}",
                labels.len()
            )));
        }
        if let Some((key, value)) = fleetmon::labels::out_of_bounds(labels) {
            return Err(ServiceError::invalid(format!(
                "labels `{}={}`: a key is 1 to {} bytes, a value at most {}",
                key.chars().take(70).collect::<String>(),
                value.chars().take(70).collect::<String>(),
                fleetmon::labels::MAX_KEY_BYTES,
                fleetmon::labels::MAX_VALUE_BYTES
            )));
        }
    }
    let no_labels = labels.is_none_or(|l| l.is_empty());
    if check_id.is_empty() && agent_id.is_empty() && no_labels {
        let fields = if labels.is_some() {
            "check_id, agent_id or labels"
        } else {
            "check_id or agent_id"
        };
        return Err(ServiceError::invalid(format!(
            "{fields} is required: {what} must match something"
        )));
    }
    if !check_id.is_empty()
        && client
            .query_opt(CHECK_EXISTS, &[&check_id])
            .await?
            .is_none()
    {
        return Err(ServiceError::not_found(format!(
            "check_id: no check `{check_id}` (see `fleetmon checks list`)"
        )));
    }
    if !agent_id.is_empty()
        && client
            .query_opt(AGENT_EXISTS, &[&agent_id])
            .await?
            .is_none()
    {
        return Err(ServiceError::not_found(format!(
            "agent_id: no agent `{agent_id}` has sent data"
        )));
    }
    Ok(())
}
