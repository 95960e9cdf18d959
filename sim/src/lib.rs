//! The deterministic network simulator: the real client component, a broker model and a
//! fault timeline inside one turmoil simulation, replayed from a scenario file and a seed.
//!
//! - [`scenario`]: the TOML schema and its validation;
//! - [`runner`]: one run (build, replay, check) and its [`runner::Outcome`];
//! - [`broker`]: the broker host: the project's broker model over turmoil TCP;
//! - [`device`] / [`platform`]: the component on simulated sockets, clock and WiFi;
//! - [`observer`]: the subscriber client that records what reaches the other side;
//! - [`report`]: the timeline summary and the HTML report;
//! - [`junit`]: a sweep as a JUnit XML report;
//! - [`shard`]: a sweep split across machines, and put back together;
//! - [`explore`]: a search for scenarios that break the client, shrunk to minimal files.

pub mod broker;
pub mod device;
pub mod explore;
pub mod flash;
pub mod junit;
pub mod observer;
pub mod platform;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod shard;
pub mod world;
