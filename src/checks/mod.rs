//! The check model, shared by the agent (which runs checks), the collector (which
//! validates central checks before it accepts them) and the CLI: one check as written
//! in an agent's file ([`SiteConfig`]), written by an operator ([`spec::CheckSpec`]) and
//! sent to the `Checks` service ([`crate::pb::CheckDefinition`]), and the one shape both become when they are
//! valid, ready to run ([`Site`]). An operator hears about a bad regex from the API,
//! not from the fleet, because both paths end in the same validation.
//!
//! - [`site`]: [`SiteConfig`] and its validation into a [`Site`];
//! - [`definition`]: a `CheckDefinition` (HTTP, TCP, DNS) into a [`Site`];
//! - [`heartbeat`]: push checks, pinged by jobs rather than run by agents;
//! - [`cron`]: when a heartbeat's job is expected, in its time zone;
//! - [`host`]: checks an agent runs about its own host (process, systemd, file, disk);
//! - [`pattern`]: regexes compiled once with bounded size and shared;
//! - [`json_assertion`]: conditions on a JSON body;
//! - [`spec`]: a central check as an operator writes it (`checks.toml`, CLI flags),
//!   to and from a `CheckDefinition`.

pub mod cron;
pub mod definition;
pub mod error;
pub mod heartbeat;
pub mod host;
pub mod json_assertion;
pub mod pattern;
pub mod site;
pub mod spec;

pub use definition::{
    DefinitionError, interval_seconds, kind_and_target, site_from_definition, validate_id,
};
pub use site::{CheckRef, METHODS, Probe, ProbeDefaults, Site, SiteConfig, StatusSpec};
