//! fleetmon-writer binary.
fn main() {}
