//! Classifies S3 requests (path-style and virtual-hosted-style) into the operations the
//! filter treats differently.

use crate::error::S3Error;
use crate::headers::Headers;
use crate::sigv4::query_pairs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ListBuckets,
    /// Any other bucket-level request (create/delete/head bucket, bucket subresources).
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
    /// Object subresources that carry no object data (tagging, acl, retention, ...).
    ObjectSubresource,
    /// Requests that would read or write object data around the encryption.
    Unsupported,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Request {
    pub op: Operation,
    pub bucket: Option<String>,
    /// Percent-decoded object key.
    pub key: Option<String>,
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
}

/// Object subresources that neither carry nor return object data.
const OBJECT_SUBRESOURCES: &[&str] = &[
    "tagging",
    "acl",
    "retention",
    "legal-hold",
    "torrent",
    "restore",
    "attributes",
];

/// Percent-decodes a path or query component (`+` stays `+`).
pub fn uri_decode(s: &str) -> Result<String, S3Error> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let h = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(h.ok_or_else(|| {
                S3Error::new(400, "InvalidURI", "Couldn't parse the specified URI.")
            })?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| S3Error::new(400, "InvalidURI", "Couldn't parse the specified URI."))
}

/// Percent-encodes all but RFC 3986 unreserved characters (and `/` unless `encode_slash`).
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (!encode_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `x-amz-copy-source`: `[/]bucket/key[?versionId=v]`, URL-encoded.
pub fn parse_copy_source(v: &str) -> Result<(String, String, Option<String>), S3Error> {
    let bad =
        || S3Error::invalid_argument("Invalid copy source: x-amz-copy-source must be bucket/key");
    let v = v.trim();
    let (path, query) = match v.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (v, None),
    };
    let path = uri_decode(path.trim_start_matches('/'))?;
    let (bucket, key) = path.split_once('/').ok_or_else(bad)?;
    if bucket.is_empty() || key.is_empty() {
        return Err(bad());
    }
    let version = query.and_then(|q| {
        query_pairs(q)
            .into_iter()
            .find(|(k, _)| k == "versionId")
            .map(|(_, v)| v)
    });
    Ok((bucket.to_string(), key.to_string(), version))
}

/// Parses method, `:path` and Host into an [`S3Request`].
pub fn parse_request(
    method: &str,
    raw_path_and_query: &str,
    headers: &Headers,
    virtual_host_suffixes: &[String],
) -> Result<S3Request, S3Error> {
    let (raw_path, raw_query) = raw_path_and_query
        .split_once('?')
        .unwrap_or((raw_path_and_query, ""));
    let query = query_pairs(raw_query);
    let path = uri_decode(raw_path)?;
    let host = headers
        .get(":authority")
        .or_else(|| headers.get("host"))
        .unwrap_or("");
    let host = host
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(host);
    let vhost_bucket = virtual_host_suffixes.iter().find_map(|s| {
        host.strip_suffix(s.as_str())
            .and_then(|b| b.strip_suffix('.'))
            .filter(|b| !b.is_empty())
            .map(str::to_string)
    });
    let (bucket, key, virtual_host) = match vhost_bucket {
        Some(b) => {
            let k = path.strip_prefix('/').unwrap_or(&path);
            (Some(b), (!k.is_empty()).then(|| k.to_string()), true)
        }
        None => {
            let p = path.strip_prefix('/').unwrap_or(&path);
            match p.split_once('/') {
                Some((b, k)) => (
                    Some(b.to_string()),
                    (!k.is_empty()).then(|| k.to_string()),
                    false,
                ),
                None if p.is_empty() => (None, None, false),
                None => (Some(p.to_string()), None, false),
            }
        }
    };
    let has = |n: &str| query.iter().any(|(k, _)| k == n);
    let copy = headers.get("x-amz-copy-source").is_some();
    let op = match (&bucket, &key) {
        (None, _) => match method {
            "GET" => Operation::ListBuckets,
            _ => Operation::Unsupported,
        },
        (Some(_), None) => match method {
            "GET" if has("uploads") => Operation::ListMultipartUploads,
            "GET" if has("versions") => Operation::ListObjectVersions,
            "GET" if query.iter().any(|(k, v)| k == "list-type" && v == "2") => {
                Operation::ListObjectsV2
            }
            "GET" if bucket_subresource(&query) => Operation::BucketOp,
            "GET" => Operation::ListObjectsV1,
            "POST" if has("delete") => Operation::DeleteObjects,
            // Browser-form POST uploads (and anything else posted to a bucket) would
            // store a body the filter cannot encrypt.
            "POST" => Operation::Unsupported,
            _ => Operation::BucketOp,
        },
        (Some(_), Some(_)) => {
            let sub = OBJECT_SUBRESOURCES.iter().any(|s| has(s));
            match method {
                "PUT" if has("partNumber") && has("uploadId") => {
                    if copy {
                        Operation::UploadPartCopy
                    } else {
                        Operation::UploadPart
                    }
                }
                "PUT" if sub => Operation::ObjectSubresource,
                "PUT" if copy => Operation::CopyObject,
                "PUT" if query.is_empty() || only_harmless(&query) => Operation::PutObject,
                "GET" if has("uploadId") => Operation::ListParts,
                "GET" | "HEAD" if sub => Operation::ObjectSubresource,
                "GET" => Operation::GetObject,
                "HEAD" => Operation::HeadObject,
                "POST" if has("uploads") => Operation::CreateMultipartUpload,
                "POST" if has("uploadId") => Operation::CompleteMultipartUpload,
                "POST" if has("restore") => Operation::ObjectSubresource,
                "DELETE" if has("uploadId") => Operation::AbortMultipartUpload,
                "DELETE" if sub => Operation::ObjectSubresource,
                "DELETE" => Operation::DeleteObject,
                _ => Operation::Unsupported,
            }
        }
    };
    Ok(S3Request {
        op,
        bucket,
        key,
        query,
        virtual_host,
    })
}

/// Query parameters a plain PutObject may carry (SDK markers such as `x-id=PutObject`).
fn only_harmless(q: &[(String, String)]) -> bool {
    q.iter().all(|(k, _)| k == "x-id")
}

/// Bucket-level GET subresources (everything but listings).
fn bucket_subresource(q: &[(String, String)]) -> bool {
    const LISTING: &[&str] = &[
        "prefix",
        "delimiter",
        "marker",
        "max-keys",
        "encoding-type",
        "continuation-token",
        "fetch-owner",
        "start-after",
        "list-type",
        "x-id",
        "expected-bucket-owner",
        "optional-object-attributes",
    ];
    q.iter().any(|(k, _)| !LISTING.contains(&k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(method: &str, path: &str, host: &str, copy: bool) -> S3Request {
        let mut h = Headers::new();
        h.set(":authority", host);
        if copy {
            h.set("x-amz-copy-source", "/src/key");
        }
        parse_request(method, path, &h, &["s3.local".to_string()]).unwrap()
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
            ("GET", "/b", false, ListObjectsV1),
            ("GET", "/b/?prefix=a&delimiter=%2F", false, ListObjectsV1),
            ("GET", "/b?list-type=2&max-keys=2", false, ListObjectsV2),
            ("GET", "/b?versions", false, ListObjectVersions),
            ("GET", "/b?uploads", false, ListMultipartUploads),
            ("POST", "/b?delete", false, DeleteObjects),
            ("POST", "/b", false, Unsupported),
            ("PUT", "/b/k", false, PutObject),
            ("PUT", "/b/k?x-id=PutObject", false, PutObject),
            ("PUT", "/b/k", true, CopyObject),
            ("GET", "/b/k", false, GetObject),
            ("GET", "/b/k?partNumber=2", false, GetObject),
            ("GET", "/b/k?response-content-type=a", false, GetObject),
            ("HEAD", "/b/k", false, HeadObject),
            ("DELETE", "/b/k", false, DeleteObject),
            ("POST", "/b/k?uploads", false, CreateMultipartUpload),
            ("PUT", "/b/k?partNumber=1&uploadId=u", false, UploadPart),
            ("PUT", "/b/k?partNumber=1&uploadId=u", true, UploadPartCopy),
            ("POST", "/b/k?uploadId=u", false, CompleteMultipartUpload),
            ("DELETE", "/b/k?uploadId=u", false, AbortMultipartUpload),
            ("GET", "/b/k?uploadId=u", false, ListParts),
            ("PUT", "/b/k?tagging", false, ObjectSubresource),
            ("GET", "/b/k?acl", false, ObjectSubresource),
            ("GET", "/b/k?attributes", false, ObjectSubresource),
            ("POST", "/b/k?restore", false, ObjectSubresource),
            ("POST", "/b/k?select&select-type=2", false, Unsupported),
            ("PUT", "/b/k?unknown-thing", false, Unsupported),
        ];
        for (m, p, copy, want) in cases {
            assert_eq!(classify(m, p, "127.0.0.1:8080", copy).op, want, "{m} {p}");
        }
    }

    #[test]
    fn keys_and_virtual_hosts() {
        let r = classify("GET", "/b/a%20b/c+d/%E2%82%AC/", "127.0.0.1:8080", false);
        assert_eq!(
            (r.bucket.as_deref(), r.key.as_deref(), r.virtual_host),
            (Some("b"), Some("a b/c+d/€/"), false)
        );
        let r = classify("PUT", "/dir/file", "photos.s3.local:8080", false);
        assert_eq!(
            (r.bucket.as_deref(), r.key.as_deref(), r.virtual_host, r.op),
            (Some("photos"), Some("dir/file"), true, Operation::PutObject)
        );
        let r = classify("GET", "/?list-type=2", "photos.s3.local", false);
        assert_eq!(
            (r.bucket.as_deref(), r.op),
            (Some("photos"), Operation::ListObjectsV2)
        );
        assert!(parse_request("GET", "/b/%zz", &Headers::new(), &[]).is_err());
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
        assert_eq!(uri_encode("a b/€", false), "a%20b/%E2%82%AC");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
    }
}
