//! fleetmon-agent binary.
fn main() {}
