//! What every ShopLens domain service shares, so that a service crate holds only its domain.
//!
//! - [`config`]: layered configuration (defaults, file, `SHOPLENS_...` environment);
//! - [`telemetry`]: tracing set-up;
//! - [`http`]: the JSON error type, validated extractors, middleware and the standard
//!   endpoints (`/health`, `/metrics`, `/openapi.json`);
//! - [`db`]: SQLite pools and migrations;
//! - [`outbox`]: writing events in the state change's transaction, and the relay that
//!   publishes them;
//! - [`idempotency`]: replaying the response to a retried write;
//! - [`service`]: starting and stopping a service;
//! - [`client`]: calling another service; [`balance`]: spreading the calls over its
//!   replicas, each behind a circuit breaker;
//! - [`clock`]: the time a service stamps its records with (the system's, or the demo's);
//! - [`identity`] and [`access`]: one identity scheme for every server (bearer tokens with
//!   a subject and a role), and the access rule of every endpoint;
//! - [`Error`]: what the kit's fallible functions return.

pub mod access;
pub mod balance;
pub mod client;
pub mod clock;
pub mod config;
pub mod db;
mod error;
pub mod http;
pub mod idempotency;
pub mod identity;
pub mod ledger;
pub mod metrics;
pub mod outbox;
pub mod service;
pub mod telemetry;

pub use error::Error;
pub use http::{ApiError, ValidJson, ValidQuery};
pub use service::{Deps, ServiceContext, ServiceHandle, ServiceSpec, shutdown_signal};
/// The OpenAPI library the servers describe their endpoints with (`/openapi.json`), for the
/// crates that reach it only through the kit (the composer, ingest, analytics).
pub use utoipa;
