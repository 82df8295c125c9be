//! A fake S3 backend: buckets of objects in memory, executing what the filter sends after
//! checking its SigV4 signature against the backend credentials (with the crate's own
//! verifier: a wrongly signed request fails as at S3) and its payload hash, Content-MD5
//! and checksums. S3-style XML answers and errors. Object operations are in
//! `s3_objects.rs`, multipart uploads in `s3_multipart.rs`, listings in `s3_xml.rs`.
//!
//! It is also the storage provider a test may turn hostile: [`FakeS3::flip`],
//! [`FakeS3::truncate`], [`FakeS3::swap_objects`], [`FakeS3::set_raw`] and friends
//! rewrite what is stored; [`FakeS3::answer`] answers requests its own way.

use std::collections::{BTreeMap, HashMap};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use md5::{Digest as _, Md5};
use sha2::Sha256;

use crate::auth::checksum::{ChecksumAlgorithm, Checksummer};
use crate::auth::chunked::ChunkedDecoder;
use crate::auth::sigv4::{self, PayloadMode};
use crate::headers::Headers;
use crate::s3::error::S3Error;

use super::drive::Http;
pub use super::s3_objects::{parse_range, resolve};
use super::s3_xml::xml_escape;
use super::BUCKET;

/// A stored object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredObject {
    pub data: Vec<u8>,
    /// `x-amz-meta-*` and the standard content headers, lower-case names.
    pub meta: Vec<(String, String)>,
    /// As sent in `ETag` (quoted).
    pub etag: String,
    pub last_modified: i64,
    /// Stored lengths of the parts of a multipart object, in order (empty otherwise).
    pub parts: Vec<u64>,
}

impl StoredObject {
    pub fn meta(&self, name: &str) -> Option<&str> {
        self.meta
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// (offset, length) of each stored part of a multipart object.
    pub fn part_spans(&self) -> Vec<(usize, usize)> {
        let mut at = 0usize;
        self.parts
            .iter()
            .map(|&l| {
                let s = (at, l as usize);
                at += l as usize;
                s
            })
            .collect()
    }
}

/// A part of an upload in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPart {
    pub data: Vec<u8>,
    pub etag: String,
    pub last_modified: i64,
}

/// A multipart upload in progress.
#[derive(Clone, Debug)]
pub struct Upload {
    pub bucket: String,
    pub key: String,
    pub meta: Vec<(String, String)>,
    pub parts: BTreeMap<u32, StoredPart>,
    pub initiated: i64,
}

/// A hostile answer: given the request, the response to give instead of executing it.
pub type Answer = Box<dyn FnMut(&Http) -> Option<Http>>;

pub struct FakeS3 {
    authority: String,
    access_key: String,
    secret: String,
    pub buckets: BTreeMap<String, BTreeMap<String, StoredObject>>,
    pub uploads: BTreeMap<String, Upload>,
    /// The envelope each upload was created with, kept after it ended (for checks).
    pub upload_envelopes: HashMap<String, String>,
    pub(super) next_upload: u64,
    /// Check signatures (a test may turn it off to see what a lax backend does).
    pub verify_signatures: bool,
    /// S3's rule for parts that are not the last (5 MiB).
    pub min_part_size: u64,
    /// A hostile provider's own answers, tried before anything is executed.
    pub answer: Option<Answer>,
    /// Most entries per ListParts or listing page, whatever the request asks (some
    /// backends page at fewer than the 1,000 S3 gives).
    pub max_page: usize,
    /// Accepted difference between a request's signing time and its arrival (S3: 15 min).
    pub max_skew: i64,
    /// Requests handled.
    pub requests: u64,
    /// Enforce `If-None-Match` / `If-Match` on writes (AWS S3, MinIO); off: ignore them
    /// (Ceph RGW 16 ignores `If-None-Match: *` on PUT).
    pub conditional_writes: bool,
    /// Part ETags that are not the MD5 of the part's bytes (AWS S3 with SSE-KMS or SSE-C).
    pub opaque_part_etags: bool,
}

/// Server-side encryption headers S3 keeps with an object and returns on reads (the
/// SSE-C key itself is never stored, only its MD5).
pub(super) const SSE_STORED: &[&str] = &[
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-context",
    "x-amz-server-side-encryption-bucket-key-enabled",
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-customer-key-md5",
];

/// SSE-C: a request for an object stored under a customer key must carry that key under
/// `prefix` (`x-amz-server-side-encryption` for the object itself,
/// `x-amz-copy-source-server-side-encryption` for a copy's source); one that carries a
/// key for an object stored without one is refused too (S3's rules).
pub(super) fn check_customer_key(
    r: &Req<'_>,
    stored: &[(String, String)],
    prefix: &str,
) -> Result<(), Http> {
    let want = stored
        .iter()
        .find(|(k, _)| k == "x-amz-server-side-encryption-customer-key-md5")
        .map(|(_, v)| v.as_str());
    let key = r.headers.get(&format!("{prefix}-customer-key"));
    let md5 = r.headers.get(&format!("{prefix}-customer-key-md5"));
    match (want, key) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(r.err(
            400,
            "InvalidRequest",
            "The encryption parameters are not applicable to this object.",
        )),
        (Some(want), key) => {
            let actual = key
                .and_then(|k| B64.decode(k.trim()).ok())
                .map(|k| B64.encode(Md5::digest(&k)));
            if actual.as_deref() == Some(want) && md5 == Some(want) {
                Ok(())
            } else {
                Err(r.err(400, "InvalidRequest", "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object."))
            }
        }
    }
}

/// The standard headers S3 stores with an object.
pub(super) const CONTENT_HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
];

pub(super) fn err(status: u16, code: &'static str, msg: &str, resource: &str) -> Http {
    let body = S3Error::new(status, code, msg).to_xml(resource, "fake-s3");
    let mut r = Http::with_status(status);
    r.headers.set("content-type", "application/xml");
    r.headers.set("content-length", body.len().to_string());
    r.body = body.into_bytes();
    r
}

pub(super) fn xml_ok(body: String) -> Http {
    let mut r = Http::with_status(200);
    r.headers.set("content-type", "application/xml");
    r.headers.set("content-length", body.len().to_string());
    r.body = body.into_bytes();
    r
}

pub(super) fn md5_etag(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(data)))
}

/// An ETag without quotes and weakness, for comparisons.
pub(super) fn bare(e: &str) -> &str {
    e.trim().trim_start_matches("W/").trim_matches('"')
}

pub(super) fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .any(|c| c.trim() == "*" || bare(c) == bare(etag))
}

/// A parsed request: what every operation needs.
pub(super) struct Req<'a> {
    pub method: &'a str,
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub query: Vec<(String, String)>,
    pub headers: &'a Headers,
    /// The payload (aws-chunked framing decoded).
    pub body: std::borrow::Cow<'a, [u8]>,
    pub resource: String,
}

impl Req<'_> {
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }
    pub fn err(&self, status: u16, code: &'static str, msg: &str) -> Http {
        err(status, code, msg, &self.resource)
    }
    /// Metadata to store from this request's headers.
    pub fn meta(&self) -> Result<Vec<(String, String)>, Http> {
        let mut m: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .filter(|(k, _)| {
                k.starts_with("x-amz-meta-")
                    || CONTENT_HEADERS.contains(&k.as_str())
                    || SSE_STORED.contains(&k.as_str())
            })
            .filter_map(|(k, v)| {
                if k != "content-encoding" {
                    return Some((k, v));
                }
                // S3 keeps the Content-Encoding without the aws-chunked framing.
                let rest: Vec<&str> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("aws-chunked"))
                    .collect();
                (!rest.is_empty()).then(|| (k, rest.join(",")))
            })
            .collect();
        m.sort();
        let size: usize = m
            .iter()
            .filter(|(k, _)| k.starts_with("x-amz-meta-"))
            .map(|(k, v)| k.len() - "x-amz-meta-".len() + v.len())
            .sum();
        if size > 2048 {
            return Err(self.err(
                400,
                "MetadataTooLarge",
                "Your metadata headers exceed the maximum allowed metadata size.",
            ));
        }
        Ok(m)
    }
    /// Content-MD5 and `x-amz-checksum-*` of the body, as S3 checks them.
    pub fn check_digests(&self) -> Result<Vec<(String, String)>, Http> {
        if let Some(m) = self.headers.get("content-md5") {
            if B64.decode(m.trim()).ok().as_deref() != Some(&Md5::digest(&self.body)[..]) {
                return Err(self.err(
                    400,
                    "BadDigest",
                    "The Content-MD5 you specified did not match what we received.",
                ));
            }
        }
        let mut echo = Vec::new();
        for (k, v) in self.headers.iter() {
            if let Some(a) = ChecksumAlgorithm::from_header_name(k) {
                let mut c = Checksummer::new(a);
                c.update(&self.body);
                if c.finalize_base64() != v.trim() {
                    return Err(self.err(
                        400,
                        "BadDigest",
                        &format!("The {k} you specified did not match the calculated checksum."),
                    ));
                }
                echo.push((k.to_ascii_lowercase(), v.clone()));
            }
        }
        Ok(echo)
    }
}

impl FakeS3 {
    pub fn new(authority: &str, _region: &str, access_key: &str, secret: &str) -> FakeS3 {
        let mut buckets = BTreeMap::new();
        buckets.insert(BUCKET.to_string(), BTreeMap::new());
        FakeS3 {
            authority: authority.to_string(),
            access_key: access_key.to_string(),
            secret: secret.to_string(),
            buckets,
            uploads: BTreeMap::new(),
            upload_envelopes: HashMap::new(),
            next_upload: 0,
            verify_signatures: true,
            min_part_size: 5 * 1024 * 1024,
            answer: None,
            max_page: 1000,
            max_skew: 900,
            requests: 0,
            conditional_writes: true,
            opaque_part_etags: false,
        }
    }

    /// Executes one request (signature, payload, operation) that arrived whole at `now`.
    pub fn handle(&mut self, req: &Http, now: i64) -> Http {
        self.handle_at(req, now, now)
    }

    /// Executes a request whose headers arrived at `headers_at` (when its signature's
    /// time is checked) and whose body ended at `now`.
    pub fn handle_at(&mut self, req: &Http, now: i64, headers_at: i64) -> Http {
        self.requests += 1;
        if let Some(f) = self.answer.as_mut() {
            if let Some(r) = f(req) {
                return r;
            }
        }
        let method = req.headers.get(":method").unwrap_or("GET");
        let mut resp = match self.parse(req, headers_at) {
            Ok(r) => self.dispatch(r, now),
            Err(e) => e,
        };
        if method == "HEAD" {
            resp.body.clear();
        }
        // As S3 does for a bucket whose CORS rules allow every origin: the CORS headers
        // of a request that names its origin.
        if let Some(o) = req.headers.get("origin") {
            resp.headers
                .set("access-control-allow-origin", o.to_string());
            resp.headers.set("access-control-expose-headers", "ETag");
            resp.headers.set("vary", "Origin");
        }
        resp
    }

    fn parse<'a>(&self, req: &'a Http, now: i64) -> Result<Req<'a>, Http> {
        let h = &req.headers;
        let method = h.get(":method").unwrap_or("GET");
        let raw = h.get(":path").unwrap_or("/");
        let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
        let bad_uri = || err(400, "InvalidURI", "Couldn't parse the specified URI.", path);
        let p = path.strip_prefix('/').ok_or_else(bad_uri)?;
        let (b, k) = match p.split_once('/') {
            Some((b, k)) => (b, Some(k)),
            None => (p, None),
        };
        let bucket = (!b.is_empty())
            .then(|| crate::s3::uri::decode(b))
            .transpose()
            .map_err(|_| bad_uri())?;
        let key = k
            .filter(|k| !k.is_empty())
            .map(crate::s3::uri::decode)
            .transpose()
            .map_err(|_| bad_uri())?;
        let query = crate::s3::uri::query_pairs(query).map_err(|_| bad_uri())?;
        let resource = path.to_string();
        let mut body = std::borrow::Cow::Borrowed(&req.body[..]);
        if self.verify_signatures {
            if h.get(":authority").or_else(|| h.get("host")) != Some(self.authority.as_str()) {
                return Err(err(400, "InvalidRequest", "wrong endpoint", &resource));
            }
            let secret = |ak: &str| (ak == self.access_key).then(|| self.secret.clone());
            let v = sigv4::verify_with_skew(method, raw, h, &secret, now, self.max_skew)
                .map_err(|e| err(e.status, e.code, &e.message, &resource))?;
            match &v.payload {
                PayloadMode::Sha256(x) => {
                    if hex::encode(Sha256::digest(&body)) != *x {
                        return Err(err(400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.", &resource));
                    }
                }
                PayloadMode::Unsigned => {}
                mode => {
                    let declared = h
                        .get("x-amz-decoded-content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut d = ChunkedDecoder::new(
                        mode,
                        v.chunk_ctx.clone(),
                        h.get("x-amz-trailer"),
                        declared,
                    )
                    .map_err(|e| err(e.status, e.code, &e.message, &resource))?;
                    let mut out = Vec::new();
                    d.push(&body, &mut out)
                        .and_then(|()| d.finish().map(|_| ()))
                        .map_err(|e| err(e.status, e.code, &e.message, &resource))?;
                    body = std::borrow::Cow::Owned(out);
                }
            }
        }
        if let Some(n) = h
            .get("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            if n != req.body.len() {
                return Err(err(400, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header.", &resource));
            }
        }
        Ok(Req {
            method,
            bucket,
            key,
            query,
            headers: h,
            body,
            resource,
        })
    }

    fn dispatch(&mut self, r: Req<'_>, now: i64) -> Http {
        let Some(bucket) = r.bucket.clone() else {
            return match r.method {
                "GET" => self.list_buckets(),
                _ => r.err(
                    405,
                    "MethodNotAllowed",
                    "The specified method is not allowed against this resource.",
                ),
            };
        };
        if r.method == "PUT" && r.key.is_none() && r.query.is_empty() {
            self.buckets.entry(bucket).or_default();
            return Http::with_status(200);
        }
        if !self.buckets.contains_key(&bucket) {
            return r.err(404, "NoSuchBucket", "The specified bucket does not exist");
        }
        let Some(key) = r.key.clone() else {
            return self.bucket_op(&r, &bucket, now);
        };
        let copy = r.headers.contains("x-amz-copy-source");
        match r.method {
            "POST" if r.has("uploads") => self.create_upload(&r, &bucket, &key, now),
            "PUT" if r.has("uploadId") && copy => self.upload_part_copy(&r, &bucket, &key, now),
            "PUT" if r.has("uploadId") => self.upload_part(&r, &bucket, &key, now),
            "GET" if r.has("uploadId") => self.list_parts(&r, &bucket, &key),
            "POST" if r.has("uploadId") => self.complete(&r, &bucket, &key, now),
            "DELETE" if r.has("uploadId") => self.abort(&r, &bucket, &key),
            _ if r.query.iter().any(|(k, _)| {
                !matches!(k.as_str(), "versionId" | "partNumber" | "x-id")
                    && !k.starts_with("response-")
            }) =>
            {
                let name = r.query.first().map(|(k, _)| k.clone()).unwrap_or_default();
                r.err(
                    501,
                    "NotImplemented",
                    &format!("{}{name} is not implemented yet", r.method),
                )
            }
            "PUT" if copy => self.copy_object(&r, &bucket, &key, now),
            "PUT" => self.put_object(&r, &bucket, &key, now),
            "GET" | "HEAD" => self.get_object(&r, &bucket, &key),
            "DELETE" => {
                if let Err(e) = self.write_conditions(&r, &bucket, &key) {
                    return e;
                }
                self.buckets.get_mut(&bucket).map(|b| b.remove(&key));
                Http::with_status(204)
            }
            _ => r.err(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
            ),
        }
    }

    fn bucket_op(&mut self, r: &Req<'_>, bucket: &str, now: i64) -> Http {
        let _ = now;
        match r.method {
            "HEAD" if r.query.is_empty() => Http::with_status(200),
            "GET" if r.q("list-type") == Some("2") => self.list_v2(r, bucket),
            "GET" if r.has("uploads") => self.list_uploads(bucket),
            "GET" if r.has("versions") => self.list_versions(r, bucket),
            "GET" if r.has("location") => xml_ok(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"></LocationConstraint>".into(),
            ),
            "GET" if r.query.iter().all(|(k, _)| ["prefix", "delimiter", "marker", "max-keys", "encoding-type"].contains(&k.as_str())) => {
                self.list_v1(r, bucket)
            }
            "POST" if r.has("delete") => {
                let text = String::from_utf8_lossy(&r.body).into_owned();
                let keys = crate::s3::xml::element_texts(&text, "Key");
                let b = self.buckets.get_mut(bucket).expect("bucket");
                let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
                for k in keys {
                    b.remove(&k);
                    out.push_str(&format!("<Deleted><Key>{}</Key></Deleted>", xml_escape(&k)));
                }
                out.push_str("</DeleteResult>");
                xml_ok(out)
            }
            "DELETE" if r.query.is_empty() => {
                if self.buckets.get(bucket).is_some_and(|b| !b.is_empty()) {
                    return r.err(409, "BucketNotEmpty", "The bucket you tried to delete is not empty");
                }
                self.buckets.remove(bucket);
                Http::with_status(204)
            }
            _ => {
                let name = r.query.first().map(|(k, _)| k.clone()).unwrap_or_default();
                r.err(501, "NotImplemented", &format!("bucket {name} is not implemented"))
            }
        }
    }

    // The provider's view: read and rewrite what is stored (bucket [`BUCKET`]).

    /// The payload of a request the filter sent (whole or cut short), with the length it
    /// declares: aws-chunked framing decoded with every chunk signature and the trailer
    /// (checksum and signature) verified, as this backend does when it stores a body.
    pub fn unframe(
        &self,
        h: &Headers,
        body: &[u8],
        complete: bool,
    ) -> Result<(Vec<u8>, Option<usize>), String> {
        let cl = h
            .get("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok());
        let streaming = h
            .get("x-amz-content-sha256")
            .is_some_and(|v| v.starts_with("STREAMING-"));
        if !streaming {
            return Ok((body.to_vec(), cl));
        }
        let date = h
            .get("x-amz-date")
            .and_then(sigv4::parse_amz_date)
            .ok_or("a streamed body without x-amz-date")?;
        let secret = |ak: &str| (ak == self.access_key).then(|| self.secret.clone());
        let v = sigv4::verify(
            h.get(":method").unwrap_or(""),
            h.get(":path").unwrap_or(""),
            h,
            &secret,
            date,
        )
        .map_err(|e| format!("the signature of a streamed body: {}", e.code))?;
        let declared: u64 = h
            .get("x-amz-decoded-content-length")
            .and_then(|v| v.parse().ok())
            .ok_or("a streamed body without x-amz-decoded-content-length")?;
        let mut d = ChunkedDecoder::new(&v.payload, v.chunk_ctx, h.get("x-amz-trailer"), declared)
            .map_err(|e| e.message)?;
        let mut out = Vec::new();
        d.push(body, &mut out)
            .map_err(|e| format!("the framing: {}", e.message))?;
        if complete {
            d.finish()
                .map_err(|e| format!("the end of the framing: {} {}", e.code, e.message))?;
        }
        Ok((out, usize::try_from(declared).ok()))
    }

    pub fn object(&self, key: &str) -> Option<&StoredObject> {
        self.buckets.get(BUCKET)?.get(key)
    }

    pub fn object_mut(&mut self, key: &str) -> Option<&mut StoredObject> {
        self.buckets.get_mut(BUCKET)?.get_mut(key)
    }

    /// The stored bytes of an object.
    pub fn raw(&self, key: &str) -> Vec<u8> {
        self.object(key).map(|o| o.data.clone()).unwrap_or_default()
    }

    /// Replaces an object's stored bytes (metadata and ETag stay, as a provider that
    /// rewrites the file under its own bookkeeping would leave them).
    pub fn set_raw(&mut self, key: &str, data: Vec<u8>) {
        self.object_mut(key).expect("object").data = data;
    }

    pub fn flip(&mut self, key: &str, at: usize, mask: u8) {
        self.object_mut(key).expect("object").data[at] ^= mask;
    }

    pub fn truncate(&mut self, key: &str, len: usize) {
        self.object_mut(key).expect("object").data.truncate(len);
    }

    /// Swaps two objects whole (data, metadata, ETag).
    pub fn swap_objects(&mut self, a: &str, b: &str) {
        let bucket = self.buckets.get_mut(BUCKET).expect("bucket");
        let oa = bucket.remove(a).expect("a");
        let ob = bucket.remove(b).expect("b");
        bucket.insert(a.to_string(), ob);
        bucket.insert(b.to_string(), oa);
    }

    /// Swaps the stored bytes of two objects, each keeping its metadata and ETag.
    pub fn swap_data(&mut self, a: &str, b: &str) {
        let da = self.raw(a);
        let db = self.raw(b);
        self.set_raw(a, db);
        self.set_raw(b, da);
    }

    /// An object the provider writes itself.
    pub fn put_raw(&mut self, key: &str, data: Vec<u8>, meta: &[(&str, &str)]) {
        let o = StoredObject {
            etag: md5_etag(&data),
            data,
            meta: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            last_modified: 0,
            parts: Vec::new(),
        };
        self.buckets
            .get_mut(BUCKET)
            .expect("bucket")
            .insert(key.to_string(), o);
    }

    pub fn set_etag(&mut self, key: &str, etag: &str) {
        self.object_mut(key).expect("object").etag = etag.to_string();
    }

    /// Sets (`Some`) or removes (`None`) a stored metadata header.
    pub fn set_meta(&mut self, key: &str, name: &str, value: Option<&str>) {
        let o = self.object_mut(key).expect("object");
        o.meta.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        if let Some(v) = value {
            o.meta.push((name.to_string(), v.to_string()));
        }
    }

    pub fn keys(&self) -> Vec<String> {
        self.buckets
            .get(BUCKET)
            .map(|b| b.keys().cloned().collect())
            .unwrap_or_default()
    }
}
