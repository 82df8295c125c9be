//! CopyObject. A single-part source is copied by the backend byte for byte (its envelope
//! comes along; the client sees the plaintext ETag). A multipart source is copied as a
//! multipart upload of the destination under the source's envelope (same data key), whose
//! parts are UploadPartCopy of the source's stored parts byte for byte, with the same part
//! numbers: each part stays a valid part-layout stream (its AAD names its number and
//! length, not its object), no data passes through the filter, and the destination's `-N`
//! ETag keeps sizes exact. A copy that fails after its upload was created aborts it.

use sha2::{Digest as _, Sha256};

use super::cx::{
    conditional_conflict, iso8601, no_such_key, precondition_failed, Cx, SseFor,
    COPY_SOURCE_SSE_PREFIX,
};
use super::etags::{self, Known};
use super::get::etag_list_matches;
use super::request::PassBody;
use super::response::RespBody;
use super::table::{cached_table, parts_in_etag, table_version, Found, Lookup};
use super::{BodyError, CallOutStep, RequestStep, ResponseStep};
use crate::auth::sigv4::{self, PayloadMode, VerifiedRequest};
use crate::crypto::DataKey;
use crate::format::{Envelope, Layout, ENVELOPE_HEADER};
use crate::headers::Headers;
use crate::s3::error::S3Error;
use crate::s3::{self, xml};

/// A version 3 single source whose trailer is being read.
struct SourceTrailer {
    up: Headers,
    src: Headers,
    env: Envelope,
    dek: DataKey,
    etag: String,
    stored: u64,
}

pub(crate) struct Copy {
    /// The client's payload hash, for the forwarded copy request.
    payload_hash: String,
    /// The plaintext ETag the result must show (sealed in the source's envelope).
    etag: Option<String>,
    /// What the destination of a single-part copy is (for the ETag cache): the source's
    /// object, stored in the same number of bytes.
    dest: Option<(Known, u64)>,
    body: RespBody,
    state: CopyState,
}

enum CopyState {
    /// The request went upstream (or answered here).
    Sent,
    /// The HEAD of the source; the upstream request waits.
    Source(Headers),
    /// The trailer of a version 3 single source (its plaintext ETag) is being read.
    Trailer(Box<SourceTrailer>),
    /// A multipart source's part table is being looked up.
    Table(Box<Lookup>, Box<MultipartCopy>),
    /// The destination's upload is being created.
    Create(Box<MultipartCopy>),
    /// A part is being copied.
    Part(Box<MultipartCopy>),
    /// The destination's upload is being completed.
    Complete(Box<MultipartCopy>),
    /// The copy failed after its upload was created: abort it, then answer this error.
    Abort(S3Error),
}

impl Copy {
    pub fn start(
        cx: &Cx,
        h: &Headers,
        up: Headers,
        v: &VerifiedRequest,
    ) -> Result<(Copy, RequestStep), S3Error> {
        let head = cx.sse_request_at("HEAD", copy_source_path(h)?, None, SseFor::CopySource);
        let payload_hash = match &v.payload {
            PayloadMode::Sha256(h) => h.clone(),
            _ => sigv4::UNSIGNED_PAYLOAD.to_string(),
        };
        let op = Copy {
            payload_hash,
            etag: None,
            dest: None,
            body: RespBody::Pass,
            state: CopyState::Source(up),
        };
        Ok((op, RequestStep::CallOut(cx.backend_callout(head))))
    }

    pub fn request_body(
        &mut self,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), S3Error> {
        PassBody::None.push(chunk, end, out)
    }

    pub fn callout(&mut self, cx: &Cx, resp: Option<(&Headers, &[u8])>) -> CallOutStep {
        let (status, body) = super::answer(resp);
        let r = match std::mem::replace(&mut self.state, CopyState::Sent) {
            CopyState::Source(up) => {
                return CallOutStep::Request(self.after_copy_source(cx, up, resp.map(|(h, _)| h)))
            }
            CopyState::Trailer(t) => {
                return CallOutStep::Request(self.after_source_trailer(cx, *t, resp))
            }
            CopyState::Table(mut lookup, mut mc) => match lookup.answered(cx, resp) {
                Ok(Found::Table(t)) => {
                    mc.parts = t.stored_parts();
                    self.copy_create(cx, mc)
                }
                Ok(Found::Read(call)) => {
                    self.state = CopyState::Table(lookup, mc);
                    Ok(RequestStep::CallOut(call))
                }
                Err(e) => Err(e),
            },
            CopyState::Create(mc) => self.copy_created(cx, mc, status, body),
            CopyState::Part(mc) => self.copy_part_done(cx, mc, status, body),
            CopyState::Complete(mc) => self.copy_completed(cx, mc, status, body),
            CopyState::Abort(e) => Err(e),
            CopyState::Sent => return super::unexpected_callout(cx),
        };
        cx.request_step(r)
    }

    pub fn response_headers(&mut self, cx: &Cx, h: &Headers, eos: bool) -> ResponseStep {
        self.body.no_object_headers(cx, h, eos)
    }

    /// The CopyObjectResult of a single-part copy shows the plaintext ETag.
    pub fn response_body(
        &mut self,
        cx: &Cx,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), BodyError> {
        if let Some(text) = self.body.push(cx, chunk, end, out)? {
            if let (Some((known, stored)), Some(backend)) =
                (&self.dest, xml::element_text(&text, "ETag"))
            {
                let (bucket, key) = etags::request_object(cx);
                etags::remember(cx, &bucket, &key, &backend, *stored, known);
            }
            if !text.contains("<Error>") {
                // The destination is a new version: the previous one's hint is stale
                // (reads find this one by its ETag in the cache, or probe it).
                etags::note_latest(cx, None);
            }
            let etag = self.etag.as_deref().unwrap_or_default();
            let rewritten = xml::replace_element_text(&text, "ETag", etag).unwrap_or(text);
            out.extend_from_slice(rewritten.as_bytes());
        }
        Ok(())
    }

    /// CopyObject: the source's HEAD answered. A source whose ETag the filter does not
    /// know yet (a version 3 single object's trailer, a multipart object's end part) has
    /// its last bytes read first.
    fn after_copy_source(&mut self, cx: &Cx, up: Headers, resp: Option<&Headers>) -> RequestStep {
        let resp = match copy_source_ok(resp, None, None, &|_| None) {
            Ok(r) => r,
            Err(e) => return cx.reject(&e),
        };
        let (bucket, key) = etags::copy_source_object(&up);
        let known = etags::known_of(cx, resp, &bucket, &key);
        if let (None, Some(ev)) = (&known, resp.get(ENVELOPE_HEADER)) {
            let (env, dek) = match cx.open_envelope(ev) {
                Ok(x) => x,
                Err(e) => return cx.reject(&e),
            };
            if etags::has_tail(&env) {
                let etag = resp.get("etag").unwrap_or("").to_string();
                let stored: u64 = resp
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let path = match copy_source_path(&up) {
                    Ok(p) => p,
                    Err(e) => return cx.reject(&e),
                };
                let multipart = env.layout != Layout::Single;
                let call =
                    etags::trailer_read(cx, path, &etag, stored, multipart, SseFor::CopySource);
                self.state = CopyState::Trailer(Box::new(SourceTrailer {
                    up,
                    src: resp.clone(),
                    env,
                    dek,
                    etag,
                    stored,
                }));
                return RequestStep::CallOut(call);
            }
        }
        let src = resp.clone();
        self.copy_known_source(cx, up, &src, known)
    }

    /// The last bytes of the source answered.
    fn after_source_trailer(
        &mut self,
        cx: &Cx,
        t: SourceTrailer,
        resp: Option<(&Headers, &[u8])>,
    ) -> RequestStep {
        match etags::trailer_answered(cx, resp, &t.env, &t.dek, &t.etag, t.stored) {
            Ok(known) => {
                let (bucket, key) = etags::copy_source_object(&t.up);
                etags::remember(cx, &bucket, &key, &t.etag, t.stored, &known);
                self.copy_known_source(cx, t.up, &t.src, Some(known))
            }
            Err(e) => cx.reject(&e),
        }
    }

    /// The source's HEAD answered and what it shows is known (`known`; `None`: it has
    /// no ETag but the backend's).
    fn copy_known_source(
        &mut self,
        cx: &Cx,
        mut up: Headers,
        resp: &Headers,
        known: Option<Known>,
    ) -> RequestStep {
        let if_match = up.get("x-amz-copy-source-if-match").map(str::to_string);
        let if_none = up
            .get("x-amz-copy-source-if-none-match")
            .map(str::to_string);
        up.remove("x-amz-copy-source-if-match");
        up.remove("x-amz-copy-source-if-none-match");
        let backend = resp.get("etag").unwrap_or("").to_string();
        let visible = known.as_ref().map(|k| k.etag(&backend));
        let visible_of = |_: &Headers| visible.clone();
        let resp = match copy_source_ok(
            Some(resp),
            if_match.as_deref(),
            if_none.as_deref(),
            &visible_of,
        ) {
            Ok(r) => r,
            Err(e) => return cx.reject(&e),
        };
        if resp.get(ENVELOPE_HEADER).is_none() {
            // A plaintext source stays plaintext in a server-side copy: only from and to a
            // passthrough scope (a migration inside it); otherwise the source is an
            // integrity error, as a read of it would be.
            let dest_ok = cx.req.as_ref().is_some_and(|r| {
                cx.cfg.passthrough_allowed(
                    r.bucket.as_deref().unwrap_or(""),
                    r.key.as_deref().unwrap_or(""),
                )
            });
            match copy_source_in_scope(cx, &up) {
                Ok(true) if dest_ok => {}
                Ok(_) => return cx.reject(&cx.integrity()),
                Err(e) => return cx.reject(&e),
            }
        }
        if let Some(ev) = resp.get(ENVELOPE_HEADER) {
            let env = match cx.open_envelope(ev) {
                Ok((env, _)) => env,
                Err(e) => return cx.reject(&e),
            };
            if env.layout == Layout::Part {
                let r = self.start_multipart_copy(cx, up, resp, ev.to_string(), known);
                return match r {
                    Ok(s) => s,
                    Err(e) => cx.reject(&e),
                };
            }
            let replace = up
                .get("x-amz-metadata-directive")
                .is_some_and(|d| d.eq_ignore_ascii_case("REPLACE"));
            if replace {
                up.set(ENVELOPE_HEADER, env.encode());
            }
            // The version whose ETag the filter knows is the one copied.
            if let Some(e) = resp.get("etag") {
                up.set("x-amz-copy-source-if-match", e.to_string());
            }
            let mut dest = Known::of(&env, None);
            if let Some(m) = known.and_then(|k| k.md5) {
                dest.md5 = Some(m);
                self.body = RespBody::Xml(Vec::new());
                self.etag = Some(format!("\"{}\"", hex::encode(m)));
            }
            let stored = resp
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            self.dest = Some((dest, stored));
        }
        let hash = self.payload_hash.clone();
        cx.sign(&mut up, &hash);
        RequestStep::Forward(up)
    }

    fn start_multipart_copy(
        &mut self,
        cx: &Cx,
        up: Headers,
        src: &Headers,
        envelope: String,
        known: Option<Known>,
    ) -> Result<RequestStep, S3Error> {
        let etag = src.get("etag").unwrap_or("").to_string();
        let stored: u64 = src
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let parts = parts_in_etag(&etag).ok_or_else(|| cx.integrity())?;
        let copy_source = up.get("x-amz-copy-source").unwrap_or("").to_string();
        let src_path = copy_source_path(&up)?;
        let dest = up
            .get(":path")
            .unwrap_or("/")
            .split('?')
            .next()
            .unwrap_or("/")
            .to_string();
        // The destination's metadata: the client's (REPLACE) or the source's (COPY).
        let replace = up
            .get("x-amz-metadata-directive")
            .is_some_and(|d| d.eq_ignore_ascii_case("REPLACE"));
        let meta_from = if replace { &up } else { src };
        let mut create = Headers::new();
        create.set(":method", "POST");
        create.set(":path", format!("{dest}?uploads"));
        create.set(":authority", cx.cfg.plugin.upstream_authority.clone());
        create.set(":scheme", "http");
        for (k, v) in meta_from.iter() {
            let k = k.to_ascii_lowercase();
            let standard = [
                "content-type",
                "cache-control",
                "content-disposition",
                "content-encoding",
                "content-language",
                "expires",
            ];
            if (k.starts_with("x-amz-meta-") && k != ENVELOPE_HEADER)
                || standard.contains(&k.as_str())
            {
                create.set(&k, v.clone());
            }
        }
        for k in ["x-amz-storage-class", "x-amz-tagging", "x-amz-acl"] {
            if let Some(v) = up.get(k) {
                create.set(k, v.to_string());
            }
        }
        // The destination's server-side encryption (SSE-S3, SSE-KMS, SSE-C).
        for (k, v) in up.iter() {
            if k.to_ascii_lowercase()
                .starts_with("x-amz-server-side-encryption")
            {
                create.set(k, v.clone());
            }
        }
        create.set(ENVELOPE_HEADER, envelope);
        // Source conditions and the source's SSE-C key go with every part copy.
        let conditions = up
            .iter()
            .filter(|(k, _)| {
                let k = k.to_ascii_lowercase();
                k.starts_with("x-amz-copy-source-if-") || k.starts_with(COPY_SOURCE_SSE_PREFIX)
            })
            .cloned()
            .collect();
        let dest_conditions = ["if-match", "if-none-match"]
            .iter()
            .filter_map(|k| up.get(k).map(|v| (k.to_string(), v.to_string())))
            .collect();
        let mc = Box::new(MultipartCopy {
            dest,
            copy_source,
            conditions,
            create,
            dest_conditions,
            src_etag: etag.clone(),
            known,
            parts: Vec::new(),
            upload_id: String::new(),
            next: 0,
            etags: Vec::new(),
        });
        // The walk needs the data key: it verifies the last frame of every part.
        let (env, dek) = cx.open_envelope(mc.create.get(ENVELOPE_HEADER).unwrap_or_default())?;
        let version = table_version(&etag, stored, &env);
        match cached_table(cx, &version, stored, parts, env.version >= 2) {
            Some(t) => {
                let mut mc = mc;
                mc.parts = t.stored_parts();
                self.copy_create(cx, mc)
            }
            None => {
                let (lookup, call) = Lookup::start(
                    cx,
                    &env,
                    &dek,
                    src_path,
                    etag,
                    stored,
                    parts,
                    None,
                    SseFor::CopySource,
                );
                self.state = CopyState::Table(Box::new(lookup), mc);
                Ok(RequestStep::CallOut(call))
            }
        }
    }

    fn copy_create(&mut self, cx: &Cx, mc: Box<MultipartCopy>) -> Result<RequestStep, S3Error> {
        let mut h = mc.create.clone();
        cx.sign(&mut h, sigv4::EMPTY_SHA256);
        self.state = CopyState::Create(mc);
        Ok(RequestStep::CallOut(cx.backend_callout(h)))
    }

    fn copy_created(
        &mut self,
        cx: &Cx,
        mut mc: Box<MultipartCopy>,
        status: Option<u16>,
        body: &[u8],
    ) -> Result<RequestStep, S3Error> {
        let text = String::from_utf8_lossy(body);
        let id = xml::element_text(&text, "UploadId").unwrap_or_default();
        if status != Some(200) || id.is_empty() {
            return Err(copy_failed(status));
        }
        mc.upload_id = id;
        self.copy_next_part(cx, mc)
    }

    fn copy_next_part(&mut self, cx: &Cx, mc: Box<MultipartCopy>) -> Result<RequestStep, S3Error> {
        let Some(&(number, len, offset)) = mc.parts.get(mc.next) else {
            return self.copy_complete(cx, mc);
        };
        let mut h = cx.sse_request_at(
            "PUT",
            format!(
                "{}?partNumber={number}&uploadId={}",
                mc.dest,
                s3::uri_encode(&mc.upload_id, true)
            ),
            None,
            SseFor::Object,
        );
        h.set("x-amz-copy-source", mc.copy_source.clone());
        h.set(
            "x-amz-copy-source-range",
            format!("bytes={offset}-{}", offset + len - 1),
        );
        h.set("x-amz-copy-source-if-match", mc.src_etag.clone());
        for (k, v) in &mc.conditions {
            h.set(k, v.clone());
        }
        cx.sign(&mut h, sigv4::EMPTY_SHA256);
        self.state = CopyState::Part(mc);
        Ok(RequestStep::CallOut(cx.backend_callout(h)))
    }

    fn copy_part_done(
        &mut self,
        cx: &Cx,
        mut mc: Box<MultipartCopy>,
        status: Option<u16>,
        body: &[u8],
    ) -> Result<RequestStep, S3Error> {
        let text = String::from_utf8_lossy(body);
        // S3 may answer 200 with an error document to a copy.
        let etag = xml::element_text(&text, "ETag").filter(|_| !text.contains("<Error>"));
        let number = mc.parts.get(mc.next).map(|p| p.0);
        match (status, etag, number) {
            (Some(200), Some(e), Some(n)) => {
                mc.etags.push((n, e));
                mc.next += 1;
                self.copy_next_part(cx, mc)
            }
            _ => self.copy_abort(cx, &mc, copy_failed(status)),
        }
    }

    fn copy_complete(&mut self, cx: &Cx, mc: Box<MultipartCopy>) -> Result<RequestStep, S3Error> {
        let mut body = String::from("<CompleteMultipartUpload>");
        for (n, e) in &mc.etags {
            body.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                crate::s3::error::xml_escape(e)
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let mut h = cx.request_at(
            "POST",
            format!(
                "{}?uploadId={}",
                mc.dest,
                s3::uri_encode(&mc.upload_id, true)
            ),
            None,
        );
        h.set("content-type", "application/xml");
        h.set("content-length", body.len().to_string());
        for (k, v) in &mc.dest_conditions {
            h.set(k, v.clone());
        }
        cx.sign(&mut h, &hex::encode(Sha256::digest(body.as_bytes())));
        self.state = CopyState::Complete(mc);
        let mut c = cx.backend_callout(h);
        c.body = Some(body.into_bytes());
        c.timeout_ms = 60_000;
        Ok(RequestStep::CallOut(c))
    }

    fn copy_completed(
        &mut self,
        cx: &Cx,
        mc: Box<MultipartCopy>,
        status: Option<u16>,
        body: &[u8],
    ) -> Result<RequestStep, S3Error> {
        let text = String::from_utf8_lossy(body);
        let etag = xml::element_text(&text, "ETag").filter(|_| !text.contains("<Error>"));
        let Some(mut etag) = etag.filter(|_| status == Some(200)) else {
            return self.copy_abort(cx, &mc, copy_failed(status));
        };
        if etag.trim().is_empty() {
            // RGW answers an empty ETag: the one it gives the object (HEAD shows it).
            let parts = mc.etags.iter().map(|(_, e)| e.as_str());
            etag = super::complete::multipart_etag(parts).unwrap_or(etag);
        }
        if let Some(k) = &mc.known {
            // The copy has the source's parts byte for byte: its stored size, and the
            // plaintext ETag sealed in its table.
            let stored = mc.parts.iter().map(|p| p.1).fold(0u64, u64::saturating_add);
            let (bucket, key) = etags::request_object(cx);
            etags::remember(cx, &bucket, &key, &etag, stored, k);
            etags::note_latest(cx, Some((&etag, stored, true)));
            etag = k.etag(&etag);
        } else {
            etags::note_latest(cx, None);
        }
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyObjectResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LastModified>{}</LastModified><ETag>{}</ETag></CopyObjectResult>",
            iso8601(cx.now()),
            crate::s3::error::xml_escape(&etag)
        );
        Ok(cx.xml_reply(xml))
    }

    /// Aborts the destination's upload (nothing half-written stays), then answers `e`.
    fn copy_abort(
        &mut self,
        cx: &Cx,
        mc: &MultipartCopy,
        e: S3Error,
    ) -> Result<RequestStep, S3Error> {
        let h = cx.request_at(
            "DELETE",
            format!(
                "{}?uploadId={}",
                mc.dest,
                s3::uri_encode(&mc.upload_id, true)
            ),
            None,
        );
        self.state = CopyState::Abort(e);
        Ok(RequestStep::CallOut(cx.backend_callout(h)))
    }
}

/// CopyObject of a multipart object: a multipart upload of the destination under the
/// source's envelope (same data key), whose parts are UploadPartCopy of the source's
/// stored parts byte for byte, with the same part numbers. Each part stays a valid
/// part-layout stream (its AAD names its number and length, not its object), no data
/// passes through the filter, and the destination's `-N` ETag keeps sizes exact.
pub(crate) struct MultipartCopy {
    /// Upstream path of the destination object (no query).
    dest: String,
    /// `x-amz-copy-source` as the client sent it.
    copy_source: String,
    /// `x-amz-copy-source-if-*` conditions of the client, applied to every part.
    conditions: Vec<(String, String)>,
    /// CreateMultipartUpload headers (metadata, content headers, envelope).
    create: Headers,
    /// The destination's write conditions (`If-None-Match: *`, `If-Match` with the
    /// backend's ETag; see `condition`), applied to the Complete.
    dest_conditions: Vec<(String, String)>,
    src_etag: String,
    /// What the source shows (its multipart MD5, if sealed), which the copy shows too:
    /// same parts, same table.
    known: Option<Known>,
    /// (part number, stored length, stored offset) of the source's parts.
    parts: Vec<(u32, u64, u64)>,
    upload_id: String,
    next: usize,
    etags: Vec<(u32, String)>,
}

/// A failed step of a multipart copy: the backend's S3 error if it sent one.
pub(crate) fn copy_failed(status: Option<u16>) -> S3Error {
    match status {
        Some(412) => precondition_failed(),
        Some(409) => conditional_conflict(),
        Some(404) => no_such_key(),
        Some(403) => S3Error::access_denied("Access Denied"),
        _ => S3Error::service_unavailable(
            "s3crypt: the multipart copy failed at the backend; please retry",
        ),
    }
}

/// Upstream path of the object named by `x-amz-copy-source` (with its versionId).
pub(crate) fn copy_source_path(h: &Headers) -> Result<String, S3Error> {
    let src = h
        .get("x-amz-copy-source")
        .ok_or_else(|| S3Error::invalid_argument("missing x-amz-copy-source"))?;
    let (bucket, key, version) = s3::parse_copy_source(src)?;
    let mut path = format!(
        "/{}/{}",
        s3::uri_encode(&bucket, true),
        s3::uri_encode(&key, false)
    );
    if let Some(v) = version {
        path.push_str(&format!("?versionId={}", s3::uri_encode(&v, true)));
    }
    Ok(path)
}

/// The HEAD of a copy source: its status, then the client's ETag conditions evaluated
/// against the ETag clients see (the backend's ETag is that of the ciphertext; the
/// plaintext one is sealed in the object: `visible_of` gives it when known).
pub(crate) fn copy_source_ok<'a>(
    resp: Option<&'a Headers>,
    if_match: Option<&str>,
    if_none: Option<&str>,
    visible_of: &dyn Fn(&Headers) -> Option<String>,
) -> Result<&'a Headers, S3Error> {
    let resp = resp.ok_or_else(|| {
        S3Error::service_unavailable("s3crypt: the copy source could not be read")
    })?;
    match resp.get(":status").unwrap_or("") {
        "200" => {}
        "404" => return Err(no_such_key()),
        "403" => return Err(S3Error::access_denied("Access Denied")),
        "304" | "412" => return Err(precondition_failed()),
        _ => {
            return Err(S3Error::service_unavailable(
                "s3crypt: the copy source could not be read",
            ))
        }
    }
    let visible_etag = visible_of(resp)
        .or_else(|| resp.get("etag").map(str::to_string))
        .unwrap_or_default();
    if if_match.is_some_and(|m| !etag_list_matches(m, &visible_etag))
        || if_none.is_some_and(|m| etag_list_matches(m, &visible_etag))
    {
        return Err(precondition_failed());
    }
    Ok(resp)
}

/// Whether the object named by `x-amz-copy-source` lies in a passthrough scope.
pub(crate) fn copy_source_in_scope(cx: &Cx, h: &Headers) -> Result<bool, S3Error> {
    let src = h
        .get("x-amz-copy-source")
        .ok_or_else(|| S3Error::invalid_argument("missing x-amz-copy-source"))?;
    let (bucket, key, _) = s3::parse_copy_source(src)?;
    Ok(cx.cfg.passthrough_allowed(&bucket, &key))
}
