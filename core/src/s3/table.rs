//! The operations the filter knows, in one table. A request is one of these or it is
//! refused with 501 before the backend sees it (default deny).
//!
//! An entry is chosen by method, level (service, bucket or object), the parameters that
//! name the operation (`sub`, all present), the other parameters it may carry (`params`;
//! any parameter outside both refuses the request) and, for copies, whether a (signed)
//! `x-amz-copy-source` header is present. Each entry says what its request body is and
//! whether its response can carry object data.

use super::Operation;

/// Where an operation acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `/` (no bucket).
    Service,
    /// `/bucket`.
    Bucket,
    /// `/bucket/key`.
    Object,
}

/// What a small request document must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    /// An XML document with one of these root elements (or no body at all, if `empty_ok`).
    Xml {
        roots: &'static [&'static str],
        empty_ok: bool,
    },
    /// A JSON object (bucket policies).
    Json,
}

/// How the request body is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// None: any body byte refuses the request.
    None,
    /// Object data: decoded, checked and encrypted.
    Encrypt,
    /// A small document, buffered (bounded), checked against the client's hash and its
    /// kind, then forwarded unchanged or rewritten.
    Document(Doc),
}

/// Whether the response can carry object bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Object data: always through the decrypting path.
    ObjectData,
    /// No object data. A response that nevertheless carries an object's envelope (a
    /// backend that routed the request to GetObject) is refused.
    NoObjectData,
}

/// One known operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSpec {
    /// The S3 API name.
    pub name: &'static str,
    pub op: Operation,
    pub method: &'static str,
    pub level: Level,
    /// Parameters that name the operation: all must be present.
    pub sub: &'static [&'static str],
    /// Other parameters the operation accepts.
    pub params: &'static [&'static str],
    /// Requires `x-amz-copy-source` (the copies); every other operation refuses it.
    pub copy_source: bool,
    pub body: Body,
    pub response: Response,
}

/// Parameters any request may carry: SDK operation markers (`x-id=PutObject`), which S3
/// ignores. (The presigned-URL parameters are removed before classification.)
pub const ALWAYS_ALLOWED: &[&str] = &["x-id"];

const VERSION: &[&str] = &["versionId"];
const GET_PARAMS: &[&str] = &[
    "versionId",
    "partNumber",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
];
const LIST_V1: &[&str] = &["prefix", "delimiter", "marker", "max-keys", "encoding-type"];
const LIST_V2: &[&str] = &[
    "prefix",
    "delimiter",
    "max-keys",
    "encoding-type",
    "continuation-token",
    "fetch-owner",
    "start-after",
];
const LIST_VERSIONS: &[&str] = &[
    "prefix",
    "delimiter",
    "key-marker",
    "version-id-marker",
    "max-keys",
    "encoding-type",
];
const LIST_UPLOADS: &[&str] = &[
    "prefix",
    "delimiter",
    "key-marker",
    "upload-id-marker",
    "max-uploads",
    "encoding-type",
];
const LIST_PARTS: &[&str] = &["max-parts", "part-number-marker", "encoding-type"];

const fn xml(roots: &'static [&'static str]) -> Body {
    Body::Document(Doc::Xml {
        roots,
        empty_ok: false,
    })
}

const fn xml_or_empty(roots: &'static [&'static str]) -> Body {
    Body::Document(Doc::Xml {
        roots,
        empty_ok: true,
    })
}

const fn op(
    name: &'static str,
    op: Operation,
    method: &'static str,
    level: Level,
    sub: &'static [&'static str],
    params: &'static [&'static str],
) -> OpSpec {
    OpSpec {
        name,
        op,
        method,
        level,
        sub,
        params,
        copy_source: false,
        body: Body::None,
        response: Response::NoObjectData,
    }
}

const fn with_body(mut s: OpSpec, body: Body) -> OpSpec {
    s.body = body;
    s
}

const fn copy(mut s: OpSpec) -> OpSpec {
    s.copy_source = true;
    s
}

const fn object_data(mut s: OpSpec) -> OpSpec {
    s.response = Response::ObjectData;
    s
}

use Level::{Bucket, Object, Service};
use Operation as O;

/// Bucket configurations a client can read, write (one XML or JSON document) and delete,
/// passed through unchanged: none carries object data. `(subresource, root elements,
/// deletable)`.
const BUCKET_CONFIGS: &[(&str, &[&str], bool)] = &[
    ("versioning", &["VersioningConfiguration"], false),
    ("cors", &["CORSConfiguration"], true),
    ("lifecycle", &["LifecycleConfiguration"], true),
    ("tagging", &["Tagging"], true),
    ("encryption", &["ServerSideEncryptionConfiguration"], true),
    ("object-lock", &["ObjectLockConfiguration"], false),
    ("ownershipControls", &["OwnershipControls"], true),
    (
        "publicAccessBlock",
        &["PublicAccessBlockConfiguration"],
        true,
    ),
    ("notification", &["NotificationConfiguration"], false),
    ("logging", &["BucketLoggingStatus"], false),
    ("replication", &["ReplicationConfiguration"], true),
    ("website", &["WebsiteConfiguration"], true),
    ("requestPayment", &["RequestPaymentConfiguration"], false),
    ("accelerate", &["AccelerateConfiguration"], false),
];

/// Every operation the filter knows, except the bucket configurations of
/// [`BUCKET_CONFIGS`] (see [`all`]).
pub const TABLE: &[OpSpec] = &[
    op(
        "ListBuckets",
        O::ListBuckets,
        "GET",
        Service,
        &[],
        &[
            "max-buckets",
            "continuation-token",
            "prefix",
            "bucket-region",
        ],
    ),
    // Buckets.
    with_body(
        op("CreateBucket", O::BucketOp, "PUT", Bucket, &[], &[]),
        xml_or_empty(&["CreateBucketConfiguration"]),
    ),
    op("HeadBucket", O::BucketOp, "HEAD", Bucket, &[], &[]),
    op("DeleteBucket", O::BucketOp, "DELETE", Bucket, &[], &[]),
    op(
        "GetBucketLocation",
        O::BucketOp,
        "GET",
        Bucket,
        &["location"],
        &[],
    ),
    op("GetBucketAcl", O::BucketOp, "GET", Bucket, &["acl"], &[]),
    with_body(
        op("PutBucketAcl", O::BucketOp, "PUT", Bucket, &["acl"], &[]),
        xml_or_empty(&["AccessControlPolicy"]),
    ),
    op(
        "GetBucketPolicy",
        O::BucketOp,
        "GET",
        Bucket,
        &["policy"],
        &[],
    ),
    op(
        "GetBucketPolicyStatus",
        O::BucketOp,
        "GET",
        Bucket,
        &["policyStatus"],
        &[],
    ),
    with_body(
        op(
            "PutBucketPolicy",
            O::BucketOp,
            "PUT",
            Bucket,
            &["policy"],
            &[],
        ),
        Body::Document(Doc::Json),
    ),
    op(
        "DeleteBucketPolicy",
        O::BucketOp,
        "DELETE",
        Bucket,
        &["policy"],
        &[],
    ),
    // Listings (sizes rewritten to plaintext sizes).
    op("ListObjects", O::ListObjectsV1, "GET", Bucket, &[], LIST_V1),
    op(
        "ListObjectsV2",
        O::ListObjectsV2,
        "GET",
        Bucket,
        &["list-type"],
        LIST_V2,
    ),
    op(
        "ListObjectVersions",
        O::ListObjectVersions,
        "GET",
        Bucket,
        &["versions"],
        LIST_VERSIONS,
    ),
    op(
        "ListMultipartUploads",
        O::ListMultipartUploads,
        "GET",
        Bucket,
        &["uploads"],
        LIST_UPLOADS,
    ),
    with_body(
        op(
            "DeleteObjects",
            O::DeleteObjects,
            "POST",
            Bucket,
            &["delete"],
            &[],
        ),
        xml(&["Delete"]),
    ),
    // Objects.
    object_data(op(
        "GetObject",
        O::GetObject,
        "GET",
        Object,
        &[],
        GET_PARAMS,
    )),
    object_data(op(
        "HeadObject",
        O::HeadObject,
        "HEAD",
        Object,
        &[],
        GET_PARAMS,
    )),
    with_body(
        op("PutObject", O::PutObject, "PUT", Object, &[], &[]),
        Body::Encrypt,
    ),
    copy(op("CopyObject", O::CopyObject, "PUT", Object, &[], &[])),
    op(
        "DeleteObject",
        O::DeleteObject,
        "DELETE",
        Object,
        &[],
        VERSION,
    ),
    op(
        "CreateMultipartUpload",
        O::CreateMultipartUpload,
        "POST",
        Object,
        &["uploads"],
        &[],
    ),
    with_body(
        op(
            "UploadPart",
            O::UploadPart,
            "PUT",
            Object,
            &["partNumber", "uploadId"],
            &[],
        ),
        Body::Encrypt,
    ),
    copy(op(
        "UploadPartCopy",
        O::UploadPartCopy,
        "PUT",
        Object,
        &["partNumber", "uploadId"],
        &[],
    )),
    with_body(
        op(
            "CompleteMultipartUpload",
            O::CompleteMultipartUpload,
            "POST",
            Object,
            &["uploadId"],
            &[],
        ),
        xml(&["CompleteMultipartUpload"]),
    ),
    op(
        "AbortMultipartUpload",
        O::AbortMultipartUpload,
        "DELETE",
        Object,
        &["uploadId"],
        &[],
    ),
    op(
        "ListParts",
        O::ListParts,
        "GET",
        Object,
        &["uploadId"],
        LIST_PARTS,
    ),
    // Object subresources: small documents, no object data.
    op(
        "GetObjectTagging",
        O::ObjectSubresource,
        "GET",
        Object,
        &["tagging"],
        VERSION,
    ),
    with_body(
        op(
            "PutObjectTagging",
            O::ObjectSubresource,
            "PUT",
            Object,
            &["tagging"],
            VERSION,
        ),
        xml(&["Tagging"]),
    ),
    op(
        "DeleteObjectTagging",
        O::ObjectSubresource,
        "DELETE",
        Object,
        &["tagging"],
        VERSION,
    ),
    op(
        "GetObjectAcl",
        O::ObjectSubresource,
        "GET",
        Object,
        &["acl"],
        VERSION,
    ),
    with_body(
        op(
            "PutObjectAcl",
            O::ObjectSubresource,
            "PUT",
            Object,
            &["acl"],
            VERSION,
        ),
        xml_or_empty(&["AccessControlPolicy"]),
    ),
    op(
        "GetObjectRetention",
        O::ObjectSubresource,
        "GET",
        Object,
        &["retention"],
        VERSION,
    ),
    with_body(
        op(
            "PutObjectRetention",
            O::ObjectSubresource,
            "PUT",
            Object,
            &["retention"],
            VERSION,
        ),
        xml(&["Retention"]),
    ),
    op(
        "GetObjectLegalHold",
        O::ObjectSubresource,
        "GET",
        Object,
        &["legal-hold"],
        VERSION,
    ),
    with_body(
        op(
            "PutObjectLegalHold",
            O::ObjectSubresource,
            "PUT",
            Object,
            &["legal-hold"],
            VERSION,
        ),
        xml(&["LegalHold"]),
    ),
    // Answered by the filter (ops/attributes.rs): never sent upstream.
    op(
        "GetObjectAttributes",
        O::GetObjectAttributes,
        "GET",
        Object,
        &["attributes"],
        VERSION,
    ),
];

/// The bucket configurations as table entries: Get, Put and (where S3 has one) Delete.
fn bucket_configs() -> impl Iterator<Item = OpSpec> {
    BUCKET_CONFIGS.iter().flat_map(|entry| {
        let (_, roots, deletable) = *entry;
        let subs: &'static [&'static str] = std::slice::from_ref(&entry.0);
        let get = op(
            "GetBucketConfiguration",
            O::BucketOp,
            "GET",
            Bucket,
            subs,
            &[],
        );
        let put = with_body(
            op(
                "PutBucketConfiguration",
                O::BucketOp,
                "PUT",
                Bucket,
                subs,
                &[],
            ),
            xml(roots),
        );
        let del = op(
            "DeleteBucketConfiguration",
            O::BucketOp,
            "DELETE",
            Bucket,
            subs,
            &[],
        );
        [Some(get), Some(put), deletable.then_some(del)]
            .into_iter()
            .flatten()
    })
}

/// Every known operation.
pub fn all() -> impl Iterator<Item = OpSpec> {
    TABLE.iter().copied().chain(bucket_configs())
}

/// The entry for a request, or `None` (501). `names` are the query parameter names (the
/// presign parameters removed; duplicates were refused before).
pub fn lookup(method: &str, level: Level, names: &[&str], copy_source: bool) -> Option<OpSpec> {
    all()
        .filter(|s| s.method == method && s.level == level)
        .filter(|s| s.copy_source == copy_source)
        .filter(|s| s.sub.iter().all(|p| names.contains(p)))
        .filter(|s| {
            names
                .iter()
                .all(|n| s.sub.contains(n) || s.params.contains(n) || ALWAYS_ALLOWED.contains(n))
        })
        // The most specific entry: `?uploadId` is ListParts, not GetObject.
        .max_by_key(|s| s.sub.len())
}

/// Subresource names S3 or other S3 servers know that the filter refuses, used by the
/// tests that walk the table (each must be refused at every level and method).
pub const REFUSED_EXAMPLES: &[&str] = &[
    "torrent",
    "restore",
    "select",
    "select-type",
    "renameObject",
    "analytics",
    "inventory",
    "metrics",
    "intelligent-tiering",
    "session",
    "uploadsx",
    "unknown-thing",
];

#[cfg(test)]
mod tests {
    use super::*;

    const METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"];

    fn names_of(s: &OpSpec) -> Vec<&'static str> {
        s.sub.to_vec()
    }

    /// Every entry is reachable: its own method, level and subresources find it.
    #[test]
    fn every_entry_classifies_to_itself() {
        for s in all() {
            let names = names_of(&s);
            let got = lookup(s.method, s.level, &names, s.copy_source)
                .unwrap_or_else(|| panic!("{} not found", s.name));
            assert_eq!((got.name, got.sub), (s.name, s.sub), "{}", s.name);
            // With each of its optional parameters too.
            for p in s.params {
                let mut n = names.clone();
                n.push(p);
                assert_eq!(
                    lookup(s.method, s.level, &n, s.copy_source).map(|g| g.name),
                    Some(s.name)
                );
            }
        }
    }

    /// No two entries answer the same request.
    #[test]
    fn entries_are_unambiguous() {
        let v: Vec<OpSpec> = all().collect();
        for (i, a) in v.iter().enumerate() {
            for b in v.iter().skip(i + 1) {
                let same_copy = a.copy_source == b.copy_source;
                let mut sa = a.sub.to_vec();
                let mut sb = b.sub.to_vec();
                sa.sort();
                sb.sort();
                assert!(
                    !(a.method == b.method && a.level == b.level && sa == sb && same_copy),
                    "{} and {} overlap",
                    a.name,
                    b.name
                );
            }
        }
    }

    /// Made-up and refused subresources, alone or added to any known operation, are
    /// refused at every level and with every method.
    #[test]
    fn unknown_subresources_are_refused_everywhere() {
        for level in [Service, Bucket, Object] {
            for m in METHODS {
                for bad in REFUSED_EXAMPLES {
                    for copy in [false, true] {
                        assert_eq!(lookup(m, level, &[bad], copy), None, "{m} {level:?} {bad}");
                        assert_eq!(lookup(m, level, &["x-id", bad], copy), None);
                    }
                }
            }
        }
        for s in all() {
            for bad in REFUSED_EXAMPLES {
                let mut n = names_of(&s);
                n.push(bad);
                assert_eq!(
                    lookup(s.method, s.level, &n, false),
                    None,
                    "{} {bad}",
                    s.name
                );
            }
        }
        // Methods S3 has no operation for.
        for level in [Service, Bucket, Object] {
            for m in ["PATCH", "OPTIONS", "TRACE", "CONNECT", "get"] {
                assert_eq!(lookup(m, level, &[], false), None);
            }
        }
    }

    /// Only GetObject and HeadObject return object data; only PutObject and UploadPart
    /// carry it; a copy source is only read by the two copy operations.
    #[test]
    fn object_data_paths() {
        let data: Vec<&str> = all()
            .filter(|s| s.response == Response::ObjectData)
            .map(|s| s.name)
            .collect();
        assert_eq!(data, ["GetObject", "HeadObject"]);
        let enc: Vec<&str> = all()
            .filter(|s| s.body == Body::Encrypt)
            .map(|s| s.name)
            .collect();
        assert_eq!(enc, ["PutObject", "UploadPart"]);
        let copies: Vec<&str> = all().filter(|s| s.copy_source).map(|s| s.name).collect();
        assert_eq!(copies, ["CopyObject", "UploadPartCopy"]);
        // Every other entry with a body names the document it accepts.
        for s in all() {
            if let Body::Document(Doc::Xml { roots, .. }) = s.body {
                assert!(!roots.is_empty(), "{}", s.name);
            }
        }
    }

    /// README's "Supported operations" is this table: every entry is named there.
    #[test]
    fn readme_lists_every_operation() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("**Supported operations (default deny).**")
            .nth(1)
            .and_then(|s| s.split("**Signed-header policy").next())
            .expect("README has the supported-operations section");
        for s in TABLE {
            assert!(section.contains(s.name), "README does not list {}", s.name);
        }
        for (sub, _, _) in BUCKET_CONFIGS {
            assert!(
                section.contains(&format!("`{sub}`")),
                "README does not list {sub}"
            );
        }
    }
}
