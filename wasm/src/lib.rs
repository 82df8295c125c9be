//! s3crypt: transparent client-side encryption for S3, as an Envoy proxy-wasm HTTP filter.
//!
//! This crate is only the proxy-wasm shell (`glue`, wasm32 only): the root context (its
//! configuration, metrics and the per-VM state), the HTTP context that moves headers and
//! body bytes between Envoy and an [`s3crypt_core::ops::Exchange`], and the host
//! implementations of the core's ports (clock, randomness, shared data, stats, call-outs).
//! Every decision is made in `s3crypt-core`, which is tested natively.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(target_arch = "wasm32")]
mod glue;
