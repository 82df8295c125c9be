//! s3crypt: transparent client-side encryption for S3, as an Envoy proxy-wasm HTTP filter.
//!
//! Everything except `glue` is plain Rust that knows nothing of proxy-wasm and is tested
//! natively: the object format and its crypto (`format`, `crypto`), SigV4 and aws-chunked
//! (`sigv4`, `chunked`, `checksum`), the operation table, the one percent-codec and S3
//! request parsing (`s3`), XML (`xml`), range math
//! (`range`), configuration (`config`) and the per-request state machines (`engine`).
//! `glue` (wasm32 only) moves headers and body bytes between Envoy and `engine`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod checksum;
pub mod chunked;
pub mod config;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod format;
pub mod headers;
pub mod parts;
pub mod range;
pub mod s3;
pub mod sigv4;
pub mod stage;
pub mod state;
pub mod xml;

#[cfg(target_arch = "wasm32")]
mod glue;
