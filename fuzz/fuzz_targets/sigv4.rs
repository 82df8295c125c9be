//! SigV4 verification of arbitrary requests (header and presigned), with one known
//! access key and a fixed clock.
//!
//! Input: one byte (which payload hash `sign` uses, which signature byte to flip and how),
//! then a request in the `Request` text format (method, `:path`, `name:value` headers).
//!
//! - `verify` never panics, and what it accepts is the known key;
//! - the same request signed by the crate's `sign` verifies, wherever its path and query
//!   are ones `verify` can canonicalise and its header names are HTTP tokens;
//! - changing any one character of that signature makes it fail.
#![no_main]
use libfuzzer_sys::fuzz_target;
use s3crypt_core::auth::sigv4::{sign, verify};
use s3crypt_core::s3::uri;
use s3crypt_fuzz::*;

/// RFC 9110 token characters (a pseudo-header's leading `:` aside).
fn is_token(name: &str) -> bool {
    let n = name.strip_prefix(':').unwrap_or(name);
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `verify` can canonicalise the path and query (strict percent-decoding, no
/// repeated parameter); `sign` assumes it.
fn canonicalisable(raw: &str) -> bool {
    let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
    uri::decode_bytes(path).is_ok()
        && uri::query_pairs(query).is_ok_and(|q| uri::check_unique(&q).is_ok())
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, text)) = data.split_first() else {
        return;
    };
    let req = Request::parse(&String::from_utf8_lossy(text));
    let (m, p) = (req.method.as_str(), req.path.as_str());

    if let Ok(v) = verify(m, p, &req.headers, &secret_for, NOW) {
        assert_eq!(v.access_key, ACCESS_KEY);
        assert!(v.signed_headers.iter().any(|h| h == "host"));
    }

    if !canonicalisable(p) || !req.headers.iter().all(|(k, _)| is_token(k)) {
        return;
    }
    let payload = PAYLOAD_HASHES[usize::from(ctl) % PAYLOAD_HASHES.len()];
    let mut h = req.headers.clone();
    sign(m, p, &mut h, ACCESS_KEY, SECRET_KEY, REGION, NOW, payload);
    if let Err(e) = verify(m, p, &h, &secret_for, NOW) {
        panic!("a request signed by sign() does not verify: {e:?}\n{h:?}");
    }

    // Change one character of the signature (64 hex digits at the end of the header).
    let auth = h.get("authorization").unwrap().to_string();
    let at = auth.len() - 64 + usize::from(ctl >> 2) % 64;
    let mut bad = auth.into_bytes();
    bad[at] = match bad[at] {
        b'0' => b'1',
        c if ctl & 2 == 0 => c ^ 1,
        _ => b'0',
    };
    h.set("authorization", String::from_utf8(bad).unwrap());
    let e = verify(m, p, &h, &secret_for, NOW).unwrap_err();
    assert_eq!(e.code, "SignatureDoesNotMatch");
});
