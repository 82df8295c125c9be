//! GetObject and HeadObject: plaintext sizes, ranges and part reads of single and
//! multipart objects, conditions evaluated against the ETag clients see, and a body that
//! is only released frame by frame after each tag verified (a failure after the headers
//! went out is a reset, with at most the verified prefix released).
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use super::cx::{object_path, Cx, SseFor};
use super::etags::{self, Known};
use super::predecessor::{self, PredPlan};
use super::request::{remove_query_param, strip_checksum_headers};
use super::response::{replace_response, RespBody};
use super::table::{cached_table, parts_in_etag, table_version, Found, Lookup};
use super::vm::LookupInFlight;
use super::{BodyError, CallOutStep, Counter, RequestStep, ResponseStep};
use crate::auth::sigv4;
use crate::crypto::DataKey;
use crate::format::part_table::{PartTable, RangeDecryptor, RangePlan};
use crate::format::{
    has_trailer, single_from_stored, Envelope, FrameDecryptor, Geometry, Layout, PartsDecryptor,
    TrailerCheck, Window, ENVELOPE_HEADER, FRAME_OVERHEAD, SINGLE_ENVELOPE_VERSION, SINGLE_FRAME,
    TRAILER_LEN,
};
use crate::headers::Headers;
use crate::s3::error::S3Error;
use crate::s3::range::{self, RangeSpec};
use crate::s3::S3Request;

pub(crate) struct Get {
    plan: GetPlan,
    body: RespBody,
    state: GetState,
}

enum GetState {
    /// The request went upstream (or will: nothing is pending).
    Sent,
    /// By range or part number: the HEAD of the object. `original` is the upstream path
    /// with `partNumber` (plaintext objects go to the backend unchanged).
    Head { up: Headers, original: String },
    /// A multipart object's part table is being looked up; the request waits.
    Table(Box<Lookup>, Headers),
    /// Another request of this VM is looking up the same part table.
    Wait(Box<TableWait>),
    /// A whole read of an object version the filter has not seen: the object's last
    /// [`TRAILER_LEN`] bytes are read first (a version 3 object's ETag, its plaintext
    /// MD5, is sealed there), so its response is never held upstream of the client.
    Probe(Headers),
    /// A range of a version 3 single object whose HEAD answered: its trailer is read
    /// before the range goes upstream.
    RangeTrailer(Box<RangeTrailer>),
    /// A whole read of a multipart object version the filter has not seen, after the
    /// probe: its end part (where its plaintext ETag is sealed) is read first.
    ProbeEnd(Box<RangeTrailer>),
    /// An object without an envelope, with `predecessor_read` on: its manifest is read
    /// (the predecessor's objects are planned from it, or from their `isec` metadata).
    PredManifest(Box<PredLookup>),
}

/// A read waiting for the predecessor's manifest of its object.
struct PredLookup {
    up: Headers,
    /// The headers of the object (the probe's or the HEAD's answer) and its stored size.
    obj: Headers,
    stored: u64,
    /// A range or part read (the HEAD path): the upstream path as the client sent it.
    original: Option<String>,
}

/// A read waiting for the last bytes of its object (a single object's trailer, a
/// multipart object's end part).
struct RangeTrailer {
    up: Headers,
    env: Envelope,
    dek: DataKey,
    etag: String,
    stored: u64,
}

/// What the request asked for that the response phase needs.
#[derive(Default)]
struct GetPlan {
    range: Option<RangeSpec>,
    /// Upstream range start we asked for (ranges are widened to frames).
    widened: bool,
    /// The upstream request carries an If-Match of the version the HEAD saw (not the
    /// client's: its conditions are evaluated here), so a 412 means the object changed.
    pinned: bool,
    if_match: Option<String>,
    if_none_match: Option<String>,
    checksum_mode: bool,
    /// `?partNumber=N` of a GET or HEAD.
    part_number: Option<u32>,
    /// A range or part of a multipart object, planned from its part table.
    multipart: Option<MultipartRead>,
    /// The ETag (plaintext MD5) a version 3 single object was answered with: a whole
    /// read checks that its trailer verifies and holds it.
    trailer_md5: Option<[u8; 16]>,
    /// What the request phase learnt of the object version it expects the backend to
    /// send (backend ETag, stored size): the response of any other version whose ETag
    /// is in its trailer is refused (503, retry), never held.
    known: Option<(String, u64, Known)>,
    /// The envelope of a multipart object read by range or part: what its table says of
    /// its ETag is cached under it.
    multipart_env: Option<Envelope>,
    /// An object of the predecessor, planned from its manifest or metadata.
    predecessor: Option<Box<PredPlan>>,
    /// With `predecessor_read` on: the object was looked up and is not the predecessor's.
    predecessor_checked: bool,
}

/// A planned read of a multipart object.
struct MultipartRead {
    /// The backend's ETag of the version planned for, and the one clients see.
    etag: String,
    visible: String,
    first: u64,
    last: u64,
    plain_total: u64,
    parts: usize,
    plan: RangePlan,
}

/// What the backend sends of a single object: `[start, start + sent_len)` of `total`.
struct SingleWindow {
    start: u64,
    sent_len: u64,
    total: u64,
}

/// A range or part read waiting for another request's lookup of the same part table.
struct TableWait {
    up: Headers,
    etag: String,
    version: String,
    stored: u64,
    parts: u64,
    numbered: bool,
}

impl Get {
    pub fn start(
        cx: &Cx,
        h: &Headers,
        mut up: Headers,
        req: &S3Request,
    ) -> Result<(Get, RequestStep), S3Error> {
        let mut op = Get {
            plan: GetPlan::default(),
            body: RespBody::Pass,
            state: GetState::Sent,
        };
        let step = op.start_get(cx, h, &mut up, req)?;
        Ok((op, step))
    }

    pub fn callout(&mut self, cx: &Cx, resp: Option<(&Headers, &[u8])>) -> CallOutStep {
        let r = match std::mem::replace(&mut self.state, GetState::Sent) {
            GetState::Head { up, original } => {
                self.after_object_head(cx, up, original, resp.map(|(h, _)| h))
            }
            GetState::Table(mut lookup, up) => match lookup.answered(cx, resp) {
                Ok(Found::Table(t)) => {
                    let etag = lookup.etag().to_string();
                    drop(lookup); // the lookup ended: readers waiting for it go on
                    self.plan_multipart(cx, up, etag, t)
                }
                Ok(Found::Read(call)) => {
                    self.state = GetState::Table(lookup, up);
                    Ok(RequestStep::CallOut(call))
                }
                Err(e) => Err(e),
            },
            GetState::Probe(up) => self.after_probe(cx, up, resp),
            GetState::RangeTrailer(t) => self.after_range_trailer(cx, *t, resp),
            GetState::ProbeEnd(t) => self.after_probe_end(cx, *t, resp),
            GetState::PredManifest(l) => self.after_pred_manifest(cx, *l, resp),
            GetState::Sent | GetState::Wait(_) => return super::unexpected_callout(cx),
        };
        cx.request_step(r)
    }

    pub fn response_headers(&mut self, cx: &Cx, h: &Headers, eos: bool) -> ResponseStep {
        let mut out = h.clone();
        let status: u16 = h.get(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        if let Err(e) = self.prepare_get(cx, status, &mut out) {
            replace_response(cx, &mut out, &mut self.body, &e);
        }
        self.body.headers_done(&mut out, eos);
        ResponseStep::Forward(out)
    }

    pub fn response_body(
        &mut self,
        cx: &Cx,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), BodyError> {
        self.body.push(cx, chunk, end, out).map(drop)
    }

    fn start_get(
        &mut self,
        cx: &Cx,
        h: &Headers,
        up: &mut Headers,
        req: &S3Request,
    ) -> Result<RequestStep, S3Error> {
        if let Some(n) = req.query_param("partNumber") {
            let n: u32 = n
                .parse()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| {
                    S3Error::invalid_argument(
                        "Part number must be an integer between 1 and 10000, inclusive",
                    )
                })?;
            if h.contains("range") {
                return Err(S3Error::invalid_request(
                    "Cannot specify both Range header and partNumber query parameter",
                ));
            }
            self.plan.part_number = Some(n);
        }
        self.plan.if_match = h.get("if-match").map(str::to_string);
        self.plan.if_none_match = h.get("if-none-match").map(str::to_string);
        self.plan.checksum_mode = h
            .get("x-amz-checksum-mode")
            .is_some_and(|v| v.eq_ignore_ascii_case("enabled"));
        // ETags are compared by the filter against the client-visible ETag.
        up.remove("if-match");
        up.remove("if-none-match");
        if let Some(spec) = h.get("range").and_then(range::parse_range) {
            self.plan.range = Some(spec);
            self.plan.widened = true;
            up.set("range", widened_range(spec));
        } else {
            up.remove("range");
        }
        if self.plan.range.is_none() && self.plan.part_number.is_none() {
            cx.sign(up, sigv4::EMPTY_SHA256);
            if let Some(latest) = etags::latest_known(cx) {
                self.plan.known = Some(latest);
                return Ok(RequestStep::Forward(std::mem::take(up)));
            }
            // A version the filter has not seen: its ETag may be in its trailer (or a
            // multipart object's end part), read before the request goes upstream.
            let tail = Some(format!("bytes=-{TRAILER_LEN}"));
            let read = cx.sse_request_at("GET", object_path(req), tail, SseFor::Object);
            self.state = GetState::Probe(std::mem::take(up));
            return Ok(RequestStep::CallOut(cx.backend_callout(read)));
        }
        // A range or a part: the object's layout decides how it is read, so its headers
        // come first (a multipart object needs its part table).
        let original = up.get(":path").unwrap_or("/").to_string();
        up.set(":path", remove_query_param(&original, "partNumber"));
        cx.sign(up, sigv4::EMPTY_SHA256);
        let head = cx.sse_request_at("HEAD", object_path(req), None, SseFor::Object);
        self.state = GetState::Head {
            up: std::mem::take(up),
            original,
        };
        Ok(RequestStep::CallOut(cx.backend_callout(head)))
    }

    /// The object's HEAD answered (GET/HEAD by range or part number).
    fn after_object_head(
        &mut self,
        cx: &Cx,
        up: Headers,
        original: String,
        resp: Option<&Headers>,
    ) -> Result<RequestStep, S3Error> {
        let resp = resp.ok_or_else(|| {
            S3Error::service_unavailable("s3crypt: the object could not be read; please retry")
        })?;
        let status = resp.get(":status").unwrap_or("");
        let envelope = resp.get(ENVELOPE_HEADER);
        let stored: Option<u64> = resp.get("content-length").and_then(|v| v.parse().ok());
        let etag = resp.get("etag").unwrap_or("").to_string();
        if let (None, "200", Some(_), Some(req), Some(n)) = (
            envelope,
            status,
            &cx.cfg.predecessor,
            cx.req.as_ref(),
            stored,
        ) {
            let call = predecessor::manifest_callout(cx, req);
            self.state = GetState::PredManifest(Box::new(PredLookup {
                up,
                obj: resp.clone(),
                stored: n,
                original: Some(original),
            }));
            return Ok(RequestStep::CallOut(call));
        }
        let (Some(ev), "200") = (envelope, status) else {
            let plain = stored.filter(|_| status == "200");
            return Ok(self.forward_unencrypted(cx, up, original, plain, &etag));
        };
        let (env, dek) = cx.open_envelope(ev)?;
        if env.layout == Layout::Single {
            let known = Known::of(&env, None);
            if let (None, true, Some(stored)) =
                (known.md5, env.version >= SINGLE_ENVELOPE_VERSION, stored)
            {
                let (bucket, key) = etags::request_object(cx);
                match etags::known_unread(cx, &env, &bucket, &key, &etag, stored)
                    .filter(|k| k.md5.is_some())
                {
                    Some(k) => self.plan.known = Some((etag.clone(), stored, k)),
                    None => {
                        let t = RangeTrailer {
                            up,
                            env,
                            dek,
                            etag,
                            stored,
                        };
                        return Ok(self.read_tail(cx, t, GetState::RangeTrailer));
                    }
                }
            }
            return self.plan_single(cx, up, &env, stored, &etag);
        }
        let stored = stored.unwrap_or(0);
        let parts = parts_in_etag(&etag).ok_or_else(|| cx.integrity())?;
        let numbered = env.version >= 2;
        self.plan.multipart_env = Some(env.clone());
        let version = table_version(&etag, stored, &env);
        match cached_table(cx, &version, stored, parts, numbered) {
            Some(t) => self.plan_multipart(cx, up, etag, t),
            None => {
                let Some(shared) = LookupInFlight::start(&cx.vm, &version) else {
                    // Another read of this version is finding the table: wait for it.
                    self.state = GetState::Wait(Box::new(TableWait {
                        up,
                        etag,
                        version: version.clone(),
                        stored,
                        parts,
                        numbered,
                    }));
                    return Ok(RequestStep::Wait(version));
                };
                let path = cx.object_path();
                let (lookup, call) = Lookup::start(
                    cx,
                    &env,
                    &dek,
                    path,
                    etag,
                    stored,
                    parts,
                    Some(shared),
                    SseFor::Object,
                );
                self.state = GetState::Table(Box::new(lookup), up);
                Ok(RequestStep::CallOut(call))
            }
        }
    }

    /// A range or part read of an object without an envelope (`stored`: its size, if the
    /// HEAD found it), or of one the HEAD could not find: the backend answers the request
    /// as the client sent it, a range resolved against the stored size and pinned to the
    /// version seen, or the client's own range if it is not satisfiable (the backend
    /// says 416).
    fn forward_unencrypted(
        &mut self,
        cx: &Cx,
        mut up: Headers,
        original: String,
        stored: Option<u64>,
        etag: &str,
    ) -> RequestStep {
        if let (Some(spec), Some(len), None) = (self.plan.range, stored, self.plan.part_number) {
            match range::resolve(spec, len) {
                Ok((a, b)) => up.set("range", format!("bytes={a}-{b}")),
                Err(()) => up.set("range", spec_header(spec)),
            }
            self.pin(&mut up, etag);
        }
        if up.get(":path") != Some(original.as_str()) {
            up.set(":path", original);
            cx.sign(&mut up, sigv4::EMPTY_SHA256);
        }
        RequestStep::Forward(up)
    }

    /// The probe of a whole read answered (the object's last [`TRAILER_LEN`] bytes): a
    /// single object's version and ETag are known, its trailer verified; a version 2
    /// multipart object has its end part read next; anything else (an error, an
    /// unencrypted object, no answer) is for the read's own response to decide.
    fn after_probe(
        &mut self,
        cx: &Cx,
        up: Headers,
        resp: Option<(&Headers, &[u8])>,
    ) -> Result<RequestStep, S3Error> {
        let Some((h, _)) = resp else {
            return Ok(RequestStep::Forward(up));
        };
        let envelope = h
            .get(ENVELOPE_HEADER)
            .filter(|_| matches!(h.get(":status"), Some("200" | "206")));
        let Some(ev) = envelope else {
            let status = h.get(":status");
            if let (Some(_), Some(req), Some("200" | "206")) =
                (&cx.cfg.predecessor, cx.req.as_ref(), status)
            {
                let stored = match h.get("content-range").and_then(parse_content_range) {
                    Some((_, _, total)) => Some(total),
                    None => h.get("content-length").and_then(|v| v.parse().ok()),
                };
                if let Some(stored) = stored {
                    let call = predecessor::manifest_callout(cx, req);
                    self.state = GetState::PredManifest(Box::new(PredLookup {
                        up,
                        obj: h.clone(),
                        stored,
                        original: None,
                    }));
                    return Ok(RequestStep::CallOut(call));
                }
            }
            // No object data to look at (an empty object answers the probe 416; a missing
            // one 404): not the predecessor's, whose objects are at least one segment.
            self.plan.predecessor_checked = true;
            return Ok(RequestStep::Forward(up));
        };
        let (env, dek) = cx.open_envelope(ev)?;
        let etag = h.get("etag").unwrap_or("").to_string();
        let stored = match h.get("content-range").and_then(parse_content_range) {
            Some((_, _, total)) => Some(total),
            None => h.get("content-length").and_then(|v| v.parse().ok()),
        }
        .ok_or_else(|| cx.integrity())?;
        let (bucket, key) = etags::request_object(cx);
        if env.layout != Layout::Single {
            if let Some(k) = etags::known_unread(cx, &env, &bucket, &key, &etag, stored) {
                etags::remember(cx, &bucket, &key, &etag, stored, &k);
                self.plan.known = Some((etag, stored, k));
                return Ok(RequestStep::Forward(up));
            }
            if parts_in_etag(&etag).is_none() {
                return Ok(RequestStep::Forward(up)); // the response is refused
            }
            let t = RangeTrailer {
                up,
                env,
                dek,
                etag,
                stored,
            };
            return Ok(self.read_tail(cx, t, GetState::ProbeEnd));
        }
        let plain_len = env.plain_len.ok_or_else(|| cx.integrity())?;
        if crate::format::single_stored_len(env.version, plain_len) != Some(stored) {
            // Not what the envelope says: the read's own response is refused (integrity).
            return Ok(RequestStep::Forward(up));
        }
        let mut known = Known::of(&env, None);
        if known.md5.is_none() && env.version >= SINGLE_ENVELOPE_VERSION {
            known = etags::trailer_answered(cx, resp, &env, &dek, &etag, stored)?;
        }
        etags::remember(cx, &bucket, &key, &etag, stored, &known);
        self.plan.known = Some((etag, stored, known));
        Ok(RequestStep::Forward(up))
    }

    /// The manifest read of an object without an envelope answered (`predecessor_read`):
    /// the read is planned as the predecessor's object, pinned to the version seen, or
    /// (not the predecessor's) goes on as a plaintext object's.
    fn after_pred_manifest(
        &mut self,
        cx: &Cx,
        l: PredLookup,
        resp: Option<(&Headers, &[u8])>,
    ) -> Result<RequestStep, S3Error> {
        let p = cx
            .cfg
            .predecessor
            .as_ref()
            .ok_or_else(|| S3Error::internal("s3crypt: predecessor_read is off"))?;
        let PredLookup {
            mut up,
            obj,
            stored,
            original,
        } = l;
        let Some(mut plan) = predecessor::plan(p, &obj, stored, resp)? else {
            self.plan.predecessor_checked = true;
            let Some(original) = original else {
                // A whole read of a plaintext object: of the version looked up.
                let etag = obj.get("etag").unwrap_or("").to_string();
                self.pin(&mut up, &etag);
                return Ok(RequestStep::Forward(up));
            };
            // A plaintext object read by range or part: as without the lookup.
            let etag = obj.get("etag").unwrap_or("");
            return Ok(self.forward_unencrypted(cx, up, original, Some(stored), etag));
        };
        if original.is_some() {
            let (first, last) = match (self.plan.part_number, self.plan.range) {
                (Some(n), _) => {
                    let (off, len) = plan.part_range(n).ok_or_else(invalid_part_number)?;
                    let last = off.checked_add(len).and_then(|e| e.checked_sub(1));
                    (off, last.ok_or_else(invalid_part_number)?)
                }
                (None, Some(spec)) => range::resolve(spec, plan.plain_len).map_err(|_| {
                    S3Error::invalid_range("The requested range is not satisfiable")
                })?,
                (None, None) => return Err(S3Error::internal("s3crypt: nothing to plan")),
            };
            plan.set_window(first, last).ok_or_else(|| cx.integrity())?;
            match (&plan.window, cx.head) {
                (Some(w), false) => up.set(
                    "range",
                    format!("bytes={}-{}", w.stored_first, w.stored_last),
                ),
                _ => up.remove("range"),
            }
        }
        let etag = plan.etag.clone();
        self.pin(&mut up, &etag);
        self.plan.predecessor = Some(Box::new(plan));
        Ok(RequestStep::Forward(up))
    }

    /// The response of a predecessor's object planned by [`Self::after_pred_manifest`].
    fn predecessor_response(
        &mut self,
        cx: &Cx,
        status: u16,
        out: &mut Headers,
        total: u64,
        plan: PredPlan,
    ) -> Result<(), S3Error> {
        let p = cx
            .cfg
            .predecessor
            .as_ref()
            .ok_or_else(|| S3Error::internal("s3crypt: predecessor_read is off"))?;
        if total != plan.stored || out.get("etag") != Some(plan.etag.as_str()) {
            return Err(S3Error::slow_down(
                "s3crypt: the object changed while it was read; please retry",
            ));
        }
        predecessor::strip_metadata(p, out);
        let etag = plan.shown_etag(cx.head);
        if let Some(st) = self.check_conditions(Some(&etag)) {
            self.not_modified(cx, out, st);
            out.set("etag", etag);
            return Ok(());
        }
        out.set("etag", etag);
        strip_checksum_headers(out);
        match plan.window {
            None => {
                if status != 200 {
                    return Err(cx.integrity());
                }
                out.set(":status", "200");
                out.remove("content-range");
                out.set("content-length", plan.plain_len.to_string());
            }
            Some(w) => {
                let stored = (w.stored_first, w.stored_last);
                let plain = (w.first, w.last, plan.plain_len);
                self.planned_partial(cx, status, out, stored, plain, plan.part_count())?;
            }
        }
        cx.count(Counter::PredecessorServed, 1);
        if !cx.head {
            let d = plan.decryptor().ok_or_else(|| cx.integrity())?;
            self.body = RespBody::decrypt(Box::new(d));
        }
        Ok(())
    }

    /// Reads the last bytes of the object `t` waits for (its trailer, or a multipart
    /// object's end part), in state `then`.
    fn read_tail(
        &mut self,
        cx: &Cx,
        t: RangeTrailer,
        then: fn(Box<RangeTrailer>) -> GetState,
    ) -> RequestStep {
        let multipart = t.env.layout != Layout::Single;
        let path = cx.object_path();
        let call = etags::trailer_read(cx, path, &t.etag, t.stored, multipart, SseFor::Object);
        self.state = then(Box::new(t));
        RequestStep::CallOut(call)
    }

    /// The end part of a multipart object read after the probe answered: what it seals
    /// is what the read shows (and the cache keeps).
    fn after_probe_end(
        &mut self,
        cx: &Cx,
        t: RangeTrailer,
        resp: Option<(&Headers, &[u8])>,
    ) -> Result<RequestStep, S3Error> {
        let known = etags::trailer_answered(cx, resp, &t.env, &t.dek, &t.etag, t.stored)?;
        let (bucket, key) = etags::request_object(cx);
        etags::remember(cx, &bucket, &key, &t.etag, t.stored, &known);
        self.plan.known = Some((t.etag, t.stored, known));
        Ok(RequestStep::Forward(t.up))
    }

    /// The trailer of a version 3 single object read by range answered.
    fn after_range_trailer(
        &mut self,
        cx: &Cx,
        t: RangeTrailer,
        resp: Option<(&Headers, &[u8])>,
    ) -> Result<RequestStep, S3Error> {
        let RangeTrailer {
            up,
            env,
            dek,
            etag,
            stored,
        } = t;
        let known = etags::trailer_answered(cx, resp, &env, &dek, &etag, stored)?;
        let (bucket, key) = etags::request_object(cx);
        etags::remember(cx, &bucket, &key, &etag, stored, &known);
        self.plan.known = Some((etag.clone(), stored, known));
        self.plan_single(cx, up, &env, Some(stored), &etag)
    }

    /// A read that waited ([`RequestStep::Wait`]) for another request's lookup of its part
    /// table: planned from the table that lookup cached, or refused (503, retry) if it
    /// found none. Never a call-out.
    pub fn table_shared(&mut self, cx: &Cx) -> RequestStep {
        let GetState::Wait(w) = std::mem::replace(&mut self.state, GetState::Sent) else {
            return cx.reject(&S3Error::internal(
                "s3crypt: no read waits for a part table",
            ));
        };
        let r = match cached_table(cx, &w.version, w.stored, w.parts, w.numbered) {
            Some(t) => self.plan_multipart(cx, w.up, w.etag, t),
            None => Err(S3Error::slow_down(
                "s3crypt: the object's part table could not be read; please retry",
            )),
        };
        match r {
            Ok(RequestStep::Forward(h)) => RequestStep::Forward(h),
            Ok(_) => cx.reject(&S3Error::internal("s3crypt: unexpected plan")),
            Err(e) => cx.reject(&e),
        }
    }

    /// A range or part 1 of a single-layout object whose HEAD answered: the plaintext
    /// range resolved against the size the envelope and the stored length agree on, and
    /// the backend asked for exactly the stored frames that hold it (never a byte past the
    /// stored object, whatever form the client's range had).
    fn plan_single(
        &mut self,
        cx: &Cx,
        mut up: Headers,
        env: &Envelope,
        stored: Option<u64>,
        etag: &str,
    ) -> Result<RequestStep, S3Error> {
        let geo = stored
            .and_then(|n| crate::format::single_from_stored(env.version, n))
            .filter(|g| Some(g.plain_len) == env.plain_len)
            .ok_or_else(|| cx.integrity())?;
        let spec = match (self.plan.part_number, self.plan.range) {
            (None, Some(spec)) => spec,
            // A single-part object is its own part 1.
            (Some(1), _) => RangeSpec::From(0),
            (Some(_), _) => return Err(invalid_part_number()),
            (None, None) => return Err(S3Error::internal("s3crypt: nothing to plan")),
        };
        match range::resolve(spec, geo.plain_len) {
            Ok((first, last)) => {
                let (i0, i1) = (geo.frame_of(first), geo.frame_of(last));
                let from = geo.frame_cipher_start(i0);
                let to = geo.frame_cipher_end(i1).and_then(|e| e.checked_sub(1));
                let (Some(from), Some(to)) = (from, to) else {
                    return Err(cx.integrity());
                };
                self.plan.range = Some(spec);
                up.set("range", format!("bytes={from}-{to}"));
            }
            // Part 1 of an empty object: the whole (empty) object.
            Err(()) if self.plan.part_number.is_some() => {
                self.plan.range = None;
                up.remove("range");
            }
            Err(()) => {
                return Err(S3Error::invalid_range(
                    "The requested range is not satisfiable",
                ))
            }
        }
        self.pin(&mut up, etag);
        Ok(RequestStep::Forward(up))
    }

    /// The read is of the version the HEAD saw: if it changed since, the backend answers
    /// 412 and the client is told to retry.
    fn pin(&mut self, up: &mut Headers, etag: &str) {
        // A client's If-Unmodified-Since can make the backend say 412 too: then it does.
        if !etag.is_empty() && !up.contains("if-unmodified-since") {
            up.set("if-match", etag);
            self.plan.pinned = true;
        }
    }

    /// Reads a range or a part of a multipart object whose part table is known.
    fn plan_multipart(
        &mut self,
        cx: &Cx,
        mut up: Headers,
        etag: String,
        t: PartTable,
    ) -> Result<RequestStep, S3Error> {
        let total = t.plain_len();
        let (first, last) = match (self.plan.part_number, self.plan.range) {
            (Some(n), _) => {
                let (off, len) = t.part_range(n).ok_or_else(invalid_part_number)?;
                let last = off.checked_add(len).and_then(|end| end.checked_sub(1));
                (off, last.ok_or_else(|| cx.integrity())?)
            }
            (None, Some(spec)) => range::resolve(spec, total)
                .map_err(|_| S3Error::invalid_range("The requested range is not satisfiable"))?,
            (None, None) => return Err(S3Error::internal("s3crypt: nothing to plan")),
        };
        let plan = t.plan(first, last).ok_or_else(|| cx.integrity())?;
        if cx.head {
            up.remove("range");
        } else {
            up.set(
                "range",
                format!("bytes={}-{}", plan.stored_first, plan.stored_last),
            );
        }
        // The same version the table describes, or the backend says 412.
        self.pin(&mut up, &etag);
        if let (Some(env), Some(m)) = (&self.plan.multipart_env, t.etag) {
            // Verified with the table: whole reads and listings show it too (whatever a
            // spoilt read of its end part made the cache believe).
            let sealed = Some((m, t.visible_count() as u64));
            if let Some(k) = Known::multipart(env, t.stored_len(), &etag, sealed) {
                let (bucket, key) = etags::request_object(cx);
                etags::remember(cx, &bucket, &key, &etag, t.stored_len(), &k);
            }
        }
        self.plan.multipart = Some(MultipartRead {
            visible: t.visible_etag().unwrap_or_else(|| etag.clone()),
            etag,
            first,
            last,
            plain_total: total,
            parts: t.visible_count(),
            plan,
        });
        Ok(RequestStep::Forward(up))
    }

    fn not_modified(&mut self, cx: &Cx, out: &mut Headers, status: u16) {
        let keep: Vec<(String, String)> = out
            .iter()
            .filter(|(k, _)| {
                ["etag", "last-modified", "date", "x-amz-request-id"].contains(&k.as_str())
            })
            .cloned()
            .collect();
        *out = Headers(keep);
        out.set(":status", status.to_string());
        if status == 412 {
            let r = cx.reply(&S3Error::new(
                412,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            ));
            out.set("content-type", "application/xml");
            if !cx.head {
                out.set("content-length", r.body.len().to_string());
                self.body = RespBody::Replace(Some(r.body));
                return;
            }
        }
        out.set("content-length", "0");
        self.body = RespBody::Replace(None);
    }

    fn prepare_get(&mut self, cx: &Cx, status: u16, out: &mut Headers) -> Result<(), S3Error> {
        let r = self.prepare_get_inner(cx, status, out);
        if cx.head && r.is_ok() {
            self.body = RespBody::Pass; // a HEAD response has no body to transform
        }
        r
    }

    fn prepare_get_inner(
        &mut self,
        cx: &Cx,
        status: u16,
        out: &mut Headers,
    ) -> Result<(), S3Error> {
        if (200..300).contains(&status) && status != 200 && status != 206 {
            // A success without object data the filter can check (203, 204, ...): nothing
            // of it is released.
            return Err(cx.integrity());
        }
        if status == 412 && self.plan.pinned {
            return Err(S3Error::slow_down(
                "s3crypt: the object changed while it was read; please retry",
            ));
        }
        if status != 200 && status != 206 {
            return Ok(()); // errors, 304 from date conditions: as the backend says
        }
        // What the backend sent: [start, end] of a stored object of `total` bytes.
        let (start, total) = match out.get("content-range").and_then(parse_content_range) {
            Some((s, _e, t)) if status == 206 => (s, t),
            _ => (
                0,
                out.get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            ),
        };
        let sent_len: u64 = out
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let envelope = out.get(ENVELOPE_HEADER).map(str::to_string);
        if let (None, Some(plan)) = (&envelope, self.plan.predecessor.take()) {
            return self.predecessor_response(cx, status, out, total, *plan);
        }
        if envelope.is_none() && cx.cfg.predecessor.is_some() && !self.plan.predecessor_checked {
            // Not looked up (the read went out for another version the filter knew): the
            // retry looks it up first.
            etags::note_latest(cx, None);
            cx.count(Counter::VersionsChanged, 1);
            return Err(S3Error::slow_down(
                "s3crypt: the object changed while it was read; please retry",
            ));
        }
        let Some(ev) = envelope else {
            // No envelope: a plaintext object being migrated, or one whose envelope the
            // provider stripped. Only served inside a configured passthrough scope.
            let (bucket, key) = cx.req.as_ref().map_or(("", ""), |r| {
                (
                    r.bucket.as_deref().unwrap_or(""),
                    r.key.as_deref().unwrap_or(""),
                )
            });
            if !cx.cfg.passthrough_allowed(bucket, key) {
                return Err(cx.integrity());
            }
            cx.count(Counter::PlaintextServed, 1);
            cx.note(&format!(
                "s3crypt: serving unencrypted object {bucket}/{key} (passthrough scope)"
            ));
            let etag = out.get("etag").map(str::to_string);
            if let Some(st) = self.check_conditions(etag.as_deref()) {
                self.not_modified(cx, out, st);
                return Ok(());
            }
            return self.window(cx, out, start, sent_len, total, None);
        };
        let (env, dek) = cx.open_envelope(&ev)?;
        if env.layout == Layout::Part {
            return self.prepare_multipart_get(cx, status, out, total, env, dek);
        }
        let geo = single_from_stored(env.version, total)
            .filter(|g| Some(g.plain_len) == env.plain_len)
            .ok_or_else(|| {
                cx.count(Counter::IntegrityFailures, 1);
                S3Error::integrity()
            })?;
        let backend_etag = out.get("etag").unwrap_or("").to_string();
        let (bucket, key) = etags::request_object(cx);
        let mut known = Known::of(&env, None);
        if known.md5.is_none() && env.version >= SINGLE_ENVELOPE_VERSION {
            // The MD5 is in the trailer: what the request phase read of this version,
            // or the cache. Otherwise the object changed since (or the cache lost it):
            // the client retries, and the retry reads the trailer first.
            known = self.version_known(cx, &env, &backend_etag, total, |k| k.md5.is_some())?;
        }
        etags::remember(cx, &bucket, &key, &backend_etag, total, &known);
        etags::note_latest(cx, Some((&backend_etag, total, false)));
        let w = SingleWindow {
            start,
            sent_len,
            total,
        };
        self.finish_single(cx, out, env, dek, geo, w, &known, &backend_etag)
    }

    /// What the request phase learnt of the object version the backend sent (its ETag
    /// `etag`, stored size `total`, envelope `env`), else what is known of it without
    /// reading it ([`etags::known_unread`]), if `usable`. Otherwise the object changed
    /// since (or the cache lost it): 503 SlowDown, and the client's retry reads its last
    /// bytes first.
    fn version_known(
        &mut self,
        cx: &Cx,
        env: &Envelope,
        etag: &str,
        total: u64,
        usable: fn(&Known) -> bool,
    ) -> Result<Known, S3Error> {
        let (bucket, key) = etags::request_object(cx);
        let planned = self
            .plan
            .known
            .take()
            .filter(|(e, n, _)| e == etag && *n == total)
            .map(|(_, _, k)| k);
        let known = planned
            .filter(|k| k.matches(env))
            .or_else(|| etags::known_unread(cx, env, &bucket, &key, etag, total))
            .filter(usable);
        known.ok_or_else(|| {
            etags::note_latest(cx, None);
            cx.count(Counter::VersionsChanged, 1);
            S3Error::slow_down("s3crypt: the object changed while it was read; please retry")
        })
    }

    /// The response of a single object whose ETag is known: conditions, ETag, checksum,
    /// and the window of plaintext to release.
    #[allow(clippy::too_many_arguments)]
    fn finish_single(
        &mut self,
        cx: &Cx,
        out: &mut Headers,
        env: Envelope,
        dek: DataKey,
        geo: Geometry,
        w: SingleWindow,
        known: &Known,
        backend_etag: &str,
    ) -> Result<(), S3Error> {
        let etag = known.etag(backend_etag);
        if let Some(st) = self.check_conditions(Some(&etag)) {
            self.not_modified(cx, out, st);
            out.set("etag", etag);
            return Ok(());
        }
        out.set("etag", etag);
        self.plan.trailer_md5 = known.md5;
        strip_checksum_headers(out);
        if let (Some(c), true, None) = (&known.checksum, self.plan.checksum_mode, self.plan.range) {
            out.set(&c.header, c.value.clone());
        }
        self.window(cx, out, w.start, w.sent_len, w.total, Some((env, dek, geo)))
    }

    /// A whole multipart object: its plaintext size follows from the stored size and the
    /// part count of its `-N` ETag; the parts are decrypted one after the other.
    fn prepare_multipart_get(
        &mut self,
        cx: &Cx,
        status: u16,
        out: &mut Headers,
        total: u64,
        env: Envelope,
        dek: DataKey,
    ) -> Result<(), S3Error> {
        let etag = out.get("etag").unwrap_or("").to_string();
        if let Some(mp) = self.plan.multipart.take() {
            return self.multipart_range(cx, status, out, mp, env, dek);
        }
        let parts = parts_in_etag(&etag).ok_or_else(|| cx.integrity())?;
        let plain = parts
            .checked_mul(crate::format::PART_OVERHEAD)
            .and_then(|o| total.checked_sub(o))
            .ok_or_else(|| cx.integrity())?;
        if self.plan.range.is_some() || status == 206 {
            return Err(S3Error::not_implemented(
                "s3crypt: ranged reads of multipart objects are not enabled in this build",
            ));
        }
        // What the request phase learnt of this version (its end part read), or the
        // cache; otherwise the object changed since (or the cache lost it): the client
        // retries, and the retry reads the end part first.
        let (bucket, key) = etags::request_object(cx);
        let known = self.version_known(cx, &env, &etag, total, |_| true)?;
        etags::remember(cx, &bucket, &key, &etag, total, &known);
        // The next whole read of this key goes upstream without reading its last bytes.
        etags::note_latest(cx, Some((&etag, total, true)));
        let visible = known.etag(&etag);
        if let Some(st) = self.check_conditions(Some(&visible)) {
            self.not_modified(cx, out, st);
            out.set("etag", visible);
            return Ok(());
        }
        out.set("etag", visible);
        strip_checksum_headers(out);
        out.set(":status", "200");
        out.remove("content-range");
        out.set("content-length", plain.to_string());
        self.body = RespBody::decrypt(Box::new(
            PartsDecryptor::new(env.suite, &dek, parts, env.version >= 2).showing(known.md5),
        ));
        Ok(())
    }

    /// A planned range or part of a multipart object.
    fn multipart_range(
        &mut self,
        cx: &Cx,
        status: u16,
        out: &mut Headers,
        mp: MultipartRead,
        env: Envelope,
        dek: DataKey,
    ) -> Result<(), S3Error> {
        if out.get("etag") != Some(mp.etag.as_str()) {
            return Err(S3Error::slow_down(
                "s3crypt: the object changed while it was read; please retry",
            ));
        }
        if let Some(st) = self.check_conditions(Some(&mp.visible)) {
            self.not_modified(cx, out, st);
            out.set("etag", mp.visible);
            return Ok(());
        }
        out.set("etag", mp.visible.clone());
        strip_checksum_headers(out);
        let stored = (mp.plan.stored_first, mp.plan.stored_last);
        let plain = (mp.first, mp.last, mp.plain_total);
        self.planned_partial(cx, status, out, stored, plain, mp.parts)?;
        self.body = RespBody::decrypt(Box::new(RangeDecryptor::new(env.suite, &dek, mp.plan)));
        Ok(())
    }

    /// The headers of a planned partial read: a GET's backend response must be exactly
    /// the stored bytes `stored` (inclusive) asked for; the client gets plaintext
    /// `first..=last` of `total` as a 206, with the part count of a part read.
    fn planned_partial(
        &self,
        cx: &Cx,
        status: u16,
        out: &mut Headers,
        stored: (u64, u64),
        (first, last, total): (u64, u64, u64),
        parts: usize,
    ) -> Result<(), S3Error> {
        if !cx.head {
            let sent = out.get("content-range").and_then(parse_content_range);
            if status != 206 || sent.map(|(a, b, _)| (a, b)) != Some(stored) {
                return Err(cx.integrity());
            }
        }
        out.set(":status", "206");
        out.set("content-range", range::content_range(first, last, total));
        let len = range::span(first, last).ok_or_else(|| cx.integrity())?;
        out.set("content-length", len.to_string());
        if self.plan.part_number.is_some() {
            out.set("x-amz-mp-parts-count", parts.to_string());
        }
        Ok(())
    }

    /// Evaluates If-Match / If-None-Match against the client-visible ETag:
    /// `Some(412)` or `Some(304)` when the request must not get the object.
    fn check_conditions(&self, etag: Option<&str>) -> Option<u16> {
        let etag = etag.unwrap_or("");
        if let Some(m) = &self.plan.if_match {
            if !etag_list_matches(m, etag) {
                return Some(412);
            }
        }
        if let Some(m) = &self.plan.if_none_match {
            if etag_list_matches(m, etag) {
                return Some(304);
            }
        }
        None
    }

    /// Sets status, Content-Length and Content-Range for the plaintext the client asked
    /// for and prepares the body transform. `start..start+sent_len` of a stored object of
    /// `total` bytes is what the backend sends.
    fn window(
        &mut self,
        cx: &Cx,
        out: &mut Headers,
        start: u64,
        sent_len: u64,
        total: u64,
        enc: Option<(Envelope, DataKey, Geometry)>,
    ) -> Result<(), S3Error> {
        let plain_total = enc.as_ref().map(|(_, _, g)| g.plain_len).unwrap_or(total);
        let wanted =
            match self.plan.range {
                None => None,
                Some(spec) => Some(range::resolve(spec, plain_total).map_err(|_| {
                    S3Error::invalid_range("The requested range is not satisfiable")
                })?),
            };
        let (first, last) = match wanted {
            Some(w) => w,
            None => (0, plain_total.saturating_sub(1)),
        };
        let len = if plain_total == 0 {
            0
        } else {
            range::span(first, last)
                .ok_or_else(|| S3Error::invalid_range("The requested range is not satisfiable"))?
        };
        match wanted {
            Some(_) => {
                out.set(":status", "206");
                out.set(
                    "content-range",
                    range::content_range(first, last, plain_total),
                );
            }
            None => {
                out.set(":status", "200");
                out.remove("content-range");
            }
        }
        out.set("content-length", len.to_string());
        // Where what the backend sends ends (exclusive; `None`: its numbers add up past
        // u64::MAX).
        let sent_end = start.checked_add(sent_len);
        // Whether it sends every stored byte before `end` (`None`: past u64::MAX).
        let sent = |end: Option<u64>| end.zip(sent_end).is_some_and(|(end, sent)| end <= sent);
        match enc {
            None => {
                let skip = first
                    .checked_sub(start)
                    .filter(|_| len == 0 || sent(first.checked_add(len)))
                    .ok_or_else(|| {
                        S3Error::internal("s3crypt: the backend returned an unexpected range")
                    })?;
                self.body = RespBody::Trim { skip, take: len };
            }
            Some((env, dek, geo)) => {
                if len == 0 {
                    // An empty object: no frames; the envelope tag authenticated it.
                    self.body = RespBody::Replace(None);
                    cx.count(Counter::ObjectsDecrypted, 1);
                    return Ok(());
                }
                let (i0, i1) = (geo.frame_of(first), geo.frame_of(last));
                let lead = geo
                    .frame_cipher_start(i0)
                    .and_then(|c0| c0.checked_sub(start))
                    .filter(|_| sent(geo.frame_cipher_end(i1)))
                    .ok_or_else(|| cx.integrity())?;
                let skip = first
                    .checked_sub(geo.frame_plain_start(i0))
                    .ok_or_else(|| cx.integrity())?;
                let w = Window {
                    lead,
                    first: i0,
                    last: i1,
                    skip,
                    take: len,
                };
                let d = FrameDecryptor::new(env.suite, &dek, geo, w);
                let frames_end = geo.frames_len().ok_or_else(|| cx.integrity())?;
                let whole = i1.checked_add(1) == Some(geo.frames) && sent(Some(total));
                self.body = if has_trailer(env.version, geo.plain_len) && whole {
                    // The response holds the trailer too: it must verify (fail closed).
                    let at = frames_end
                        .checked_sub(start)
                        .ok_or_else(|| cx.integrity())?;
                    let md5 = self.plan.trailer_md5;
                    let t = TrailerCheck::new(d, env.suite, &dek, geo.plain_len, md5, at);
                    RespBody::decrypt(Box::new(t))
                } else {
                    RespBody::decrypt(Box::new(d))
                };
            }
        }
        Ok(())
    }
}

pub(crate) fn invalid_part_number() -> S3Error {
    S3Error::new(
        416,
        "InvalidPartNumber",
        "The requested partnumber is not satisfiable",
    )
}

/// The upstream range for a plaintext range: a superset of both the frames that hold it
/// (if the object is encrypted) and the bytes themselves (if it is not).
pub(crate) fn widened_range(spec: RangeSpec) -> String {
    let f = SINGLE_FRAME;
    let s = SINGLE_FRAME + FRAME_OVERHEAD;
    // `(x / f) · f` ≤ x and `x / f + 1` ≤ 2^48 cannot overflow. The stored end of a frame
    // can pass u64::MAX: it saturates, which still asks for everything to the end.
    let frame_start = |a: u64| (a / f).saturating_mul(f);
    match spec {
        RangeSpec::FromTo(a, b) => format!(
            "bytes={}-{}",
            frame_start(a),
            (b / f)
                .saturating_add(1)
                .saturating_mul(s)
                .saturating_sub(1)
                .max(b)
        ),
        RangeSpec::From(a) => format!("bytes={}-", frame_start(a)),
        // A version 3 object's trailer follows its last frame.
        RangeSpec::Suffix(n) => format!(
            "bytes=-{}",
            n.div_ceil(f)
                .saturating_add(1)
                .saturating_mul(s)
                .saturating_add(TRAILER_LEN)
                .max(n)
        ),
    }
}

/// A range as a Range header value.
fn spec_header(spec: RangeSpec) -> String {
    match spec {
        RangeSpec::FromTo(a, b) => format!("bytes={a}-{b}"),
        RangeSpec::From(a) => format!("bytes={a}-"),
        RangeSpec::Suffix(n) => format!("bytes=-{n}"),
    }
}

/// `bytes a-b/total` → (a, b, total).
pub(crate) fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let r = v.trim().strip_prefix("bytes ")?;
    let (span, total) = r.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    Some((
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

/// Whether an If-Match / If-None-Match list matches an ETag (`*` matches anything).
pub(crate) fn etag_list_matches(list: &str, etag: &str) -> bool {
    let norm = |s: &str| {
        s.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string()
    };
    let e = norm(etag);
    list.split(',')
        .any(|c| c.trim() == "*" || (!e.is_empty() && norm(c) == e))
}
