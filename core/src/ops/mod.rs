//! The per-request state machines, in plain Rust: one per S3 operation (family), each in
//! its own module with a private state type that holds exactly what that operation needs,
//! all driven by the same events.
//!
//! The shell feeds an [`Exchange`] the client's request headers, body chunks, the result
//! of a call-out if one was asked for (matched by its token), then the backend's response
//! headers and body chunks, and applies what it returns. Nothing here knows about
//! proxy-wasm. An [`Exchange`] verifies and parses the request (the boundary, `request`),
//! then hands every later event to the operation's state machine:
//!
//! | module      | operations |
//! |-------------|------------|
//! | `put`       | PutObject (and the encrypting body UploadPart shares) |
//! | `multipart` | CreateMultipartUpload, UploadPart, AbortMultipartUpload |
//! | `complete`  | CompleteMultipartUpload |
//! | `get`       | GetObject, HeadObject (ranges, part reads) |
//! | `copy`      | CopyObject (single and multipart sources) |
//! | `part_copy` | UploadPartCopy |
//! | `list_parts`| ListParts (plaintext sizes and ETags) |
//! | `pass`      | listings and the pass-through operations of the table |
//! | `attributes`| GetObjectAttributes (answered by the filter) |
//! | `condition` | write conditions checked before PutObject, Complete, CopyObject, DeleteObject |
//!
//! Shared parts: `cx` (the request context and its helpers), `response` (what happens
//! to a response body), `table` (part-table lookups), `staging` (short last parts),
//! `vm` (per-VM state), [`ports`] (the effects).
//!
//! Fail-closed rules kept here:
//! * a PUT body only ever leaves as ciphertext, and the final frame is withheld until
//!   every check of the plaintext passed (signature, hashes, length), so on any error the
//!   backend sees a short body and stores nothing;
//! * a GET body is only released frame by frame after each tag verified; a failure after
//!   the headers were sent is reported as [`BodyError::Reset`].

use std::rc::Rc;

use crate::auth::sigv4;
use crate::config::Config;
use crate::format::ENVELOPE_HEADER;
use crate::headers::Headers;
use crate::s3::error::S3Error;
use crate::s3::{self, Operation};

mod attributes;
mod complete;
mod condition;
mod copy;
mod cors;
mod cx;
mod etags;
mod get;
mod list_parts;
pub(crate) mod listing;
mod multipart;
mod part_copy;
mod pass;
pub mod ports;
mod predecessor;
mod put;
mod request;
mod response;
mod staging;
mod table;
mod upstream;
mod vm;

pub use ports::*;
pub use vm::VmState;

use cx::Cx;
use request::{no_body, refuse_body, upstream_headers, verified_view};
use response::RespBody;

/// A response the filter answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The S3 XML error reply for `e` (the shells use it too, for what they refuse
    /// themselves). Without a request id there is no `x-amz-request-id` header.
    pub fn error(e: &S3Error, resource: &str, request_id: &str) -> Reply {
        let mut headers = vec![("content-type".into(), "application/xml".into())];
        if !request_id.is_empty() {
            headers.push(("x-amz-request-id".into(), request_id.into()));
        }
        Reply {
            status: e.status,
            headers,
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
    /// Keep holding the response until this further call-out answered too.
    Then(CallOut),
    /// The response body is held at its end (every chunk was emptied): these bytes are
    /// all of it; let the response continue.
    Body(Vec<u8>),
    /// Keep holding the response and make this call-out too.
    Lookup(CallOut),
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
    /// The backend answered before the request's document arrived whole and was checked
    /// (it may answer without reading a body): hold the response (nothing of it goes
    /// out) and give it to [`Exchange::on_response_headers`] again once the request
    /// ended; a refused document is then answered instead, as an S3 error.
    AfterRequest,
}

/// A body error: before the response started, an S3 error to answer; after, a reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Reply(Reply),
    Reset(String),
}

/// The operation a request is, with its state.
enum Op {
    /// No verified request (yet, or it was answered here): every later event is refused
    /// or passed as nothing.
    Idle,
    Pass(Box<pass::Pass>),
    Put(Box<put::Put>),
    Create(Box<multipart::Create>),
    Part(Box<multipart::Part>),
    Abort(Box<multipart::Abort>),
    Complete(Box<complete::Complete>),
    Get(Box<get::Get>),
    Copy(Box<copy::Copy>),
    PartCopy(Box<part_copy::UploadPartCopy>),
    Attributes(Box<attributes::Attributes>),
    /// A write waiting for the HEAD its `If-Match` is checked against.
    Precondition(Box<Precondition>),
    ListParts(Box<list_parts::ListParts>),
    Preflight(Box<cors::Preflight>),
}

/// One request/response exchange.
pub struct Exchange {
    cx: Cx,
    op: Op,
    /// The host's token of the call-out in flight.
    token: Option<u32>,
    /// The client's request ended (headers without body, or the body's last chunk).
    request_ended: bool,
}

/// The status and body of a call-out's answer (`None` and nothing when it failed).
fn answer<'a>(resp: Option<(&Headers, &'a [u8])>) -> (Option<u16>, &'a [u8]) {
    let status = resp.and_then(|(h, _)| h.get(":status")?.parse().ok());
    (status, resp.map_or(&[][..], |(_, b)| b))
}

/// Browser POST uploads (POST Object: an HTML form whose policy document and signature
/// travel in the multipart/form-data body, not in headers) are not supported: refused
/// before anything else with a message that says so and what to use instead. (Such a
/// request has no SigV4 header signature, so it would be refused anyway, as a confusing
/// 403.) README "Known limits" says why.
fn refuse_browser_post(method: &str, raw: &str, h: &Headers) -> Result<(), S3Error> {
    let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
    let form = h.get("content-type").is_some_and(|t| {
        t.trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/form-data")
    });
    if method == "POST" && form && query.is_empty() && !path.trim_matches('/').contains('/') {
        return Err(S3Error::not_implemented(
            "s3crypt: browser POST uploads (POST Object with a policy document) are not supported; \
             use a presigned PUT URL",
        ));
    }
    Ok(())
}

/// A call-out response no state waits for.
fn unexpected_callout(cx: &Cx) -> CallOutStep {
    CallOutStep::Request(cx.reject(&S3Error::internal("s3crypt: unexpected call-out response")))
}

impl Exchange {
    pub fn new(cfg: Rc<Config>, ports: Ports, vm: Rc<VmState>, request_id: String) -> Exchange {
        Exchange {
            cx: Cx {
                cfg,
                ports,
                vm,
                request_id,
                resource: String::new(),
                head: false,
                req: None,
                client: None,
                sse: cx::SseHeaders::default(),
            },
            op: Op::Idle,
            token: None,
            request_ended: false,
        }
    }

    /// Request id for error bodies (Envoy's x-request-id).
    pub fn set_request_id(&mut self, id: &str) {
        self.cx.request_id = id.to_string();
    }

    /// The client's request headers. `end_of_stream`: the request has no body.
    pub fn on_request_headers(
        &mut self,
        raw_headers: &Headers,
        end_of_stream: bool,
    ) -> RequestStep {
        self.request_ended = end_of_stream;
        match self.start(raw_headers, end_of_stream) {
            Ok((op, step)) => {
                self.op = op;
                step
            }
            Err(e) => self.cx.reject(&e),
        }
    }

    /// The request boundary: the signature verified, only what it covers read, the
    /// request parsed and the upstream request rebuilt; then the operation starts.
    fn start(&mut self, raw_headers: &Headers, eos: bool) -> Result<(Op, RequestStep), S3Error> {
        let method = raw_headers.get(":method").unwrap_or("").to_string();
        let raw = raw_headers.get(":path").unwrap_or("/").to_string();
        self.cx.resource = raw.split('?').next().unwrap_or("/").to_string();
        self.cx.head = method == "HEAD";
        if method == "OPTIONS" {
            // A CORS preflight: unsigned by design, rebuilt from an allow-list.
            let (op, up) = cors::Preflight::start(&self.cx, raw_headers, eos)?;
            return Ok((Op::Preflight(Box::new(op)), RequestStep::Forward(up)));
        }
        refuse_browser_post(&method, &raw, raw_headers)?;
        let cfg = Rc::clone(&self.cx.cfg);
        let secret = |ak: &str| cfg.client_secret(ak);
        let skew = cfg.plugin.max_clock_skew_secs;
        let verified =
            sigv4::verify_with_skew(&method, &raw, raw_headers, &secret, self.cx.now(), skew)
                .inspect_err(|_| self.cx.count(Counter::AuthFailures, 1))?;
        self.cx.client = Some(verified.access_key.clone());
        // From here on the filter reads only what the client signed.
        let h = verified_view(raw_headers, &verified)?;
        let req = s3::parse_request(
            &method,
            &sigv4::strip_presign_params(&raw),
            &h,
            &cfg.plugin.virtual_host_suffixes,
        )?;
        // The envelope's name is reserved: a client may not write or forge it.
        if h.contains(ENVELOPE_HEADER) {
            return Err(S3Error::invalid_argument(format!(
                "s3crypt: the metadata name {ENVELOPE_HEADER} is reserved"
            )));
        }
        // While the predecessor's objects are read, its manifests are its own.
        if cfg.predecessor.is_some() {
            let copied = h
                .get("x-amz-copy-source")
                .and_then(|v| s3::parse_copy_source(v).ok())
                .is_some_and(|(_, k, _)| crate::predecessor::is_internal(&k));
            if copied
                || req
                    .key
                    .as_deref()
                    .is_some_and(crate::predecessor::is_internal)
            {
                return Err(S3Error::access_denied(format!(
                    "s3crypt: {} holds the manifests of the predecessor's objects",
                    crate::predecessor::INTERNAL_PREFIX
                )));
            }
        }
        let up = upstream_headers(raw_headers, &h, &req, &cfg.plugin.upstream_authority)?;
        let cx = &mut self.cx;
        cx.req = Some(req);
        cx.sse = cx::SseHeaders::of(&h);
        let cx = &*cx;
        let Some(req) = cx.req.as_ref() else {
            return Err(S3Error::internal("s3crypt: no request"));
        };
        let v = &verified;
        let mut up = up;
        if matches!(
            req.op,
            Operation::PutObject
                | Operation::CompleteMultipartUpload
                | Operation::CopyObject
                | Operation::DeleteObject
        ) {
            if let Some(list) = condition::write_conditions(cx, &h, &mut up)? {
                // The client's If-Match is checked against the ETag it sees first.
                let head = cx.sse_request_at("HEAD", cx.object_path(), None, cx::SseFor::Object);
                let pending = Precondition {
                    h,
                    up,
                    verified,
                    eos,
                    list,
                    head: None,
                };
                return Ok((
                    Op::Precondition(Box::new(pending)),
                    RequestStep::CallOut(cx.backend_callout(head)),
                ));
            }
        }
        start_op(cx, &h, up, v, eos)
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
        self.request_ended |= end;
        let cx = &self.cx;
        let r = match &mut self.op {
            Op::Put(o) => o.request_body(chunk, end, out).map(|()| None),
            Op::Part(o) => o.request_body(chunk, end, out).map(|()| None),
            Op::Complete(o) => o.request_body(cx, chunk, end, out),
            Op::Pass(o) => o.request_body(chunk, end, out).map(|()| None),
            Op::Create(o) => o.request_body(chunk, end, out).map(|()| None),
            Op::Abort(o) => o.request_body(chunk, end, out).map(|()| None),
            Op::Copy(o) => o.request_body(chunk, end, out).map(|()| None),
            Op::PartCopy(o) => o.request_body(chunk, end, out).map(|()| None),
            Op::ListParts(o) => o.request_body(chunk, end, out).map(|()| None),
            Op::Get(_) | Op::Preflight(_) | Op::Attributes(_) | Op::Precondition(_) | Op::Idle => {
                refuse_body(chunk).map(|()| None)
            }
        };
        r.map_err(|e| {
            // Nothing of a refused body goes upstream.
            out.clear();
            cx.count(Counter::RejectedRequests, 1);
            BodyError::Reply(cx.reply(&e))
        })
    }

    /// The host dispatched the call-out the pending state asked for under `token`.
    pub fn dispatched(&mut self, token: u32) {
        self.token = Some(token);
    }

    /// A call-out response as the host delivers it: `None` (refused, logged, nothing
    /// changes) unless `token` is that of the call-out dispatched for the pending state.
    pub fn on_callout_response_with(
        &mut self,
        token: u32,
        resp: Option<(&Headers, &[u8])>,
    ) -> Option<CallOutStep> {
        if self.token != Some(token) {
            self.cx.note(&format!(
                "s3crypt: a call-out response with token {token} is not this request's (waiting for {:?}); ignored",
                self.token
            ));
            return None;
        }
        self.token = None;
        Some(self.on_callout_response(resp))
    }

    /// A call-out response (or `None`: it failed or timed out) for the pending state.
    pub fn on_callout_response(&mut self, resp: Option<(&Headers, &[u8])>) -> CallOutStep {
        if let Op::Precondition(_) = self.op {
            let Op::Precondition(p) = std::mem::replace(&mut self.op, Op::Idle) else {
                return unexpected_callout(&self.cx);
            };
            return self.precondition_checked(*p, resp);
        }
        let cx = &self.cx;
        match &mut self.op {
            Op::Create(o) => o.callout(cx, resp),
            Op::Part(o) => o.callout(cx, resp),
            Op::Abort(o) => o.callout(cx, resp),
            Op::Complete(o) => o.callout(cx, resp),
            Op::Get(o) => o.callout(cx, resp),
            Op::Copy(o) => o.callout(cx, resp),
            Op::PartCopy(o) => o.callout(cx, resp),
            Op::Attributes(o) => o.callout(cx, resp),
            Op::ListParts(o) => o.callout(cx, resp),
            Op::Pass(o) => o.callout(cx, resp),
            Op::Put(_) | Op::Preflight(_) | Op::Precondition(_) | Op::Idle => {
                unexpected_callout(cx)
            }
        }
    }

    /// The HEAD a write's `If-Match` is checked against answered: the write starts with
    /// `If-Match: <backend ETag>` upstream, or is answered here (412, 404).
    fn precondition_checked(
        &mut self,
        mut p: Precondition,
        resp: Option<(&Headers, &[u8])>,
    ) -> CallOutStep {
        let cx = &self.cx;
        let (head, learnt) = match p.head.take() {
            // The trailer of the version the HEAD saw answered: its ETag is known.
            Some(head) => match etags::trailer_learnt(cx, &head, resp) {
                Ok(k) => (head, Some(k)),
                Err(e) => return CallOutStep::Request(cx.reject(&e)),
            },
            None => {
                let Some((h, _)) = resp else {
                    return CallOutStep::Request(cx.reject(&S3Error::service_unavailable(
                        "s3crypt: the object could not be read; please retry",
                    )));
                };
                if let Some(call) = etags::trailer_needed(cx, h, cx::SseFor::Object) {
                    p.head = Some(h.clone());
                    self.op = Op::Precondition(Box::new(p));
                    return CallOutStep::Request(RequestStep::CallOut(call));
                }
                (h.clone(), None)
            }
        };
        let r = condition::checked(cx, Some(&head), &p.list, learnt.as_ref()).and_then(
            |backend_etag| {
                let mut up = p.up;
                // Unquoted: Ceph RGW 16 compares a write's If-Match with the stored ETag
                // without removing the quotes (a quoted value always fails, 412); AWS and
                // MinIO accept either form.
                up.set("if-match", backend_etag.trim_matches('"').to_string());
                start_op(cx, &p.h, up, &p.verified, p.eos)
            },
        );
        match r {
            Ok((op, step)) => {
                self.op = op;
                CallOutStep::Request(step)
            }
            Err(e) => CallOutStep::Request(cx.reject(&e)),
        }
    }

    /// A read that waited ([`RequestStep::Wait`]) for another request's lookup of its part
    /// table: planned from the table that lookup cached, or refused (503, retry) if it
    /// found none. Never a call-out.
    pub fn table_shared(&mut self) -> RequestStep {
        match &mut self.op {
            Op::Get(o) => o.table_shared(&self.cx),
            _ => self.cx.reject(&S3Error::internal(
                "s3crypt: no read waits for a part table",
            )),
        }
    }

    /// The request is going away: whatever it holds ends now (a part-table lookup it was
    /// making, so that reads waiting for it are told; memory it reserved).
    pub fn abandon(&mut self) {
        self.op = Op::Idle;
    }

    /// The backend's response headers.
    /// `end_of_stream`: the response has no body.
    pub fn on_response_headers(&mut self, h: &Headers, end_of_stream: bool) -> ResponseStep {
        let checks_document = match &self.op {
            Op::Pass(p) => p.checks_document(),
            Op::Complete(_) => true,
            _ => false,
        };
        if checks_document && !self.request_ended {
            return ResponseStep::AfterRequest;
        }
        let cx = &self.cx;
        let eos = end_of_stream;
        match &mut self.op {
            Op::Put(o) => o.response_headers(cx, h, eos),
            Op::Part(o) => o.response_headers(cx, h, eos),
            Op::Abort(o) => o.response_headers(cx, h, eos),
            Op::Get(o) => o.response_headers(cx, h, eos),
            Op::Create(o) => o.response_headers(cx, h, eos),
            Op::Complete(o) => o.response_headers(cx, h, eos),
            Op::Copy(o) => o.response_headers(cx, h, eos),
            Op::PartCopy(o) => o.response_headers(cx, h, eos),
            Op::Pass(o) => o.response_headers(cx, h, eos),
            Op::Attributes(o) => o.response_headers(h, eos),
            Op::ListParts(o) => o.response_headers(cx, h, eos),
            Op::Preflight(o) => o.response_headers(cx, h, eos),
            Op::Precondition(_) | Op::Idle => {
                let mut out = h.clone();
                RespBody::Pass.headers_done(&mut out, eos);
                ResponseStep::Forward(out)
            }
        }
    }

    /// A response body chunk; the bytes to send downstream are written to `out`.
    /// `Ok(Some(call-out))` (only at the end): hold the response until it answered.
    pub fn on_response_body(
        &mut self,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<CallOut>, BodyError> {
        let cx = &self.cx;
        match &mut self.op {
            Op::Create(o) => o.response_body(cx, chunk, end, out),
            Op::Complete(o) => o.response_body(cx, chunk, end, out),
            Op::Get(o) => o.response_body(cx, chunk, end, out).map(|()| None),
            Op::Copy(o) => o.response_body(cx, chunk, end, out).map(|()| None),
            Op::PartCopy(o) => o.response_body(cx, chunk, end, out).map(|()| None),
            Op::Put(o) => o.response_body(cx, chunk, end, out).map(|()| None),
            Op::Pass(o) => o.response_body(cx, chunk, end, out),
            Op::ListParts(o) => o.response_body(cx, chunk, end, out).map(|()| None),
            Op::Preflight(o) => o.response_body(cx, chunk, end, out).map(|()| None),
            Op::Part(o) => o.response_body(cx, chunk, end, out).map(|()| None),
            Op::Abort(_) | Op::Attributes(_) | Op::Precondition(_) | Op::Idle => {
                out.extend_from_slice(chunk);
                Ok(None)
            }
        }
    }
}

/// A write whose `If-Match` the filter checks first (see `condition`): what its start needs.
struct Precondition {
    h: Headers,
    up: Headers,
    verified: sigv4::VerifiedRequest,
    eos: bool,
    list: String,
    /// The HEAD's answer, kept while the object's trailer is read.
    head: Option<Headers>,
}

/// Starts the operation of a verified, parsed request (`cx.req`).
fn start_op(
    cx: &Cx,
    h: &Headers,
    up: Headers,
    v: &sigv4::VerifiedRequest,
    eos: bool,
) -> Result<(Op, RequestStep), S3Error> {
    let req = cx.request()?;
    Ok(match req.op {
        Operation::PutObject => {
            let (op, up) = put::Put::start(cx, h, up, v, eos)?;
            (Op::Put(Box::new(op)), RequestStep::Forward(up))
        }
        Operation::CreateMultipartUpload => {
            let (op, step) = multipart::Create::start(cx, up, v, req, eos)?;
            (Op::Create(Box::new(op)), step)
        }
        Operation::UploadPart => {
            let (op, step) = multipart::Part::start(cx, h, up, v, req, eos)?;
            (Op::Part(Box::new(op)), step)
        }
        Operation::CompleteMultipartUpload => {
            let (op, step) = complete::Complete::start(cx, up, v, req, eos)?;
            (Op::Complete(Box::new(op)), step)
        }
        Operation::AbortMultipartUpload => {
            let (op, step) = multipart::Abort::start(cx, up, v, req, eos)?;
            (Op::Abort(Box::new(op)), step)
        }
        Operation::GetObject | Operation::HeadObject => {
            no_body(h, eos)?;
            let (op, step) = get::Get::start(cx, h, up, req)?;
            (Op::Get(Box::new(op)), step)
        }
        Operation::CopyObject => {
            no_body(h, eos)?;
            let (op, step) = copy::Copy::start(cx, h, up, v)?;
            (Op::Copy(Box::new(op)), step)
        }
        Operation::UploadPartCopy => {
            no_body(h, eos)?;
            let (op, step) = part_copy::UploadPartCopy::start(cx, h, up, req)?;
            (Op::PartCopy(Box::new(op)), step)
        }
        Operation::GetObjectAttributes => {
            no_body(h, eos)?;
            let (op, step) = attributes::Attributes::start(cx, h, req)?;
            (Op::Attributes(Box::new(op)), step)
        }
        Operation::ListParts => {
            let (op, step) = list_parts::ListParts::start(cx, up, v, req, eos)?;
            (Op::ListParts(Box::new(op)), step)
        }
        Operation::ListObjectsV1 | Operation::ListObjectsV2 | Operation::ListObjectVersions => {
            let rewrite = Some(pass::Rewrite::ListingSizes);
            let (op, step) = pass::Pass::start(cx, up, v, req, eos, rewrite)?;
            (Op::Pass(Box::new(op)), step)
        }
        Operation::ListBuckets
        | Operation::BucketOp
        | Operation::ListMultipartUploads
        | Operation::DeleteObjects
        | Operation::DeleteObject
        | Operation::ObjectSubresource => {
            let (op, step) = pass::Pass::start(cx, up, v, req, eos, None)?;
            (Op::Pass(Box::new(op)), step)
        }
    })
}

#[cfg(test)]
mod boundary_tests;

#[cfg(test)]
mod tests;
