//! CreateMultipartUpload, UploadPart and AbortMultipartUpload: the upload's data key lives
//! in its state record (shared data, and Redis behind webdis with several replicas); each
//! part is encrypted as an independent stream under it. (CompleteMultipartUpload is in
//! `complete`, UploadPartCopy in `part_copy`.)

use super::cx::{no_such_upload, redis_unavailable, Cx};
use super::put::{start_upload, PartKey, Upload};
use super::request::{pass_body, strip_checksum_headers, strip_integrity_headers, PassBody};
use super::response::{replace_response, RespBody};
use super::{staging, BodyError, CallOutStep, Counter, ResponseResume, ResponseStep};
use super::{CallOut, RequestStep};
use crate::auth::sigv4::VerifiedRequest;
use crate::config::StateStore;
use crate::crypto::{DataKey, Suite};
use crate::format::{Layout, ENVELOPE_HEADER};
use crate::headers::Headers;
use crate::s3::error::S3Error;
use crate::s3::xml;
use crate::s3::S3Request;
use crate::state::{self, parts, StateError, UploadState};

/// Where an upload's record was found.
pub(crate) enum Record {
    /// In shared data (this Envoy created the upload or cached its record), checked.
    Here(UploadState),
    /// Not here, Redis mode: ask for it with this call-out.
    Ask(CallOut),
}

/// Finds the record of upload `upload_id` for `object`: a record that does not check
/// (forged, expired, another object's) is no upload.
pub(crate) fn find_record(cx: &Cx, upload_id: &str, object: &str) -> Result<Record, S3Error> {
    match cx.ports.store.get(&state::shared_key(upload_id)) {
        Some(raw) => cx
            .state_of(upload_id, &raw, object)
            .map(Record::Here)
            .map_err(|_| no_such_upload()),
        None if cx.cfg.plugin.state_store == StateStore::Redis => {
            let get = state::get(&cx.cfg, &state::redis_key(upload_id));
            Ok(Record::Ask(cx.webdis(get)))
        }
        None => Err(no_such_upload()),
    }
}

/// Redis answered for an upload's record: the record, checked (and cached for the next
/// parts on this Envoy).
pub(crate) fn record_answered(
    cx: &Cx,
    upload_id: &str,
    object: &str,
    resp: Option<(&Headers, &[u8])>,
) -> Result<UploadState, S3Error> {
    let (status, body) = super::answer(resp);
    match state::parse_get(status, body) {
        Err(_) => Err(redis_unavailable()),
        Ok(None) => Err(no_such_upload()),
        Ok(Some(v)) => {
            let st = cx
                .state_of(upload_id, &v, object)
                .map_err(|_| no_such_upload())?;
            cx.ports.store.set(&state::shared_key(upload_id), &v);
            Ok(st)
        }
    }
}

/// The part number of an UploadPart or UploadPartCopy.
pub(crate) fn part_number(req: &S3Request) -> Result<u32, S3Error> {
    req.query_param("partNumber")
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        })
}

/// CreateMultipartUpload: a new data key; the envelope goes into the upload's metadata (so
/// the completed object carries it) and, with the UploadId from the response, into the
/// upload state before the client sees the UploadId.
pub(crate) struct Create {
    /// The upload's envelope, encoded.
    envelope: String,
    doc: PassBody,
    body: RespBody,
    state: CreateState,
}

enum CreateState {
    Sent,
    /// Redis mode: is Redis there before the upload is created? The request waits.
    Ping(Headers),
    /// The response waits until the record is in Redis.
    Record {
        upload_id: String,
        value: String,
    },
}

impl Create {
    pub fn start(
        cx: &Cx,
        mut up: Headers,
        v: &VerifiedRequest,
        req: &S3Request,
        eos: bool,
    ) -> Result<(Create, RequestStep), S3Error> {
        let (dek, mut env) = cx.new_envelope(Layout::Part, None)?;
        env.seal(&dek, &*cx.ports.rng)
            .map_err(|_| S3Error::internal("s3crypt: no randomness"))?;
        // Part checksums describe plaintext; the backend only ever sees ciphertext.
        strip_integrity_headers(&mut up);
        up.set(ENVELOPE_HEADER, env.encode());
        let (doc, up) = pass_body(cx, up, v, req, eos)?;
        let mut op = Create {
            envelope: env.encode(),
            doc,
            body: RespBody::Xml(Vec::new()),
            state: CreateState::Sent,
        };
        match cx.cfg.plugin.state_store {
            // The record is written when the UploadId is known; the upload is only
            // created if Redis answers now (a client gets 503, not an unusable UploadId).
            StateStore::Redis => {
                op.state = CreateState::Ping(up);
                Ok((op, RequestStep::CallOut(cx.webdis(state::ping(&cx.cfg)))))
            }
            StateStore::SharedData => Ok((op, RequestStep::Forward(up))),
        }
    }

    pub fn request_body(
        &mut self,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), S3Error> {
        self.doc.push(chunk, end, out)
    }

    pub fn callout(&mut self, cx: &Cx, resp: Option<(&Headers, &[u8])>) -> CallOutStep {
        let (status, body) = super::answer(resp);
        match std::mem::replace(&mut self.state, CreateState::Sent) {
            CreateState::Ping(up) => match state::parse_ok(status, body, "PING") {
                Ok(()) => CallOutStep::Request(RequestStep::Forward(up)),
                Err(_) => CallOutStep::Request(cx.reject(&redis_unavailable())),
            },
            CreateState::Record { upload_id, value } => {
                match state::parse_ok(status, body, "SETEX") {
                    Ok(()) => {
                        cx.ports
                            .store
                            .set(&state::shared_key(&upload_id), value.as_bytes());
                        CallOutStep::Response(ResponseResume::Continue)
                    }
                    // The client never sees this UploadId; the backend's upload is
                    // abandoned (an S3 lifecycle rule for incomplete uploads removes it).
                    Err(_) => CallOutStep::Response(ResponseResume::Reset(
                        "s3crypt: could not record the upload state in Redis; response reset"
                            .into(),
                    )),
                }
            }
            CreateState::Sent => super::unexpected_callout(cx),
        }
    }

    pub fn response_headers(&mut self, cx: &Cx, h: &Headers, eos: bool) -> ResponseStep {
        self.body.no_object_headers(cx, h, eos)
    }

    /// The CreateMultipartUpload result: the upload's record is written under its UploadId
    /// (shared data at once; Redis by a call-out the response waits for).
    pub fn response_body(
        &mut self,
        cx: &Cx,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<CallOut>, BodyError> {
        let Some(text) = self.body.push(cx, chunk, end, out)? else {
            return Ok(None);
        };
        let id = xml::element_text(&text, "UploadId").unwrap_or_default();
        let kek = cx
            .cfg
            .active_kek()
            .ok_or_else(|| BodyError::Reset("s3crypt: no active key".into()))?;
        let value = UploadState {
            created: cx.now(),
            object: cx.object_tag(),
            envelope: self.envelope.clone(),
        }
        .seal(&id, &cx.cfg.active_key_id, kek);
        if id.is_empty() {
            return Err(BodyError::Reset(
                "s3crypt: no UploadId in the backend's answer".into(),
            ));
        }
        let mut hold = None;
        match cx.cfg.plugin.state_store {
            StateStore::SharedData => {
                if !cx
                    .ports
                    .store
                    .set(&state::shared_key(&id), value.as_bytes())
                {
                    return Err(BodyError::Reset(
                        "s3crypt: could not record the upload state".into(),
                    ));
                }
                // The part entries start empty: every part's update has a version to
                // compare and swap.
                let empty = format!("{}\n", parts::SHARED_HEADER);
                cx.ports
                    .store
                    .set(&parts::shared_key(&id), empty.as_bytes());
            }
            StateStore::Redis => {
                let ttl = cx.cfg.plugin.upload_ttl_secs;
                let r = state::setex(&cx.cfg, &state::redis_key(&id), ttl, value.as_bytes());
                hold = Some(cx.webdis(r));
                self.state = CreateState::Record {
                    upload_id: id,
                    value,
                };
            }
        }
        out.extend_from_slice(text.as_bytes());
        Ok(hold)
    }
}

/// UploadPart: the data key of the upload from its record, then the part is encrypted as
/// an independent stream (part layout) under it. A short last part is staged.
pub(crate) struct Part {
    upload_id: String,
    /// The upload's suite and data key and the part's number, once the record was read:
    /// the part's ETag entry is sealed with them.
    seal: Option<PartSeal>,
    body: RespBody,
    state: PartState,
}

/// What a part's ETag entry is sealed with: the upload's suite and data key, the part's
/// number.
type PartSeal = (Suite, DataKey, u32);

/// A call-out the UploadPart response waits for, and whether the part fails without it.
struct Then {
    call: CallOut,
    /// The webdis command whose integer answer must come back (`HSET`, `EXPIRE`), or
    /// `None`: best effort (the staged copy of a short last part).
    must: Option<&'static str>,
}

enum PartState {
    /// Redis mode, the record not cached here: the request waits for it.
    Record {
        h: Headers,
        up: Headers,
        eos: bool,
        number: u32,
        object: String,
        verified: Box<VerifiedRequest>,
    },
    /// The body is being encrypted and sent.
    Sending(Box<Upload>),
    /// The response waits for these call-outs in turn (Redis: the part's ETag entry,
    /// its TTL, the staged copy of a short last part); the first is in flight.
    Recording(Vec<Then>),
    Done,
}

impl Part {
    pub fn start(
        cx: &Cx,
        h: &Headers,
        up: Headers,
        v: &VerifiedRequest,
        req: &S3Request,
        eos: bool,
    ) -> Result<(Part, RequestStep), S3Error> {
        let number = part_number(req)?;
        let upload_id = req.query_param("uploadId").unwrap_or("").to_string();
        let object = cx.object_tag();
        match find_record(cx, &upload_id, &object)? {
            Record::Here(st) => {
                let (upload, up, seal) = Self::encrypt_with(cx, h, up, v, eos, number, &st)?;
                let op = Part {
                    upload_id,
                    seal: Some(seal),
                    body: RespBody::Pass,
                    state: PartState::Sending(upload),
                };
                Ok((op, RequestStep::Forward(up)))
            }
            Record::Ask(call) => {
                let state = PartState::Record {
                    h: h.clone(),
                    up,
                    eos,
                    number,
                    object,
                    verified: Box::new(v.clone()),
                };
                let op = Part {
                    upload_id,
                    seal: None,
                    body: RespBody::Pass,
                    state,
                };
                Ok((op, RequestStep::CallOut(call)))
            }
        }
    }

    /// With the upload's (checked) record: unwraps the data key and starts encrypting.
    fn encrypt_with(
        cx: &Cx,
        h: &Headers,
        up: Headers,
        v: &VerifiedRequest,
        eos: bool,
        number: u32,
        st: &UploadState,
    ) -> Result<(Box<Upload>, Headers, PartSeal), S3Error> {
        let (env, dek) = cx.upload_envelope(st)?;
        let seal = (env.suite, DataKey::from_bytes(dek.0), number);
        // The upload's suite, from its envelope: not the configuration, which may have
        // changed since the upload was created (or differ on another replica).
        let key = PartKey {
            number,
            suite: env.suite,
            dek,
            v2: env.version >= 2,
        };
        let (upload, up) = start_upload(cx, h, up, v, eos, Some(key))?;
        Ok((upload, up, seal))
    }

    pub fn request_body(
        &mut self,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), S3Error> {
        match &mut self.state {
            PartState::Sending(u) => u.feed(chunk, end, out),
            _ => super::request::refuse_body(chunk),
        }
    }

    pub fn callout(&mut self, cx: &Cx, resp: Option<(&Headers, &[u8])>) -> CallOutStep {
        match std::mem::replace(&mut self.state, PartState::Done) {
            PartState::Record {
                h,
                up,
                eos,
                number,
                object,
                verified,
            } => {
                let r = record_answered(cx, &self.upload_id, &object, resp)
                    .and_then(|st| Self::encrypt_with(cx, &h, up, &verified, eos, number, &st));
                CallOutStep::Request(match r {
                    Ok((upload, up, seal)) => {
                        self.seal = Some(seal);
                        self.state = PartState::Sending(upload);
                        RequestStep::Forward(up)
                    }
                    Err(e) => cx.reject(&e),
                })
            }
            PartState::Recording(mut calls) => {
                let (status, body) = super::answer(resp);
                if calls.is_empty() {
                    return super::unexpected_callout(cx);
                }
                let done = calls.remove(0);
                if let Some(cmd) = done.must {
                    if parts::parse_int(status, body, cmd).is_err() {
                        return CallOutStep::Response(ResponseResume::Reset(
                            "s3crypt: could not record the part's ETag in Redis; response reset (the client retries the part)"
                                .into(),
                        ));
                    }
                }
                if calls.is_empty() {
                    return CallOutStep::Response(ResponseResume::Continue);
                }
                let next = calls.first().map(|t| t.call.clone());
                self.state = PartState::Recording(calls);
                match next {
                    Some(c) => CallOutStep::Response(ResponseResume::Then(c)),
                    None => CallOutStep::Response(ResponseResume::Continue),
                }
            }
            _ => super::unexpected_callout(cx),
        }
    }

    /// The part is stored under the backend's ETag `backend`: its entry (that ETag and
    /// the plaintext MD5, sealed) is recorded, in shared data at once or in Redis by the
    /// returned call-outs; the client's ETag is the plaintext MD5's.
    fn record_etag(
        &self,
        cx: &Cx,
        md5: Option<[u8; 16]>,
        backend: &str,
    ) -> Result<(String, Vec<Then>), S3Error> {
        let (Some(md5), Some((suite, dek, number))) = (md5, self.seal.as_ref()) else {
            return Err(S3Error::internal("s3crypt: the part has no digest"));
        };
        let calls = record_part_entry(cx, &self.upload_id, *suite, dek, *number, backend, &md5)?
            .into_iter()
            .map(|(call, must)| Then {
                call,
                must: Some(must),
            })
            .collect();
        Ok((format!("\"{}\"", hex::encode(md5)), calls))
    }

    /// The client gets the ETag S3 would give it, the MD5 of the plaintext part (its entry
    /// maps it to the backend's ETag for CompleteMultipartUpload), and the checksums of the
    /// plaintext part. A short last part is staged.
    pub fn response_headers(&mut self, cx: &Cx, h: &Headers, eos: bool) -> ResponseStep {
        let mut out = h.clone();
        let mut calls = Vec::new();
        let state = std::mem::replace(&mut self.state, PartState::Done);
        if let (PartState::Sending(mut u), Some("200")) = (state, h.get(":status")) {
            strip_checksum_headers(&mut out);
            for (k, v) in &u.result_checksums {
                out.set(k, v.clone());
            }
            let geo = *u.enc.geometry();
            cx.count(Counter::BytesEncrypted, geo.plain_len);
            match self.record_etag(cx, u.result_md5, h.get("etag").unwrap_or("")) {
                Ok((etag, recording)) => {
                    out.set("etag", etag);
                    calls = recording;
                }
                Err(e) => {
                    // The client retries the part (the backend's copy is replaced).
                    replace_response(cx, &mut out, &mut self.body, &e);
                    self.body.headers_done(&mut out, eos);
                    return ResponseStep::Forward(out);
                }
            }
            if let Some((cipher, _held)) = u.stage.take() {
                if Some(cipher.len() as u64) == geo.cipher_len() {
                    if let Some(call) = staging::stage_part(cx, &self.upload_id, cipher, geo.part) {
                        calls.push(Then { call, must: None });
                    }
                }
            }
        }
        self.body.headers_done(&mut out, eos);
        match calls.first().map(|t| t.call.clone()) {
            Some(c) => {
                self.state = PartState::Recording(calls);
                ResponseStep::ForwardAfter(out, c)
            }
            None => ResponseStep::Forward(out),
        }
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
}

/// AbortMultipartUpload: an upload this Envoy knows to belong to another object is not this
/// request's to abort (404, the backend untouched); otherwise the backend decides, and the
/// state is forgotten only when it confirmed the abort.
pub(crate) struct Abort {
    upload_id: String,
    doc: PassBody,
    state: AbortState,
}

enum AbortState {
    Sent,
    /// Redis mode, no cached record: the record decides whether the upload belongs to the
    /// request's object. `up` is the signed abort to forward.
    Record {
        up: Headers,
        object: String,
    },
    /// The response waits until the record is removed from Redis.
    Forgetting,
}

impl Abort {
    pub fn start(
        cx: &Cx,
        up: Headers,
        v: &VerifiedRequest,
        req: &S3Request,
        eos: bool,
    ) -> Result<(Abort, RequestStep), S3Error> {
        let upload_id = req.query_param("uploadId").unwrap_or("").to_string();
        let object = cx.object_tag();
        let cached = cx.ports.store.get(&state::shared_key(&upload_id));
        if let Some(raw) = &cached {
            if cx.state_of(&upload_id, raw, &object) == Err(StateError::WrongObject) {
                return Err(no_such_upload());
            }
        }
        let (doc, up) = pass_body(cx, up, v, req, eos)?;
        let mut op = Abort {
            upload_id,
            doc,
            state: AbortState::Sent,
        };
        if cached.is_none() && cx.cfg.plugin.state_store == StateStore::Redis {
            // Another replica's upload: its record in Redis says which object it is for.
            let get = state::get(&cx.cfg, &state::redis_key(&op.upload_id));
            op.state = AbortState::Record { up, object };
            return Ok((op, RequestStep::CallOut(cx.webdis(get))));
        }
        Ok((op, RequestStep::Forward(up)))
    }

    pub fn request_body(
        &mut self,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), S3Error> {
        self.doc.push(chunk, end, out)
    }

    pub fn callout(&mut self, cx: &Cx, resp: Option<(&Headers, &[u8])>) -> CallOutStep {
        let (status, body) = super::answer(resp);
        match std::mem::replace(&mut self.state, AbortState::Sent) {
            AbortState::Record { up, object } => match state::parse_get(status, body) {
                Err(_) => CallOutStep::Request(cx.reject(&redis_unavailable())),
                Ok(Some(v))
                    if cx.state_of(&self.upload_id, &v, &object)
                        == Err(StateError::WrongObject) =>
                {
                    CallOutStep::Request(cx.reject(&no_such_upload()))
                }
                // No record (the backend decides) or this object's: the abort goes on.
                Ok(_) => CallOutStep::Request(RequestStep::Forward(up)),
            },
            AbortState::Forgetting => CallOutStep::Response(ResponseResume::Continue),
            AbortState::Sent => super::unexpected_callout(cx),
        }
    }

    /// Only an abort the backend confirmed ends the upload: a 404 (say, the right UploadId
    /// with another key) leaves its state alone.
    pub fn response_headers(&mut self, cx: &Cx, h: &Headers, eos: bool) -> ResponseStep {
        let mut out = h.clone();
        RespBody::Pass.headers_done(&mut out, eos);
        if h.get(":status") == Some("204") {
            if let Some(c) = staging::forget_upload(cx, &self.upload_id) {
                self.state = AbortState::Forgetting;
                return ResponseStep::ForwardAfter(out, c);
            }
        }
        ResponseStep::Forward(out)
    }
}

/// Records part `number`'s entry (its backend ETag and sealed plaintext MD5) for an
/// upload: in shared data at once, or the webdis commands (with the command whose answer
/// must come back) that record it in Redis. UploadPart and UploadPartCopy use it.
pub(crate) fn record_part_entry(
    cx: &Cx,
    upload_id: &str,
    suite: Suite,
    dek: &DataKey,
    number: u32,
    backend: &str,
    md5: &[u8; 16],
) -> Result<Vec<(CallOut, &'static str)>, S3Error> {
    let entry = parts::EtagKey::new(suite, dek)
        .seal(upload_id, number, backend, md5, &*cx.ports.rng)
        .ok_or_else(|| {
            S3Error::internal("s3crypt: the backend's ETag for the part could not be recorded")
        })?;
    match cx.cfg.plugin.state_store {
        StateStore::SharedData => {
            let key = parts::shared_key(upload_id);
            if !cx
                .ports
                .store
                .update(&key, &|cur| parts::shared_with(cur, number, &entry))
            {
                return Err(S3Error::slow_down(
                    "s3crypt: the part's ETag could not be recorded; please retry the part",
                ));
            }
            Ok(Vec::new())
        }
        StateStore::Redis => {
            let key = parts::redis_key(upload_id);
            let ttl = cx.cfg.plugin.upload_ttl_secs;
            Ok(vec![
                (
                    cx.webdis(parts::hset(&cx.cfg, &key, number, &entry)),
                    "HSET",
                ),
                (cx.webdis(parts::expire(&cx.cfg, &key, ttl)), "EXPIRE"),
            ])
        }
    }
}
