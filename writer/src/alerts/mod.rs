//! Alerts: [`rules`] decides from tallies, [`store`] moves the alert state inside
//! each batch's transaction, [`timed_rules`] decides what time alone can tell, and
//! [`notifier`] delivers the outbox, each channel sent what [`channels`] makes.

pub mod channels;
pub mod email;
pub mod notifier;
pub mod rules;
pub mod sender;
pub mod store;
pub mod template;
pub mod timed_rules;
