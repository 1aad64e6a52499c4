//! End-to-end scenarios, one module each, in one test binary.

mod behind_proxy;
mod console_browser;
mod hostile;
mod insider;
mod integrity;
mod network_faults;
mod nodes;
mod offline_devices;
mod restore;
mod retention;
mod review_sync;
mod server_sync;
