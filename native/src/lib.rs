//! s3crypt as a native Envoy dynamic module: the same engine as the wasm filter
//! (`s3crypt-core`), behind Envoy 1.40's dynamic-modules C ABI instead of proxy-wasm.
//! Natively the core's AES-256-GCM is `ring`'s (AES-NI with aggregated carry-less-multiply
//! GHASH; the core's `ring` feature, checked against Wycheproof and RustCrypto), SHA-256
//! is RustCrypto's with SHA-NI (run-time detection), MD5 RustCrypto's in assembly.
//!
//! `unsafe` code lives only in [`abi`]; [`filter`] is the safe shell.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod abi;
mod filter;
