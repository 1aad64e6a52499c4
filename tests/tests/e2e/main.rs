//! End-to-end scenarios, one module each, in one test binary.

mod console_browser;
mod offline_devices;
mod server_sync;
