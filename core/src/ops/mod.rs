//! The per-request state machines, in plain Rust.
//!
//! The glue feeds an [`Exchange`] the client's request headers, body chunks, the result of
//! a call-out if one was asked for, then the backend's response headers and body chunks,
//! and applies what it returns. Nothing here knows about proxy-wasm.
//!
//! Fail-closed rules kept here:
//! * a PUT body only ever leaves as ciphertext, and the final frame is withheld until
//!   every check of the plaintext passed (signature, hashes, length), so on any error the
//!   backend sees a short body and stores nothing;
//! * a GET body is only released frame by frame after each tag verified; a failure after
//!   the headers were sent is reported as [`BodyError::Reset`].

use std::rc::Rc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use md5::{Digest as _, Md5};
use sha2::Sha256;

use crate::auth::checksum::{ChecksumAlgorithm, Checksummer};
use crate::auth::chunked::ChunkedDecoder;
use crate::auth::sigv4::{self, PayloadMode, VerifiedRequest};
use crate::config::{Config, StateStore};
use crate::crypto::{self, DataKey, Suite};
use crate::format::part_table::{PartTable, RangeDecryptor, RangePlan, Walk};
use crate::format::{Decrypt, FormatError, PartsDecryptor};
use crate::format::{
    Envelope, FrameDecryptor, FrameEncryptor, Geometry, Layout, Window, ENVELOPE_HEADER,
    FRAME_OVERHEAD, MAX_SINGLE, SINGLE_FRAME,
};
use crate::headers::Headers;
use crate::s3::error::S3Error;
use crate::s3::range::{self, RangeSpec};
use crate::s3::xml;
use crate::s3::{self, Body, Doc, Operation, Response, S3Request};
use crate::state::stage;
use crate::state::{self, StateError, UploadState, WebdisRequest};

pub mod ports;
pub use ports::*;

/// A response the filter answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    fn error(e: &S3Error, resource: &str, request_id: &str) -> Reply {
        Reply {
            status: e.status,
            headers: vec![
                ("content-type".into(), "application/xml".into()),
                ("x-amz-request-id".into(), request_id.into()),
            ],
            body: e.to_xml(resource, request_id).into_bytes(),
        }
    }
}

/// A request the filter sends before it decides: to the backend (HEAD of a copy source,
/// part headers of a multipart object) or to webdis (upload state in Redis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOut {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
}

/// What to do once a call-out answered.
#[derive(Debug)]
pub enum CallOutStep {
    /// The call-out was made from the request headers: continue the request this way.
    Request(RequestStep),
    /// The call-out was made from the response: release it, or reset the stream.
    Response(ResponseResume),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseResume {
    Continue,
    Reset(String),
}

/// What to do with the client's request headers.
#[derive(Debug)]
pub enum RequestStep {
    /// Replace the request headers with these and let the request continue.
    Forward(Headers),
    /// Answer the client now; nothing goes upstream.
    Reply(Reply),
    /// Send this call-out, then hand its response to [`Exchange::on_callout_response`].
    CallOut(CallOut),
    /// The request body was held (every chunk emptied, the last one paused on): send these
    /// bytes as the whole body and let the request continue.
    Body(Vec<u8>),
    /// Another request of this VM is finding the part table of this object version: wait
    /// until [`finished_lookups`] names it, then call [`Exchange::table_shared`].
    Wait(String),
}

/// What to do with the backend's response headers.
#[derive(Debug)]
pub enum ResponseStep {
    /// Replace the response headers (status included as `:status`) with these.
    Forward(Headers),
    /// Replace the headers, then hold the response until this call-out answered.
    ForwardAfter(Headers, CallOut),
}

/// A body error: before the response started, an S3 error to answer; after, a reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Reply(Reply),
    Reset(String),
}

enum RequestBody {
    /// The operation has no body: any body byte refuses the request.
    Nothing,
    Upload(Box<Upload>),
    /// A small document (a part list, a delete list, a configuration): buffered up to
    /// [`MAX_XML_BODY`], checked against the client's hash and against what the operation
    /// accepts, then forwarded; a CompleteMultipartUpload part list with its (plaintext)
    /// part checksums blanked out.
    Document {
        buf: Vec<u8>,
        expected: Option<String>,
        doc: Doc,
        complete: bool,
    },
}

/// The checks and the encryption applied to an upload body.
struct Upload {
    decoder: Option<ChunkedDecoder>,
    sha256: Option<(Sha256, String)>,
    md5: Md5,
    expected_md5: Option<[u8; 16]>,
    /// Checksum announced in a header (verified) or asked for by algorithm (computed).
    checksum: Option<(Checksummer, ChecksumAlgorithm, Option<String>)>,
    enc: FrameEncryptor,
    plain: Vec<u8>,
    /// Filled in when the body is complete.
    result_md5: Option<[u8; 16]>,
    result_checksums: Vec<(String, String)>,
    /// A short last part: the ciphertext sent upstream, kept for Complete (stage.rs),
    /// with its share of the memory budget.
    stage: Option<(Vec<u8>, CopyReservation)>,
}

impl Upload {
    fn push(&mut self, chunk: &[u8], end: bool, out: &mut Vec<u8>) -> Result<(), S3Error> {
        let plain: &[u8] = match self.decoder.as_mut() {
            Some(d) => {
                self.plain.clear();
                d.push(chunk, &mut self.plain)?;
                &self.plain
            }
            None => chunk,
        };
        if let Some((h, _)) = self.sha256.as_mut() {
            h.update(plain);
        }
        self.md5.update(plain);
        if let Some((c, _, _)) = self.checksum.as_mut() {
            c.update(plain);
        }
        self.enc
            .push(plain, out)
            .map_err(|_| S3Error::incomplete_body())?;
        if !end {
            return Ok(());
        }
        // The whole body is here: check everything before the final frame goes out.
        let trailers = match self.decoder.as_mut() {
            Some(d) => d.finish()?,
            None => Vec::new(),
        };
        if self.enc.consumed() != self.enc.geometry().plain_len {
            return Err(S3Error::incomplete_body());
        }
        if let Some((h, expected)) = self.sha256.take() {
            if hex::encode(h.finalize()) != *expected {
                return Err(S3Error::sha256_mismatch());
            }
        }
        let md5: [u8; 16] = std::mem::take(&mut self.md5).finalize().into();
        if let Some(e) = self.expected_md5 {
            if !bool::from(subtle::ConstantTimeEq::ct_eq(&e[..], &md5[..])) {
                return Err(S3Error::bad_digest());
            }
        }
        if let Some((c, algo, expected)) = self.checksum.take() {
            let got = c.finalize_base64();
            if let Some(e) = expected {
                if e != got {
                    return Err(S3Error::bad_digest());
                }
            }
            self.result_checksums
                .push((algo.header_name().to_string(), got));
        }
        for (k, v) in trailers {
            let k = k.to_ascii_lowercase();
            if k.starts_with("x-amz-checksum-")
                && !self.result_checksums.iter().any(|(n, _)| *n == k)
            {
                self.result_checksums.push((k, v));
            }
        }
        self.result_md5 = Some(md5);
        self.enc.finish(out).map_err(|_| S3Error::incomplete_body())
    }
}

enum ResponseBody {
    Pass,
    /// One stream, or a whole multipart object; the last promised byte is held back
    /// until everything verified.
    Decrypt(Box<dyn Decrypt>, Holdback),
    /// Drop `skip` bytes, release `take`, drop the rest (plaintext objects, ranges widened).
    Trim {
        skip: u64,
        take: u64,
    },
    /// Buffer the whole (small, XML) body and rewrite it at the end.
    Xml(Vec<u8>, XmlRewrite),
    /// Send this body instead of the backend's.
    Replace(Option<Vec<u8>>),
}

/// What the request asked for that the response phase needs.
#[derive(Default)]
struct GetPlan {
    range: Option<RangeSpec>,
    /// Upstream range start we asked for (ranges are widened to frames).
    widened: bool,
    if_match: Option<String>,
    if_none_match: Option<String>,
    checksum_mode: bool,
    /// `?partNumber=N` of a GET or HEAD.
    part_number: Option<u32>,
    /// A range or part of a multipart object, planned from its part table.
    multipart: Option<MultipartRead>,
}

/// A planned read of a multipart object.
struct MultipartRead {
    etag: String,
    first: u64,
    last: u64,
    plain_total: u64,
    parts: usize,
    plan: RangePlan,
}

/// What needs a multipart object's part table once it is found.
/// Finding the part table of a multipart object version (at `path`, its ETag `etag`),
/// then going on with `then`.
struct TableLookup {
    then: AfterWalk,
    path: String,
    walk: Walk,
    etag: String,
    /// Marks the lookup in flight for readers of the same version (range reads only).
    _shared: Option<LookupInFlight>,
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

/// What the requests of one VM (one Envoy worker thread) share, passed to each of them:
/// the memory UploadPartCopy and staged parts hold, and the part-table lookups in flight.
#[derive(Default)]
pub struct VmState {
    /// Bytes held by copy buffers and staged parts.
    copy_bytes: std::cell::Cell<u64>,
    /// Object versions whose part table a request is looking up, and those whose lookup
    /// ended since the glue last asked: concurrent first readers of a version wait for
    /// the one lookup instead of each making their own.
    lookups: std::cell::RefCell<(std::collections::HashSet<String>, Vec<String>)>,
}

impl VmState {
    /// The object versions whose part-table lookup ended since the last call: requests
    /// that wait for them ([`RequestStep::Wait`]) can go on.
    pub fn finished_lookups(&self) -> Vec<String> {
        std::mem::take(&mut self.lookups.borrow_mut().1)
    }
}

/// An object version whose part table this request is looking up, until dropped (the
/// lookup ended, failed, or the request went away).
struct LookupInFlight(Rc<VmState>, String);

impl LookupInFlight {
    /// Marks `version` in flight, unless another request already looks it up.
    fn start(vm: &Rc<VmState>, version: &str) -> Option<LookupInFlight> {
        vm.lookups
            .borrow_mut()
            .0
            .insert(version.to_string())
            .then(|| LookupInFlight(Rc::clone(vm), version.to_string()))
    }
}

impl Drop for LookupInFlight {
    fn drop(&mut self) {
        let mut l = self.0.lookups.borrow_mut();
        l.0.remove(&self.1);
        l.1.push(std::mem::take(&mut self.1));
    }
}

/// Which read of a [`TableLookup`] is in flight.
#[derive(Clone, Copy)]
enum TableRead {
    /// The object's last 28,688 bytes: an end part's sealed table, if it has one.
    End,
    /// The next step of the walk.
    Walk,
}

enum AfterWalk {
    /// A range or part read: the upstream request waits.
    Read(Headers),
    /// A copy of the object.
    Copy(Box<MultipartCopy>),
    /// The multipart source of an UploadPartCopy, with its suite and data key.
    PartCopy(Box<PartCopy>, Suite, DataKey),
}

/// CopyObject of a multipart object: a multipart upload of the destination under the
/// source's envelope (same data key), whose parts are UploadPartCopy of the source's
/// stored parts byte for byte, with the same part numbers. Each part stays a valid
/// part-layout stream (its AAD names its number and length, not its object), no data
/// passes through the filter, and the destination's `-N` ETag keeps sizes exact.
struct MultipartCopy {
    /// Upstream path of the destination object (no query).
    dest: String,
    /// `x-amz-copy-source` as the client sent it.
    copy_source: String,
    /// `x-amz-copy-source-if-*` conditions of the client, applied to every part.
    conditions: Vec<(String, String)>,
    /// CreateMultipartUpload headers (metadata, content headers, envelope).
    create: Headers,
    src_etag: String,
    /// (part number, stored length, stored offset) of the source's parts.
    parts: Vec<(u32, u64, u64)>,
    upload_id: String,
    next: usize,
    etags: Vec<(u32, String)>,
}

/// The plaintext source of an UploadPartCopy.
enum CopyFrom {
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
type StoredRead = (u64, u64, Option<Box<dyn Decrypt>>);

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
    fn read(&self, a: u64, b: u64) -> Option<StoredRead> {
        match self {
            CopyFrom::Plain { .. } => Some((a, b, None)),
            CopyFrom::Single { suite, dek, geo } => {
                let (i0, i1) = (geo.frame_of(a), geo.frame_of(b));
                let c0 = geo.frame_cipher_start(i0);
                let c1 = geo.frame_cipher_start(i1) + geo.frame_plain_len(i1) + FRAME_OVERHEAD;
                let w = Window {
                    lead: 0,
                    first: i0,
                    last: i1,
                    skip: a - geo.frame_plain_start(i0),
                    take: b - a + 1,
                };
                let d = FrameDecryptor::new(*suite, dek, *geo, w);
                Some((c0, c1 - 1, Some(Box::new(d))))
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

/// A share of the per-VM copy memory budget, given back when dropped.
struct CopyReservation(Rc<VmState>, u64);

impl CopyReservation {
    /// Reserves `bytes` if the VM's copies and staged parts then hold at most `limit`.
    fn try_new(vm: &Rc<VmState>, bytes: u64, limit: u64) -> Option<CopyReservation> {
        let c = &vm.copy_bytes;
        let now = c.get().checked_add(bytes).filter(|&n| n <= limit)?;
        c.set(now);
        Some(CopyReservation(Rc::clone(vm), bytes))
    }
}

impl Drop for CopyReservation {
    fn drop(&mut self) {
        let c = &self.0.copy_bytes;
        c.set(c.get().saturating_sub(self.1));
    }
}

/// Plaintext bytes of the copy source read (and decrypted) per call-out: bounds the
/// crypto done in one callback, like the 64 KiB connection buffers do for uploads.
const COPY_READ_CHUNK: u64 = 256 << 10;

/// UploadPartCopy: the copied range must be re-encrypted under the destination upload's
/// data key. A proxy-wasm filter cannot stream a call-out into an upstream request, so the
/// source is read in ranged GETs of [`COPY_READ_CHUNK`] (each decrypted and verified),
/// re-encrypted as part N into one buffer of at most `max_copy_part_bytes` plus the part
/// overhead, and sent as one UploadPart; the client then gets a CopyPartResult.
struct PartCopy {
    /// Upstream path of the UploadPart (`/bucket/key?partNumber=N&uploadId=U`).
    dest: String,
    number: u32,
    dest_suite: Suite,
    dest_dek: DataKey,
    /// The destination upload has a version 2 envelope (its short parts are `final`).
    dest_v2: bool,
    /// Upstream path of the source object (with its versionId).
    src_path: String,
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
    /// This copy's share of `max_copy_buffer_bytes`, held until the copy ends.
    budget: Option<CopyReservation>,
    /// A short last part: a copy of the part sent, staged once the backend stored it.
    stage: Option<(Vec<u8>, CopyReservation)>,
}

impl PartCopy {
    /// Last plaintext byte of the chunk that starts at `next`.
    fn chunk_end(&self) -> u64 {
        self.last.min(self.next + COPY_READ_CHUNK - 1)
    }
}

/// What a call-out in flight is for.
enum Pending {
    None,
    /// UploadPartCopy: the source's HEAD.
    PartCopySource(Box<PartCopy>),
    /// UploadPartCopy: a ranged GET of the source, with the bytes it must return.
    PartCopyRead(Box<PartCopy>, u64, Option<Box<dyn Decrypt>>),
    /// UploadPartCopy: the re-encrypted part sent as UploadPart.
    PartCopyPut(Box<PartCopy>),
    /// CopyObject: the HEAD of the source; the upstream request waits.
    CopySource(Headers),
    /// GET/HEAD by range or part number: the HEAD of the object. `original` is the
    /// upstream path with `partNumber` (plaintext objects go to the backend unchanged).
    ObjectHead {
        up: Headers,
        original: String,
    },
    /// Finding a multipart object's part table: reading its end part, or a walk step.
    Table(Box<TableLookup>, TableRead),
    /// A range read waiting for another request's lookup of the same part table.
    TableWait(Box<TableWait>),
    /// CopyObject of a multipart object, done server-side as a multipart copy.
    CopyCreate(Box<MultipartCopy>),
    CopyPart(Box<MultipartCopy>),
    CopyComplete(Box<MultipartCopy>),
    /// The copy failed after its upload was created: abort it, then answer this error.
    CopyAbort(S3Error),
    /// CompleteMultipartUpload, its part list held: the upload's record from Redis.
    CompleteState(Box<Completing>),
    /// CompleteMultipartUpload: a page of the upload's parts as the backend lists them.
    CompleteList(Box<Completing>, (Suite, DataKey)),
    /// CompleteMultipartUpload: the end part (it seals the part table) sent as UploadPart.
    CompleteMarker(Box<Completing>),
    /// CompleteMultipartUpload: the staged copy of the short last part, from Redis.
    CompleteStaged(Box<Completing>, (Suite, DataKey)),
    /// CompleteMultipartUpload: the closing part (the last part rewritten with the part
    /// table) sent as UploadPart under the last part's number.
    CompleteClosing(Box<Completing>),
    /// UploadPart of a short last part: its response waits until the staged copy is in
    /// Redis (best effort: without it the object is completed without a table).
    Staged,
    /// UploadPartCopy of a short last part: its answer waits until the staged copy is in
    /// Redis (best effort, as for UploadPart).
    StagedThenReply(Reply),
    /// UploadPart: the upload's record from Redis.
    UploadState {
        h: Headers,
        up: Headers,
        eos: bool,
        number: u32,
        upload_id: String,
        object: String,
    },
    /// AbortMultipartUpload in Redis mode, no cached record: the record decides whether
    /// the upload belongs to the request's object. `up` is the signed abort to forward.
    AbortState {
        up: Headers,
        upload_id: String,
        object: String,
    },
    /// CreateMultipartUpload in Redis mode: is Redis there before the upload is created?
    Ping(Headers),
    /// CreateMultipartUpload response held until its record is in Redis.
    Record {
        upload_id: String,
        value: String,
    },
    /// Complete/Abort response held until the record is removed (best effort: the TTL
    /// removes it anyway).
    Forget,
}

/// One request/response exchange.
pub struct Exchange {
    cfg: Rc<Config>,
    stats: Rc<dyn Stats>,
    store: Rc<dyn SharedStore>,
    /// The multipart upload this request belongs to.
    upload_id: Option<String>,
    clock: Rc<dyn Clock>,
    rng: Rc<dyn Random>,
    /// What this VM's requests share.
    vm: Rc<VmState>,
    request_id: String,
    resource: String,
    req: Option<S3Request>,
    verified: Option<VerifiedRequest>,
    /// The call-out in flight, if any.
    pending: Pending,
    /// The host's token of the call-out dispatched for `pending`.
    callout_token: Option<u32>,
    req_body: RequestBody,
    get: GetPlan,
    resp_body: ResponseBody,
    head: bool,
    /// Bytes of plaintext released so far (GET), for the counters.
    released: u64,
    /// CompleteMultipartUpload: the length of the body sent upstream, if it was announced.
    complete_length: Option<u64>,
}

/// A CompleteMultipartUpload whose part list is held while the filter makes sure the
/// object will end with a last part (FORMAT.md, "How a version 2 multipart object ends").
pub(crate) struct Completing {
    /// Length the body sent upstream must have (its Content-Length went ahead), if fixed.
    length: Option<u64>,
    /// The object's upstream path (no query) and the upload.
    path: String,
    upload_id: String,
    object: String,
    /// The client's ETag of each listed part 1..=last (element text, unescaped): the
    /// list names parts 1..=last, `last` = `etags.len()` (checked).
    etags: Vec<String>,
    /// Stored size of each listed part 1..=last, as the backend's listing says.
    sizes: Vec<Option<u64>>,
    /// The part-number-marker of the next ListParts page.
    marker: u32,
}

impl Completing {
    /// Number of the last listed part.
    fn last(&self) -> u32 {
        u32::try_from(self.etags.len()).unwrap_or(u32::MAX)
    }
}

/// Bytes a CompleteMultipartUpload body may grow by when the filter rebuilds it: the
/// namespace on the root element (44) and one `<Part>` element (the end part) with an
/// ETag of up to 104 characters (after escaping; 160). The upstream Content-Length
/// reserves it; what is not needed is sent as spaces.
const COMPLETE_ROOM: u64 = 256;

/// Holds back the last byte the response promised (its `Content-Length`) until the whole
/// stream verified, so that a stored object that is shorter than it claims (a truncated
/// last part, whose size the listing-style arithmetic cannot see) never looks complete to
/// the client: it gets at most the verified prefix, one byte short, then a reset. Also
/// refuses more plaintext than was promised.
#[derive(Debug, Default)]
struct Holdback {
    /// The promised length; `None` (unknown) holds nothing back.
    announced: Option<u64>,
    released: u64,
    held: Vec<u8>,
}

impl Holdback {
    /// `out[from..]` is new verified plaintext: releases what may go, keeps the rest.
    fn apply(&mut self, out: &mut Vec<u8>, from: usize, end: bool) -> Result<(), FormatError> {
        let Some(announced) = self.announced else {
            return Ok(());
        };
        // The hot path: far from the end, everything goes and nothing is copied.
        let fresh_len = out.len().saturating_sub(from) as u64;
        if !end && self.held.is_empty() && self.released.saturating_add(fresh_len) < announced {
            self.released = self.released.saturating_add(fresh_len);
            return Ok(());
        }
        let mut fresh = out.split_off(from);
        let mut all = std::mem::take(&mut self.held);
        all.append(&mut fresh);
        let total = self.released.saturating_add(all.len() as u64);
        if total > announced || (end && total != announced) {
            return Err(FormatError::Integrity);
        }
        let may = if end {
            all.len()
        } else {
            let limit = announced.saturating_sub(1).saturating_sub(self.released);
            all.len().min(usize::try_from(limit).unwrap_or(usize::MAX))
        };
        self.held = all.split_off(may);
        self.released = self.released.saturating_add(may as u64);
        out.extend_from_slice(&all);
        Ok(())
    }
}

/// How a buffered XML response is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
enum XmlRewrite {
    /// Stored sizes in a listing become plaintext sizes.
    ListingSizes,
    /// The ETag of a CopyObjectResult becomes the client-visible ETag.
    CopyEtag(String),
    /// ListParts: stored part sizes become plaintext sizes.
    PartSizes,
    /// CreateMultipartUpload result: record the upload's envelope under its UploadId.
    RecordUpload(String),
    /// CompleteMultipartUpload result: forget the upload once the backend completed it.
    CompleteCleanup,
}

/// Largest XML response body the filter buffers to rewrite.
const MAX_XML_BODY: usize = 8 << 20;

/// Signed client headers the filter replaces with its own when it signs upstream.
const HIDDEN_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
];

/// Standard (non-`x-amz-*`) request headers with a meaning in S3 that go upstream when
/// the client signed them. Every other header (signed or not) stays here.
const FORWARDED_STANDARD_HEADERS: &[&str] = &[
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
const ENVOY_ROUTING_HEADER: &str = "x-forwarded-proto";

/// The request as far as its signature covers it: the pseudo-headers (`:path` and
/// `:authority` are covered as the canonical URI and `host`), `content-length` (framing,
/// enforced by Envoy and checked against the body), and the signed headers. Nothing else
/// is ever read by the filter. A signed header that appears twice is refused: the
/// filter and the backend could each act on another copy.
fn verified_view(h: &Headers, v: &VerifiedRequest) -> Result<Headers, S3Error> {
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
fn upstream_headers(
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
    if let Some(src) = view.get("x-amz-copy-source") {
        let (b, k, ver) = s3::parse_copy_source(src)?;
        up.set(
            "x-amz-copy-source",
            s3::copy_source_value(&b, &k, ver.as_deref()),
        );
    }
    Ok(up)
}

impl Exchange {
    pub fn new(cfg: Rc<Config>, ports: Ports, vm: Rc<VmState>, request_id: String) -> Exchange {
        let Ports {
            stats,
            store,
            clock,
            rng,
        } = ports;
        Exchange {
            cfg,
            stats,
            store,
            upload_id: None,
            clock,
            rng,
            vm,
            request_id,
            resource: String::new(),
            req: None,
            verified: None,
            pending: Pending::None,
            callout_token: None,
            req_body: RequestBody::Nothing,
            get: GetPlan::default(),
            resp_body: ResponseBody::Pass,
            head: false,
            released: 0,
            complete_length: None,
        }
    }

    /// Request id for error bodies (Envoy's x-request-id).
    pub fn set_request_id(&mut self, id: &str) {
        self.request_id = id.to_string();
    }

    fn reply(&self, e: &S3Error) -> Reply {
        Reply::error(e, &self.resource, &self.request_id)
    }

    fn reject(&self, e: &S3Error) -> RequestStep {
        self.stats.add(Counter::RejectedRequests, 1);
        RequestStep::Reply(self.reply(e))
    }

    /// The client's request headers. `end_of_stream`: the request has no body.
    pub fn on_request_headers(
        &mut self,
        raw_headers: &Headers,
        end_of_stream: bool,
    ) -> RequestStep {
        let method = raw_headers.get(":method").unwrap_or("").to_string();
        let raw = raw_headers.get(":path").unwrap_or("/").to_string();
        self.resource = raw.split('?').next().unwrap_or("/").to_string();
        self.head = method == "HEAD";
        let cfg = Rc::clone(&self.cfg);
        let secret = |ak: &str| cfg.client_secret(ak);
        let skew = cfg.plugin.max_clock_skew_secs;
        let verified =
            match sigv4::verify_with_skew(&method, &raw, raw_headers, &secret, self.now(), skew) {
                Ok(v) => v,
                Err(e) => {
                    self.stats.add(Counter::AuthFailures, 1);
                    return self.reject(&e);
                }
            };
        // From here on the filter reads only what the client signed.
        let h = match verified_view(raw_headers, &verified) {
            Ok(h) => h,
            Err(e) => return self.reject(&e),
        };
        let req = match s3::parse_request(
            &method,
            &sigv4::strip_presign_params(&raw),
            &h,
            &cfg.plugin.virtual_host_suffixes,
        ) {
            Ok(r) => r,
            Err(e) => return self.reject(&e),
        };
        // The envelope's name is reserved: a client may not write or forge it.
        if h.contains(ENVELOPE_HEADER) {
            return self.reject(&S3Error::invalid_argument(format!(
                "s3crypt: the metadata name {ENVELOPE_HEADER} is reserved"
            )));
        }
        let mut up = match upstream_headers(raw_headers, &h, &req, &cfg.plugin.upstream_authority) {
            Ok(up) => up,
            Err(e) => return self.reject(&e),
        };
        let step = match req.op {
            Operation::PutObject => self.start_upload(&h, &mut up, &verified, end_of_stream, None),
            Operation::CreateMultipartUpload => {
                self.start_create_upload(up, &verified, &req, end_of_stream)
            }
            Operation::UploadPart => {
                self.start_upload_part(&h, &mut up, &verified, &req, end_of_stream)
            }
            Operation::CompleteMultipartUpload => {
                self.start_complete(up, &verified, &req, end_of_stream)
            }
            Operation::AbortMultipartUpload => self.start_abort(up, &verified, &req, end_of_stream),
            Operation::ListParts => {
                up.remove("accept-encoding");
                self.resp_body = ResponseBody::Xml(Vec::new(), XmlRewrite::PartSizes);
                self.pass_body(up, &verified, &req, end_of_stream)
            }
            Operation::GetObject | Operation::HeadObject => self
                .no_body(&h, end_of_stream)
                .and_then(|()| self.start_get(&h, &mut up, &req)),
            Operation::CopyObject => self
                .no_body(&h, end_of_stream)
                .and_then(|()| self.start_copy(&h, up, &req)),
            Operation::ListObjectsV1 | Operation::ListObjectsV2 | Operation::ListObjectVersions => {
                up.remove("accept-encoding");
                // An empty delimiter means no delimiter; some S3 servers mis-handle it.
                if let Some(p) = up.get(":path").map(drop_empty_param_delimiter) {
                    up.set(":path", p);
                }
                self.resp_body = ResponseBody::Xml(Vec::new(), XmlRewrite::ListingSizes);
                self.pass_body(up, &verified, &req, end_of_stream)
            }
            Operation::UploadPartCopy => self
                .no_body(&h, end_of_stream)
                .and_then(|()| self.start_upload_part(&h, &mut up, &verified, &req, true)),
            Operation::ListBuckets
            | Operation::BucketOp
            | Operation::ListMultipartUploads
            | Operation::DeleteObjects
            | Operation::DeleteObject
            | Operation::ObjectSubresource => self.pass_body(up, &verified, &req, end_of_stream),
        };
        self.req = Some(req);
        self.verified = Some(verified);
        match step {
            Ok(s) => s,
            Err(e) => self.reject(&e),
        }
    }

    /// An operation without a body: a declared body refuses it now; any body byte that
    /// arrives anyway refuses it then ([`RequestBody::Nothing`]).
    fn no_body(&mut self, h: &Headers, eos: bool) -> Result<(), S3Error> {
        self.req_body = RequestBody::Nothing;
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

    /// How a document body is expected: its size checked now, its bytes at the end.
    fn expect_document(
        &mut self,
        h: &Headers,
        v: &VerifiedRequest,
        doc: Doc,
        eos: bool,
        complete: bool,
    ) -> Result<(), S3Error> {
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
        self.req_body = RequestBody::Document {
            buf: Vec::new(),
            expected,
            doc,
            complete,
        };
        Ok(())
    }

    /// Requests whose body, if the operation has one, is a document forwarded unchanged
    /// (covered by the client's hash), signed upstream.
    fn pass_body(
        &mut self,
        mut up: Headers,
        v: &VerifiedRequest,
        req: &S3Request,
        eos: bool,
    ) -> Result<RequestStep, S3Error> {
        let hash = document_hash(v)?.unwrap_or_else(|| sigv4::UNSIGNED_PAYLOAD.to_string());
        match req.spec.body {
            Body::Document(doc) => self.expect_document(&up, v, doc, eos, false)?,
            Body::None => self.no_body(&up, eos)?,
            Body::Encrypt => {
                return Err(S3Error::internal(
                    "s3crypt: object data on the pass-through path",
                ))
            }
        }
        self.sign(&mut up, &hash);
        Ok(RequestStep::Forward(up))
    }

    fn now(&self) -> i64 {
        self.clock.now()
    }

    fn sign(&self, up: &mut Headers, payload_hash: &str) {
        let method = up.get(":method").unwrap_or("GET").to_string();
        let path = up.get(":path").unwrap_or("/").to_string();
        sigv4::sign(
            &method,
            &path,
            up,
            &self.cfg.backend_access_key,
            self.cfg.backend_secret(),
            &self.cfg.plugin.region,
            self.now(),
            payload_hash,
        );
    }

    fn start_upload(
        &mut self,
        h: &Headers,
        up: &mut Headers,
        v: &VerifiedRequest,
        eos: bool,
        part: Option<PartKey>,
    ) -> Result<RequestStep, S3Error> {
        let chunked = matches!(
            v.payload,
            PayloadMode::StreamingSigned
                | PayloadMode::StreamingSignedTrailer
                | PayloadMode::StreamingUnsignedTrailer
        );
        let plain_len: u64 = if chunked {
            h.get("x-amz-decoded-content-length")
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(S3Error::missing_content_length)?
        } else {
            match h.get("content-length") {
                Some(s) => s
                    .trim()
                    .parse()
                    .map_err(|_| S3Error::invalid_argument("invalid Content-Length"))?,
                None if eos => 0,
                None => return Err(S3Error::missing_content_length()),
            }
        };
        if plain_len > MAX_SINGLE {
            return Err(S3Error::entity_too_large());
        }
        let expected_md5 = match h.get("content-md5") {
            Some(m) => Some(
                B64.decode(m.trim())
                    .ok()
                    .and_then(|b| <[u8; 16]>::try_from(b).ok())
                    .ok_or_else(S3Error::invalid_digest)?,
            ),
            None => None,
        };
        let checksum = checksum_request(h)?;
        let decoder = if chunked {
            Some(ChunkedDecoder::new(
                &v.payload,
                v.chunk_ctx.clone(),
                h.get("x-amz-trailer"),
                plain_len,
            )?)
        } else {
            None
        };
        let sha256 = match &v.payload {
            PayloadMode::Sha256(x) => Some((Sha256::new(), x.to_ascii_lowercase())),
            _ => None,
        };

        strip_integrity_headers(up);
        let mut stage = None;
        let (suite, dek, geo) = match part {
            Some(PartKey {
                number,
                suite,
                dek,
                v2,
            }) => {
                if eos || plain_len == 0 {
                    // A part always has a header and frames; Envoy cannot add a body to
                    // a request that has none.
                    return Err(S3Error::invalid_request(
                        "s3crypt: empty parts are not supported",
                    ));
                }
                let geo = part_geometry(v2, number, plain_len);
                stage = self.stage_for(v2, &geo);
                (suite, dek, geo)
            }
            None => {
                let (dek, mut env) = self.new_envelope(Layout::Single, Some(plain_len))?;
                env.md5 = expected_md5;
                if let Some((_, algo, Some(value))) = &checksum {
                    env.checksum = Some(crate::format::StoredChecksum {
                        header: algo.header_name().to_string(),
                        value: value.clone(),
                    });
                }
                env.seal(&dek, &*self.rng)
                    .map_err(|_| S3Error::internal("s3crypt: no randomness"))?;
                up.set(ENVELOPE_HEADER, env.encode());
                (env.suite, dek, Geometry::single(plain_len))
            }
        };
        up.set("content-length", geo.cipher_len().to_string());
        self.sign(up, sigv4::UNSIGNED_PAYLOAD);

        let mut upload = Box::new(Upload {
            decoder,
            sha256,
            md5: Md5::new(),
            expected_md5,
            checksum,
            enc: FrameEncryptor::new(suite, &dek, geo, &self.rng),
            plain: Vec::new(),
            result_md5: None,
            result_checksums: Vec::new(),
            stage,
        });
        if eos {
            // No body at all: everything is checked now, and nothing is sent (an empty
            // object has no frames).
            let mut out = Vec::new();
            upload.push(&[], true, &mut out)?;
            if !out.is_empty() {
                return Err(S3Error::internal("s3crypt: empty body produced data"));
            }
        }
        self.req_body = RequestBody::Upload(upload);
        Ok(RequestStep::Forward(std::mem::take(up)))
    }

    /// A fresh data key wrapped under the active KEK, in an unsealed envelope of the
    /// configured suite.
    fn new_envelope(
        &self,
        layout: Layout,
        plain_len: Option<u64>,
    ) -> Result<(DataKey, Envelope), S3Error> {
        let dek =
            crypto::new_dek(&*self.rng).map_err(|_| S3Error::internal("s3crypt: no randomness"))?;
        let kek = self
            .cfg
            .active_kek()
            .ok_or_else(|| S3Error::internal("s3crypt: no active key"))?;
        let wrapped = crypto::wrap_dek(kek, &dek)
            .map_err(|_| S3Error::internal("s3crypt: key wrap failed"))?;
        Ok((
            dek,
            Envelope::new(
                self.cfg.suite,
                layout,
                &self.cfg.active_key_id,
                wrapped,
                plain_len,
            ),
        ))
    }

    /// CreateMultipartUpload: a new data key; the envelope goes into the upload's metadata
    /// (so the completed object carries it) and, with the UploadId from the response, into
    /// the upload state before the client sees the UploadId.
    fn start_create_upload(
        &mut self,
        mut up: Headers,
        v: &VerifiedRequest,
        req: &S3Request,
        eos: bool,
    ) -> Result<RequestStep, S3Error> {
        let (dek, mut env) = self.new_envelope(Layout::Part, None)?;
        env.seal(&dek, &*self.rng)
            .map_err(|_| S3Error::internal("s3crypt: no randomness"))?;
        // Part checksums describe plaintext; the backend only ever sees ciphertext.
        strip_integrity_headers(&mut up);
        up.set(ENVELOPE_HEADER, env.encode());
        self.resp_body = ResponseBody::Xml(Vec::new(), XmlRewrite::RecordUpload(env.encode()));
        let step = self.pass_body(up, v, req, eos)?;
        match (self.cfg.plugin.state_store, step) {
            // The record is written when the UploadId is known; the upload is only
            // created if Redis answers now (a client gets 503, not an unusable UploadId).
            (StateStore::Redis, RequestStep::Forward(up)) => {
                self.pending = Pending::Ping(up);
                Ok(RequestStep::CallOut(self.webdis(state::ping(&self.cfg))))
            }
            (_, step) => Ok(step),
        }
    }

    fn webdis(&self, r: WebdisRequest) -> CallOut {
        CallOut {
            cluster: self.cfg.plugin.redis_cluster.clone(),
            headers: r.headers.0,
            body: r.body,
            timeout_ms: self.cfg.plugin.redis_timeout_ms,
        }
    }

    fn redis_unavailable() -> S3Error {
        S3Error::service_unavailable(
            "s3crypt: the multipart upload state store is unavailable; please retry",
        )
    }

    /// UploadPart: the data key of the upload from its state, then the part is encrypted
    /// as an independent stream (part layout) under it. UploadPartCopy: the same data key,
    /// then the copy source (see [`PartCopy`]).
    fn start_upload_part(
        &mut self,
        h: &Headers,
        up: &mut Headers,
        v: &VerifiedRequest,
        req: &S3Request,
        eos: bool,
    ) -> Result<RequestStep, S3Error> {
        let number: u32 = req
            .query_param("partNumber")
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                S3Error::invalid_argument(
                    "Part number must be an integer between 1 and 10000, inclusive",
                )
            })?;
        let upload_id = req.query_param("uploadId").unwrap_or("").to_string();
        let object = Self::object_of(req);
        self.upload_id = Some(upload_id.clone());
        let cached = match self.store.get(&state::shared_key(&upload_id)) {
            Some(raw) => Some(
                self.state_of(&upload_id, &raw, &object)
                    .map_err(|_| no_such_upload())?,
            ),
            None => None,
        };
        match (cached, self.cfg.plugin.state_store) {
            (Some(st), _) if req.op == Operation::UploadPartCopy => {
                self.part_copy_with(h, up, number, st)
            }
            (Some(st), _) => self.upload_part_with(h, up, v, eos, number, st),
            (None, StateStore::Redis) => {
                let get = state::get(&self.cfg, &state::redis_key(&upload_id));
                self.pending = Pending::UploadState {
                    h: h.clone(),
                    up: std::mem::take(up),
                    eos,
                    number,
                    upload_id,
                    object,
                };
                Ok(RequestStep::CallOut(self.webdis(get)))
            }
            (None, StateStore::SharedData) => Err(no_such_upload()),
        }
    }

    /// An upload's stored record, checked: authenticated for this UploadId, for this
    /// object, not expired and not from the future. A refusal is logged and (but for a
    /// record of another object, which a client can ask for by mistake) counted.
    fn state_of(
        &self,
        upload_id: &str,
        raw: &[u8],
        object: &str,
    ) -> Result<UploadState, StateError> {
        let kek = |id: &str| self.cfg.kek(id).copied();
        let accept_v1 = self.cfg.plugin.accept_unauthenticated_upload_state;
        let p = &self.cfg.plugin;
        let r = UploadState::open(raw, upload_id, &kek, accept_v1).and_then(|st| {
            st.check(object, self.now(), p.upload_ttl_secs, p.max_clock_skew_secs)
                .map(|()| st)
        });
        if let Err(e) = r {
            if e != StateError::WrongObject {
                self.stats.add(Counter::IntegrityFailures, 1);
            }
            self.stats.note(&format!(
                "s3crypt: the state record of upload {upload_id:?} was refused: {e:?}"
            ));
        }
        r
    }

    fn object_of(req: &S3Request) -> String {
        state::object_tag(
            req.bucket.as_deref().unwrap_or(""),
            req.key.as_deref().unwrap_or(""),
        )
    }

    /// UploadPart with the upload's (checked) record: unwraps the data key and starts
    /// encrypting.
    #[allow(clippy::too_many_arguments)]
    fn upload_part_with(
        &mut self,
        h: &Headers,
        up: &mut Headers,
        v: &VerifiedRequest,
        eos: bool,
        number: u32,
        st: UploadState,
    ) -> Result<RequestStep, S3Error> {
        let (env, dek) = self.open_envelope(&st.envelope)?;
        if env.layout != Layout::Part {
            return Err(S3Error::internal(
                "s3crypt: upload state is not a multipart envelope",
            ));
        }
        // The upload's suite, from its envelope: not the configuration, which may have
        // changed since the upload was created (or differ on another replica).
        let key = PartKey {
            number,
            suite: env.suite,
            dek,
            v2: env.version >= 2,
        };
        self.start_upload(h, up, v, eos, Some(key))
    }

    /// AbortMultipartUpload: an upload this Envoy knows to belong to another object is not
    /// this request's to abort (404, the backend untouched); otherwise the backend decides,
    /// and the state is forgotten only when it confirmed the abort.
    fn start_abort(
        &mut self,
        up: Headers,
        v: &VerifiedRequest,
        req: &S3Request,
        eos: bool,
    ) -> Result<RequestStep, S3Error> {
        let id = req.query_param("uploadId").unwrap_or("").to_string();
        let object = Self::object_of(req);
        let cached = self.store.get(&state::shared_key(&id));
        if let Some(raw) = &cached {
            if self.state_of(&id, raw, &object) == Err(StateError::WrongObject) {
                return Err(no_such_upload());
            }
        }
        self.upload_id = Some(id.clone());
        let step = self.pass_body(up, v, req, eos)?;
        match (cached, self.cfg.plugin.state_store, step) {
            // Another replica's upload: its record in Redis says which object it is for.
            (None, StateStore::Redis, RequestStep::Forward(up)) => {
                let get = state::get(&self.cfg, &state::redis_key(&id));
                self.pending = Pending::AbortState {
                    up,
                    upload_id: id,
                    object,
                };
                Ok(RequestStep::CallOut(self.webdis(get)))
            }
            (_, _, step) => Ok(step),
        }
    }

    /// Forgets an upload once the backend completed or aborted it: at once in shared
    /// data; in Redis by a call-out the response waits for.
    fn forget_upload(&mut self) -> Option<CallOut> {
        let id = self.upload_id.clone()?;
        self.store.remove(&state::shared_key(&id));
        match self.cfg.plugin.state_store {
            StateStore::SharedData => {
                if let Some(i) = stage::find_slot(&self.stage_owners(), &id) {
                    self.store.remove(&stage::slot_key(i));
                    self.store.remove(&stage::owner_key(i));
                }
                None
            }
            StateStore::Redis => {
                self.pending = Pending::Forget;
                let keys = [state::redis_key(&id), stage::redis_key(&id)];
                Some(self.webdis(state::del_keys(&self.cfg, &keys)))
            }
        }
    }

    /// CompleteMultipartUpload: the body (the part list) is checked against the client's
    /// hash and forwarded with the part checksums blanked out (they describe plaintext).
    fn start_complete(
        &mut self,
        mut up: Headers,
        v: &VerifiedRequest,
        req: &S3Request,
        eos: bool,
    ) -> Result<RequestStep, S3Error> {
        strip_integrity_headers(&mut up);
        let Body::Document(doc) = req.spec.body else {
            return Err(S3Error::internal("s3crypt: no part list expected"));
        };
        self.expect_document(&up, v, doc, eos, true)?;
        if eos {
            return Err(malformed_document(doc));
        }
        self.upload_id = req.query_param("uploadId").map(str::to_string);
        self.resp_body = ResponseBody::Xml(Vec::new(), XmlRewrite::CompleteCleanup);
        // The body may grow by one part element; its length goes ahead of it.
        if let Some(n) = up
            .get("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            self.complete_length = Some(n + COMPLETE_ROOM);
            up.set("content-length", (n + COMPLETE_ROOM).to_string());
        }
        self.sign(&mut up, sigv4::UNSIGNED_PAYLOAD);
        Ok(RequestStep::Forward(up))
    }

    /// The checked part list of a CompleteMultipartUpload is complete: find the upload's
    /// record, then list its parts (the object must end with a final part).
    /// `last`: the list names parts 1..=last (checked).
    fn complete_list_held(&mut self, list: Vec<u8>, last: u32) -> Result<RequestStep, S3Error> {
        // Checked before anything is uploaded: every part has its ETag (the list goes
        // upstream rebuilt from the numbers and ETags checked here).
        let etags = xml::element_texts(&String::from_utf8_lossy(&list), "ETag");
        if etags.len() != last as usize {
            return Err(malformed_part_list());
        }
        let req = self
            .req
            .as_ref()
            .ok_or_else(|| S3Error::internal("s3crypt: no request"))?;
        let upload_id = req.query_param("uploadId").unwrap_or("").to_string();
        let path = Self::object_path(req);
        let object = Self::object_of(req);
        let c = Box::new(Completing {
            length: self.complete_length,
            path,
            upload_id,
            object,
            etags,
            sizes: vec![None; last as usize],
            marker: 0,
        });
        match self.store.get(&state::shared_key(&c.upload_id)) {
            Some(raw) => {
                let st = self
                    .state_of(&c.upload_id, &raw, &c.object)
                    .map_err(|_| no_such_upload())?;
                self.complete_with(c, st)
            }
            None if self.cfg.plugin.state_store == StateStore::Redis => {
                let get = state::get(&self.cfg, &state::redis_key(&c.upload_id));
                self.pending = Pending::CompleteState(c);
                Ok(RequestStep::CallOut(self.webdis(get)))
            }
            None => Err(no_such_upload()),
        }
    }

    /// CompleteMultipartUpload with the upload's checked record: a version 2 upload has
    /// its parts listed; a version 1 upload (no final parts) completes as it is.
    fn complete_with(
        &mut self,
        c: Box<Completing>,
        st: UploadState,
    ) -> Result<RequestStep, S3Error> {
        let (env, dek) = self.open_envelope(&st.envelope)?;
        if env.layout == Layout::Single {
            return Err(S3Error::internal(
                "s3crypt: upload state is not a multipart envelope",
            ));
        }
        if env.version < 2 {
            return complete_as_listed(&c);
        }
        self.complete_list_page(c, (env.suite, dek))
    }

    /// Asks the backend for the next page of the upload's parts.
    fn complete_list_page(
        &mut self,
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
        let h = self.request_at("GET", path, None);
        self.pending = Pending::CompleteList(c, key);
        Ok(RequestStep::CallOut(self.backend_callout(h)))
    }

    /// A page of the upload's parts: parts before the last must be at least 5 MiB stored
    /// (S3's rule, which not every backend enforces: a short part is written `final`);
    /// then the object ends as it is (its last part is final) or with an end marker.
    fn complete_listed(
        &mut self,
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
                    self.complete_list_page(c, key)
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
        if sizes.iter().any(|&n| n < crate::format::PART_OVERHEAD) {
            return Err(self.integrity());
        }
        if crate::format::part_is_final(c.last(), last_size - crate::format::PART_OVERHEAD) {
            return self.complete_short(c, key, last_size);
        }
        // The last part can be followed: the filter adds the end part after it.
        // It seals the part table, so that readers find it in one request.
        let (suite, dek) = key;
        let number = c.last() + 1;
        let lengths: Vec<u64> = sizes
            .iter()
            .map(|&n| n - crate::format::PART_OVERHEAD)
            .collect();
        let marker = crate::format::seal_end(suite, &dek, number, &lengths, &self.rng)
            .map_err(|_| S3Error::internal("s3crypt: no randomness"))?;
        let call = self.upload_part_callout(&c, number, marker);
        self.pending = Pending::CompleteMarker(c);
        Ok(RequestStep::CallOut(call))
    }

    /// UploadPart of a part the filter writes into the upload being completed.
    fn upload_part_callout(&self, c: &Completing, number: u32, body: Vec<u8>) -> CallOut {
        let path = format!(
            "{}?partNumber={number}&uploadId={}",
            c.path,
            s3::uri_encode(&c.upload_id, true)
        );
        let mut h = self.request_at("PUT", path, None);
        h.set("content-length", body.len().to_string());
        self.sign(&mut h, sigv4::UNSIGNED_PAYLOAD);
        let mut call = self.backend_callout(h);
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
        let parts = listed_parts(c).chain(std::iter::once((c.last() + 1, etag.as_str())));
        Ok(RequestStep::Body(part_list(parts, c.length)?))
    }

    /// The last part is short (it can only be last): close the object with it rewritten
    /// as a closing part, if its staged copy is at hand; else complete as listed.
    fn complete_short(
        &mut self,
        c: Box<Completing>,
        key: (Suite, DataKey),
        last_size: u64,
    ) -> Result<RequestStep, S3Error> {
        let p = &self.cfg.plugin;
        if !p.stage_short_parts
            || c.last() >= crate::format::MAX_PART_NUMBER
            || last_size >= crate::format::MIN_PART_SIZE
        {
            return complete_as_listed(&c);
        }
        match p.state_store {
            StateStore::SharedData => {
                let staged = self.staged_shared(&c.upload_id);
                self.complete_closing(c, key, staged)
            }
            StateStore::Redis => {
                let get = state::get(&self.cfg, &stage::redis_key(&c.upload_id));
                self.pending = Pending::CompleteStaged(c, key);
                Ok(RequestStep::CallOut(self.webdis(get)))
            }
        }
    }

    /// The staged copy of an upload's short last part in shared data, if it is there.
    fn staged_shared(&self, upload_id: &str) -> Option<stage::Staged> {
        let i = stage::find_slot(&self.stage_owners(), upload_id)?;
        stage::decode(&self.store.get(&stage::slot_key(i))?, upload_id)
    }

    fn stage_owners(&self) -> Vec<Option<Vec<u8>>> {
        (0..self.cfg.plugin.staging_slots)
            .map(|i| self.store.get(&stage::owner_key(i)))
            .collect()
    }

    /// Sends the closing part made from the staged copy, or completes as listed when
    /// there is none that fits.
    fn complete_closing(
        &mut self,
        c: Box<Completing>,
        key: (Suite, DataKey),
        staged: Option<stage::Staged>,
    ) -> Result<RequestStep, S3Error> {
        let part = match self.closing_part(&c, &key, staged) {
            Ok(part) => part,
            Err(why) => {
                self.stats.note(&format!(
                    "s3crypt: upload {:?} completes without a part table ({why}); its range reads walk the parts",
                    c.upload_id
                ));
                return complete_as_listed(&c);
            }
        };
        // It replaces the last part under the same number (a gap in the numbers would
        // do too, but not every S3 server completes lists with gaps).
        let call = self.upload_part_callout(&c, c.last(), part);
        self.pending = Pending::CompleteClosing(c);
        Ok(RequestStep::CallOut(call))
    }

    /// The closing part for an upload's last part from its staged copy: only a copy of
    /// this upload's last part whose MD5 is the ETag the client names for it and that
    /// decrypts under the upload's key. Memory: the copy, then its
    /// plaintext and the closing part (each under 5 MiB), within the copy budget.
    fn closing_part(
        &self,
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
        let budget = self.cfg.plugin.max_copy_buffer_bytes;
        let _held = last_size
            .checked_mul(2)
            .and_then(|n| CopyReservation::try_new(&self.vm, n, budget))
            .ok_or("no memory budget left")?;
        let geo = Geometry::part_in(Layout::Final, c.last(), last_size - PART_OVERHEAD);
        let mut d = FrameDecryptor::whole(*suite, dek, geo);
        let mut plain = Vec::with_capacity(usize::try_from(geo.plain_len).unwrap_or(0));
        d.push(&s.cipher, &mut plain)
            .and_then(|()| d.finish())
            .map_err(|_| "the staged copy does not verify")?;
        drop(s);
        let lengths: Vec<u64> = sizes.iter().map(|n| n - PART_OVERHEAD).collect();
        crate::format::seal_closing(*suite, dek, c.last(), &plain, &lengths, &self.rng)
            .map_err(|_| "too many distinct part lengths for its table")
    }

    /// The closing part was stored in the last part's place: the list goes upstream with
    /// its ETag. If the backend refused it, the last part is still the client's and the
    /// object completes as listed.
    fn complete_closed(
        &mut self,
        c: &Completing,
        resp: Option<&Headers>,
    ) -> Result<RequestStep, S3Error> {
        let status = resp.and_then(|h| h.get(":status")?.parse::<u16>().ok());
        let Some(etag) = resp
            .filter(|_| status == Some(200))
            .and_then(|h| h.get("etag"))
        else {
            self.stats.note(&format!(
                "s3crypt: the closing part of upload {:?} was refused ({status:?}); it completes without a part table",
                c.upload_id
            ));
            return complete_as_listed(c);
        };
        let keep = listed_parts(c).take(c.last() as usize - 1);
        let parts = keep.chain(std::iter::once((c.last(), etag)));
        Ok(RequestStep::Body(part_list(parts, c.length)?))
    }

    /// Whether (and with what memory) an UploadPart keeps its ciphertext for Complete: a
    /// version 2 part in layout `final` stored under 5 MiB, numbered below 10,000 (so a
    /// closing part can take the next number), when staging is on and the budget allows.
    fn stage_for(&self, v2: bool, geo: &Geometry) -> Option<(Vec<u8>, CopyReservation)> {
        let p = &self.cfg.plugin;
        let store = match p.state_store {
            StateStore::SharedData => p.staging_slots > 0,
            StateStore::Redis => true,
        };
        let len = geo.cipher_len();
        if !(v2
            && p.stage_short_parts
            && store
            && geo.layout == Layout::Final
            && len < crate::format::MIN_PART_SIZE
            && geo.part < crate::format::MAX_PART_NUMBER)
        {
            return None;
        }
        let held = CopyReservation::try_new(&self.vm, len, p.max_copy_buffer_bytes)?;
        Some((Vec::with_capacity(usize::try_from(len).ok()?), held))
    }

    /// A short last part the backend stored: its copy goes to the state store (shared
    /// data at once; Redis by a call-out the response waits for).
    fn stage_part(&mut self, cipher: Vec<u8>, number: u32) -> Option<CallOut> {
        let id = self.upload_id.clone()?;
        let rec = stage::encode(&id, self.now(), number, &cipher);
        drop(cipher);
        match self.cfg.plugin.state_store {
            StateStore::SharedData => {
                let ttl = self.cfg.plugin.upload_ttl_secs;
                if let Some((i, seq)) =
                    stage::choose_slot(&self.stage_owners(), &id, self.now(), ttl)
                {
                    let owner = stage::owner_line(&id, self.now(), seq);
                    self.store.set(&stage::owner_key(i), owner.as_bytes());
                    self.store.set(&stage::slot_key(i), &rec);
                }
                None
            }
            StateStore::Redis => {
                let ttl = self.cfg.plugin.upload_ttl_secs;
                let set = state::setex(&self.cfg, &stage::redis_key(&id), ttl, &rec);
                self.pending = Pending::Staged;
                Some(self.webdis(set))
            }
        }
    }

    fn start_get(
        &mut self,
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
            self.get.part_number = Some(n);
        }
        self.get.if_match = h.get("if-match").map(str::to_string);
        self.get.if_none_match = h.get("if-none-match").map(str::to_string);
        self.get.checksum_mode = h
            .get("x-amz-checksum-mode")
            .is_some_and(|v| v.eq_ignore_ascii_case("enabled"));
        // ETags are compared by the filter against the client-visible ETag.
        up.remove("if-match");
        up.remove("if-none-match");
        if let Some(spec) = h.get("range").and_then(range::parse_range) {
            self.get.range = Some(spec);
            self.get.widened = true;
            up.set("range", widened_range(spec));
        } else {
            up.remove("range");
        }
        if self.get.range.is_none() && self.get.part_number.is_none() {
            self.sign(up, sigv4::EMPTY_SHA256);
            return Ok(RequestStep::Forward(std::mem::take(up)));
        }
        // A range or a part: the object's layout decides how it is read, so its headers
        // come first (a multipart object needs its part table).
        let original = up.get(":path").unwrap_or("/").to_string();
        up.set(":path", remove_query_param(&original, "partNumber"));
        self.sign(up, sigv4::EMPTY_SHA256);
        let head = self.object_request("HEAD", req, None);
        self.pending = Pending::ObjectHead {
            up: std::mem::take(up),
            original,
        };
        Ok(RequestStep::CallOut(self.backend_callout(head)))
    }

    /// A signed request to the backend for the client's object (same version).
    fn object_request(&self, method: &str, req: &S3Request, range: Option<String>) -> Headers {
        self.request_at(method, Self::object_path(req), range)
    }

    fn object_path(req: &S3Request) -> String {
        let mut path = format!(
            "/{}/{}",
            s3::uri_encode(req.bucket.as_deref().unwrap_or(""), true),
            s3::uri_encode(req.key.as_deref().unwrap_or(""), false)
        );
        if let Some(v) = req.query_param("versionId") {
            path.push_str(&format!("?versionId={}", s3::uri_encode(v, true)));
        }
        path
    }

    /// A signed body-less request to the backend.
    fn request_at(&self, method: &str, path: String, range: Option<String>) -> Headers {
        let mut h = Headers::new();
        h.set(":method", method);
        h.set(":path", path);
        h.set(":authority", self.cfg.plugin.upstream_authority.clone());
        h.set(":scheme", "http");
        if let Some(r) = range {
            h.set("range", r);
        }
        self.sign(&mut h, sigv4::EMPTY_SHA256);
        h
    }

    fn backend_callout(&self, h: Headers) -> CallOut {
        CallOut {
            cluster: self.cfg.plugin.upstream_cluster.clone(),
            headers: h.0,
            body: None,
            timeout_ms: 10_000,
        }
    }

    /// The object's HEAD answered (GET/HEAD by range or part number).
    fn after_object_head(
        &mut self,
        mut up: Headers,
        original: String,
        resp: Option<&Headers>,
    ) -> Result<RequestStep, S3Error> {
        let resp = resp.ok_or_else(|| {
            S3Error::service_unavailable("s3crypt: the object could not be read; please retry")
        })?;
        let status = resp.get(":status").unwrap_or("");
        let envelope = resp.get(ENVELOPE_HEADER);
        let (Some(ev), "200") = (envelope, status) else {
            // Errors and plaintext objects: the backend answers the request as it is.
            if up.get(":path") != Some(original.as_str()) {
                up.set(":path", original);
                self.sign(&mut up, sigv4::EMPTY_SHA256);
            }
            return Ok(RequestStep::Forward(up));
        };
        let (env, dek) = self.open_envelope(ev)?;
        if env.layout == Layout::Single {
            match self.get.part_number {
                None => {}
                Some(1) => {
                    // A single-part object is its own part 1.
                    self.get.range = Some(RangeSpec::From(0));
                    up.set("range", widened_range(RangeSpec::From(0)));
                }
                Some(_) => return Err(invalid_part_number()),
            }
            return Ok(RequestStep::Forward(up));
        }
        let etag = resp.get("etag").unwrap_or("").to_string();
        let stored: u64 = resp
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let parts = parts_in_etag(&etag).ok_or_else(|| self.integrity())?;
        let numbered = env.version >= 2;
        let version = table_version(&etag, stored, &env);
        match self.cached_table(&version, stored, parts, numbered) {
            Some(t) => self.plan_multipart(up, etag, t),
            None => {
                let Some(shared) = LookupInFlight::start(&self.vm, &version) else {
                    // Another read of this version is finding the table: wait for it.
                    self.pending = Pending::TableWait(Box::new(TableWait {
                        up,
                        etag,
                        version: version.clone(),
                        stored,
                        parts,
                        numbered,
                    }));
                    return Ok(RequestStep::Wait(version));
                };
                let mut walk = Walk::new(env.suite, &dek, stored, parts, numbered);
                walk.version = version;
                let path = self.req.as_ref().map(Self::object_path).unwrap_or_default();
                self.find_table(Box::new(TableLookup {
                    then: AfterWalk::Read(up),
                    path,
                    walk,
                    etag,
                    _shared: Some(shared),
                }))
            }
        }
    }

    /// A read that waited ([`RequestStep::Wait`]) for another request's lookup of its part
    /// table: planned from the table that lookup cached, or refused (503, retry) if it
    /// found none. Never a call-out.
    pub fn table_shared(&mut self) -> RequestStep {
        let Pending::TableWait(w) = std::mem::replace(&mut self.pending, Pending::None) else {
            return self.reject(&S3Error::internal(
                "s3crypt: no read waits for a part table",
            ));
        };
        let r = match self.cached_table(&w.version, w.stored, w.parts, w.numbered) {
            Some(t) => self.plan_multipart(w.up, w.etag, t),
            None => Err(S3Error::slow_down(
                "s3crypt: the object's part table could not be read; please retry",
            )),
        };
        match r {
            Ok(RequestStep::Forward(h)) => RequestStep::Forward(h),
            Ok(_) => self.reject(&S3Error::internal("s3crypt: unexpected plan")),
            Err(e) => self.reject(&e),
        }
    }

    /// The request is going away: whatever lookup it was making ends now (so that reads
    /// waiting for it are told), and it waits for none.
    pub fn abandon(&mut self) {
        self.pending = Pending::None;
    }

    /// The part table of an object version cached by an earlier walk, if it fits.
    /// `numbered`: the object's parts must be numbered 1..N and end with a final part
    /// (version 2 envelopes).
    fn cached_table(
        &self,
        version: &str,
        stored: u64,
        parts: u64,
        numbered: bool,
    ) -> Option<PartTable> {
        let v = self.store.get(&table_slot(version))?;
        let table = v.strip_prefix(version.as_bytes())?.strip_prefix(b"\n")?;
        PartTable::decode(table).filter(|t| {
            t.stored_len() == stored
                && t.count() as u64 == parts
                && (!numbered || t.numbered_from_one())
                && t.ends_final() == numbered
        })
    }

    /// Caches a walked part table in its slot (replacing whatever version was there).
    fn cache_table(&self, version: &str, t: &PartTable) {
        self.store.set(
            &table_slot(version),
            format!("{version}\n{}", t.encode()).as_bytes(),
        );
    }

    /// Finds the part table of an object version not in the cache: from its end part if it
    /// has one (one read), else by walking its parts.
    fn find_table(&mut self, l: Box<TableLookup>) -> Result<RequestStep, S3Error> {
        match l.walk.end_read() {
            Some(range) => self.table_call(l, range, TableRead::End),
            None => {
                let range = l.walk.next_read();
                self.table_call(l, range, TableRead::Walk)
            }
        }
    }

    /// Reads stored bytes `first..=last` of the version the lookup is for.
    fn table_call(
        &mut self,
        l: Box<TableLookup>,
        (first, last): (u64, u64),
        read: TableRead,
    ) -> Result<RequestStep, S3Error> {
        let mut h = self.request_at("GET", l.path.clone(), Some(format!("bytes={first}-{last}")));
        h.set("if-match", l.etag.clone());
        self.pending = Pending::Table(l, read);
        Ok(RequestStep::CallOut(self.backend_callout(h)))
    }

    /// A read of a table lookup answered: the table, or the next read.
    fn table_answered(
        &mut self,
        mut l: Box<TableLookup>,
        read: TableRead,
        resp: Option<(&Headers, &[u8])>,
    ) -> Result<RequestStep, S3Error> {
        let body = table_read(&l.etag, resp)?;
        let found = match read {
            TableRead::End => l.walk.try_end(body),
            TableRead::Walk => l.walk.push(body).map_err(|_| self.integrity())?,
        };
        match found {
            Some(t) => self.table_found(*l, t),
            None => {
                let range = l.walk.next_read();
                self.table_call(l, range, TableRead::Walk)
            }
        }
    }

    /// The verified part table of an object version: cached, then used.
    fn table_found(&mut self, l: TableLookup, t: PartTable) -> Result<RequestStep, S3Error> {
        // Cached per Envoy process, keyed by the object version (ETag, size, wrapped key).
        self.cache_table(&l.walk.version, &t);
        match l.then {
            AfterWalk::Read(up) => self.plan_multipart(up, l.etag, t),
            AfterWalk::Copy(mut mc) => {
                mc.parts = t.stored_parts();
                self.copy_create(mc)
            }
            AfterWalk::PartCopy(mut pc, suite, dek) => {
                pc.from = CopyFrom::Multi {
                    suite,
                    dek,
                    table: t,
                };
                self.part_copy_plan(pc)
            }
        }
    }

    /// Reads a range or a part of a multipart object whose part table is known.
    fn plan_multipart(
        &mut self,
        mut up: Headers,
        etag: String,
        t: PartTable,
    ) -> Result<RequestStep, S3Error> {
        let total = t.plain_len();
        let (first, last) = match (self.get.part_number, self.get.range) {
            (Some(n), _) => {
                let (off, len) = t.part_range(n).ok_or_else(invalid_part_number)?;
                (off, off + len - 1)
            }
            (None, Some(spec)) => range::resolve(spec, total)
                .map_err(|_| S3Error::invalid_range("The requested range is not satisfiable"))?,
            (None, None) => return Err(S3Error::internal("s3crypt: nothing to plan")),
        };
        let plan = t.plan(first, last).ok_or_else(|| self.integrity())?;
        if self.head {
            up.remove("range");
        } else {
            up.set(
                "range",
                format!("bytes={}-{}", plan.stored_first, plan.stored_last),
            );
        }
        // The same version the table describes, or the backend says 412.
        up.set("if-match", etag.clone());
        self.get.multipart = Some(MultipartRead {
            etag,
            first,
            last,
            plain_total: total,
            parts: t.visible_count(),
            plan,
        });
        Ok(RequestStep::Forward(up))
    }

    fn integrity(&self) -> S3Error {
        self.stats.add(Counter::IntegrityFailures, 1);
        S3Error::integrity()
    }

    fn start_copy(
        &mut self,
        h: &Headers,
        up: Headers,
        _req: &S3Request,
    ) -> Result<RequestStep, S3Error> {
        let head = self.request_at("HEAD", copy_source_path(h)?, None);
        self.pending = Pending::CopySource(up);
        Ok(RequestStep::CallOut(self.backend_callout(head)))
    }

    /// The answer to the call-out in flight: its headers and body, or `None` if it failed
    /// (connection error, timeout).
    /// The host dispatched the call-out the pending state asked for under `token`.
    pub fn dispatched(&mut self, token: u32) {
        self.callout_token = Some(token);
    }

    /// A call-out response as the host delivers it: `None` (refused, logged, nothing
    /// changes) unless `token` is that of the call-out dispatched for the pending state.
    pub fn on_callout_response_with(
        &mut self,
        token: u32,
        resp: Option<(&Headers, &[u8])>,
    ) -> Option<CallOutStep> {
        if self.callout_token != Some(token) {
            self.stats.note(&format!(
                "s3crypt: a call-out response with token {token} is not this request's (waiting for {:?}); ignored",
                self.callout_token
            ));
            return None;
        }
        self.callout_token = None;
        Some(self.on_callout_response(resp))
    }

    /// A call-out response (or `None`: it failed or timed out) for the pending state.
    pub fn on_callout_response(&mut self, resp: Option<(&Headers, &[u8])>) -> CallOutStep {
        let status: Option<u16> = resp.and_then(|(h, _)| h.get(":status")?.parse().ok());
        let body: &[u8] = resp.map(|(_, b)| b).unwrap_or(&[]);
        let request = |this: &mut Self, r: Result<RequestStep, S3Error>| {
            CallOutStep::Request(match r {
                Ok(s) => s,
                Err(e) => this.reject(&e),
            })
        };
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::None | Pending::TableWait(_) => CallOutStep::Request(
                self.reject(&S3Error::internal("s3crypt: unexpected call-out response")),
            ),
            Pending::CopySource(up) => {
                CallOutStep::Request(self.after_copy_source(up, resp.map(|(h, _)| h)))
            }
            Pending::ObjectHead { up, original } => {
                let r = self.after_object_head(up, original, resp.map(|(h, _)| h));
                request(self, r)
            }
            Pending::Table(l, read) => {
                let r = self.table_answered(l, read, resp);
                request(self, r)
            }
            Pending::CopyCreate(mc) => {
                let r = self.copy_created(mc, status, body);
                request(self, r)
            }
            Pending::CopyPart(mc) => {
                let r = self.copy_part_done(mc, status, body);
                request(self, r)
            }
            Pending::CopyComplete(mc) => {
                let r = self.copy_completed(mc, status, body);
                request(self, r)
            }
            Pending::CopyAbort(e) => CallOutStep::Request(self.reject(&e)),
            Pending::PartCopySource(pc) => {
                let r = self.part_copy_source(pc, resp.map(|(h, _)| h));
                request(self, r)
            }
            Pending::PartCopyRead(pc, expect, dec) => {
                let r = self.part_copy_chunk(pc, expect, dec, status, body);
                request(self, r)
            }
            Pending::PartCopyPut(pc) => {
                let r = self.part_copy_done(pc, resp.map(|(h, _)| h), body);
                request(self, r)
            }
            Pending::CompleteState(c) => {
                let r = match state::parse_get(status, body) {
                    Err(_) => Err(Self::redis_unavailable()),
                    Ok(None) => Err(no_such_upload()),
                    Ok(Some(v)) => match self.state_of(&c.upload_id, &v, &c.object) {
                        Err(_) => Err(no_such_upload()),
                        Ok(st) => self.complete_with(c, st),
                    },
                };
                request(self, r)
            }
            Pending::CompleteList(c, key) => {
                let r = self.complete_listed(c, key, status, body);
                request(self, r)
            }
            Pending::CompleteMarker(c) => {
                let r = self.complete_marked(&c, resp.map(|(h, _)| h), body);
                request(self, r)
            }
            Pending::CompleteStaged(c, key) => {
                let staged = state::parse_get(status, body)
                    .ok()
                    .flatten()
                    .and_then(|v| stage::decode(&v, &c.upload_id));
                let r = self.complete_closing(c, key, staged);
                request(self, r)
            }
            Pending::CompleteClosing(c) => {
                let r = self.complete_closed(&c, resp.map(|(h, _)| h));
                request(self, r)
            }
            Pending::Staged => CallOutStep::Response(ResponseResume::Continue),
            Pending::StagedThenReply(r) => CallOutStep::Request(RequestStep::Reply(r)),
            Pending::UploadState {
                h,
                mut up,
                eos,
                number,
                upload_id,
                object,
            } => {
                let r = match state::parse_get(status, body) {
                    Err(_) => Err(Self::redis_unavailable()),
                    Ok(None) => Err(no_such_upload()),
                    Ok(Some(v)) => match self.state_of(&upload_id, &v, &object) {
                        Err(_) => Err(no_such_upload()),
                        Ok(st) => {
                            // Cache it for the next parts on this Envoy.
                            self.store.set(&state::shared_key(&upload_id), &v);
                            let copy = self
                                .req
                                .as_ref()
                                .is_some_and(|r| r.op == Operation::UploadPartCopy);
                            match self.verified.clone() {
                                Some(_) if copy => self.part_copy_with(&h, &up, number, st),
                                Some(ver) => {
                                    self.upload_part_with(&h, &mut up, &ver, eos, number, st)
                                }
                                None => Err(S3Error::internal("s3crypt: no verified request")),
                            }
                        }
                    },
                };
                request(self, r)
            }
            Pending::AbortState {
                up,
                upload_id,
                object,
            } => match state::parse_get(status, body) {
                Err(_) => CallOutStep::Request(self.reject(&Self::redis_unavailable())),
                Ok(Some(v))
                    if self.state_of(&upload_id, &v, &object) == Err(StateError::WrongObject) =>
                {
                    CallOutStep::Request(self.reject(&no_such_upload()))
                }
                // No record (the backend decides) or this object's: the abort goes on.
                Ok(_) => CallOutStep::Request(RequestStep::Forward(up)),
            },
            Pending::Ping(up) => match state::parse_ok(status, body, "PING") {
                Ok(()) => CallOutStep::Request(RequestStep::Forward(up)),
                Err(_) => CallOutStep::Request(self.reject(&Self::redis_unavailable())),
            },
            Pending::Record { upload_id, value } => match state::parse_ok(status, body, "SETEX") {
                Ok(()) => {
                    self.store
                        .set(&state::shared_key(&upload_id), value.as_bytes());
                    CallOutStep::Response(ResponseResume::Continue)
                }
                // The client never sees this UploadId; the backend's upload is abandoned
                // (an S3 lifecycle rule for incomplete uploads removes it).
                Err(_) => CallOutStep::Response(ResponseResume::Reset(
                    "s3crypt: could not record the upload state in Redis; response reset".into(),
                )),
            },
            Pending::Forget => CallOutStep::Response(ResponseResume::Continue),
        }
    }

    /// CopyObject: the source's HEAD answered.
    fn after_copy_source(&mut self, mut up: Headers, resp: Option<&Headers>) -> RequestStep {
        let if_match = up.get("x-amz-copy-source-if-match").map(str::to_string);
        let if_none = up
            .get("x-amz-copy-source-if-none-match")
            .map(str::to_string);
        up.remove("x-amz-copy-source-if-match");
        up.remove("x-amz-copy-source-if-none-match");
        let opened = |ev: &str| self.open_envelope(ev).ok().and_then(|(e, _)| e.md5);
        let resp = match copy_source_ok(resp, if_match.as_deref(), if_none.as_deref(), &opened) {
            Ok(r) => r,
            Err(e) => return self.reject(&e),
        };
        if resp.get(ENVELOPE_HEADER).is_none() {
            // A plaintext source stays plaintext in a server-side copy: only from and to a
            // passthrough scope (a migration inside it); otherwise the source is an
            // integrity error, as a read of it would be.
            let dest_ok = self.req.as_ref().is_some_and(|r| {
                self.cfg.passthrough_allowed(
                    r.bucket.as_deref().unwrap_or(""),
                    r.key.as_deref().unwrap_or(""),
                )
            });
            match self.copy_source_in_scope(&up) {
                Ok(true) if dest_ok => {}
                Ok(_) => return self.reject(&self.integrity()),
                Err(e) => return self.reject(&e),
            }
        }
        if let Some(ev) = resp.get(ENVELOPE_HEADER) {
            let env = match self.open_envelope(ev) {
                Ok((env, _)) => env,
                Err(e) => return self.reject(&e),
            };
            if env.layout == Layout::Part {
                let r = self.start_multipart_copy(up, resp, ev.to_string());
                return match r {
                    Ok(s) => s,
                    Err(e) => self.reject(&e),
                };
            }
            let replace = up
                .get("x-amz-metadata-directive")
                .is_some_and(|d| d.eq_ignore_ascii_case("REPLACE"));
            if replace {
                up.set(ENVELOPE_HEADER, env.encode());
            }
            if let Some(m) = env.md5 {
                self.resp_body = ResponseBody::Xml(
                    Vec::new(),
                    XmlRewrite::CopyEtag(format!("\"{}\"", hex::encode(m))),
                );
            }
        }
        let hash = match self.verified.as_ref().map(|v| v.payload.clone()) {
            Some(PayloadMode::Sha256(h)) => h,
            _ => sigv4::UNSIGNED_PAYLOAD.to_string(),
        };
        self.sign(&mut up, &hash);
        RequestStep::Forward(up)
    }

    fn start_multipart_copy(
        &mut self,
        up: Headers,
        src: &Headers,
        envelope: String,
    ) -> Result<RequestStep, S3Error> {
        let etag = src.get("etag").unwrap_or("").to_string();
        let stored: u64 = src
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let parts = parts_in_etag(&etag).ok_or_else(|| self.integrity())?;
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
        create.set(":authority", self.cfg.plugin.upstream_authority.clone());
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
        create.set(ENVELOPE_HEADER, envelope);
        let conditions = up
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-amz-copy-source-if-"))
            .cloned()
            .collect();
        let mc = Box::new(MultipartCopy {
            dest,
            copy_source,
            conditions,
            create,
            src_etag: etag.clone(),
            parts: Vec::new(),
            upload_id: String::new(),
            next: 0,
            etags: Vec::new(),
        });
        // The walk needs the data key: it verifies the last frame of every part.
        let (env, dek) = self.open_envelope(mc.create.get(ENVELOPE_HEADER).unwrap_or_default())?;
        let numbered = env.version >= 2;
        let version = table_version(&etag, stored, &env);
        match self.cached_table(&version, stored, parts, numbered) {
            Some(t) => {
                let mut mc = mc;
                mc.parts = t.stored_parts();
                self.copy_create(mc)
            }
            None => {
                let mut walk = Walk::new(env.suite, &dek, stored, parts, numbered);
                walk.version = version;
                self.find_table(Box::new(TableLookup {
                    then: AfterWalk::Copy(mc),
                    path: src_path,
                    walk,
                    etag,
                    _shared: None,
                }))
            }
        }
    }

    fn copy_create(&mut self, mc: Box<MultipartCopy>) -> Result<RequestStep, S3Error> {
        let mut h = mc.create.clone();
        self.sign(&mut h, sigv4::EMPTY_SHA256);
        self.pending = Pending::CopyCreate(mc);
        Ok(RequestStep::CallOut(self.backend_callout(h)))
    }

    fn copy_created(
        &mut self,
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
        self.copy_next_part(mc)
    }

    fn copy_next_part(&mut self, mc: Box<MultipartCopy>) -> Result<RequestStep, S3Error> {
        let Some(&(number, len, offset)) = mc.parts.get(mc.next) else {
            return self.copy_complete(mc);
        };
        let mut h = self.request_at(
            "PUT",
            format!(
                "{}?partNumber={number}&uploadId={}",
                mc.dest,
                s3::uri_encode(&mc.upload_id, true)
            ),
            None,
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
        self.sign(&mut h, sigv4::EMPTY_SHA256);
        self.pending = Pending::CopyPart(mc);
        Ok(RequestStep::CallOut(self.backend_callout(h)))
    }

    fn copy_part_done(
        &mut self,
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
                self.copy_next_part(mc)
            }
            _ => self.copy_abort(&mc, copy_failed(status)),
        }
    }

    fn copy_complete(&mut self, mc: Box<MultipartCopy>) -> Result<RequestStep, S3Error> {
        let mut body = String::from("<CompleteMultipartUpload>");
        for (n, e) in &mc.etags {
            body.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                crate::s3::error::xml_escape(e)
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let mut h = self.request_at(
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
        self.sign(&mut h, &hex::encode(Sha256::digest(body.as_bytes())));
        self.pending = Pending::CopyComplete(mc);
        let mut c = self.backend_callout(h);
        c.body = Some(body.into_bytes());
        c.timeout_ms = 60_000;
        Ok(RequestStep::CallOut(c))
    }

    /// A 200 answer with an XML body made by the filter.
    fn xml_reply(&self, xml: String) -> RequestStep {
        RequestStep::Reply(Reply {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/xml".into()),
                ("x-amz-request-id".into(), self.request_id.clone()),
            ],
            body: xml.into_bytes(),
        })
    }

    fn copy_completed(
        &mut self,
        mc: Box<MultipartCopy>,
        status: Option<u16>,
        body: &[u8],
    ) -> Result<RequestStep, S3Error> {
        let text = String::from_utf8_lossy(body);
        let etag = xml::element_text(&text, "ETag").filter(|_| !text.contains("<Error>"));
        let Some(etag) = etag.filter(|_| status == Some(200)) else {
            return self.copy_abort(&mc, copy_failed(status));
        };
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyObjectResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LastModified>{}</LastModified><ETag>{}</ETag></CopyObjectResult>",
            iso8601(self.now()),
            crate::s3::error::xml_escape(&etag)
        );
        Ok(self.xml_reply(xml))
    }

    /// Aborts the destination's upload (nothing half-written stays), then answers `e`.
    fn copy_abort(&mut self, mc: &MultipartCopy, e: S3Error) -> Result<RequestStep, S3Error> {
        let h = self.request_at(
            "DELETE",
            format!(
                "{}?uploadId={}",
                mc.dest,
                s3::uri_encode(&mc.upload_id, true)
            ),
            None,
        );
        self.pending = Pending::CopyAbort(e);
        Ok(RequestStep::CallOut(self.backend_callout(h)))
    }

    fn part_copy_with(
        &mut self,
        h: &Headers,
        up: &Headers,
        number: u32,
        st: UploadState,
    ) -> Result<RequestStep, S3Error> {
        let (env, dek) = self.open_envelope(&st.envelope)?;
        if env.layout != Layout::Part {
            return Err(S3Error::internal(
                "s3crypt: upload state is not a multipart envelope",
            ));
        }
        let src_path = copy_source_path(h)?;
        let src_plain_ok = self.copy_source_in_scope(h)?;
        let mut head = self.request_at("HEAD", src_path.clone(), None);
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
        self.sign(&mut head, sigv4::EMPTY_SHA256);
        let pc = Box::new(PartCopy {
            dest: up.get(":path").unwrap_or("/").to_string(),
            number,
            dest_suite: env.suite,
            dest_dek: dek,
            dest_v2: env.version >= 2,
            src_path,
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
            budget: None,
            stage: None,
        });
        self.pending = Pending::PartCopySource(pc);
        Ok(RequestStep::CallOut(self.backend_callout(head)))
    }

    /// Whether the object named by `x-amz-copy-source` lies in a passthrough scope.
    fn copy_source_in_scope(&self, h: &Headers) -> Result<bool, S3Error> {
        let src = h
            .get("x-amz-copy-source")
            .ok_or_else(|| S3Error::invalid_argument("missing x-amz-copy-source"))?;
        let (bucket, key, _) = s3::parse_copy_source(src)?;
        Ok(self.cfg.passthrough_allowed(&bucket, &key))
    }

    /// UploadPartCopy: the source's HEAD answered; find its layout (and part table).
    fn part_copy_source(
        &mut self,
        mut pc: Box<PartCopy>,
        resp: Option<&Headers>,
    ) -> Result<RequestStep, S3Error> {
        let opened = |ev: &str| self.open_envelope(ev).ok().and_then(|(e, _)| e.md5);
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
                return Err(self.integrity());
            }
            pc.from = CopyFrom::Plain { len: stored };
            return self.part_copy_plan(pc);
        };
        let (env, dek) = self.open_envelope(ev)?;
        match env.layout {
            Layout::Single => {
                let geo = env
                    .plain_len
                    .map(Geometry::single)
                    .filter(|g| g.cipher_len() == stored)
                    .ok_or_else(|| self.integrity())?;
                pc.from = CopyFrom::Single {
                    suite: env.suite,
                    dek,
                    geo,
                };
                self.part_copy_plan(pc)
            }
            Layout::Part | Layout::Final | Layout::End | Layout::Closing | Layout::Table => {
                let parts = parts_in_etag(&pc.src_etag).ok_or_else(|| self.integrity())?;
                let numbered = env.version >= 2;
                let version = table_version(&pc.src_etag, stored, &env);
                match self.cached_table(&version, stored, parts, numbered) {
                    Some(table) => {
                        pc.from = CopyFrom::Multi {
                            suite: env.suite,
                            dek,
                            table,
                        };
                        self.part_copy_plan(pc)
                    }
                    None => {
                        let (path, etag) = (pc.src_path.clone(), pc.src_etag.clone());
                        let mut walk = Walk::new(env.suite, &dek, stored, parts, numbered);
                        walk.version = version;
                        let then = AfterWalk::PartCopy(pc, env.suite, dek);
                        self.find_table(Box::new(TableLookup {
                            then,
                            path,
                            walk,
                            etag,
                            _shared: None,
                        }))
                    }
                }
            }
        }
    }

    /// UploadPartCopy: the plaintext range to copy, checked against the source's size and
    /// the part size limit; then the reads start.
    fn part_copy_plan(&mut self, mut pc: Box<PartCopy>) -> Result<RequestStep, S3Error> {
        let size = pc.from.len();
        let (first, last) = match pc.range.as_deref() {
            Some(r) => copy_source_range(r, size)?,
            None if size == 0 => {
                return Err(S3Error::invalid_request(
                    "s3crypt: empty parts are not supported",
                ))
            }
            None => (0, size - 1),
        };
        let len = last - first + 1;
        let max = self.cfg.plugin.max_copy_part_bytes;
        if len > max {
            return Err(S3Error::new(
                400,
                "EntityTooLarge",
                format!("s3crypt: UploadPartCopy re-encrypts the copied range in the proxy and accepts at most {max} bytes per part (max_copy_part_bytes); copy with smaller parts"),
            ));
        }
        let geo = part_geometry(pc.dest_v2, pc.number, len);
        let budget = self.cfg.plugin.max_copy_buffer_bytes;
        pc.budget = Some(
            CopyReservation::try_new(&self.vm, len, budget).ok_or_else(|| {
                S3Error::slow_down(
                    "s3crypt: too many part copies in progress on this proxy; please retry",
                )
            })?,
        );
        let mut body = Vec::new();
        if body.try_reserve_exact(geo.cipher_len() as usize).is_err() {
            return Err(S3Error::slow_down(
                "s3crypt: not enough memory for this copy now; please retry",
            ));
        }
        pc.body = body;
        pc.enc = Some(FrameEncryptor::new(
            pc.dest_suite,
            &pc.dest_dek,
            geo,
            &self.rng,
        ));
        (pc.first, pc.last, pc.next) = (first, last, first);
        self.part_copy_read(pc)
    }

    /// UploadPartCopy: reads the next chunk of the source, or sends the part.
    fn part_copy_read(&mut self, mut pc: Box<PartCopy>) -> Result<RequestStep, S3Error> {
        if pc.next > pc.last {
            let mut body = std::mem::take(&mut pc.body);
            let enc = pc
                .enc
                .as_mut()
                .ok_or_else(|| S3Error::internal("s3crypt: no encryptor"))?;
            enc.finish(&mut body)
                .map_err(|_| S3Error::internal("s3crypt: part encryption incomplete"))?;
            if body.len() as u64 != enc.geometry().cipher_len() {
                return Err(S3Error::internal("s3crypt: part length mismatch"));
            }
            self.stats
                .add(Counter::BytesEncrypted, pc.last - pc.first + 1);
            let geo = *enc.geometry();
            pc.stage = self.stage_for(pc.dest_v2, &geo).map(|(mut kept, held)| {
                kept.extend_from_slice(&body);
                (kept, held)
            });
            let mut h = self.request_at("PUT", pc.dest.clone(), None);
            h.set("content-length", body.len().to_string());
            self.sign(&mut h, sigv4::UNSIGNED_PAYLOAD);
            self.pending = Pending::PartCopyPut(pc);
            let mut c = self.backend_callout(h);
            c.body = Some(body);
            c.timeout_ms = 120_000;
            return Ok(RequestStep::CallOut(c));
        }
        let end = pc.chunk_end();
        let (s0, s1, dec) = pc.from.read(pc.next, end).ok_or_else(|| self.integrity())?;
        let mut h = self.request_at("GET", pc.src_path.clone(), Some(format!("bytes={s0}-{s1}")));
        if !pc.src_etag.is_empty() {
            h.set("if-match", pc.src_etag.clone());
        }
        self.sign(&mut h, sigv4::EMPTY_SHA256);
        self.pending = Pending::PartCopyRead(pc, s1 - s0 + 1, dec);
        Ok(RequestStep::CallOut(self.backend_callout(h)))
    }

    /// UploadPartCopy: a chunk of the source arrived; decrypt, verify, re-encrypt.
    fn part_copy_chunk(
        &mut self,
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
            ..
        } = &mut *pc;
        scratch.clear();
        let plain: &[u8] = match dec {
            None => body,
            Some(mut d) => {
                if d.push(body, scratch).is_err() || d.finish().is_err() {
                    return Err(self.integrity());
                }
                scratch
            }
        };
        if plain.len() as u64 != end - next + 1 {
            return Err(self.integrity());
        }
        self.stats.add(Counter::BytesDecrypted, plain.len() as u64);
        enc.as_mut()
            .ok_or_else(|| S3Error::internal("s3crypt: no encryptor"))?
            .push(plain, out)
            .map_err(|_| S3Error::internal("s3crypt: part encryption failed"))?;
        pc.next = end + 1;
        self.part_copy_read(pc)
    }

    /// UploadPartCopy: the backend stored the part; answer CopyPartResult with its ETag
    /// (the one CompleteMultipartUpload needs).
    fn part_copy_done(
        &mut self,
        mut pc: Box<PartCopy>,
        resp: Option<&Headers>,
        body: &[u8],
    ) -> Result<RequestStep, S3Error> {
        let status = resp.and_then(|h| h.get(":status")?.parse().ok());
        let etag = resp.and_then(|h| h.get("etag")).map(str::to_string);
        let Some(etag) = etag.filter(|_| status == Some(200)) else {
            return Err(part_put_failed(status, &String::from_utf8_lossy(body)));
        };
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyPartResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LastModified>{}</LastModified><ETag>{}</ETag></CopyPartResult>",
            iso8601(self.now()),
            crate::s3::error::xml_escape(&etag)
        );
        let reply = self.xml_reply(xml);
        // A short last part: staged like one sent by UploadPart (Redis: the answer waits).
        if let Some((cipher, _held)) = pc.stage.take() {
            if let Some(call) = self.stage_part(cipher, pc.number) {
                if let RequestStep::Reply(r) = reply {
                    self.pending = Pending::StagedThenReply(r);
                    return Ok(RequestStep::CallOut(call));
                }
            }
        }
        Ok(reply)
    }

    /// Parses the envelope, unwraps the data key and verifies the envelope tag.
    fn open_envelope(&self, v: &str) -> Result<(Envelope, DataKey), S3Error> {
        let mut env = Envelope::decode(v).map_err(|_| {
            self.stats.add(Counter::IntegrityFailures, 1);
            S3Error::internal("s3crypt: the object's encryption envelope is unreadable")
        })?;
        let kek = self.cfg.kek(&env.key_id).ok_or_else(|| {
            S3Error::access_denied(format!(
                "s3crypt: the object is encrypted under key id {:?}, which is not configured",
                env.key_id
            ))
        })?;
        let dek = crypto::unwrap_dek(kek, &env.wrapped_dek).map_err(|_| {
            self.stats.add(Counter::IntegrityFailures, 1);
            S3Error::internal(format!("s3crypt: the data key could not be unwrapped with key id {:?} (wrong key material?)", env.key_id))
        })?;
        env.open(&dek).map_err(|_| {
            self.stats.add(Counter::IntegrityFailures, 1);
            S3Error::integrity()
        })?;
        Ok((env, dek))
    }

    /// A request body chunk; the transformed bytes are written to `out`.
    /// `Ok(Some(call))`: the body is held (nothing was written to `out`); make the call-out
    /// and continue with what [`Exchange::on_callout_response`] says.
    pub fn on_request_body(
        &mut self,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<CallOut>, BodyError> {
        let fail = |e: S3Error| {
            self.stats.add(Counter::RejectedRequests, 1);
            Err(BodyError::Reply(Reply::error(
                &e,
                &self.resource,
                &self.request_id,
            )))
        };
        let (list, parts) = match &mut self.req_body {
            RequestBody::Nothing => {
                return if chunk.is_empty() {
                    Ok(None)
                } else {
                    fail(S3Error::invalid_request(
                        "s3crypt: this operation takes no request body",
                    ))
                };
            }
            RequestBody::Document {
                buf,
                expected,
                doc,
                complete,
            } => {
                if buf.len().saturating_add(chunk.len()) > MAX_XML_BODY {
                    return fail(malformed_document(*doc));
                }
                buf.extend_from_slice(chunk);
                if !end {
                    return Ok(None);
                }
                if let Some(e) = expected {
                    if hex::encode(Sha256::digest(&buf[..])) != *e {
                        return fail(S3Error::sha256_mismatch());
                    }
                }
                if let Err(e) = check_document(*doc, buf) {
                    return fail(e);
                }
                if !*complete {
                    if let Err(e) = check_delete_keys(*doc, buf) {
                        return fail(e);
                    }
                    out.extend_from_slice(buf);
                    return Ok(None);
                }
                let parts = match check_part_numbering(buf) {
                    Ok(n) => n,
                    Err(e) => return fail(e),
                };
                let blanked = blank_part_checksums(buf);
                // A checksum element the blanking did not recognise (attributes, a
                // prefix) would carry a plaintext digest upstream: refused.
                if blanked.windows(8).any(|w| w == b"Checksum") {
                    return fail(S3Error::new(
                        400,
                        "MalformedXML",
                        "s3crypt: part checksums must be plain <ChecksumXXX> elements",
                    ));
                }
                (blanked, parts)
            }
            RequestBody::Upload(u) => {
                let before = out.len();
                return match u.push(chunk, end, out) {
                    Ok(()) => {
                        if let (Some((kept, _)), Some(new)) = (u.stage.as_mut(), out.get(before..))
                        {
                            kept.extend_from_slice(new);
                        }
                        Ok(None)
                    }
                    Err(e) => {
                        out.clear();
                        self.stats.add(Counter::RejectedRequests, 1);
                        Err(BodyError::Reply(Reply::error(
                            &e,
                            &self.resource,
                            &self.request_id,
                        )))
                    }
                };
            }
        };
        // A CompleteMultipartUpload part list is held: the object must end with a final
        // part first.
        let step = self.complete_list_held(list, parts);
        match step {
            Ok(RequestStep::Body(b)) => {
                out.extend_from_slice(&b);
                Ok(None)
            }
            Ok(RequestStep::CallOut(c)) => Ok(Some(c)),
            Ok(RequestStep::Reply(r)) => Err(BodyError::Reply(r)),
            Ok(RequestStep::Forward(_) | RequestStep::Wait(_)) => Err(BodyError::Reply(
                self.reply(&S3Error::internal("s3crypt: unexpected step")),
            )),
            Err(e) => {
                self.stats.add(Counter::RejectedRequests, 1);
                Err(BodyError::Reply(self.reply(&e)))
            }
        }
    }

    /// The backend's response headers.
    /// `end_of_stream`: the response has no body.
    pub fn on_response_headers(&mut self, h: &Headers, end_of_stream: bool) -> ResponseStep {
        let mut out = h.clone();
        let status: u16 = h.get(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let op = self.req.as_ref().map(|r| r.op);
        match op {
            Some(Operation::PutObject) => self.finish_put(status, &mut out),
            Some(Operation::UploadPart) => {
                if let Some(c) = self.finish_part(status, &mut out) {
                    out.remove(ENVELOPE_HEADER);
                    return ResponseStep::ForwardAfter(out, c);
                }
            }
            Some(Operation::AbortMultipartUpload) => {
                // Only an abort the backend confirmed ends the upload: a 404 (say, the
                // right UploadId with another key) leaves its state alone.
                if status == 204 {
                    if let Some(c) = self.forget_upload() {
                        out.remove(ENVELOPE_HEADER);
                        return ResponseStep::ForwardAfter(out, c);
                    }
                }
            }
            Some(Operation::GetObject) | Some(Operation::HeadObject) => {
                if let Err(e) = self.prepare_get(status, &mut out) {
                    self.replace_response(&mut out, &e);
                }
            }
            _ => {
                // An operation that returns no object data answered with an object: the
                // backend routed it elsewhere (to GetObject); nothing of it is released.
                let no_data = self
                    .req
                    .as_ref()
                    .is_some_and(|r| r.spec.response == Response::NoObjectData);
                if no_data && h.contains(ENVELOPE_HEADER) {
                    self.stats.add(Counter::RejectedRequests, 1);
                    self.replace_response(
                        &mut out,
                        &S3Error::internal(
                            "s3crypt: the backend answered this operation with object data; refused",
                        ),
                    );
                } else if let ResponseBody::Xml(..) = self.resp_body {
                    if status == 200 {
                        out.remove("content-length");
                    } else {
                        self.resp_body = ResponseBody::Pass;
                    }
                }
            }
        }
        out.remove(ENVELOPE_HEADER);
        if let ResponseBody::Decrypt(_, hold) = &mut self.resp_body {
            hold.announced = out
                .get("content-length")
                .and_then(|v| v.trim().parse().ok());
        }
        if end_of_stream {
            // No body callback will come: a replacement body cannot be sent.
            if let ResponseBody::Replace(Some(_)) = self.resp_body {
                out.set("content-length", "0");
                self.resp_body = ResponseBody::Replace(None);
            }
        }
        ResponseStep::Forward(out)
    }

    /// UploadPart response: the backend's ETag stays (the client sends it back in
    /// CompleteMultipartUpload); checksums are those of the plaintext part. A short last
    /// part is staged for Complete.
    fn finish_part(&mut self, status: u16, out: &mut Headers) -> Option<CallOut> {
        let RequestBody::Upload(u) = &mut self.req_body else {
            return None;
        };
        if status != 200 {
            return None;
        }
        strip_checksum_headers(out);
        for (k, v) in &u.result_checksums {
            out.set(k, v.clone());
        }
        let geo = *u.enc.geometry();
        let staged = u.stage.take();
        self.stats.add(Counter::BytesEncrypted, geo.plain_len);
        let (cipher, _held) = staged?;
        if cipher.len() as u64 != geo.cipher_len() {
            return None;
        }
        self.stage_part(cipher, geo.part)
    }

    fn finish_put(&mut self, status: u16, out: &mut Headers) {
        let RequestBody::Upload(u) = &self.req_body else {
            return;
        };
        if status != 200 {
            return;
        }
        let Some(md5) = u.result_md5 else { return };
        out.set("etag", format!("\"{}\"", hex::encode(md5)));
        strip_checksum_headers(out);
        for (k, v) in &u.result_checksums {
            out.set(k, v.clone());
        }
        self.stats.add(Counter::ObjectsEncrypted, 1);
        self.stats
            .add(Counter::BytesEncrypted, u.enc.geometry().plain_len);
    }

    fn replace_response(&mut self, out: &mut Headers, e: &S3Error) {
        let r = self.reply(e);
        *out = Headers::new();
        out.set(":status", r.status.to_string());
        for (k, v) in &r.headers {
            out.set(k, v.clone());
        }
        if self.head {
            self.resp_body = ResponseBody::Replace(None);
        } else {
            out.set("content-length", r.body.len().to_string());
            self.resp_body = ResponseBody::Replace(Some(r.body));
        }
    }

    fn not_modified(&mut self, out: &mut Headers, status: u16) {
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
            let r = self.reply(&S3Error::new(
                412,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            ));
            out.set("content-type", "application/xml");
            if !self.head {
                out.set("content-length", r.body.len().to_string());
                self.resp_body = ResponseBody::Replace(Some(r.body));
                return;
            }
        }
        out.set("content-length", "0");
        self.resp_body = ResponseBody::Replace(None);
    }

    fn prepare_get(&mut self, status: u16, out: &mut Headers) -> Result<(), S3Error> {
        let r = self.prepare_get_inner(status, out);
        if self.head && r.is_ok() {
            self.resp_body = ResponseBody::Pass; // a HEAD response has no body to transform
        }
        r
    }

    fn prepare_get_inner(&mut self, status: u16, out: &mut Headers) -> Result<(), S3Error> {
        if (200..300).contains(&status) && status != 200 && status != 206 {
            // A success without object data the filter can check (203, 204, ...): nothing
            // of it is released.
            return Err(self.integrity());
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
        let Some(ev) = envelope else {
            // No envelope: a plaintext object being migrated, or one whose envelope the
            // provider stripped. Only served inside a configured passthrough scope.
            let (bucket, key) = self.req.as_ref().map_or(("", ""), |r| {
                (
                    r.bucket.as_deref().unwrap_or(""),
                    r.key.as_deref().unwrap_or(""),
                )
            });
            if !self.cfg.passthrough_allowed(bucket, key) {
                return Err(self.integrity());
            }
            self.stats.add(Counter::PlaintextServed, 1);
            self.stats.note(&format!(
                "s3crypt: serving unencrypted object {bucket}/{key} (passthrough scope)"
            ));
            let etag = out.get("etag").map(str::to_string);
            if let Some(st) = self.check_conditions(etag.as_deref()) {
                self.not_modified(out, st);
                return Ok(());
            }
            return self.window(out, start, sent_len, total, None);
        };
        let (env, dek) = self.open_envelope(&ev)?;
        if env.layout == Layout::Part {
            return self.prepare_multipart_get(status, out, total, env, dek);
        }
        let geo = Geometry::single_from_cipher(total)
            .filter(|g| Some(g.plain_len) == env.plain_len)
            .ok_or_else(|| {
                self.stats.add(Counter::IntegrityFailures, 1);
                S3Error::integrity()
            })?;
        let etag = match env.md5 {
            Some(m) => format!("\"{}\"", hex::encode(m)),
            None => out.get("etag").unwrap_or("").to_string(),
        };
        if let Some(st) = self.check_conditions(Some(&etag)) {
            self.not_modified(out, st);
            out.set("etag", etag);
            return Ok(());
        }
        out.set("etag", etag);
        strip_checksum_headers(out);
        if let (Some(c), true, None) = (&env.checksum, self.get.checksum_mode, self.get.range) {
            out.set(&c.header, c.value.clone());
        }
        self.window(out, start, sent_len, total, Some((env, dek, geo)))
    }

    /// A whole multipart object: its plaintext size follows from the stored size and the
    /// part count of its `-N` ETag; the parts are decrypted one after the other.
    fn prepare_multipart_get(
        &mut self,
        status: u16,
        out: &mut Headers,
        total: u64,
        env: Envelope,
        dek: DataKey,
    ) -> Result<(), S3Error> {
        let etag = out.get("etag").unwrap_or("").to_string();
        let integrity = |st: &Rc<dyn Stats>| {
            st.add(Counter::IntegrityFailures, 1);
            S3Error::integrity()
        };
        if let Some(mp) = self.get.multipart.take() {
            return self.multipart_range(status, out, mp, env, dek);
        }
        let parts = parts_in_etag(&etag).ok_or_else(|| integrity(&self.stats))?;
        let plain = parts
            .checked_mul(crate::format::PART_OVERHEAD)
            .and_then(|o| total.checked_sub(o))
            .ok_or_else(|| integrity(&self.stats))?;
        if self.get.range.is_some() || status == 206 {
            return Err(S3Error::not_implemented(
                "s3crypt: ranged reads of multipart objects are not enabled in this build",
            ));
        }
        if let Some(st) = self.check_conditions(Some(&etag)) {
            self.not_modified(out, st);
            return Ok(());
        }
        strip_checksum_headers(out);
        out.set(":status", "200");
        out.remove("content-range");
        out.set("content-length", plain.to_string());
        self.resp_body = ResponseBody::Decrypt(
            Box::new(PartsDecryptor::new(
                env.suite,
                &dek,
                parts,
                env.version >= 2,
            )),
            Holdback::default(),
        );
        Ok(())
    }

    /// A planned range or part of a multipart object.
    fn multipart_range(
        &mut self,
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
        if let Some(st) = self.check_conditions(Some(&mp.etag)) {
            self.not_modified(out, st);
            return Ok(());
        }
        if !self.head {
            let sent = out.get("content-range").and_then(parse_content_range);
            if status != 206
                || sent.map(|(a, b, _)| (a, b)) != Some((mp.plan.stored_first, mp.plan.stored_last))
            {
                return Err(self.integrity());
            }
        }
        strip_checksum_headers(out);
        out.set(":status", "206");
        out.set(
            "content-range",
            range::content_range(mp.first, mp.last, mp.plain_total),
        );
        out.set("content-length", (mp.last - mp.first + 1).to_string());
        if self.get.part_number.is_some() {
            out.set("x-amz-mp-parts-count", mp.parts.to_string());
        }
        self.resp_body = ResponseBody::Decrypt(
            Box::new(RangeDecryptor::new(env.suite, &dek, mp.plan)),
            Holdback::default(),
        );
        Ok(())
    }

    /// Evaluates If-Match / If-None-Match against the client-visible ETag:
    /// `Some(412)` or `Some(304)` when the request must not get the object.
    fn check_conditions(&self, etag: Option<&str>) -> Option<u16> {
        let etag = etag.unwrap_or("");
        if let Some(m) = &self.get.if_match {
            if !etag_list_matches(m, etag) {
                return Some(412);
            }
        }
        if let Some(m) = &self.get.if_none_match {
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
        out: &mut Headers,
        start: u64,
        sent_len: u64,
        total: u64,
        enc: Option<(Envelope, DataKey, Geometry)>,
    ) -> Result<(), S3Error> {
        let plain_total = enc.as_ref().map(|(_, _, g)| g.plain_len).unwrap_or(total);
        let wanted =
            match self.get.range {
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
            last - first + 1
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
        let sent_end = start + sent_len; // exclusive
        match enc {
            None => {
                if first < start || (len > 0 && first + len > sent_end) {
                    return Err(S3Error::internal(
                        "s3crypt: the backend returned an unexpected range",
                    ));
                }
                self.resp_body = ResponseBody::Trim {
                    skip: first - start,
                    take: len,
                };
            }
            Some((env, dek, geo)) => {
                if len == 0 {
                    // An empty object: no frames; the envelope tag authenticated it.
                    self.resp_body = ResponseBody::Replace(None);
                    self.stats.add(Counter::ObjectsDecrypted, 1);
                    return Ok(());
                }
                let (i0, i1) = (geo.frame_of(first), geo.frame_of(last));
                let c0 = geo.frame_cipher_start(i0);
                let c1 = geo.frame_cipher_start(i1) + geo.frame_plain_len(i1) + FRAME_OVERHEAD;
                if c0 < start || c1 > sent_end {
                    self.stats.add(Counter::IntegrityFailures, 1);
                    return Err(S3Error::integrity());
                }
                let skip = first - geo.frame_plain_start(i0);
                let w = Window {
                    lead: c0 - start,
                    first: i0,
                    last: i1,
                    skip,
                    take: len,
                };
                self.resp_body = ResponseBody::Decrypt(
                    Box::new(FrameDecryptor::new(env.suite, &dek, geo, w)),
                    Holdback::default(),
                );
            }
        }
        Ok(())
    }

    /// A response body chunk; the bytes to send downstream are written to `out`.
    /// `Ok(Some(call-out))` (only at the end): hold the response until it answered.
    pub fn on_response_body(
        &mut self,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<CallOut>, BodyError> {
        let mut hold = None;
        match &mut self.resp_body {
            ResponseBody::Pass => out.extend_from_slice(chunk),
            ResponseBody::Trim { skip, take } => {
                let s = (*skip).min(chunk.len() as u64) as usize;
                *skip -= s as u64;
                let rest = chunk.get(s..).unwrap_or(&[]);
                let n = (*take).min(rest.len() as u64) as usize;
                out.extend_from_slice(rest.get(..n).unwrap_or(&[]));
                *take -= n as u64;
                if end && *take > 0 {
                    return Err(BodyError::Reset(
                        "s3crypt: backend response ended early".into(),
                    ));
                }
            }
            ResponseBody::Decrypt(d, hold) => {
                let before = out.len();
                let r = d
                    .push(chunk, out)
                    .and_then(|_| if end { d.finish() } else { Ok(()) })
                    .and_then(|()| hold.apply(out, before, end));
                if let Err(e) = r {
                    out.truncate(before);
                    self.stats.add(Counter::IntegrityFailures, 1);
                    return Err(BodyError::Reset(format!(
                        "s3crypt: stored object failed verification ({e:?}); stream reset"
                    )));
                }
                self.released += (out.len() - before) as u64;
                if end {
                    self.stats.add(Counter::ObjectsDecrypted, 1);
                    self.stats.add(Counter::BytesDecrypted, self.released);
                }
            }
            ResponseBody::Xml(buf, how) => {
                buf.extend_from_slice(chunk);
                // A listing page (at most 1,000 entries) is well below this.
                if buf.len() > MAX_XML_BODY {
                    return Err(BodyError::Reset(
                        "s3crypt: listing response too large".into(),
                    ));
                }
                if end {
                    let text = String::from_utf8_lossy(buf).into_owned();
                    let rewritten = match how {
                        XmlRewrite::CopyEtag(etag) => {
                            xml::replace_element_text(&text, "ETag", etag).unwrap_or(text)
                        }
                        XmlRewrite::PartSizes => xml::rewrite_sizes(&text, &mut |size, _| {
                            size.checked_sub(crate::format::PART_OVERHEAD)
                        })
                        .map_err(|_| BodyError::Reset("s3crypt: unparseable part list".into()))?,
                        XmlRewrite::RecordUpload(env) => {
                            let id = xml::element_text(&text, "UploadId").unwrap_or_default();
                            let object = self.req.as_ref().map(Self::object_of).unwrap_or_default();
                            let kek = self
                                .cfg
                                .active_kek()
                                .ok_or_else(|| BodyError::Reset("s3crypt: no active key".into()))?;
                            let value = UploadState {
                                created: self.clock.now(),
                                object,
                                envelope: env.clone(),
                            }
                            .seal(&id, &self.cfg.active_key_id, kek);
                            if id.is_empty() {
                                return Err(BodyError::Reset(
                                    "s3crypt: no UploadId in the backend's answer".into(),
                                ));
                            }
                            match self.cfg.plugin.state_store {
                                StateStore::SharedData => {
                                    if !self.store.set(&state::shared_key(&id), value.as_bytes()) {
                                        return Err(BodyError::Reset(
                                            "s3crypt: could not record the upload state".into(),
                                        ));
                                    }
                                }
                                StateStore::Redis => {
                                    let ttl = self.cfg.plugin.upload_ttl_secs;
                                    let r = state::setex(
                                        &self.cfg,
                                        &state::redis_key(&id),
                                        ttl,
                                        value.as_bytes(),
                                    );
                                    hold = Some(self.webdis(r));
                                    self.pending = Pending::Record {
                                        upload_id: id,
                                        value,
                                    };
                                }
                            }
                            text
                        }
                        XmlRewrite::CompleteCleanup => {
                            if !text.contains("<Error>") {
                                hold = self.forget_upload();
                            }
                            text
                        }
                        XmlRewrite::ListingSizes => xml::rewrite_sizes(&text, &mut |size, etag| {
                            crate::format::plain_size_from_listing(size, etag)
                        })
                        .map_err(|_| BodyError::Reset("s3crypt: unparseable listing".into()))?,
                    };
                    out.extend_from_slice(rewritten.as_bytes());
                }
            }
            ResponseBody::Replace(body) => {
                if let Some(b) = body.take() {
                    out.extend_from_slice(&b);
                }
            }
        }
        Ok(hold)
    }
}

/// A failed step of a multipart copy: the backend's S3 error if it sent one.
fn copy_failed(status: Option<u16>) -> S3Error {
    match status {
        Some(412) => precondition_failed(),
        Some(404) => no_such_key(),
        Some(403) => S3Error::access_denied("Access Denied"),
        _ => S3Error::service_unavailable(
            "s3crypt: the multipart copy failed at the backend; please retry",
        ),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.000Z`
fn iso8601(unix: i64) -> String {
    let d = sigv4::amz_date(unix); // YYYYMMDDTHHMMSSZ
    let g = |a: usize, b: usize| d.get(a..b).unwrap_or("00");
    format!(
        "{}-{}-{}T{}:{}:{}.000Z",
        g(0, 4),
        g(4, 6),
        g(6, 8),
        g(9, 11),
        g(11, 13),
        g(13, 15)
    )
}

/// Upstream path of the object named by `x-amz-copy-source` (with its versionId).
fn copy_source_path(h: &Headers) -> Result<String, S3Error> {
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
/// against the ETag clients see (for single-part objects the backend's ETag is that of
/// the ciphertext; the envelope keeps the plaintext MD5 when there is one, sealed: `md5_of`
/// opens it).
fn copy_source_ok<'a>(
    resp: Option<&'a Headers>,
    if_match: Option<&str>,
    if_none: Option<&str>,
    md5_of: &dyn Fn(&str) -> Option<[u8; 16]>,
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
    let visible_etag = resp
        .get(ENVELOPE_HEADER)
        .and_then(md5_of)
        .map(|m| format!("\"{}\"", hex::encode(m)))
        .or_else(|| resp.get("etag").map(str::to_string))
        .unwrap_or_default();
    if if_match.is_some_and(|m| !etag_list_matches(m, &visible_etag))
        || if_none.is_some_and(|m| etag_list_matches(m, &visible_etag))
    {
        return Err(precondition_failed());
    }
    Ok(resp)
}

fn no_such_key() -> S3Error {
    S3Error::new(404, "NoSuchKey", "The specified key does not exist.")
}

fn precondition_failed() -> S3Error {
    S3Error::new(
        412,
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
    )
}

/// `bytes=first-last` of `x-amz-copy-source-range`, checked against the source size.
fn copy_source_range(v: &str, size: u64) -> Result<(u64, u64), S3Error> {
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
        return Err(S3Error::invalid_argument(format!(
            "Range specified is not valid for source object of size: {size}"
        )));
    }
    Ok((a, b))
}

/// The backend refused the UploadPart of an UploadPartCopy.
fn part_put_failed(status: Option<u16>, body: &str) -> S3Error {
    match (status, xml::element_text(body, "Code").as_deref()) {
        (_, Some("NoSuchUpload")) | (Some(404), _) => no_such_upload(),
        (Some(403), _) => S3Error::access_denied("Access Denied"),
        _ => S3Error::service_unavailable("s3crypt: the part could not be stored; please retry"),
    }
}

fn no_such_upload() -> S3Error {
    S3Error::new(404, "NoSuchUpload", "The specified multipart upload does not exist. The upload ID might be invalid, or the multipart upload might have been aborted or completed.")
}

fn invalid_part_number() -> S3Error {
    S3Error::new(
        416,
        "InvalidPartNumber",
        "The requested partnumber is not satisfiable",
    )
}

/// The part count of a multipart ETag (`"<hex>-N"`).
/// What encrypting one part of an upload needs: its number and the upload's suite, data
/// key and envelope version.
struct PartKey {
    number: u32,
    suite: Suite,
    dek: DataKey,
    v2: bool,
}

/// The geometry a part is written in: layout `final` for the parts of version 2 uploads
/// that can only be last (FORMAT.md), `part` otherwise.
fn part_geometry(v2: bool, number: u32, plain_len: u64) -> Geometry {
    let layout = if v2 && crate::format::part_is_final(number, plain_len) {
        Layout::Final
    } else {
        Layout::Part
    };
    Geometry::part_in(layout, number, plain_len)
}

/// The parts 1..=last of a Complete with the client's ETags.
fn listed_parts(c: &Completing) -> impl Iterator<Item = (u32, &str)> {
    (1u32..).zip(c.etags.iter().map(String::as_str))
}

/// The part list as the client sent it (numbers and ETags checked), rebuilt.
fn complete_as_listed(c: &Completing) -> Result<RequestStep, S3Error> {
    Ok(RequestStep::Body(part_list(listed_parts(c), c.length)?))
}

/// A CompleteMultipartUpload part list of exactly these parts, padded with spaces to
/// `length` bytes when that length was announced.
fn part_list<'a>(
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
        let pad = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(out.len() + close.len()))
            .ok_or_else(|| {
                S3Error::internal("s3crypt: the part list does not fit its announced length")
            })?;
        out.resize(out.len() + pad, b' ');
    }
    out.extend_from_slice(close);
    Ok(out)
}

/// An ETag as hex digits to compare: quotes and case dropped.
fn etag_hex(e: &str) -> String {
    e.trim().trim_matches('"').to_ascii_lowercase()
}

/// (part number, stored size) of each part in a ListParts answer, and the marker for the
/// next page if the answer is truncated.
type ListedParts = (Vec<(u32, u64)>, Option<u32>);

/// Reads a ListParts answer (its `<Part>` elements in whatever order the backend gave).
fn parse_list_parts(xml: &str) -> Option<ListedParts> {
    let mut parts = Vec::new();
    let mut pos = 0;
    while let Some(i) = xml.get(pos..)?.find("<Part>") {
        let start = pos + i;
        let end = start + xml.get(start..)?.find("</Part>")?;
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

fn malformed_part_list() -> S3Error {
    S3Error::new(
        400,
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema.",
    )
}

fn invalid_part() -> S3Error {
    S3Error::new(
        400,
        "InvalidPart",
        "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
    )
}

/// The bytes of a read made to find a part table: a 206 of the version `etag` names.
fn table_read<'a>(etag: &str, resp: Option<(&Headers, &'a [u8])>) -> Result<&'a [u8], S3Error> {
    let Some((h, body)) = resp.filter(|(h, _)| h.get(":status") == Some("206")) else {
        return Err(S3Error::slow_down(
            "s3crypt: the object changed or could not be read while its part table was read; please retry",
        ));
    };
    if h.get("etag").is_some_and(|e| e != etag) {
        return Err(S3Error::slow_down(
            "s3crypt: the object changed; please retry",
        ));
    }
    Ok(body)
}

fn parts_in_etag(etag: &str) -> Option<u64> {
    etag.trim_matches('"')
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .filter(|n| (1..=10_000).contains(n))
}

/// Shared-data key of a multipart object's part table: one per object version.
/// Slots of the part-table cache per Envoy process: a table lives in the slot its object
/// version hashes to, so the cache holds at most this many tables (each at most about
/// 150 KB, for 10,000 parts; typically well under 1 KB) whatever is read.
const TABLE_SLOTS: u64 = 256;

/// Shared-data key of the cache slot for an object version (ETag and stored size), and
/// the version tag stored in it.
/// The object version a part table belongs to: ETag and stored size, which the provider
/// reports, and the object's wrapped data key, which it cannot forge for another object
/// (a table cached for one object never serves another with the same ETag and size).
fn table_version(etag: &str, stored: u64, env: &Envelope) -> String {
    format!(
        "{}/{stored}/{}",
        etag.trim_matches('"'),
        hex::encode(env.wrapped_dek)
    )
}

/// The cache slot of an object version.
fn table_slot(version: &str) -> String {
    let h = Sha256::digest(version.as_bytes());
    let n = u64::from_be_bytes(h[..8].try_into().unwrap_or([0; 8])) % TABLE_SLOTS;
    format!("s3crypt/pt/{n}")
}

/// `path` without query parameter `name`.
fn remove_query_param(path: &str, name: &str) -> String {
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

/// The SHA-256 a document body (or an empty body) was signed with, `None` for
/// `UNSIGNED-PAYLOAD`; aws-chunked framing is only decoded for uploads.
fn document_hash(v: &VerifiedRequest) -> Result<Option<String>, S3Error> {
    match &v.payload {
        PayloadMode::Sha256(h) => Ok(Some(h.clone())),
        PayloadMode::Unsigned => Ok(None),
        _ => Err(S3Error::not_implemented(
            "s3crypt: aws-chunked bodies are only supported for uploads",
        )),
    }
}

/// A CompleteMultipartUpload part list must number its parts 1, 2, 3, … without gaps:
/// readers of the object check that numbering (docs/FORMAT.md), so that a swapped,
/// duplicated or missing part is found before any of it is released.
/// Returns the number of parts.
fn check_part_numbering(list: &[u8]) -> Result<u32, S3Error> {
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

/// The keys of a DeleteObjects document follow the same rules as request keys.
fn check_delete_keys(doc: Doc, body: &[u8]) -> Result<(), S3Error> {
    if let Doc::Xml {
        roots: ["Delete"], ..
    } = doc
    {
        let text = String::from_utf8_lossy(body);
        for k in xml::element_texts(&text, "Key") {
            s3::check_key(&k)?;
        }
    }
    Ok(())
}

/// The error for a document body the operation does not accept.
fn malformed_document(doc: Doc) -> S3Error {
    match doc {
        Doc::Json => S3Error::new(400, "MalformedPolicy", "Policies must be valid JSON objects."),
        Doc::Xml { .. } => S3Error::new(400, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema."),
    }
}

/// A document body is what its operation accepts: a JSON object, or XML with one of the
/// expected root elements (or nothing, where the operation allows no body). Anything
/// else (object data sent to a configuration endpoint) is never forwarded.
fn check_document(doc: Doc, body: &[u8]) -> Result<(), S3Error> {
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

/// The part list of a CompleteMultipartUpload with every `<ChecksumXXX>` element replaced by
/// spaces of the same length: the checksums describe plaintext parts the backend never
/// saw, and keeping the length keeps the Content-Length that was already sent upstream.
fn blank_part_checksums(xml: &[u8]) -> Vec<u8> {
    let mut out = xml.to_vec();
    let Ok(text) = std::str::from_utf8(xml) else {
        return out;
    };
    let mut pos = 0;
    while let Some(i) = text
        .get(pos..)
        .and_then(|t| t.find("<Checksum"))
        .map(|i| i + pos)
    {
        let Some(name_end) = text.get(i..).and_then(|t| t.find('>')).map(|j| i + j) else {
            break;
        };
        let name = text.get(i + 1..name_end).unwrap_or("");
        let close = format!("</{name}>");
        let Some(end) = text
            .get(name_end..)
            .and_then(|t| t.find(&close))
            .map(|j| name_end + j + close.len())
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

/// The path without an empty `delimiter=` parameter.
fn drop_empty_param_delimiter(path: &str) -> String {
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
fn strip_integrity_headers(up: &mut Headers) {
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

fn strip_checksum_headers(h: &mut Headers) {
    h.0.retain(|(k, _)| {
        let k = k.to_ascii_lowercase();
        !(k.starts_with("x-amz-checksum-") && k != "x-amz-checksum-mode")
    });
}

/// The checksum a PUT announces: a value header (verified against the body) or an
/// algorithm to compute (returned to the client).
fn checksum_request(
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

/// The upstream range for a plaintext range: a superset of both the frames that hold it
/// (if the object is encrypted) and the bytes themselves (if it is not).
fn widened_range(spec: RangeSpec) -> String {
    let f = SINGLE_FRAME;
    let s = SINGLE_FRAME + FRAME_OVERHEAD;
    match spec {
        RangeSpec::FromTo(a, b) => format!(
            "bytes={}-{}",
            (a / f) * f,
            (b / f + 1).saturating_mul(s).saturating_sub(1).max(b)
        ),
        RangeSpec::From(a) => format!("bytes={}-", (a / f) * f),
        RangeSpec::Suffix(n) => format!("bytes=-{}", (n.div_ceil(f) + 1).saturating_mul(s).max(n)),
    }
}

/// `bytes a-b/total` → (a, b, total).
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
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
fn etag_list_matches(list: &str, etag: &str) -> bool {
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

#[cfg(test)]
mod boundary_tests;

#[cfg(test)]
mod tests;
