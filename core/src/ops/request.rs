//! The request boundary every operation shares: the view of the request its signature
//! covers, the upstream request rebuilt from it, and the document bodies (part lists,
//! delete lists, configurations) that go upstream unchanged once checked.

use sha2::{Digest as _, Sha256};

use super::cx::Cx;
use crate::auth::checksum::{ChecksumAlgorithm, Checksummer};
use crate::auth::sigv4::{self, PayloadMode, VerifiedRequest};
use crate::headers::Headers;
use crate::s3::error::S3Error;
use crate::s3::xml;
use crate::s3::{self, Body, Doc, S3Request};

/// Largest document request body (and XML response body) the filter buffers.
pub(crate) const MAX_XML_BODY: usize = 8 << 20;

/// An operation without a body: a declared body refuses it now; any body byte that
/// arrives anyway refuses it then ([`refuse_body`]).
pub(crate) fn no_body(h: &Headers, eos: bool) -> Result<(), S3Error> {
    let declared: u64 = h
        .get("content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if !eos && declared > 0 {
        return Err(S3Error::invalid_request(
            "s3crypt: this operation takes no request body",
        ));
    }
    Ok(())
}

/// A body chunk of an operation that takes none: only empty ones pass.
pub(crate) fn refuse_body(chunk: &[u8]) -> Result<(), S3Error> {
    if chunk.is_empty() {
        Ok(())
    } else {
        Err(S3Error::invalid_request(
            "s3crypt: this operation takes no request body",
        ))
    }
}

/// A small document body: buffered up to [`MAX_XML_BODY`], checked against the client's
/// hash and against what the operation accepts.
pub(crate) struct Document {
    buf: Vec<u8>,
    expected: Option<String>,
    pub doc: Doc,
    /// DeleteObjects may not name the predecessor's internal objects (`predecessor_read`).
    pub internal_reserved: bool,
}

impl Document {
    /// How a document body is expected: its size checked now, its bytes at the end.
    pub fn expect(
        h: &Headers,
        v: &VerifiedRequest,
        doc: Doc,
        eos: bool,
    ) -> Result<Document, S3Error> {
        let expected = document_hash(v)?;
        let declared: u64 = h
            .get("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if declared > MAX_XML_BODY as u64 {
            return Err(malformed_document(doc));
        }
        if eos {
            // No body callback will come: the (empty) document is checked now.
            check_document(doc, &[])?;
            if let Some(e) = &expected {
                if e != sigv4::EMPTY_SHA256 {
                    return Err(S3Error::sha256_mismatch());
                }
            }
        }
        Ok(Document {
            buf: Vec::new(),
            expected,
            doc,
            internal_reserved: false,
        })
    }

    /// A body chunk; at the end, the whole document, checked.
    pub fn push(&mut self, chunk: &[u8], end: bool) -> Result<Option<Vec<u8>>, S3Error> {
        if self.buf.len().saturating_add(chunk.len()) > MAX_XML_BODY {
            return Err(malformed_document(self.doc));
        }
        self.buf.extend_from_slice(chunk);
        if !end {
            return Ok(None);
        }
        if let Some(e) = &self.expected {
            if hex::encode(Sha256::digest(&self.buf[..])) != *e {
                return Err(S3Error::sha256_mismatch());
            }
        }
        check_document(self.doc, &self.buf)?;
        Ok(Some(std::mem::take(&mut self.buf)))
    }
}

/// The body of a request that goes upstream unchanged (covered by the client's hash):
/// none, or a checked document.
pub(crate) enum PassBody {
    None,
    Doc(Document),
}

impl PassBody {
    pub fn push(&mut self, chunk: &[u8], end: bool, out: &mut Vec<u8>) -> Result<(), S3Error> {
        match self {
            PassBody::None => refuse_body(chunk),
            PassBody::Doc(d) => {
                if let Some(b) = d.push(chunk, end)? {
                    check_delete_keys(d.doc, &b, d.internal_reserved)?;
                    out.extend_from_slice(&b);
                }
                Ok(())
            }
        }
    }
}

/// Requests whose body, if the operation has one, is a document forwarded unchanged,
/// signed upstream with the client's hash of it.
pub(crate) fn pass_body(
    cx: &Cx,
    mut up: Headers,
    v: &VerifiedRequest,
    req: &S3Request,
    eos: bool,
) -> Result<(PassBody, Headers), S3Error> {
    let hash = document_hash(v)?.unwrap_or_else(|| sigv4::UNSIGNED_PAYLOAD.to_string());
    let body = match req.spec.body {
        Body::Document(doc) => {
            let mut d = Document::expect(&up, v, doc, eos)?;
            d.internal_reserved = cx.cfg.predecessor.is_some();
            PassBody::Doc(d)
        }
        Body::None => {
            no_body(&up, eos)?;
            PassBody::None
        }
        Body::Encrypt => {
            return Err(S3Error::internal(
                "s3crypt: object data on the pass-through path",
            ))
        }
    };
    cx.sign(&mut up, &hash);
    Ok((body, up))
}

/// Signed client headers the filter replaces with its own when it signs upstream.
pub(crate) const HIDDEN_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
];

/// Standard (non-`x-amz-*`) request headers with a meaning in S3 that go upstream when
/// the client signed them. Every other header (signed or not) stays here.
pub(crate) const FORWARDED_STANDARD_HEADERS: &[&str] = &[
    "content-length",
    "content-type",
    "content-md5",
    "content-encoding",
    "content-language",
    "content-disposition",
    "cache-control",
    "expires",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
];

/// Envoy's own routing header: its router finds no route for a request without it. Set
/// by Envoy's connection manager before any filter runs; it goes upstream only as
/// `http` or `https`.
pub(crate) const ENVOY_ROUTING_HEADER: &str = "x-forwarded-proto";

/// The request as far as its signature covers it: the pseudo-headers (`:path` and
/// `:authority` are covered as the canonical URI and `host`), `content-length` (framing,
/// enforced by Envoy and checked against the body), and the signed headers. Nothing else
/// is ever read by the filter. A signed header that appears twice is refused: the
/// filter and the backend could each act on another copy.
pub(crate) fn verified_view(h: &Headers, v: &VerifiedRequest) -> Result<Headers, S3Error> {
    let mut view = Headers::new();
    for (k, val) in h.iter() {
        let name = k.to_ascii_lowercase();
        let keep =
            name.starts_with(':') || name == "content-length" || v.signed_headers.contains(&name);
        if !keep {
            continue;
        }
        if name == "host"
            && h.get(":authority")
                .is_some_and(|a| !a.eq_ignore_ascii_case(val.trim()))
        {
            // SigV4 canonicalises `host`, routing reads `:authority`: they must agree.
            return Err(S3Error::invalid_request(
                "s3crypt: the Host header and :authority differ",
            ));
        }
        if !name.starts_with(':') && view.contains(&name) {
            return Err(S3Error::invalid_argument(format!(
                "s3crypt: header {name} appears more than once"
            )));
        }
        view.0.push((name, val.clone()));
    }
    Ok(view)
}

/// The upstream request, rebuilt from the verified view: its pseudo-headers with the
/// canonical path of what was parsed and the backend's authority, signed `x-amz-*`
/// headers (but those the filter signs itself), the signed standard headers of
/// [`FORWARDED_STANDARD_HEADERS`] and Envoy's [`ENVOY_ROUTING_HEADER`]. A copy source is
/// re-encoded canonically.
pub(crate) fn upstream_headers(
    raw: &Headers,
    view: &Headers,
    req: &S3Request,
    authority: &str,
) -> Result<Headers, S3Error> {
    let mut up = Headers::new();
    for (k, v) in view.iter() {
        let forward = matches!(k.as_str(), ":method" | ":scheme")
            || (k.starts_with("x-amz-") && !HIDDEN_REQUEST_HEADERS.contains(&k.as_str()))
            || FORWARDED_STANDARD_HEADERS.contains(&k.as_str());
        if forward {
            up.0.push((k.clone(), v.clone()));
        }
    }
    up.set(":path", req.upstream_path());
    up.set(":authority", authority.to_string());
    if let Some(p) = raw
        .get(ENVOY_ROUTING_HEADER)
        .filter(|p| *p == "http" || *p == "https")
    {
        up.set(ENVOY_ROUTING_HEADER, p.to_string());
    }
    // `Expect: 100-continue` has no S3 meaning and SDKs leave it out of the signature:
    // it goes upstream (as exactly that) so that the backend, not Envoy, tells the client
    // to send its body, after this filter authenticated the request (the connection
    // manager's `proxy_100_continue`; without it Envoy answers 100 before any filter ran).
    if raw
        .get("expect")
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("100-continue"))
    {
        up.set("expect", "100-continue");
    }
    // A browser's `Origin` (never signed: scripts cannot set it): S3 reads it only to add
    // the bucket's CORS headers to the response.
    if let Some(o) = super::cors::request_origin(raw) {
        up.set("origin", o);
    }
    if let Some(src) = view.get("x-amz-copy-source") {
        let (b, k, ver) = s3::parse_copy_source(src)?;
        up.set(
            "x-amz-copy-source",
            s3::copy_source_value(&b, &k, ver.as_deref()),
        );
    }
    Ok(up)
}

/// The SHA-256 a document body (or an empty body) was signed with, `None` for
/// `UNSIGNED-PAYLOAD`; aws-chunked framing is only decoded for uploads.
pub(crate) fn document_hash(v: &VerifiedRequest) -> Result<Option<String>, S3Error> {
    match &v.payload {
        PayloadMode::Sha256(h) => Ok(Some(h.clone())),
        PayloadMode::Unsigned => Ok(None),
        _ => Err(S3Error::not_implemented(
            "s3crypt: aws-chunked bodies are only supported for uploads",
        )),
    }
}

/// The keys of a DeleteObjects document follow the same rules as request keys (and name
/// none of the predecessor's internal objects while they are `internal_reserved`).
pub(crate) fn check_delete_keys(
    doc: Doc,
    body: &[u8],
    internal_reserved: bool,
) -> Result<(), S3Error> {
    if let Doc::Xml {
        roots: ["Delete"], ..
    } = doc
    {
        let text = String::from_utf8_lossy(body);
        for k in xml::element_texts(&text, "Key") {
            s3::check_key(&k)?;
            if internal_reserved && crate::predecessor::is_internal(&k) {
                return Err(S3Error::access_denied(format!(
                    "s3crypt: {} holds the manifests of the predecessor's objects",
                    crate::predecessor::INTERNAL_PREFIX
                )));
            }
        }
    }
    Ok(())
}

/// The error for a document body the operation does not accept.
pub(crate) fn malformed_document(doc: Doc) -> S3Error {
    match doc {
        Doc::Json => S3Error::new(400, "MalformedPolicy", "Policies must be valid JSON objects."),
        Doc::Xml { .. } => S3Error::new(400, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema."),
    }
}

/// A document body is what its operation accepts: a JSON object, or XML with one of the
/// expected root elements (or nothing, where the operation allows no body). Anything
/// else (object data sent to a configuration endpoint) is never forwarded.
pub(crate) fn check_document(doc: Doc, body: &[u8]) -> Result<(), S3Error> {
    let ok = match doc {
        Doc::Json => matches!(
            serde_json::from_slice::<serde_json::Value>(body),
            Ok(serde_json::Value::Object(_))
        ),
        Doc::Xml { roots, empty_ok } => {
            if body.iter().all(u8::is_ascii_whitespace) {
                empty_ok
            } else {
                // The expected root, and nothing after its end.
                xml::root_element(body)
                    .is_some_and(|r| roots.contains(&r) && xml::ends_with_root(body, r))
            }
        }
    };
    if ok {
        Ok(())
    } else {
        Err(malformed_document(doc))
    }
}

/// `path` without query parameter `name`.
pub(crate) fn remove_query_param(path: &str, name: &str) -> String {
    let Some((p, q)) = path.split_once('?') else {
        return path.to_string();
    };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|kv| kv.split('=').next() != Some(name))
        .collect();
    if kept.is_empty() {
        p.to_string()
    } else {
        format!("{p}?{}", kept.join("&"))
    }
}

/// The path without an empty `delimiter=` parameter.
pub(crate) fn drop_empty_param_delimiter(path: &str) -> String {
    let Some((p, q)) = path.split_once('?') else {
        return path.to_string();
    };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|kv| *kv != "delimiter=" && *kv != "delimiter")
        .collect();
    if kept.is_empty() {
        p.to_string()
    } else {
        format!("{p}?{}", kept.join("&"))
    }
}

/// Headers about the plaintext's integrity that must not reach the backend as they are
/// (they describe plaintext, the backend receives ciphertext), and aws-chunked framing.
pub(crate) fn strip_integrity_headers(up: &mut Headers) {
    up.remove("content-md5");
    strip_checksum_headers(up);
    for n in [
        "x-amz-sdk-checksum-algorithm",
        "x-amz-checksum-algorithm",
        "x-amz-trailer",
        "x-amz-decoded-content-length",
        "transfer-encoding",
    ] {
        up.remove(n);
    }
    if let Some(ce) = up.get("content-encoding").map(str::to_string) {
        let rest: Vec<&str> = ce
            .split(',')
            .map(str::trim)
            .filter(|t| !t.eq_ignore_ascii_case("aws-chunked") && !t.is_empty())
            .collect();
        if rest.is_empty() {
            up.remove("content-encoding");
        } else {
            up.set("content-encoding", rest.join(","));
        }
    }
}

pub(crate) fn strip_checksum_headers(h: &mut Headers) {
    h.0.retain(|(k, _)| {
        let k = k.to_ascii_lowercase();
        !(k.starts_with("x-amz-checksum-") && k != "x-amz-checksum-mode")
    });
}

/// The checksum a PUT announces: a value header (verified against the body) or an
/// algorithm to compute (returned to the client).
pub(crate) fn checksum_request(
    h: &Headers,
) -> Result<Option<(Checksummer, ChecksumAlgorithm, Option<String>)>, S3Error> {
    let mut found = None;
    for (k, v) in h.iter() {
        if let Some(algo) = ChecksumAlgorithm::from_header_name(k) {
            if found.is_some() {
                return Err(S3Error::invalid_request("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."));
            }
            // Base64 of at most a SHA-256: longer values cannot be right (and would not
            // fit the envelope's sealed block).
            if v.trim().len() > 64 {
                return Err(S3Error::invalid_digest());
            }
            found = Some((Checksummer::new(algo), algo, Some(v.trim().to_string())));
        }
    }
    if found.is_none() && h.get("x-amz-trailer").is_none() {
        if let Some(algo) = h
            .get("x-amz-sdk-checksum-algorithm")
            .and_then(ChecksumAlgorithm::from_algorithm_name)
        {
            found = Some((Checksummer::new(algo), algo, None));
        }
    }
    Ok(found)
}
