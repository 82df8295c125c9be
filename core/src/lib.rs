//! s3crypt core: everything of the filter that is not the proxy-wasm shell, as plain
//! Rust that knows nothing of proxy-wasm and is tested natively (the `s3crypt` crate in
//! `wasm/` is the shell; this crate does not depend on proxy-wasm, so the compiler keeps
//! the boundary).
//!
//! - [`auth`]: SigV4 verification and signing, aws-chunked bodies, payload checksums.
//! - [`s3`]: the operation table (default deny), request parsing and the URI codec, XML,
//!   ranges, S3 errors.
//! - [`format`]: the object format (FORMAT.md): geometry, frame AAD, the streams that
//!   encrypt and decrypt, the envelope, the part table of multipart objects.
//! - [`crypto`]: AEAD suites, key wrapping, the fast AES-256-GCM for wasm.
//! - [`state`]: multipart upload records (shared data, Redis) and staged short parts.
//! - [`ops`]: the per-request state machines, one module per operation family, driven by
//!   the shell's events; [`ops::ports`] are the effects they need (clock, randomness,
//!   shared store, stats; call-outs are commands they return).
//! - [`config`]: the plugin configuration.
//! - [`predecessor`]: reading the objects of the Python predecessor (s3proxy-python).
//! - `harness` (tests, and the `harness` feature): the filter driven as Envoy drives it,
//!   against an in-memory S3 backend and webdis.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod auth;
pub mod config;
pub mod crypto;
pub mod format;
#[cfg(any(test, feature = "harness"))]
pub mod harness;
pub mod headers;
pub mod ops;
pub mod predecessor;
pub mod s3;
pub mod state;
