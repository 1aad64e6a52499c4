//! Harness for Baylink's end-to-end scenarios: real mobile-core devices on temporary files, with
//! clocks the scenario controls. Later the same harness starts a real server on loopback.

pub mod browser;
pub mod fault_proxy;
pub mod harness;
pub mod raw_http;
pub mod sim;
pub mod slow_link;
