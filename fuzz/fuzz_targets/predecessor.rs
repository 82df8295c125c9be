//! The Python predecessor's manifests (`predecessor::Manifest::decode`) and segments
//! (`SegmentsDecryptor`), as a hostile provider would store them.
//!
//! - first byte even: the rest is a manifest body as stored (base64 of gzip); odd: the rest
//!   is the manifest's JSON, which the target gzips and encodes (so the JSON checks are
//!   reached);
//! - no panic; a manifest that decodes lists segments whose sizes add up (each `cs = ps +
//!   28`, their plaintext the manifest's total, the stored size their sum);
//! - the decoded segments fed the same bytes (split where the input says): never more
//!   plaintext than the segments hold, and nothing at all under a key no segment is sealed
//!   under.
#![no_main]
use std::io::Write as _;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use s3crypt_core::crypto::DataKey;
use s3crypt_core::format::Decrypt;
use s3crypt_core::predecessor::{Manifest, SegmentsDecryptor, SEGMENT_OVERHEAD};
use s3crypt_fuzz::OTHER_KEY;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(rest).unwrap();
        base64::engine::general_purpose::STANDARD
            .encode(e.finish().unwrap())
            .into_bytes()
    };
    let Ok(m) = Manifest::decode(&body) else {
        return;
    };
    let plain: u64 = m.segments.iter().map(|s| s.plain_len).sum();
    assert_eq!(plain, m.plain_len);
    assert!(m
        .segments
        .iter()
        .all(|s| s.plain_len + SEGMENT_OVERHEAD == s.cipher_len));
    assert_eq!(
        m.stored_len(),
        m.segments
            .iter()
            .try_fold(0u64, |a, s| a.checked_add(s.cipher_len))
    );
    let mut d = SegmentsDecryptor::new(&DataKey::from_bytes(OTHER_KEY), m.segments, 1 << 16);
    let mut out = Vec::new();
    let step = usize::from(mode / 2).max(1);
    for c in rest.chunks(step) {
        if d.push(c, &mut out).is_err() {
            break;
        }
    }
    assert!(
        out.is_empty(),
        "plaintext released under a key nothing is sealed under"
    );
});
