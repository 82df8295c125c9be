//! S3 requests as the filter sees them: the operation table ([`table`]), the one
//! percent-codec ([`uri`]), and the parsing of method, path and Host into an
//! [`S3Request`] with a bucket and key the backend cannot resolve differently.

pub mod error;
pub mod range;
pub mod table;
pub mod uri;
pub mod xml;

use crate::headers::Headers;
use crate::s3::error::S3Error;
pub use table::{Body, Doc, Level, OpSpec, Response};
pub use uri::{decode as uri_decode, encode as uri_encode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ListBuckets,
    /// Any other bucket-level operation (create/delete/head bucket, configurations).
    BucketOp,
    ListObjectsV1,
    ListObjectsV2,
    ListObjectVersions,
    ListMultipartUploads,
    DeleteObjects,
    PutObject,
    CopyObject,
    GetObject,
    HeadObject,
    DeleteObject,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    /// Answered by the filter from the object's HEAD (and part table).
    GetObjectAttributes,
    /// Object subresources that carry no object data (tagging, acl, retention, ...).
    ObjectSubresource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Request {
    pub op: Operation,
    /// The table entry the request matched.
    pub spec: OpSpec,
    pub bucket: Option<String>,
    /// Percent-decoded object key.
    pub key: Option<String>,
    /// Decoded query parameters (no presign parameters, no duplicates).
    pub query: Vec<(String, String)>,
    /// The bucket came from the Host header (virtual-hosted style).
    pub virtual_host: bool,
}

impl S3Request {
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn has_param(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }

    /// The upstream `:path`, rebuilt from what was parsed: path style, bucket and key
    /// encoded by [`uri::encode`], the query parameters re-encoded in their order.
    pub fn upstream_path(&self) -> String {
        let mut p = String::from("/");
        if let Some(b) = &self.bucket {
            p.push_str(&uri::encode(b, true));
            if let Some(k) = &self.key {
                p.push('/');
                p.push_str(&uri::encode(k, false));
            }
        }
        if !self.query.is_empty() {
            p.push('?');
            p.push_str(&uri::encode_query(&self.query));
        }
        p
    }
}

/// Longest object key S3 accepts (bytes).
pub const MAX_KEY_LEN: usize = 1024;

fn unsafe_key() -> S3Error {
    S3Error::invalid_request(
        "s3crypt: object keys with \".\" or \"..\" segments, empty segments or control characters are refused (the backend could resolve them to another object)",
    )
}

/// An object key the backend stores under exactly this name: no `.` or `..` segment, no
/// empty segment (`a//b`, a leading `/`; a trailing `/` is a folder marker and allowed),
/// no control character, at most [`MAX_KEY_LEN`] bytes. Applied to decoded keys, so
/// percent-encoded dot segments (`%2e%2e`) are refused too.
pub fn check_key(key: &str) -> Result<(), S3Error> {
    if key.len() > MAX_KEY_LEN {
        return Err(S3Error::new(400, "KeyTooLongError", "Your key is too long"));
    }
    if key.chars().any(|c| c.is_control()) {
        return Err(unsafe_key());
    }
    let segs: Vec<&str> = key.split('/').collect();
    let last = segs.len().saturating_sub(1);
    for (i, s) in segs.iter().enumerate() {
        if *s == "." || *s == ".." || (s.is_empty() && i != last) {
            return Err(unsafe_key());
        }
    }
    Ok(())
}

/// A listing parameter that names keys (`prefix`, `marker`, `start-after`, `key-marker`):
/// no `.` or `..` segment (complete or final) and no control character, so that a
/// backend that maps keys to paths cannot be walked out of the bucket.
pub fn check_key_prefix(p: &str) -> Result<(), S3Error> {
    if p.chars().any(|c| c.is_control()) || p.split('/').any(|s| s == "." || s == "..") {
        return Err(unsafe_key());
    }
    Ok(())
}

/// Listing parameters that hold (parts of) keys.
const KEY_PARAMS: &[&str] = &["prefix", "marker", "start-after", "key-marker"];

/// A bucket name the filter can place in a path unambiguously: 1–255 of `[A-Za-z0-9._-]`
/// (S3's rules, with the legacy upper case and underscore), not `.` or `..`.
pub fn check_bucket(bucket: &str) -> Result<(), S3Error> {
    let ok = !bucket.is_empty()
        && bucket.len() <= 255
        && bucket != "."
        && bucket != ".."
        && bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(S3Error::new(
            400,
            "InvalidBucketName",
            "The specified bucket is not valid.",
        ))
    }
}

/// `x-amz-copy-source`: `[/]bucket/key[?versionId=v]`, URL-encoded; bucket and key are
/// held to the same rules as a request's.
pub fn parse_copy_source(v: &str) -> Result<(String, String, Option<String>), S3Error> {
    let bad =
        || S3Error::invalid_argument("Invalid copy source: x-amz-copy-source must be bucket/key");
    let v = v.trim();
    let (path, query) = match v.split_once('?') {
        Some((p, q)) => (p, q),
        None => (v, ""),
    };
    let path = uri::decode(path.strip_prefix('/').unwrap_or(path))?;
    let (bucket, key) = path.split_once('/').ok_or_else(bad)?;
    if bucket.is_empty() || key.is_empty() {
        return Err(bad());
    }
    check_bucket(bucket)?;
    check_key(key)?;
    let q = uri::query_pairs(query)?;
    uri::check_unique(&q)?;
    if q.iter().any(|(k, _)| k != "versionId") {
        return Err(S3Error::invalid_argument(
            "Invalid copy source: only versionId may follow the key",
        ));
    }
    let version = q.into_iter().next().map(|(_, v)| v);
    Ok((bucket.to_string(), key.to_string(), version))
}

/// The canonical `x-amz-copy-source` value for a parsed copy source.
pub fn copy_source_value(bucket: &str, key: &str, version: Option<&str>) -> String {
    let mut s = format!("/{}/{}", uri::encode(bucket, true), uri::encode(key, false));
    if let Some(v) = version {
        s.push_str("?versionId=");
        s.push_str(&uri::encode(v, true));
    }
    s
}

/// Parses method, `:path` (without presign parameters) and Host into an [`S3Request`]
/// of a known operation; anything else is an error (501 for unknown operations).
pub fn parse_request(
    method: &str,
    raw_path_and_query: &str,
    headers: &Headers,
    virtual_host_suffixes: &[String],
) -> Result<S3Request, S3Error> {
    let (raw_path, raw_query) = raw_path_and_query
        .split_once('?')
        .unwrap_or((raw_path_and_query, ""));
    let query = uri::query_pairs(raw_query)?;
    uri::check_unique(&query)?;
    let host = headers
        .get(":authority")
        .or_else(|| headers.get("host"))
        .unwrap_or("");
    let host = host
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(host);
    // Host names compare case-insensitively.
    let host = host.to_ascii_lowercase();
    let vhost_bucket = virtual_host_suffixes.iter().find_map(|s| {
        host.strip_suffix(s.to_ascii_lowercase().as_str())
            .and_then(|b| b.strip_suffix('.'))
            .filter(|b| !b.is_empty())
            .map(str::to_string)
    });
    // Split first, then decode each part: an encoded `/` in the bucket is not a separator.
    let p = raw_path
        .strip_prefix('/')
        .ok_or_else(|| S3Error::new(400, "InvalidURI", "Couldn't parse the specified URI."))?;
    let some_key = |k: &str| -> Result<Option<String>, S3Error> {
        (!k.is_empty()).then(|| uri::decode(k)).transpose()
    };
    let (bucket, key, virtual_host) = match vhost_bucket {
        Some(b) => (Some(b), some_key(p)?, true),
        None => match p.split_once('/') {
            Some((b, k)) => (Some(uri::decode(b)?), some_key(k)?, false),
            None if p.is_empty() => (None, None, false),
            None => (Some(uri::decode(p)?), None, false),
        },
    };
    if let Some(b) = &bucket {
        check_bucket(b)?;
    }
    if let Some(k) = &key {
        check_key(k)?;
    }
    let level = match (&bucket, &key) {
        (None, _) => Level::Service,
        (Some(_), None) => Level::Bucket,
        (Some(_), Some(_)) => Level::Object,
    };
    let names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
    let copy = headers.contains("x-amz-copy-source");
    let spec = table::lookup(method, level, &names, copy).ok_or_else(|| {
        S3Error::not_implemented(
            "s3crypt: this operation is not supported by the encryption proxy and was refused",
        )
    })?;
    for (k, v) in &query {
        if KEY_PARAMS.contains(&k.as_str()) {
            check_key_prefix(v)?;
        }
    }
    if spec.op == Operation::ListObjectsV2
        && query.iter().any(|(k, v)| k == "list-type" && v != "2")
    {
        return Err(S3Error::invalid_argument("list-type must be 2"));
    }
    Ok(S3Request {
        op: spec.op,
        spec,
        bucket,
        key,
        query,
        virtual_host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: &str, path: &str, host: &str, copy: bool) -> Result<S3Request, S3Error> {
        let mut h = Headers::new();
        h.set(":authority", host);
        if copy {
            h.set("x-amz-copy-source", "/src/key");
        }
        parse_request(method, path, &h, &["s3.local".to_string()])
    }

    fn classify(method: &str, path: &str, host: &str, copy: bool) -> S3Request {
        parse(method, path, host, copy).unwrap()
    }

    #[test]
    fn operations_path_style() {
        use Operation::*;
        let cases = [
            ("GET", "/", false, ListBuckets),
            ("PUT", "/b", false, BucketOp),
            ("PUT", "/b/", false, BucketOp),
            ("HEAD", "/b", false, BucketOp),
            ("GET", "/b?location", false, BucketOp),
            ("GET", "/b?versioning", false, BucketOp),
            ("PUT", "/b?policy", false, BucketOp),
            ("GET", "/b", false, ListObjectsV1),
            ("GET", "/b/?prefix=a&delimiter=%2F", false, ListObjectsV1),
            ("GET", "/b?list-type=2&max-keys=2", false, ListObjectsV2),
            ("GET", "/b?versions", false, ListObjectVersions),
            ("GET", "/b?uploads", false, ListMultipartUploads),
            ("POST", "/b?delete", false, DeleteObjects),
            ("PUT", "/b/k", false, PutObject),
            ("PUT", "/b/k?x-id=PutObject", false, PutObject),
            ("PUT", "/b/k", true, CopyObject),
            ("GET", "/b/k", false, GetObject),
            ("GET", "/b/k?partNumber=2", false, GetObject),
            ("GET", "/b/k?response-content-type=a", false, GetObject),
            ("HEAD", "/b/k", false, HeadObject),
            ("DELETE", "/b/k", false, DeleteObject),
            ("DELETE", "/b/k?versionId=3", false, DeleteObject),
            ("POST", "/b/k?uploads", false, CreateMultipartUpload),
            ("PUT", "/b/k?partNumber=1&uploadId=u", false, UploadPart),
            ("PUT", "/b/k?partNumber=1&uploadId=u", true, UploadPartCopy),
            ("POST", "/b/k?uploadId=u", false, CompleteMultipartUpload),
            ("DELETE", "/b/k?uploadId=u", false, AbortMultipartUpload),
            ("GET", "/b/k?uploadId=u", false, ListParts),
            ("PUT", "/b/k?tagging", false, ObjectSubresource),
            ("GET", "/b/k?acl", false, ObjectSubresource),
            ("GET", "/b/k?attributes", false, GetObjectAttributes),
            (
                "GET",
                "/b/k?attributes&versionId=v",
                false,
                GetObjectAttributes,
            ),
        ];
        for (m, p, copy, want) in cases {
            assert_eq!(classify(m, p, "127.0.0.1:8080", copy).op, want, "{m} {p}");
        }
    }

    /// The bypasses of the request-boundary issue: unknown or data-bearing subresources
    /// are 501, whatever else the query holds.
    #[test]
    fn refused_operations() {
        for (m, p, copy) in [
            ("PUT", "/b/k?torrent", false),
            ("PUT", "/b/k?restore", false),
            ("PUT", "/b/k?attributes", false),
            ("PUT", "/b/k?x-id=PutObject&torrent", false),
            ("GET", "/b/k?restore", false),
            ("GET", "/b/k?torrent", false),
            ("HEAD", "/b/k?torrent", false),
            ("POST", "/b/k?restore", false),
            ("POST", "/b/k?select&select-type=2", false),
            ("PUT", "/b/k?unknown-thing", false),
            ("POST", "/b", false),
            ("POST", "/b/k", false),
            ("PUT", "/", false),
            ("PUT", "/b/k?tagging", true),
            ("PUT", "/b?tagging", true),
            ("GET", "/b/k?uploadId=u&partNumber=1", false),
            ("PATCH", "/b/k", false),
            ("OPTIONS", "/b/k", false),
            ("GET", "/b?list-type=2&metadata=true", false),
        ] {
            let e = parse(m, p, "h", copy).unwrap_err();
            assert_eq!((e.status, e.code), (501, "NotImplemented"), "{m} {p}");
        }
        assert_eq!(
            parse("GET", "/b?list-type=1", "h", false)
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn duplicate_parameters_are_refused() {
        for p in [
            "/b/k?partNumber=1&uploadId=u&partNumber=2",
            "/b/k?partNumber=1&uploadId=u&uploadId=v",
            "/b/k?versionId=1&versionId=2",
            "/b/k?versionId=1&version%49d=2",
            "/b?list-type=2&prefix=a&prefix=b",
        ] {
            let e = parse("GET", p, "h", false)
                .or_else(|_| parse("PUT", p, "h", false))
                .unwrap_err();
            assert_eq!((e.status, e.code), (400, "InvalidArgument"), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_unsafe_keys_are_refused() {
        for p in [
            "/b/x/../k",
            "/b/./k",
            "/other/../b/k",
            "/b/k/..",
            "/b/k/.",
            "/b/%2e%2e/k",
            "/b/x/%2E/k",
            "/b/x%2F..%2Fk",
            "/b//k",
            "/b/a//k",
            "/b/a%00b",
            "/b/a%0Ab",
            "/../b/k",
            "/./k",
            "/b%2Fc/k",
        ] {
            let e = parse("GET", p, "h", false).unwrap_err();
            assert_eq!(e.status, 400, "{p}");
        }
        let e = parse("GET", &format!("/b/{}", "k".repeat(1025)), "h", false).unwrap_err();
        assert_eq!(e.code, "KeyTooLongError");
        // Dots inside a segment and a trailing slash are ordinary keys.
        for (p, k) in [
            ("/b/a.b/..c/d..", "a.b/..c/d.."),
            ("/b/dir/", "dir/"),
            ("/b/.hidden", ".hidden"),
        ] {
            assert_eq!(classify("GET", p, "h", false).key.as_deref(), Some(k));
        }
        assert!(parse("GET", "/b/%zz", "h", false).is_err());
        assert!(parse("GET", "b/k", "h", false).is_err());
    }

    #[test]
    fn keys_and_virtual_hosts() {
        let r = classify("GET", "/b/a%20b/c+d/%E2%82%AC/", "127.0.0.1:8080", false);
        assert_eq!(
            (r.bucket.as_deref(), r.key.as_deref(), r.virtual_host),
            (Some("b"), Some("a b/c+d/€/"), false)
        );
        assert_eq!(r.upstream_path(), "/b/a%20b/c%2Bd/%E2%82%AC/");
        let r = classify("PUT", "/dir/file", "photos.s3.local:8080", false);
        assert_eq!(
            (r.bucket.as_deref(), r.key.as_deref(), r.virtual_host, r.op),
            (Some("photos"), Some("dir/file"), true, Operation::PutObject)
        );
        assert_eq!(r.upstream_path(), "/photos/dir/file");
        let r = classify("GET", "/?list-type=2&prefix=a/b", "photos.s3.local", false);
        assert_eq!(
            (r.bucket.as_deref(), r.op),
            (Some("photos"), Operation::ListObjectsV2)
        );
        assert_eq!(r.upstream_path(), "/photos?list-type=2&prefix=a%2Fb");
        let r = classify("GET", "/photos/..x", "photos.s3.local", false);
        assert_eq!(r.key.as_deref(), Some("photos/..x"));
        assert!(parse("GET", "/..", "photos.s3.local", false).is_err());
    }

    #[test]
    fn copy_source() {
        assert_eq!(
            parse_copy_source("/b/a%20b").unwrap(),
            ("b".into(), "a b".into(), None)
        );
        assert_eq!(
            parse_copy_source("b/k/x?versionId=3").unwrap(),
            ("b".into(), "k/x".into(), Some("3".into()))
        );
        assert!(parse_copy_source("/b").is_err());
        for bad in [
            "/b/x/../secret",
            "/b/%2e%2e/secret",
            "/b//k",
            "/../b/k",
            "/b/k?versionId=1&versionId=2",
            "/b/k?other=1",
            "/b/%zz",
        ] {
            assert!(parse_copy_source(bad).is_err(), "{bad}");
        }
        assert_eq!(
            copy_source_value("b", "a b/€", Some("v 1")),
            "/b/a%20b/%E2%82%AC?versionId=v%201"
        );
    }

    #[test]
    fn listing_prefixes_cannot_walk_out() {
        for p in [
            "/b?prefix=../other",
            "/b?list-type=2&start-after=a/../../x",
            "/b?marker=.",
            "/b?versions&key-marker=x/..",
            "/b?prefix=a%00b",
        ] {
            assert_eq!(parse("GET", p, "h", false).unwrap_err().status, 400, "{p}");
        }
        for p in [
            "/b?prefix=.hidden/",
            "/b?prefix=a..b/",
            "/b?prefix=dir/.x",
            "/b?prefix=",
        ] {
            assert!(parse("GET", p, "h", false).is_ok(), "{p}");
        }
        // Virtual-hosted names compare case-insensitively.
        let r = classify("GET", "/k", "PHOTOS.S3.Local:8080", false);
        assert_eq!(
            (r.bucket.as_deref(), r.key.as_deref()),
            (Some("photos"), Some("k"))
        );
    }
}
