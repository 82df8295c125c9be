//! UploadPartCopy: the copied range must be re-encrypted under the destination upload's
//! data key. A proxy-wasm filter cannot stream a call-out into an upstream request, so the
//! source is read in ranged GETs of [`COPY_READ_CHUNK`] (each decrypted and verified),
//! re-encrypted as part N into one buffer of at most `max_copy_part_bytes` plus the part
//! overhead, and sent as one UploadPart; the client then gets a CopyPartResult.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use md5::{Digest as _, Md5};

use super::copy::{copy_source_in_scope, copy_source_ok, copy_source_path};
use super::cx::{iso8601, part_put_failed, precondition_failed, Cx, SseFor};
use super::etags;
use super::multipart::{find_record, part_number, record_answered, record_part_entry, Record};
use super::put::part_geometry;
use super::request::PassBody;
use super::response::RespBody;
use super::table::{cached_table, parts_in_etag, table_version, Found, Lookup};
use super::vm::CopyReservation;
use super::{staging, BodyError, CallOut, CallOutStep, Counter, Reply, RequestStep, ResponseStep};
use crate::auth::sigv4;
use crate::crypto::{DataKey, Suite};
use crate::format::part_table::{PartTable, RangeDecryptor};
use crate::format::{
    single_stored_len, Decrypt, FrameDecryptor, FrameEncryptor, Geometry, Layout, Window,
    ENVELOPE_HEADER,
};
use crate::headers::Headers;
use crate::s3::error::S3Error;
use crate::s3::range::span;
use crate::s3::S3Request;
use crate::state::{parts, UploadState};

pub(crate) struct UploadPartCopy {
    upload_id: String,
    body: RespBody,
    state: PartCopyState,
}

/// A source whose trailer is being read, with its HEAD.
struct SourceTrailer {
    pc: Box<PartCopy>,
    src: Headers,
    env: crate::format::Envelope,
    dek: DataKey,
    etag: String,
    stored: u64,
}

enum PartCopyState {
    Sent,
    /// Redis mode, the upload's record not cached here.
    Record {
        h: Headers,
        up: Headers,
        number: u32,
        object: String,
    },
    /// The source's HEAD.
    Source(Box<PartCopy>),
    /// The trailer of a version 3 single source is read: its plaintext MD5 is what the
    /// client's `x-amz-copy-source-if-*` conditions are evaluated against.
    Trailer(Box<SourceTrailer>),
    /// A multipart source's part table is being looked up (with its suite and data key).
    Table(Box<Lookup>, Box<PartCopy>, Suite, DataKey),
    /// A ranged GET of the source, with the bytes it must return.
    Read(Box<PartCopy>, u64, Option<Box<dyn Decrypt>>),
    /// The re-encrypted part sent as UploadPart.
    Put(Box<PartCopy>),
    /// The answer waits for these call-outs in turn (Redis: the part's ETag entry and its
    /// TTL, which must succeed, then the staged copy of a short last part, best effort);
    /// the first is in flight.
    Recording(Vec<(super::CallOut, Option<&'static str>)>, Reply),
}

impl UploadPartCopy {
    pub fn start(
        cx: &Cx,
        h: &Headers,
        up: Headers,
        req: &S3Request,
    ) -> Result<(UploadPartCopy, RequestStep), S3Error> {
        let number = part_number(req)?;
        let upload_id = req.query_param("uploadId").unwrap_or("").to_string();
        let object = cx.object_tag();
        let mut op = UploadPartCopy {
            upload_id,
            body: RespBody::Pass,
            state: PartCopyState::Sent,
        };
        let step = match find_record(cx, &op.upload_id, &object)? {
            Record::Here(st) => op.part_copy_with(cx, h, &up, number, st)?,
            Record::Ask(call) => {
                op.state = PartCopyState::Record {
                    h: h.clone(),
                    up,
                    number,
                    object,
                };
                RequestStep::CallOut(call)
            }
        };
        Ok((op, step))
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
        let r = match std::mem::replace(&mut self.state, PartCopyState::Sent) {
            PartCopyState::Record {
                h,
                up,
                number,
                object,
            } => record_answered(cx, &self.upload_id, &object, resp)
                .and_then(|st| self.part_copy_with(cx, &h, &up, number, st)),
            PartCopyState::Source(pc) => self.part_copy_source(cx, pc, resp.map(|(h, _)| h), None),
            PartCopyState::Trailer(t) => {
                let t = *t;
                etags::trailer_answered(cx, resp, &t.env, &t.dek, &t.etag, t.stored).and_then(
                    |known| {
                        let (bucket, key) = &t.pc.src_object;
                        etags::remember(cx, bucket, key, &t.etag, t.stored, &known);
                        self.part_copy_source(cx, t.pc, Some(&t.src), Some(known))
                    },
                )
            }
            PartCopyState::Table(mut lookup, mut pc, suite, dek) => {
                match lookup.answered(cx, resp) {
                    Ok(Found::Table(table)) => {
                        pc.from = CopyFrom::Multi { suite, dek, table };
                        self.part_copy_plan(cx, pc)
                    }
                    Ok(Found::Read(call)) => {
                        self.state = PartCopyState::Table(lookup, pc, suite, dek);
                        Ok(RequestStep::CallOut(call))
                    }
                    Err(e) => Err(e),
                }
            }
            PartCopyState::Read(pc, expect, dec) => {
                self.part_copy_chunk(cx, pc, expect, dec, status, body)
            }
            PartCopyState::Put(pc) => self.part_copy_done(cx, pc, resp.map(|(h, _)| h), body),
            PartCopyState::Recording(mut calls, r) => {
                let done = if calls.is_empty() {
                    return super::unexpected_callout(cx);
                } else {
                    calls.remove(0)
                };
                if let Some(cmd) = done.1 {
                    if parts::parse_int(status, body, cmd).is_err() {
                        return cx.request_step(Err(S3Error::slow_down(
                            "s3crypt: the part's ETag could not be recorded in Redis; please retry",
                        )));
                    }
                }
                match calls.first().map(|c| c.0.clone()) {
                    Some(next) => {
                        self.state = PartCopyState::Recording(calls, r);
                        Ok(RequestStep::CallOut(next))
                    }
                    None => Ok(RequestStep::Reply(r)),
                }
            }
            PartCopyState::Sent => return super::unexpected_callout(cx),
        };
        cx.request_step(r)
    }

    pub fn response_headers(&mut self, cx: &Cx, h: &Headers, eos: bool) -> ResponseStep {
        self.body.no_object_headers(cx, h, eos)
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

    fn part_copy_with(
        &mut self,
        cx: &Cx,
        h: &Headers,
        up: &Headers,
        number: u32,
        st: UploadState,
    ) -> Result<RequestStep, S3Error> {
        let (env, dek) = cx.open_envelope(&st.envelope)?;
        if env.layout != Layout::Part {
            return Err(S3Error::internal(
                "s3crypt: upload state is not a multipart envelope",
            ));
        }
        let src_path = copy_source_path(h)?;
        let src_plain_ok = copy_source_in_scope(cx, h)?;
        let mut head = cx.sse_request_at("HEAD", src_path.clone(), None, SseFor::CopySource);
        // Date conditions go to the backend with the HEAD (304/412 mean 412 for a copy).
        for (k, to) in [
            ("x-amz-copy-source-if-modified-since", "if-modified-since"),
            (
                "x-amz-copy-source-if-unmodified-since",
                "if-unmodified-since",
            ),
        ] {
            if let Some(v) = h.get(k) {
                head.set(to, v.to_string());
            }
        }
        cx.sign(&mut head, sigv4::EMPTY_SHA256);
        let pc = Box::new(PartCopy {
            dest: up.get(":path").unwrap_or("/").to_string(),
            number,
            dest_suite: env.suite,
            dest_dek: dek,
            dest_v2: env.version >= 2,
            src_path,
            src_object: etags::copy_source_object(h),
            src_plain_ok,
            range: h.get("x-amz-copy-source-range").map(str::to_string),
            if_match: h.get("x-amz-copy-source-if-match").map(str::to_string),
            if_none_match: h.get("x-amz-copy-source-if-none-match").map(str::to_string),
            src_etag: String::new(),
            from: CopyFrom::Plain { len: 0 },
            first: 0,
            last: 0,
            next: 0,
            enc: None,
            body: Vec::new(),
            plain: Vec::new(),
            md5: Md5::new(),
            budget: None,
            stage: None,
        });
        self.state = PartCopyState::Source(pc);
        Ok(RequestStep::CallOut(cx.backend_callout(head)))
    }

    /// UploadPartCopy: the source's HEAD answered; find its layout (and part table).
    /// `known`: what the source shows, read from its last bytes.
    fn part_copy_source(
        &mut self,
        cx: &Cx,
        mut pc: Box<PartCopy>,
        resp: Option<&Headers>,
        known: Option<etags::Known>,
    ) -> Result<RequestStep, S3Error> {
        let source = pc.src_object.clone();
        let conditions = pc.if_match.is_some() || pc.if_none_match.is_some();
        let ok = resp.filter(|r| r.get(":status") == Some("200"));
        if let (None, true, Some(r)) = (&known, conditions, ok) {
            if let (None, Some(ev)) = (
                etags::known_of(cx, r, &source.0, &source.1),
                r.get(ENVELOPE_HEADER),
            ) {
                let (env, dek) = cx.open_envelope(ev)?;
                if etags::has_tail(&env) {
                    let etag = r.get("etag").unwrap_or("").to_string();
                    let stored: u64 = r
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let call = etags::trailer_read(
                        cx,
                        pc.src_path.clone(),
                        &etag,
                        stored,
                        env.layout != Layout::Single,
                        SseFor::CopySource,
                    );
                    self.state = PartCopyState::Trailer(Box::new(SourceTrailer {
                        pc,
                        src: r.clone(),
                        env,
                        dek,
                        etag,
                        stored,
                    }));
                    return Ok(RequestStep::CallOut(call));
                }
            }
        }
        let opened = |h: &Headers| {
            let backend = h.get("etag").unwrap_or("");
            known
                .clone()
                .or_else(|| etags::known_of(cx, h, &source.0, &source.1))
                .map(|k| k.etag(backend))
        };
        let resp = copy_source_ok(
            resp,
            pc.if_match.as_deref(),
            pc.if_none_match.as_deref(),
            &opened,
        )?;
        pc.src_etag = resp.get("etag").unwrap_or("").to_string();
        let stored: u64 = resp
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                S3Error::service_unavailable("s3crypt: the copy source could not be read")
            })?;
        let Some(ev) = resp.get(ENVELOPE_HEADER) else {
            if !pc.src_plain_ok {
                return Err(cx.integrity());
            }
            pc.from = CopyFrom::Plain { len: stored };
            return self.part_copy_plan(cx, pc);
        };
        let (env, dek) = cx.open_envelope(ev)?;
        match env.layout {
            Layout::Single => {
                let geo = env
                    .plain_len
                    .filter(|&p| single_stored_len(env.version, p) == Some(stored))
                    .map(Geometry::single)
                    .ok_or_else(|| cx.integrity())?;
                pc.from = CopyFrom::Single {
                    suite: env.suite,
                    dek,
                    geo,
                };
                self.part_copy_plan(cx, pc)
            }
            Layout::Part
            | Layout::Final
            | Layout::End
            | Layout::Closing
            | Layout::Table
            | Layout::Trailer => {
                let parts = parts_in_etag(&pc.src_etag).ok_or_else(|| cx.integrity())?;
                let numbered = env.version >= 2;
                let version = table_version(&pc.src_etag, stored, &env);
                match cached_table(cx, &version, stored, parts, numbered) {
                    Some(table) => {
                        pc.from = CopyFrom::Multi {
                            suite: env.suite,
                            dek,
                            table,
                        };
                        self.part_copy_plan(cx, pc)
                    }
                    None => {
                        let (path, etag) = (pc.src_path.clone(), pc.src_etag.clone());
                        let (lookup, call) = Lookup::start(
                            cx,
                            &env,
                            &dek,
                            path,
                            etag,
                            stored,
                            parts,
                            None,
                            SseFor::CopySource,
                        );
                        self.state = PartCopyState::Table(Box::new(lookup), pc, env.suite, dek);
                        Ok(RequestStep::CallOut(call))
                    }
                }
            }
        }
    }

    /// UploadPartCopy: the plaintext range to copy, checked against the source's size and
    /// the part size limit; then the reads start.
    fn part_copy_plan(&mut self, cx: &Cx, mut pc: Box<PartCopy>) -> Result<RequestStep, S3Error> {
        let size = pc.from.len();
        let (first, last) = match (pc.range.as_deref(), size.checked_sub(1)) {
            (Some(r), _) => copy_source_range(r, size)?,
            (None, Some(end)) => (0, end),
            (None, None) => {
                return Err(S3Error::invalid_request(
                    "s3crypt: empty parts are not supported",
                ))
            }
        };
        // (copy_source_range checked first ≤ last < size.)
        let len = span(first, last).ok_or_else(|| invalid_copy_range(size))?;
        let max = cx.cfg.plugin.max_copy_part_bytes;
        if len > max {
            return Err(S3Error::new(
                400,
                "EntityTooLarge",
                format!("s3crypt: UploadPartCopy re-encrypts the copied range in the proxy and accepts at most {max} bytes per part (max_copy_part_bytes); copy with smaller parts"),
            ));
        }
        let geo = part_geometry(pc.dest_v2, pc.number, len);
        let budget = cx.cfg.plugin.max_copy_buffer_bytes;
        pc.budget = Some(
            CopyReservation::try_new(&cx.vm, len, budget).ok_or_else(|| {
                S3Error::slow_down(
                    "s3crypt: too many part copies in progress on this proxy; please retry",
                )
            })?,
        );
        let mut body = Vec::new();
        let cipher_len = geo.cipher_len().and_then(|n| usize::try_from(n).ok());
        if cipher_len.is_none_or(|n| body.try_reserve_exact(n).is_err()) {
            return Err(S3Error::slow_down(
                "s3crypt: not enough memory for this copy now; please retry",
            ));
        }
        pc.body = body;
        pc.enc = Some(FrameEncryptor::new(
            pc.dest_suite,
            &pc.dest_dek,
            geo,
            &cx.ports.rng,
        ));
        (pc.first, pc.last, pc.next) = (first, last, first);
        self.part_copy_read(cx, pc)
    }

    /// UploadPartCopy: reads the next chunk of the source, or sends the part.
    fn part_copy_read(&mut self, cx: &Cx, mut pc: Box<PartCopy>) -> Result<RequestStep, S3Error> {
        if pc.next > pc.last {
            let mut body = std::mem::take(&mut pc.body);
            let enc = pc
                .enc
                .as_mut()
                .ok_or_else(|| S3Error::internal("s3crypt: no encryptor"))?;
            enc.finish(&mut body)
                .map_err(|_| S3Error::internal("s3crypt: part encryption incomplete"))?;
            if Some(body.len() as u64) != enc.geometry().cipher_len() {
                return Err(S3Error::internal("s3crypt: part length mismatch"));
            }
            // (The part's plaintext: first..=last.)
            cx.ports
                .stats
                .add(Counter::BytesEncrypted, enc.geometry().plain_len);
            let geo = *enc.geometry();
            pc.stage = staging::stage_for(cx, pc.dest_v2, &geo).map(|(mut kept, held)| {
                kept.extend_from_slice(&body);
                (kept, held)
            });
            let mut h = cx.sse_request_at("PUT", pc.dest.clone(), None, SseFor::Object);
            super::upstream::sign_whole(cx, &mut h, &body);
            self.state = PartCopyState::Put(pc);
            let mut c = cx.backend_callout(h);
            c.body = Some(body);
            c.timeout_ms = 120_000;
            return Ok(RequestStep::CallOut(c));
        }
        let end = pc.chunk_end();
        let (s0, s1, dec) = pc.from.read(pc.next, end).ok_or_else(|| cx.integrity())?;
        let expect = span(s0, s1).ok_or_else(|| cx.integrity())?;
        let mut h = cx.sse_request_at(
            "GET",
            pc.src_path.clone(),
            Some(format!("bytes={s0}-{s1}")),
            SseFor::CopySource,
        );
        if !pc.src_etag.is_empty() {
            h.set("if-match", pc.src_etag.clone());
        }
        cx.sign(&mut h, sigv4::EMPTY_SHA256);
        self.state = PartCopyState::Read(pc, expect, dec);
        Ok(RequestStep::CallOut(cx.backend_callout(h)))
    }

    /// UploadPartCopy: a chunk of the source arrived; decrypt, verify, re-encrypt.
    fn part_copy_chunk(
        &mut self,
        cx: &Cx,
        mut pc: Box<PartCopy>,
        expect: u64,
        dec: Option<Box<dyn Decrypt>>,
        status: Option<u16>,
        body: &[u8],
    ) -> Result<RequestStep, S3Error> {
        match status {
            Some(200 | 206) if body.len() as u64 == expect => {}
            Some(412) => return Err(precondition_failed()),
            _ => {
                return Err(S3Error::slow_down(
                    "s3crypt: the copy source changed or could not be read; please retry",
                ))
            }
        }
        let (next, end) = (pc.next, pc.chunk_end());
        let PartCopy {
            enc,
            body: out,
            plain: scratch,
            md5,
            ..
        } = &mut *pc;
        scratch.clear();
        let plain: &[u8] = match dec {
            None => body,
            Some(mut d) => {
                if d.push(body, scratch).is_err() || d.finish().is_err() {
                    return Err(cx.integrity());
                }
                scratch
            }
        };
        if Some(plain.len() as u64) != span(next, end) {
            return Err(cx.integrity());
        }
        cx.count(Counter::BytesDecrypted, plain.len() as u64);
        md5.update(plain);
        enc.as_mut()
            .ok_or_else(|| S3Error::internal("s3crypt: no encryptor"))?
            .push(plain, out)
            .map_err(|_| S3Error::internal("s3crypt: part encryption failed"))?;
        // end ≤ last < the source's size: end + 1 fits.
        pc.next = end.checked_add(1).ok_or_else(|| cx.integrity())?;
        self.part_copy_read(cx, pc)
    }

    /// UploadPartCopy: the backend stored the part; its entry (the backend's ETag and the
    /// plaintext MD5, sealed) is recorded like an UploadPart's, and the client gets a
    /// CopyPartResult with the ETag S3 would give, the MD5 of the copied plaintext.
    fn part_copy_done(
        &mut self,
        cx: &Cx,
        mut pc: Box<PartCopy>,
        resp: Option<&Headers>,
        body: &[u8],
    ) -> Result<RequestStep, S3Error> {
        let status = resp.and_then(|h| h.get(":status")?.parse().ok());
        let etag = resp.and_then(|h| h.get("etag")).map(str::to_string);
        let Some(backend) = etag.filter(|_| status == Some(200)) else {
            return Err(part_put_failed(status, &String::from_utf8_lossy(body)));
        };
        let md5: [u8; 16] = std::mem::take(&mut pc.md5).finalize().into();
        let mut calls: Vec<(CallOut, Option<&'static str>)> = record_part_entry(
            cx,
            &self.upload_id,
            pc.dest_suite,
            &pc.dest_dek,
            pc.number,
            &backend,
            &md5,
        )?
        .into_iter()
        .map(|(call, must)| (call, Some(must)))
        .collect();
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyPartResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LastModified>{}</LastModified><ETag>&quot;{}&quot;</ETag></CopyPartResult>",
            iso8601(cx.now()),
            hex::encode(md5)
        );
        let RequestStep::Reply(reply) = cx.xml_reply(xml) else {
            return Err(S3Error::internal("s3crypt: no reply"));
        };
        // A short last part: staged like one sent by UploadPart (Redis: the answer waits).
        if let Some((cipher, _held)) = pc.stage.take() {
            if let Some(call) = staging::stage_part(cx, &self.upload_id, cipher, pc.number) {
                calls.push((call, None));
            }
        }
        match calls.first().map(|c| c.0.clone()) {
            Some(first) => {
                self.state = PartCopyState::Recording(calls, reply);
                Ok(RequestStep::CallOut(first))
            }
            None => Ok(RequestStep::Reply(reply)),
        }
    }
}

/// Plaintext bytes of the copy source read (and decrypted) per call-out: bounds the
/// crypto done in one callback, like the 64 KiB connection buffers do for uploads.
pub(crate) const COPY_READ_CHUNK: u64 = 256 << 10;

/// UploadPartCopy: the copied range must be re-encrypted under the destination upload's
/// data key. A proxy-wasm filter cannot stream a call-out into an upstream request, so the
/// source is read in ranged GETs of [`COPY_READ_CHUNK`] (each decrypted and verified),
/// re-encrypted as part N into one buffer of at most `max_copy_part_bytes` plus the part
/// overhead, and sent as one UploadPart; the client then gets a CopyPartResult.
pub(crate) struct PartCopy {
    /// Upstream path of the UploadPart (`/bucket/key?partNumber=N&uploadId=U`).
    dest: String,
    number: u32,
    dest_suite: Suite,
    dest_dek: DataKey,
    /// The destination upload has a version 2 envelope (its short parts are `final`).
    dest_v2: bool,
    /// Upstream path of the source object (with its versionId).
    src_path: String,
    /// Bucket and key of the source (for the ETag cache).
    src_object: (String, String),
    /// The source lies in a passthrough scope: without an envelope it is copied (and
    /// encrypted on the way); otherwise an envelope-less source is an integrity error.
    src_plain_ok: bool,
    /// `x-amz-copy-source-range` as sent.
    range: Option<String>,
    /// `x-amz-copy-source-if-match` / `-if-none-match`, evaluated against the ETag
    /// clients see.
    if_match: Option<String>,
    if_none_match: Option<String>,
    /// The backend ETag of the source: every read must see that version.
    src_etag: String,
    from: CopyFrom,
    /// Plaintext of the source to copy (`first..=last`) and the next byte to read.
    first: u64,
    last: u64,
    next: u64,
    enc: Option<FrameEncryptor>,
    body: Vec<u8>,
    /// Decrypted plaintext of the current chunk (reused).
    plain: Vec<u8>,
    /// MD5 of the copied plaintext (the part's ETag for the client).
    md5: Md5,
    /// This copy's share of `max_copy_buffer_bytes`, held until the copy ends.
    budget: Option<CopyReservation>,
    /// A short last part: a copy of the part sent, staged once the backend stored it.
    stage: Option<(Vec<u8>, CopyReservation)>,
}

impl PartCopy {
    /// Last plaintext byte of the chunk that starts at `next`.
    fn chunk_end(&self) -> u64 {
        // Saturating is exact here: the end is capped at `last` anyway.
        self.last.min(self.next.saturating_add(COPY_READ_CHUNK - 1))
    }
}

/// The plaintext source of an UploadPartCopy.
pub(crate) enum CopyFrom {
    /// An object without an envelope (of this length): its bytes are the plaintext.
    Plain { len: u64 },
    /// A single-layout s3crypt object.
    Single {
        suite: Suite,
        dek: DataKey,
        geo: Geometry,
    },
    /// A multipart s3crypt object and its part table.
    Multi {
        suite: Suite,
        dek: DataKey,
        table: PartTable,
    },
}

/// First and last stored byte to read, and the decryptor of those bytes (none: plaintext).
pub(crate) type StoredRead = (u64, u64, Option<Box<dyn Decrypt>>);

impl CopyFrom {
    /// Plaintext length of the source.
    fn len(&self) -> u64 {
        match self {
            CopyFrom::Plain { len } => *len,
            CopyFrom::Single { geo, .. } => geo.plain_len,
            CopyFrom::Multi { table, .. } => table.plain_len(),
        }
    }

    /// The stored bytes holding plaintext `a..=b` and how to turn them into it.
    pub(crate) fn read(&self, a: u64, b: u64) -> Option<StoredRead> {
        match self {
            CopyFrom::Plain { .. } => Some((a, b, None)),
            CopyFrom::Single { suite, dek, geo } => {
                let (i0, i1) = (geo.frame_of(a), geo.frame_of(b));
                let c0 = geo.frame_cipher_start(i0)?;
                let c1 = geo.frame_cipher_end(i1)?;
                let w = Window {
                    lead: 0,
                    first: i0,
                    last: i1,
                    skip: a.checked_sub(geo.frame_plain_start(i0))?,
                    take: span(a, b)?,
                };
                let d = FrameDecryptor::new(*suite, dek, *geo, w);
                Some((c0, c1.checked_sub(1)?, Some(Box::new(d))))
            }
            CopyFrom::Multi { suite, dek, table } => {
                let plan = table.plan(a, b)?;
                let (s0, s1) = (plan.stored_first, plan.stored_last);
                Some((
                    s0,
                    s1,
                    Some(Box::new(RangeDecryptor::new(*suite, dek, plan))),
                ))
            }
        }
    }
}

/// `bytes=first-last` of `x-amz-copy-source-range`, checked against the source size.
pub(crate) fn copy_source_range(v: &str, size: u64) -> Result<(u64, u64), S3Error> {
    let (a, b) = v
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy",
            )
        })?;
    if a > b || b >= size {
        return Err(invalid_copy_range(size));
    }
    Ok((a, b))
}

fn invalid_copy_range(size: u64) -> S3Error {
    S3Error::invalid_argument(format!(
        "Range specified is not valid for source object of size: {size}"
    ))
}
