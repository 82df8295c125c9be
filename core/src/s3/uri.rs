//! The one percent-codec of the filter (RFC 3986), used for paths, query strings, copy
//! sources and SigV4 canonicalisation alike, so that what the filter verifies, what it
//! acts on and what it sends upstream are decoded by the same rules.
//!
//! Decoding is strict: a `%` not followed by two hex digits is an error (S3 answers such
//! URIs with 400), never kept literally. `+` is a literal `+` (S3 paths and SigV4 do not
//! treat it as a space).

use crate::s3::error::S3Error;

fn invalid_uri() -> S3Error {
    S3Error::new(400, "InvalidURI", "Couldn't parse the specified URI.")
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes to bytes; a malformed escape is an error.
pub fn decode_bytes(s: &str) -> Result<Vec<u8>, S3Error> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let h = b.get(i + 1).copied().and_then(hexval);
            let l = b.get(i + 2).copied().and_then(hexval);
            match (h, l) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(invalid_uri()),
            }
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-decodes to UTF-8 text; malformed escapes and invalid UTF-8 are errors.
pub fn decode(s: &str) -> Result<String, S3Error> {
    String::from_utf8(decode_bytes(s)?).map_err(|_| invalid_uri())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Percent-encodes all but RFC 3986 unreserved characters (and `/` unless `encode_slash`),
/// with upper-case hex digits, as SigV4 canonicalisation requires.
pub fn encode_bytes(bytes: &[u8], encode_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if is_unreserved(b) || (!encode_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

/// [`encode_bytes`] of a string.
pub fn encode(s: &str, encode_slash: bool) -> String {
    encode_bytes(s.as_bytes(), encode_slash)
}

/// Decoded `(name, value)` pairs of a raw query string, in order. Empty components
/// (`a&&b`) are skipped; a name without `=` has an empty value.
pub fn query_pairs(q: &str) -> Result<Vec<(String, String)>, S3Error> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (k, v) = s.split_once('=').unwrap_or((s, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// The first parameter that appears more than once, if any.
pub fn duplicate_name(pairs: &[(String, String)]) -> Option<&str> {
    pairs.iter().enumerate().find_map(|(i, (k, _))| {
        pairs
            .get(..i)
            .is_some_and(|before| before.iter().any(|(b, _)| b == k))
            .then_some(k.as_str())
    })
}

/// 400 for a repeated query parameter: the filter and the backend could act on different
/// copies of it.
pub fn check_unique(pairs: &[(String, String)]) -> Result<(), S3Error> {
    match duplicate_name(pairs) {
        Some(k) => Err(S3Error::invalid_argument(format!(
            "s3crypt: query parameter {k:?} appears more than once"
        ))),
        None => Ok(()),
    }
}

/// A query string of `pairs`, each name and value encoded as SigV4 does.
pub fn encode_query(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&encode(k, true));
        out.push('=');
        out.push_str(&encode(v, true));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_decoding() {
        assert_eq!(decode("a%20b%2Fc+d%7e").unwrap(), "a b/c+d~");
        assert_eq!(decode("%E2%82%AC").unwrap(), "€");
        for bad in ["%", "%2", "%zz", "a%g0", "%C3"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
        assert!(decode_bytes("%C3").is_ok());
    }

    #[test]
    fn encoding_round_trips() {
        for s in ["a b/€/~x", "../%2e", "+&=?#", ""] {
            assert_eq!(decode(&encode(s, false)).unwrap(), s);
            assert_eq!(decode(&encode(s, true)).unwrap(), s);
        }
        assert_eq!(encode("a b/€", false), "a%20b/%E2%82%AC");
        assert_eq!(encode("a/b", true), "a%2Fb");
    }

    #[test]
    fn queries() {
        let q = query_pairs("uploads&prefix=a%2Fb&&x=").unwrap();
        assert_eq!(
            q,
            vec![
                ("uploads".into(), "".into()),
                ("prefix".into(), "a/b".into()),
                ("x".into(), "".into())
            ]
        );
        assert!(check_unique(&q).is_ok());
        let d = query_pairs("partNumber=1&uploadId=u&partNumber=2").unwrap();
        assert_eq!(duplicate_name(&d), Some("partNumber"));
        assert!(check_unique(&d).is_err());
        // The same name spelled with an escape is the same parameter.
        let d = query_pairs("versionId=1&version%49d=2").unwrap();
        assert_eq!(duplicate_name(&d), Some("versionId"));
        assert!(query_pairs("a=%zz").is_err());
        assert_eq!(encode_query(&q), "uploads=&prefix=a%2Fb&x=");
    }
}
