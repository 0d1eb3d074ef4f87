//! A Cloudflare Worker that serves the customer API in front of two Workers KV
//! namespaces and migrates every customer from the old one (`OTP_AUTH_KV`) to the new
//! one (`CUSTOMER_KV`) with zero downtime, by phases (see `docs/http-api.md`).
//!
//! Everything that decides lives in modules free of the `worker` crate and runs natively
//! under `cargo test` against [`store::MemoryStore`]; only [`platform`] (built for wasm)
//! talks to the Workers runtime.

pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod customers;
pub mod domain;
pub mod error;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod migration;
pub mod phase;
pub mod routes;
pub mod store;
pub mod time;
pub mod writes;

#[cfg(target_arch = "wasm32")]
mod platform;
