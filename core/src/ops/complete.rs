//! CompleteMultipartUpload: the part list is held and checked (numbered 1..N, every part
//! with its ETag, no plaintext checksum left), then the filter makes sure the object ends
//! with its part table (FORMAT.md, "How a version 2 multipart object ends"): it lists the
//! upload's parts, and either uploads an end part after the last one, or rewrites a short
//! last part from its staged copy as the closing part; the list goes upstream rebuilt.
//! Once the backend completed the upload, its record and staged part are forgotten.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use md5::{Digest as _, Md5};
use subtle::ConstantTimeEq as _;

use super::cx::{no_such_upload, object_path, object_tag, part_put_failed, redis_unavailable, Cx};
use super::multipart::{find_record, record_answered, Record};
use super::request::{strip_integrity_headers, Document};
use super::response::RespBody;
use super::vm::CopyReservation;
use super::{staging, BodyError, CallOut, CallOutStep, RequestStep, ResponseResume, ResponseStep};
use crate::auth::sigv4::{self, VerifiedRequest};
use crate::config::StateStore;
use crate::crypto::{DataKey, Suite};
use crate::format::{Geometry, Layout};
use crate::headers::Headers;
use crate::s3::error::S3Error;
use crate::s3::{self, xml, Body, S3Request};
use crate::state::{self, parts, stage, UploadState};

pub(crate) struct Complete {
    /// Length the body sent upstream must have (its Content-Length went ahead), if known.
    length: Option<u64>,
    doc: Document,
    body: RespBody,
    upload_id: String,
    state: CompleteState,
    /// The ETag the backend gives the object it completes from the part list sent
    /// (S3's `md5-of-md5s-N`): answered where the backend's answer has none (RGW).
    expected_etag: Option<String>,
    /// The object completes with its plaintext multipart MD5 sealed in its end or
    /// closing part: what it shows, and its stored size (the result shows that ETag,
    /// and the ETag cache learns it).
    sealed: Option<(super::etags::Known, u64)>,
}

enum CompleteState {
    /// The part list is arriving.
    Holding,
    /// The upload's record from Redis.
    Record(Box<Completing>),
    /// The upload's part entries from Redis (with its checked record).
    Entries(Box<Completing>, UploadState),
    /// A page of the upload's parts as the backend lists them.
    List(Box<Completing>, (Suite, DataKey)),
    /// The end part (it seals the part table) sent as UploadPart.
    Marker(Box<Completing>),
    /// The staged copy of the short last part, from Redis.
    Staged(Box<Completing>, (Suite, DataKey)),
    /// The closing part (the last part rewritten with the part table) sent as UploadPart
    /// under the last part's number.
    Closing(Box<Completing>),
    /// The list went upstream.
    Sent,
    /// The response waits until the upload's record is removed from Redis.
    Forgetting,
}

impl Complete {
    /// The body (the part list) is checked against the client's hash and forwarded with
    /// the part checksums blanked out (they describe plaintext).
    pub fn start(
        cx: &Cx,
        mut up: Headers,
        v: &VerifiedRequest,
        req: &S3Request,
        eos: bool,
    ) -> Result<(Complete, RequestStep), S3Error> {
        strip_integrity_headers(&mut up);
        let Body::Document(doc) = req.spec.body else {
            return Err(S3Error::internal("s3crypt: no part list expected"));
        };
        let document = Document::expect(&up, v, doc, eos)?;
        if eos {
            return Err(super::request::malformed_document(doc));
        }
        // The body may grow by one part element; its length goes ahead of it.
        let mut length = None;
        if let Some(n) = up
            .get("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            // (Document::expect refused more than MAX_XML_BODY.)
            let n = n
                .checked_add(COMPLETE_ROOM)
                .ok_or_else(|| super::request::malformed_document(doc))?;
            length = Some(n);
            up.set("content-length", n.to_string());
        }
        cx.sign(&mut up, sigv4::UNSIGNED_PAYLOAD);
        let op = Complete {
            length,
            doc: document,
            body: RespBody::Xml(Vec::new()),
            upload_id: req.query_param("uploadId").unwrap_or("").to_string(),
            state: CompleteState::Holding,
            expected_etag: None,
            sealed: None,
        };
        Ok((op, RequestStep::Forward(up)))
    }

    /// The part list, held until it is complete and checked; then what goes upstream.
    pub fn request_body(
        &mut self,
        cx: &Cx,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<CallOut>, S3Error> {
        if !matches!(self.state, CompleteState::Holding) {
            return super::request::refuse_body(chunk).map(|()| None);
        }
        let Some(list) = self.doc.push(chunk, end)? else {
            return Ok(None);
        };
        let parts = check_part_numbering(&list)?;
        let blanked = blank_part_checksums(&list);
        // A checksum element the blanking did not recognise (attributes, a prefix) would
        // carry a plaintext digest upstream: refused.
        if blanked.windows(8).any(|w| w == b"Checksum") {
            return Err(S3Error::new(
                400,
                "MalformedXML",
                "s3crypt: part checksums must be plain <ChecksumXXX> elements",
            ));
        }
        self.state = CompleteState::Sent;
        match self.complete_list_held(cx, blanked, parts)? {
            RequestStep::Body(b) => {
                self.expected_etag = etag_of_list(&b);
                out.extend_from_slice(&b);
                Ok(None)
            }
            RequestStep::CallOut(c) => Ok(Some(c)),
            _ => Err(S3Error::internal("s3crypt: unexpected step")),
        }
    }

    pub fn callout(&mut self, cx: &Cx, resp: Option<(&Headers, &[u8])>) -> CallOutStep {
        let (status, body) = super::answer(resp);
        let r = match std::mem::replace(&mut self.state, CompleteState::Sent) {
            CompleteState::Record(c) => record_answered(cx, &c.upload_id, &c.object, resp)
                .and_then(|st| self.complete_with(cx, c, st)),
            CompleteState::Entries(c, st) => match parts::parse_hgetall(status, body) {
                Ok(entries) => self.complete_mapped(cx, c, st, &entries),
                Err(_) => Err(redis_unavailable()),
            },
            CompleteState::List(c, key) => self.complete_listed(cx, c, key, status, body),
            CompleteState::Marker(c) => self.complete_marked(&c, resp.map(|(h, _)| h), body),
            CompleteState::Staged(c, key) => {
                let staged = state::parse_get(status, body)
                    .ok()
                    .flatten()
                    .and_then(|v| stage::decode(&v, &c.upload_id));
                self.complete_closing(cx, c, key, staged)
            }
            CompleteState::Closing(c) => self.complete_closed(cx, &c, resp.map(|(h, _)| h)),
            CompleteState::Forgetting => {
                return CallOutStep::Response(ResponseResume::Continue);
            }
            CompleteState::Holding | CompleteState::Sent => return super::unexpected_callout(cx),
        };
        if let Ok(RequestStep::Body(b)) = &r {
            self.expected_etag = etag_of_list(b);
        }
        cx.request_step(r)
    }

    pub fn response_headers(&mut self, cx: &Cx, h: &Headers, eos: bool) -> ResponseStep {
        self.body.no_object_headers(cx, h, eos)
    }

    /// The CompleteMultipartUpload result: once the backend completed the upload (S3 may
    /// answer 200 with an error document), it is forgotten.
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
        let mut hold = None;
        let mut text = text;
        if !text.contains("<Error>") {
            hold = staging::forget_upload(cx, &self.upload_id);
            if hold.is_some() {
                self.state = CompleteState::Forgetting;
            }
            if let Some(e) = &self.expected_etag {
                text = with_etag(&text, e).unwrap_or(text);
            }
            if let (Some((known, stored)), Some(backend)) =
                (&self.sealed, xml::element_text(&text, "ETag"))
            {
                // The ETag clients see: the plaintext one sealed in the object.
                let (bucket, key) = super::etags::request_object(cx);
                super::etags::remember(cx, &bucket, &key, &backend, *stored, known);
                super::etags::note_latest(cx, Some((&backend, *stored, true)));
                let visible = known.etag(&backend);
                text = xml::replace_element_text(&text, "ETag", &visible).unwrap_or(text);
            } else {
                // A new version the filter cannot describe: the hint of the previous one
                // would send the next read to the backend unprobed, to be refused (503).
                super::etags::note_latest(cx, None);
            }
        }
        out.extend_from_slice(text.as_bytes());
        Ok(hold)
    }

    /// The checked part list of a CompleteMultipartUpload is complete: find the upload's
    /// record, then list its parts (the object must end with a final part).
    /// `last`: the list names parts 1..=last (checked).
    fn complete_list_held(
        &mut self,
        cx: &Cx,
        list: Vec<u8>,
        last: u32,
    ) -> Result<RequestStep, S3Error> {
        // Checked before anything is uploaded: every part has its ETag (the list goes
        // upstream rebuilt from the numbers and ETags checked here).
        let etags = xml::element_texts(&String::from_utf8_lossy(&list), "ETag");
        if etags.len() != last as usize {
            return Err(malformed_part_list());
        }
        // No part has an ETag with XML markup in it (S3's are quoted hex digits); one that
        // has cannot name a part, and escaped it could outgrow the room the rebuilt list
        // was given.
        if etags
            .iter()
            .any(|e| e.len() > MAX_ETAG_LEN || e.contains(['&', '<', '>']))
        {
            return Err(invalid_part());
        }
        let req = cx.request()?;
        let upload_id = req.query_param("uploadId").unwrap_or("").to_string();
        let path = object_path(req);
        let object = object_tag(req);
        let c = Box::new(Completing {
            length: self.length,
            path,
            upload_id,
            object,
            etags,
            sizes: vec![None; last as usize],
            marker: 0,
            plain_md5: None,
            envelope: None,
        });
        match find_record(cx, &c.upload_id, &c.object)? {
            Record::Here(st) => self.complete_with(cx, c, st),
            Record::Ask(call) => {
                self.state = CompleteState::Record(c);
                Ok(RequestStep::CallOut(call))
            }
        }
    }

    /// CompleteMultipartUpload with the upload's checked record: its part entries (the
    /// backend ETag of each part's plaintext ETag), from shared data or Redis.
    fn complete_with(
        &mut self,
        cx: &Cx,
        c: Box<Completing>,
        st: UploadState,
    ) -> Result<RequestStep, S3Error> {
        match cx.cfg.plugin.state_store {
            StateStore::SharedData => {
                let entries = cx
                    .ports
                    .store
                    .get(&parts::shared_key(&c.upload_id))
                    .map(|v| parts::shared_entries(&v))
                    .unwrap_or_default();
                self.complete_mapped(cx, c, st, &entries)
            }
            StateStore::Redis => {
                let get = parts::hgetall(&cx.cfg, &parts::redis_key(&c.upload_id));
                self.state = CompleteState::Entries(c, st);
                Ok(RequestStep::CallOut(cx.webdis(get)))
            }
        }
    }

    /// The part list's ETags mapped to the backend's (InvalidPart, before the backend is
    /// asked anything, for one that is not the plaintext ETag of its part's newest
    /// upload); then a version 2 upload has its parts listed, and a version 1 upload (no
    /// final parts) completes as it is.
    fn complete_mapped(
        &mut self,
        cx: &Cx,
        mut c: Box<Completing>,
        st: UploadState,
        entries: &BTreeMap<u32, String>,
    ) -> Result<RequestStep, S3Error> {
        let (env, dek) = cx.open_envelope(&st.envelope)?;
        if env.layout == Layout::Single {
            return Err(S3Error::internal(
                "s3crypt: upload state is not a multipart envelope",
            ));
        }
        map_etags(&mut c, &parts::EtagKey::new(env.suite, &dek), entries)?;
        if !cx.cfg.plugin.seal_multipart_etags {
            c.plain_md5 = None; // a version 1 table, as the previous release wrote
        }
        if env.version < 2 {
            return complete_as_listed(&c);
        }
        c.envelope = Some(env.clone());
        self.complete_list_page(cx, c, (env.suite, dek))
    }

    /// Asks the backend for the next page of the upload's parts.
    fn complete_list_page(
        &mut self,
        cx: &Cx,
        c: Box<Completing>,
        key: (Suite, DataKey),
    ) -> Result<RequestStep, S3Error> {
        let mut path = format!(
            "{}?max-parts=1000&uploadId={}",
            c.path,
            s3::uri_encode(&c.upload_id, true)
        );
        if c.marker > 0 {
            path.push_str(&format!("&part-number-marker={}", c.marker));
        }
        let h = cx.request_at("GET", path, None);
        self.state = CompleteState::List(c, key);
        Ok(RequestStep::CallOut(cx.backend_callout(h)))
    }

    /// A page of the upload's parts: parts before the last must be at least 5 MiB stored
    /// (S3's rule, which not every backend enforces: a short part is written `final`);
    /// then the object ends as it is (its last part is final) or with an end marker.
    fn complete_listed(
        &mut self,
        cx: &Cx,
        mut c: Box<Completing>,
        key: (Suite, DataKey),
        status: Option<u16>,
        body: &[u8],
    ) -> Result<RequestStep, S3Error> {
        match status {
            Some(200) => {}
            Some(404) => return Err(no_such_upload()),
            Some(403) => {
                return Err(S3Error::access_denied(
                    "s3crypt: the backend refused to list the upload's parts; the proxy's backend credentials need ListParts (s3:ListMultipartUploadParts)",
                ))
            }
            _ => {
                return Err(S3Error::slow_down(
                    "s3crypt: the upload's parts could not be listed; please retry",
                ))
            }
        }
        let (parts, next) = parse_list_parts(&String::from_utf8_lossy(body))
            .ok_or_else(|| S3Error::internal("s3crypt: unreadable ListParts answer"))?;
        // (Some backends list parts in no particular order.)
        for (n, size) in parts {
            if let Some(slot) = n.checked_sub(1).and_then(|i| c.sizes.get_mut(i as usize)) {
                *slot = Some(size);
            }
        }
        if c.sizes.iter().any(Option::is_none) {
            // Each page must move on, and pages beyond part `last` hold nothing wanted
            // (so a backend that keeps saying "truncated" gets at most `last` requests).
            return match next {
                Some(m) if m > c.marker && m < c.last() => {
                    c.marker = m;
                    self.complete_list_page(cx, c, key)
                }
                _ => Err(invalid_part()),
            };
        }
        let sizes: Vec<u64> = c.sizes.iter().flatten().copied().collect();
        let Some((&last_size, others)) = sizes.split_last() else {
            return Err(invalid_part());
        };
        if others.iter().any(|&n| n < crate::format::MIN_PART_SIZE) {
            return Err(S3Error::new(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
            ));
        }
        // Plaintext lengths: a part shorter than its overhead is no part of ours.
        let lengths: Vec<u64> = sizes
            .iter()
            .map(|&n| n.checked_sub(crate::format::PART_OVERHEAD))
            .collect::<Option<_>>()
            .ok_or_else(|| cx.integrity())?;
        let last_length = lengths.last().copied().ok_or_else(invalid_part)?;
        if crate::format::part_is_final(c.last(), last_length) {
            return self.complete_short(cx, c, key, last_size);
        }
        // The last part can be followed: the filter adds the end part after it.
        // It seals the part table, so that readers find it in one request.
        let (suite, dek) = key;
        let number = c.end_number().ok_or_else(invalid_part)?;
        let marker = crate::format::seal_end(
            suite,
            &dek,
            number,
            &lengths,
            c.plain_md5.as_ref(),
            &cx.ports.rng,
        )
        .map_err(|_| S3Error::internal("s3crypt: no randomness"))?;
        let call = self.upload_part_callout(cx, &c, number, marker);
        self.state = CompleteState::Marker(c);
        Ok(RequestStep::CallOut(call))
    }

    /// UploadPart of a part the filter writes into the upload being completed.
    fn upload_part_callout(&self, cx: &Cx, c: &Completing, number: u32, body: Vec<u8>) -> CallOut {
        let path = format!(
            "{}?partNumber={number}&uploadId={}",
            c.path,
            s3::uri_encode(&c.upload_id, true)
        );
        // An SSE-C upload's parts need its key: the client's Complete must carry it.
        let mut h = cx.sse_request_at("PUT", path, None, super::cx::SseFor::Object);
        super::upstream::sign_whole(cx, &mut h, &body);
        let mut call = cx.backend_callout(h);
        call.body = Some(body);
        call
    }

    /// The end marker was stored: the part list goes upstream with it as the last part.
    fn complete_marked(
        &mut self,
        c: &Completing,
        resp: Option<&Headers>,
        body: &[u8],
    ) -> Result<RequestStep, S3Error> {
        let status = resp.and_then(|h| h.get(":status")?.parse().ok());
        let etag = resp
            .filter(|_| status == Some(200))
            .and_then(|h| h.get("etag"))
            .map(str::to_string)
            .ok_or_else(|| part_put_failed(status, &String::from_utf8_lossy(body)))?;
        let number = c.end_number().ok_or_else(invalid_part)?;
        let parts = listed_parts(c).chain(std::iter::once((number, etag.as_str())));
        let list = part_list(parts, c.length)?;
        self.sealed = sealed_object(c, crate::format::PART_OVERHEAD);
        Ok(RequestStep::Body(list))
    }

    /// The last part is short (it can only be last): close the object with it rewritten
    /// as a closing part, if its staged copy is at hand; else complete as listed.
    fn complete_short(
        &mut self,
        cx: &Cx,
        c: Box<Completing>,
        key: (Suite, DataKey),
        last_size: u64,
    ) -> Result<RequestStep, S3Error> {
        let p = &cx.cfg.plugin;
        if !p.stage_short_parts
            || c.last() >= crate::format::MAX_PART_NUMBER
            || last_size >= crate::format::MIN_PART_SIZE
        {
            return complete_as_listed(&c);
        }
        match p.state_store {
            StateStore::SharedData => {
                let staged = staging::staged_shared(cx, &c.upload_id);
                self.complete_closing(cx, c, key, staged)
            }
            StateStore::Redis => {
                let get = state::get(&cx.cfg, &stage::redis_key(&c.upload_id));
                self.state = CompleteState::Staged(c, key);
                Ok(RequestStep::CallOut(cx.webdis(get)))
            }
        }
    }

    /// Sends the closing part made from the staged copy, or completes as listed when
    /// there is none that fits.
    fn complete_closing(
        &mut self,
        cx: &Cx,
        c: Box<Completing>,
        key: (Suite, DataKey),
        staged: Option<stage::Staged>,
    ) -> Result<RequestStep, S3Error> {
        let part = match self.closing_part(cx, &c, &key, staged) {
            Ok(part) => part,
            Err(why) => {
                cx.note(&format!(
                    "s3crypt: upload {:?} completes without a part table ({why}); its range reads walk the parts",
                    c.upload_id
                ));
                return complete_as_listed(&c);
            }
        };
        // It replaces the last part under the same number (a gap in the numbers would
        // do too, but not every S3 server completes lists with gaps).
        let call = self.upload_part_callout(cx, &c, c.last(), part);
        self.state = CompleteState::Closing(c);
        Ok(RequestStep::CallOut(call))
    }

    /// The closing part for an upload's last part from its staged copy: only a copy of
    /// this upload's last part whose MD5 is the ETag the client names for it and that
    /// decrypts under the upload's key. Memory: the copy, then its
    /// plaintext and the closing part (each under 5 MiB), within the copy budget.
    fn closing_part(
        &self,
        cx: &Cx,
        c: &Completing,
        (suite, dek): &(Suite, DataKey),
        staged: Option<stage::Staged>,
    ) -> Result<Vec<u8>, &'static str> {
        use crate::format::{FrameDecryptor, PART_OVERHEAD};
        let s = staged.ok_or("no staged copy of its last part")?;
        let sizes: Vec<u64> = c
            .sizes
            .iter()
            .copied()
            .collect::<Option<_>>()
            .ok_or("unlisted")?;
        let last_size = *sizes.last().ok_or("no parts")?;
        if s.number != c.last() || s.cipher.len() as u64 != last_size {
            return Err("the staged copy is of another part");
        }
        // The part the client names, by the ETag the backend gave it for it. (Not the
        // ETag the backend lists now: after a Complete that failed once, that is the
        // closing part's, and the retry makes it again.)
        let md5 = hex::encode(Md5::digest(&s.cipher));
        if c.etags.last().map(|e| etag_hex(e)) != Some(md5) {
            return Err("the staged copy is not the named part");
        }
        let budget = cx.cfg.plugin.max_copy_buffer_bytes;
        let _held = last_size
            .checked_mul(2)
            .and_then(|n| CopyReservation::try_new(&cx.vm, n, budget))
            .ok_or("no memory budget left")?;
        let last_length = last_size
            .checked_sub(PART_OVERHEAD)
            .ok_or("the last part is shorter than a part's overhead")?;
        let geo = Geometry::part_in(Layout::Final, c.last(), last_length);
        let mut d = FrameDecryptor::whole(*suite, dek, geo);
        let mut plain = Vec::with_capacity(usize::try_from(geo.plain_len).unwrap_or(0));
        d.push(&s.cipher, &mut plain)
            .and_then(|()| d.finish())
            .map_err(|_| "the staged copy does not verify")?;
        drop(s);
        let lengths: Vec<u64> = sizes
            .iter()
            .map(|n| n.checked_sub(PART_OVERHEAD))
            .collect::<Option<_>>()
            .ok_or("a part is shorter than a part's overhead")?;
        crate::format::seal_closing(
            *suite,
            dek,
            c.last(),
            &plain,
            &lengths,
            c.plain_md5.as_ref(),
            &cx.ports.rng,
        )
        .map_err(|_| "too many distinct part lengths for its table")
    }

    /// The closing part was stored in the last part's place: the list goes upstream with
    /// its ETag. If the backend refused it, the last part is still the client's and the
    /// object completes as listed.
    fn complete_closed(
        &mut self,
        cx: &Cx,
        c: &Completing,
        resp: Option<&Headers>,
    ) -> Result<RequestStep, S3Error> {
        let status = resp.and_then(|h| h.get(":status")?.parse::<u16>().ok());
        let Some(etag) = resp
            .filter(|_| status == Some(200))
            .and_then(|h| h.get("etag"))
        else {
            cx.note(&format!(
                "s3crypt: the closing part of upload {:?} was refused ({status:?}); it completes without a part table",
                c.upload_id
            ));
            return complete_as_listed(c);
        };
        let keep = listed_parts(c).take_while(|&(n, _)| n < c.last());
        let parts = keep.chain(std::iter::once((c.last(), etag)));
        let list = part_list(parts, c.length)?;
        self.sealed = sealed_object(c, 0);
        Ok(RequestStep::Body(list))
    }
}

/// What an object completed with its multipart MD5 sealed shows, and its stored size:
/// the listed parts and `added` bytes (an end part). `None` without an MD5 to show.
fn sealed_object(c: &Completing, added: u64) -> Option<(super::etags::Known, u64)> {
    let md5 = c.plain_md5?;
    let env = c.envelope.as_ref()?;
    let stored = c
        .sizes
        .iter()
        .try_fold(added, |acc, n| acc.checked_add((*n)?))?;
    let plain_len = c.sizes.iter().try_fold(0u64, |acc, n| {
        acc.checked_add((*n)?.checked_sub(crate::format::PART_OVERHEAD)?)
    })?;
    Some((
        super::etags::Known {
            version: env.version,
            plain_len,
            md5: Some(md5),
            parts: Some(u64::from(c.last())),
            checksum: None,
            wrapped: env.wrapped_dek,
        },
        stored,
    ))
}

/// Replaces each ETag the client named by the backend's ETag of that part's newest
/// upload, if the client's is the MD5 of that upload's plaintext (quotes and case aside):
/// otherwise the part list names a part that is not there (InvalidPart). The backend's
/// ETag is written with quotes if the client's had them (S3's part ETags are quoted hex
/// of the same length: the rebuilt list keeps its length).
pub(crate) fn map_etags(
    c: &mut Completing,
    key: &parts::EtagKey,
    entries: &BTreeMap<u32, String>,
) -> Result<(), S3Error> {
    // The object's plaintext multipart MD5: of the parts' plaintext MD5s (the ETags the
    // client names, checked against each part's entry).
    let mut whole = Md5::new();
    for (n, named) in (1u32..).zip(c.etags.iter_mut()) {
        let entry = entries
            .get(&n)
            .and_then(|v| key.open(&c.upload_id, n, v))
            .ok_or_else(invalid_part)?;
        let want = hex::encode(entry.md5);
        if !bool::from(etag_hex(named).as_bytes().ct_eq(want.as_bytes())) {
            return Err(invalid_part());
        }
        whole.update(entry.md5);
        *named = if named.trim().starts_with('"') {
            entry.backend
        } else {
            entry.backend.trim_matches('"').to_string()
        };
    }
    c.plain_md5 = Some(whole.finalize().into());
    Ok(())
}

/// (part number, stored size) of each part in a ListParts answer, and the marker for the
/// next page if the answer is truncated.
pub(crate) type ListedParts = (Vec<(u32, u64)>, Option<u32>);

/// A CompleteMultipartUpload whose part list is held while the filter makes sure the
/// object will end with a last part (FORMAT.md, "How a version 2 multipart object ends").
pub(crate) struct Completing {
    /// Length the body sent upstream must have (its Content-Length went ahead), if fixed.
    pub(crate) length: Option<u64>,
    /// The object's upstream path (no query) and the upload.
    pub(crate) path: String,
    pub(crate) upload_id: String,
    pub(crate) object: String,
    /// The client's ETag of each listed part 1..=last (element text, unescaped): the
    /// list names parts 1..=last, `last` = `etags.len()` (checked).
    pub(crate) etags: Vec<String>,
    /// Stored size of each listed part 1..=last, as the backend's listing says.
    pub(crate) sizes: Vec<Option<u64>>,
    /// The part-number-marker of the next ListParts page.
    pub(crate) marker: u32,
    /// The MD5 of the parts' plaintext MD5s (once the ETags were mapped), sealed in the
    /// object's end or closing part: its ETag is that and `-last`.
    pub(crate) plain_md5: Option<[u8; 16]>,
    /// The upload's envelope (version 2 uploads, once the record was read).
    pub(crate) envelope: Option<crate::format::Envelope>,
}

impl Completing {
    /// Number of the last listed part.
    pub(crate) fn last(&self) -> u32 {
        u32::try_from(self.etags.len()).unwrap_or(u32::MAX)
    }

    /// Number of the end part the filter adds after the last listed part (`None` past
    /// u32; the list names at most 10,000 parts).
    pub(crate) fn end_number(&self) -> Option<u32> {
        self.last().checked_add(1)
    }
}

/// Longest ETag a Complete may name (S3's are 34 to 40 characters, quotes included).
const MAX_ETAG_LEN: usize = 104;

/// Bytes a CompleteMultipartUpload body may grow by when the filter rebuilds it: the
/// namespace on the root element (44) and one `<Part>` element (the end part) with an
/// ETag of up to 104 characters (after escaping; 160). The upstream Content-Length
/// reserves it; what is not needed is sent as spaces.
pub(crate) const COMPLETE_ROOM: u64 = 256;

/// The parts 1..=last of a Complete with the client's ETags.
pub(crate) fn listed_parts(c: &Completing) -> impl Iterator<Item = (u32, &str)> {
    (1u32..).zip(c.etags.iter().map(String::as_str))
}

/// The part list as the client sent it (numbers and ETags checked), rebuilt.
pub(crate) fn complete_as_listed(c: &Completing) -> Result<RequestStep, S3Error> {
    Ok(RequestStep::Body(part_list(listed_parts(c), c.length)?))
}

/// A CompleteMultipartUpload part list of exactly these parts, padded with spaces to
/// `length` bytes when that length was announced.
pub(crate) fn part_list<'a>(
    parts: impl Iterator<Item = (u32, &'a str)>,
    length: Option<u64>,
) -> Result<Vec<u8>, S3Error> {
    let mut out =
        br#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#.to_vec();
    for (n, etag) in parts {
        // Element text needs only `&`, `<` and `>` escaped; quotes stay one byte each.
        let text = etag
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        out.extend_from_slice(
            format!("<Part><PartNumber>{n}</PartNumber><ETag>{text}</ETag></Part>").as_bytes(),
        );
    }
    let close = b"</CompleteMultipartUpload>";
    if let Some(n) = length {
        // The parts, then spaces, up to where the closing tag must start.
        let padded = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(close.len()))
            .filter(|&padded| padded >= out.len())
            .ok_or_else(|| {
                S3Error::internal("s3crypt: the part list does not fit its announced length")
            })?;
        out.resize(padded, b' ');
    }
    out.extend_from_slice(close);
    Ok(out)
}

/// The ETag S3 gives a multipart object completed from parts with these ETags:
/// `"<hex MD5 of the parts' binary MD5s>-<count>"`; `None` if one is not an MD5.
pub(crate) fn multipart_etag<'a>(parts: impl Iterator<Item = &'a str>) -> Option<String> {
    use md5::{Digest as _, Md5};
    let mut h = Md5::new();
    let mut n = 0u32;
    for e in parts {
        let b: [u8; 16] = hex::decode(etag_hex(e)).ok()?.try_into().ok()?;
        h.update(b);
        n = n.checked_add(1)?;
    }
    (n > 0).then(|| format!("\"{}-{n}\"", hex::encode(h.finalize())))
}

/// The multipart ETag of the part list the filter sends upstream.
fn etag_of_list(list: &[u8]) -> Option<String> {
    let etags = xml::element_texts(&String::from_utf8_lossy(list), "ETag");
    multipart_etag(etags.iter().map(String::as_str))
}

/// A CompleteMultipartUploadResult whose `<ETag>` is empty (RGW's) with `etag` filled in
/// (escaped); `None` if it has one or none at all.
pub(crate) fn with_etag(result: &str, etag: &str) -> Option<String> {
    let filled = format!("<ETag>{}</ETag>", crate::s3::error::xml_escape(etag));
    for empty in ["<ETag></ETag>", "<ETag/>", "<ETag />"] {
        if result.contains(empty) {
            return Some(result.replacen(empty, &filled, 1));
        }
    }
    None
}

/// An ETag as hex digits to compare: quotes and case dropped.
pub(crate) fn etag_hex(e: &str) -> String {
    e.trim().trim_matches('"').to_ascii_lowercase()
}

/// Reads a ListParts answer (its `<Part>` elements in whatever order the backend gave).
pub(crate) fn parse_list_parts(xml: &str) -> Option<ListedParts> {
    let mut parts = Vec::new();
    let mut pos = 0;
    while let Some(i) = xml.get(pos..)?.find("<Part>") {
        let start = pos.checked_add(i)?;
        let end = start.checked_add(xml.get(start..)?.find("</Part>")?)?;
        let one = xml.get(start..end)?;
        let n = xml::element_text(one, "PartNumber")?.trim().parse().ok()?;
        let size = xml::element_text(one, "Size")?.trim().parse().ok()?;
        parts.push((n, size));
        pos = end;
    }
    let truncated = xml::element_text(xml, "IsTruncated").is_some_and(|t| t.trim() == "true");
    let next = if truncated {
        Some(
            xml::element_text(xml, "NextPartNumberMarker")?
                .trim()
                .parse()
                .ok()?,
        )
    } else {
        None
    };
    Some((parts, next))
}

pub(crate) fn malformed_part_list() -> S3Error {
    S3Error::new(
        400,
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema.",
    )
}

pub(crate) fn invalid_part() -> S3Error {
    S3Error::new(
        400,
        "InvalidPart",
        "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
    )
}

/// A CompleteMultipartUpload part list must number its parts 1, 2, 3, … without gaps:
/// readers of the object check that numbering (docs/FORMAT.md), so that a swapped,
/// duplicated or missing part is found before any of it is released.
/// Returns the number of parts.
pub(crate) fn check_part_numbering(list: &[u8]) -> Result<u32, S3Error> {
    let text = String::from_utf8_lossy(list);
    let numbers = xml::element_texts(&text, "PartNumber");
    let ok = (1..=crate::format::MAX_PART_NUMBER as usize).contains(&numbers.len())
        && numbers
            .iter()
            .zip(1u32..)
            .all(|(n, want)| n.trim().parse::<u32>() == Ok(want));
    if ok {
        Ok(numbers.len() as u32)
    } else {
        Err(S3Error::new(
            400,
            "InvalidPartOrder",
            "s3crypt: the parts of a multipart upload must be numbered 1, 2, 3, ... without gaps, in ascending order",
        ))
    }
}

/// The part list of a CompleteMultipartUpload with every `<ChecksumXXX>` element replaced by
/// spaces of the same length: the checksums describe plaintext parts the backend never
/// saw, and keeping the length keeps the Content-Length that was already sent upstream.
pub(crate) fn blank_part_checksums(xml: &[u8]) -> Vec<u8> {
    let mut out = xml.to_vec();
    let Ok(text) = std::str::from_utf8(xml) else {
        return out;
    };
    let mut pos = 0;
    // (Offsets into `text`: sums of them stay within its length.)
    while let Some(i) = text
        .get(pos..)
        .and_then(|t| t.find("<Checksum"))
        .and_then(|i| i.checked_add(pos))
    {
        let Some(name_end) = text
            .get(i..)
            .and_then(|t| t.find('>'))
            .and_then(|j| i.checked_add(j))
        else {
            break;
        };
        let name = text
            .get(i..name_end)
            .and_then(|t| t.strip_prefix('<'))
            .unwrap_or("");
        let close = format!("</{name}>");
        let Some(end) = text
            .get(name_end..)
            .and_then(|t| t.find(&close))
            .and_then(|j| name_end.checked_add(j)?.checked_add(close.len()))
        else {
            break;
        };
        if let Some(span) = out.get_mut(i..end) {
            span.fill(b' ');
        }
        pos = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etags_are_md5_of_the_part_md5s() {
        // Parts "hello" and "world" (Python: md5(md5(b"hello").digest() + md5(b"world").digest())).
        let parts = [
            "\"5d41402abc4b2a76b9719d911017c592\"",
            "7D793037A0760186574B0282F2F435E7",
        ];
        assert_eq!(
            multipart_etag(parts.into_iter()).as_deref(),
            Some("\"065947336a2f2a95ba8899f3675c3be6-2\"")
        );
        assert_eq!(multipart_etag(["\"abc\""].into_iter()), None);
        assert_eq!(multipart_etag(std::iter::empty()), None);
    }

    #[test]
    fn only_an_empty_etag_is_filled_in() {
        let rgw = "<CompleteMultipartUploadResult><Key>k</Key><ETag></ETag></CompleteMultipartUploadResult>";
        assert_eq!(
            with_etag(rgw, "\"ab-2\"").as_deref(),
            Some("<CompleteMultipartUploadResult><Key>k</Key><ETag>&quot;ab-2&quot;</ETag></CompleteMultipartUploadResult>")
        );
        assert_eq!(
            with_etag("<R><ETag>&quot;cd-2&quot;</ETag></R>", "\"ab-2\""),
            None
        );
    }
}
