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

/// What a silence or a maintenance window (`what`) matches: a check and/or an agent,
/// at least one, each known.
pub async fn check(
    client: &deadpool_postgres::Object,
    what: &str,
    check_id: &str,
    agent_id: &str,
) -> Result<(), ServiceError> {
    if check_id.is_empty() && agent_id.is_empty() {
        return Err(ServiceError::invalid(format!(
            "check_id or agent_id is required: {what} must match something"
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
