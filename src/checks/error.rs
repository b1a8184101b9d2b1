//! Why a check's definition cannot run: the field and the fix. Its own module, so the
//! kinds' validations (`definition`, `host`, `heartbeat`) share it without reaching
//! into one another.

/// A definition that cannot run: names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {message}")]
pub struct DefinitionError {
    /// Dotted path of the field, from `check`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl DefinitionError {
    /// An error of `field` (a dotted path from `check`) saying what is wrong and what
    /// to do.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        DefinitionError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}
