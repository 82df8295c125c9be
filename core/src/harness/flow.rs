//! One client request through a proxy: a state machine over the glue's callbacks (see
//! [`super::drive`]): request headers, request body chunks, call-outs, a wait for a shared
//! table lookup, the upstream request, response headers and body chunks.

use std::rc::Rc;

use crate::crypto::Random;
use crate::headers::Headers;
use crate::ops::{
    BodyError, CallOut, CallOutStep, Clock, Exchange, Ports, Reply, RequestStep, ResponseResume,
    ResponseStep, SharedStore, Stats,
};

use super::drive::{ClientResponse, Fault, Http, Sent, SentKind, World};
use super::Proxy;

/// `per_connection_buffer_limit_bytes` of the shipped Envoy configurations.
const ENVOY_BUFFER_LIMIT: usize = 64 * 1024;

/// Where a request was when it paused for a call-out (what resumes after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ctx {
    Headers,
    Body(usize),
    RespHeaders,
    RespBody(usize),
}

/// The glue callback a flow is at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum St {
    Start,
    ReqBody(usize),
    Upstream,
    RespHeaders,
    RespBody(usize),
    CallOut(Ctx),
    Wait(String),
    /// The client went away before the end of its body.
    ClientGone,
    Done,
}

/// One client request on its way through a proxy.
pub struct Flow {
    pub(super) proxy: usize,
    pub(super) ex: Exchange,
    pub(super) state: St,
    request: Headers,
    chunks: Vec<Vec<u8>>,
    up: Option<Headers>,
    /// When the upstream headers went out (Envoy forwards them ahead of the body).
    up_at: Option<i64>,
    up_body: Vec<u8>,
    backend: Http,
    resp_chunks: Vec<Vec<u8>>,
    /// A response chunk paused on (buffered by Envoy until the response resumes).
    held: Vec<u8>,
    out: ClientResponse,
    /// The client disconnects after the chunks it sent.
    gone: bool,
}

impl Flow {
    pub(super) fn new(
        proxy: usize,
        p: &Proxy,
        rng: Rc<dyn Random>,
        (request, mut body): (Headers, Vec<u8>),
        cut: Option<usize>,
        w: &mut World,
    ) -> Flow {
        let gone = cut.is_some_and(|n| n < body.len());
        if let Some(n) = cut {
            body.truncate(n);
        }
        w.next_request += 1;
        let ports = Ports {
            stats: Rc::clone(&p.stats) as Rc<dyn Stats>,
            store: Rc::clone(&p.store) as Rc<dyn SharedStore>,
            clock: Rc::clone(&w.clock) as Rc<dyn Clock>,
            rng,
        };
        let ex = Exchange::new(
            Rc::clone(&p.cfg),
            ports,
            Rc::clone(&p.vm),
            format!("req-{}", w.next_request),
        );
        let split = w.req_split.clone();
        let chunks = split.split(&body, &mut w.prng);
        Flow {
            proxy,
            ex,
            state: St::Start,
            request,
            chunks,
            up: None,
            up_at: None,
            up_body: Vec::new(),
            backend: Http::default(),
            resp_chunks: Vec::new(),
            held: Vec::new(),
            out: ClientResponse::default(),
            gone,
        }
    }

    pub(super) fn runnable(&self) -> bool {
        matches!(
            self.state,
            St::Start
                | St::ReqBody(_)
                | St::Upstream
                | St::RespHeaders
                | St::RespBody(_)
                | St::ClientGone
        )
    }

    /// One callback. Returns the call-out it dispatched, if any.
    pub(super) fn step(&mut self, p: &Proxy, w: &mut World) -> Option<CallOut> {
        match std::mem::replace(&mut self.state, St::Done) {
            St::Start => {
                let eos = self.chunks.is_empty() && !self.gone;
                let s = self.ex.on_request_headers(&self.request, eos);
                self.request_step(s, Ctx::Headers, w)
            }
            St::ReqBody(i) => {
                let last = i + 1 == self.chunks.len() && !self.gone;
                let mut out = Vec::new();
                match self.ex.on_request_body(&self.chunks[i], last, &mut out) {
                    Ok(None) => {
                        self.up_body.extend_from_slice(&out);
                        self.next_body(i);
                        None
                    }
                    Ok(Some(c)) => {
                        if !out.is_empty() {
                            w.anomalies
                                .push("body held for a call-out with output".into());
                        }
                        self.state = St::CallOut(Ctx::Body(i));
                        Some(c)
                    }
                    Err(BodyError::Reply(r)) => {
                        if !out.is_empty() {
                            w.anomalies.push("refused body chunk with output".into());
                        }
                        self.reply(r, w);
                        None
                    }
                    Err(BodyError::Reset(_)) => {
                        self.abort_upstream(w);
                        self.out.reset = true;
                        None
                    }
                }
            }
            St::Upstream => {
                self.upstream(p, w);
                None
            }
            St::ClientGone => {
                // Envoy resets the upstream request; on_log follows.
                self.abort_upstream(w);
                self.out.reset = true;
                None
            }
            St::RespHeaders => {
                let eos = self.resp_chunks.is_empty();
                match self.ex.on_response_headers(&self.backend.headers, eos) {
                    ResponseStep::Forward(h) => {
                        self.send_headers(h);
                        self.next_resp(None);
                        None
                    }
                    ResponseStep::ForwardAfter(h, c) => {
                        self.send_headers(h);
                        self.state = St::CallOut(Ctx::RespHeaders);
                        Some(c)
                    }
                    // The simulated backend answers once the request ended.
                    ResponseStep::AfterRequest => {
                        w.anomalies
                            .push("a response held for a request that had ended".into());
                        self.out.reset = true;
                        self.state = St::Done;
                        None
                    }
                }
            }
            St::RespBody(i) => {
                let last = i + 1 == self.resp_chunks.len();
                let mut out = Vec::new();
                match self
                    .ex
                    .on_response_body(&self.resp_chunks[i], last, &mut out)
                {
                    Ok(Some(c)) => {
                        // set_http_response_body, then Pause: Envoy buffers the chunk
                        // until the response resumes (a reset drops it).
                        self.held = out;
                        self.state = St::CallOut(Ctx::RespBody(i));
                        Some(c)
                    }
                    Ok(None) => {
                        self.out.body.extend_from_slice(&out);
                        self.next_resp(Some(i));
                        None
                    }
                    Err(_) => {
                        // The glue drops this chunk's output and resets.
                        self.out.reset = true;
                        None
                    }
                }
            }
            s => {
                w.anomalies.push(format!("step in state {s:?}"));
                self.state = s;
                None
            }
        }
    }

    fn send_headers(&mut self, h: Headers) {
        self.out.status = h.get(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        self.out.headers = h;
    }

    fn next_body(&mut self, i: usize) {
        self.state = if i + 1 < self.chunks.len() {
            St::ReqBody(i + 1)
        } else if self.gone {
            St::ClientGone
        } else {
            St::Upstream
        };
    }

    fn next_resp(&mut self, i: Option<usize>) {
        let next = i.map_or(0, |i| i + 1);
        self.state = if next < self.resp_chunks.len() {
            St::RespBody(next)
        } else {
            St::Done
        };
    }

    /// Resumes the request after the headers were decided (or after a body call-out).
    fn resume_request(&mut self, ctx: Ctx) {
        match ctx {
            Ctx::Headers if self.chunks.is_empty() && self.gone => self.state = St::ClientGone,
            Ctx::Headers if self.chunks.is_empty() => self.state = St::Upstream,
            Ctx::Headers => self.state = St::ReqBody(0),
            Ctx::Body(i) => self.next_body(i),
            Ctx::RespHeaders | Ctx::RespBody(_) => self.state = St::Done,
        }
    }

    fn request_step(&mut self, s: RequestStep, ctx: Ctx, w: &mut World) -> Option<CallOut> {
        if matches!(ctx, Ctx::RespHeaders | Ctx::RespBody(_)) {
            w.anomalies
                .push(format!("request step {s:?} during the response"));
        }
        match s {
            RequestStep::Forward(h) => {
                if matches!(ctx, Ctx::Body(_)) {
                    w.anomalies
                        .push("request headers replaced after they went upstream".into());
                } else {
                    self.up = Some(h);
                    self.up_at = Some(w.now());
                }
                self.resume_request(ctx);
                None
            }
            RequestStep::Reply(r) => {
                self.reply(r, w);
                None
            }
            RequestStep::CallOut(c) => {
                self.state = St::CallOut(ctx);
                Some(c)
            }
            RequestStep::Wait(v) => {
                if ctx != Ctx::Headers {
                    w.anomalies.push("a wait after the headers".into());
                }
                self.state = St::Wait(v);
                None
            }
            RequestStep::Body(b) => {
                // set_http_request_body(0, 0, b): prepended to the (emptied) held body.
                if ctx == Ctx::Headers {
                    w.anomalies.push("a held body before any body".into());
                }
                self.up_body.extend_from_slice(&b);
                self.resume_request(ctx);
                None
            }
        }
    }

    fn callout_step(&mut self, s: CallOutStep, ctx: Ctx, w: &mut World) -> Option<CallOut> {
        match s {
            CallOutStep::Request(r) => self.request_step(r, ctx, w),
            CallOutStep::Response(ResponseResume::Continue) => {
                match ctx {
                    Ctx::RespHeaders => self.next_resp(None),
                    Ctx::RespBody(i) => {
                        let held = std::mem::take(&mut self.held);
                        self.out.body.extend_from_slice(&held);
                        self.next_resp(Some(i));
                    }
                    _ => {
                        w.anomalies
                            .push("response resumed during the request".into());
                        self.resume_request(ctx);
                    }
                }
                None
            }
            CallOutStep::Response(ResponseResume::Body(b)) => {
                match ctx {
                    Ctx::RespBody(i) => {
                        let held = std::mem::take(&mut self.held);
                        if !held.is_empty() {
                            w.anomalies.push("a replaced body after held output".into());
                        }
                        // Envoy buffers a held body: past per_connection_buffer_limit_bytes
                        // (64 KiB in every shipped configuration) it resets the stream.
                        if b.len() > ENVOY_BUFFER_LIMIT {
                            w.anomalies.push(format!(
                                "a held body of {} bytes, over Envoy's buffer limit",
                                b.len()
                            ));
                        }
                        self.out.body.extend_from_slice(&b);
                        self.next_resp(Some(i));
                    }
                    _ => {
                        w.anomalies.push("a body replaced outside the body".into());
                        self.out.reset = true;
                        self.state = St::Done;
                    }
                }
                None
            }
            CallOutStep::Response(ResponseResume::Lookup(c) | ResponseResume::Then(c)) => {
                if !matches!(ctx, Ctx::RespBody(_) | Ctx::RespHeaders) {
                    w.anomalies
                        .push("a response call-out during the request".into());
                }
                self.state = St::CallOut(ctx);
                Some(c)
            }
            CallOutStep::Response(ResponseResume::Reset(_)) => {
                if ctx == Ctx::RespHeaders {
                    // The headers were held: the client sees nothing but the reset.
                    self.out.status = 0;
                    self.out.headers = Headers::new();
                }
                self.out.reset = true;
                self.state = St::Done;
                None
            }
        }
    }

    /// A local reply; an upstream request already begun is reset (never completes).
    /// Envoy sends it through the encoder filters, this one included (its response
    /// callbacks are skipped only after a failure reply), so the exchange sees it as a
    /// response; a HEAD's has no body.
    fn reply(&mut self, r: Reply, w: &mut World) {
        self.abort_upstream(w);
        let mut h = Headers::new();
        h.set(":status", r.status.to_string());
        for (k, v) in r.headers {
            h.0.push((k, v));
        }
        h.set("content-length", r.body.len().to_string());
        let head = self.request.get(":method") == Some("HEAD");
        self.resp_chunks = if head || r.body.is_empty() {
            Vec::new()
        } else {
            vec![r.body.clone()]
        };
        self.backend = Http {
            headers: h,
            body: r.body,
        };
        self.out.local = true;
        self.state = St::RespHeaders;
    }

    fn abort_upstream(&mut self, w: &mut World) {
        if let Some(h) = self.up.take() {
            w.sent.push(Sent {
                kind: SentKind::Upstream,
                proxy: self.proxy,
                headers: h,
                body: std::mem::take(&mut self.up_body),
                complete: false,
                status: None,
            });
        }
        self.state = St::Done;
    }

    /// The forwarded request reaches the backend (its whole body sent).
    fn upstream(&mut self, _p: &Proxy, w: &mut World) {
        let Some(h) = self.up.take() else {
            w.anomalies.push("no upstream headers".into());
            self.state = St::Done;
            return;
        };
        let req = Http {
            headers: h,
            body: std::mem::take(&mut self.up_body),
        };
        if let Some(n) = req
            .headers
            .get("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            if n != req.body.len() {
                w.anomalies.push(format!(
                    "upstream content-length {n} but {} bytes sent ({})",
                    req.body.len(),
                    req.headers.get(":path").unwrap_or("")
                ));
            }
        }
        let resp = match w.fault_for(None, &req.headers) {
            None => w.execute(self.proxy, SentKind::Upstream, &req, false, self.up_at),
            Some(Fault::Delay(ms)) => {
                w.advance_ms(ms);
                w.execute(self.proxy, SentKind::Upstream, &req, false, self.up_at)
            }
            Some(Fault::Fail) => {
                let mut r = Http::with_status(503);
                r.headers.set("content-type", "text/plain");
                r.body = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure".to_vec();
                r.headers.set("content-length", r.body.len().to_string());
                r
            }
            Some(Fault::Status(s)) => Http::with_status(s),
            Some(Fault::Answer(a)) => a,
        };
        let split = w.resp_split.clone();
        self.resp_chunks = if req.headers.get(":method") == Some("HEAD") {
            Vec::new()
        } else {
            split.split(&resp.body, &mut w.prng)
        };
        self.backend = resp;
        self.state = St::RespHeaders;
    }

    /// The response to a call-out (or its failure).
    pub(super) fn deliver(
        &mut self,
        token: u32,
        resp: Option<&Http>,
        w: &mut World,
    ) -> Option<CallOut> {
        let St::CallOut(ctx) = self.state.clone() else {
            w.anomalies
                .push("a call-out response without a call-out".into());
            return None;
        };
        let r = resp.map(|h| (&h.headers, h.body.as_slice()));
        match self.ex.on_callout_response_with(token, r) {
            Some(s) => self.callout_step(s, ctx, w),
            None => {
                w.anomalies
                    .push(format!("call-out response {token} refused"));
                self.state = St::Done;
                None
            }
        }
    }

    /// Woken from a wait: planned from the shared table, refused, or reset.
    pub(super) fn woken(&mut self, w: &mut World) {
        match self.ex.table_shared() {
            RequestStep::Forward(h) => {
                self.up = Some(h);
                self.up_at = Some(w.now());
                self.resume_request(Ctx::Headers);
            }
            RequestStep::Reply(r) => self.reply(r, w),
            _ => {
                self.out.reset = true;
                self.state = St::Done;
            }
        }
    }

    pub(super) fn result(mut self, w: &mut World) -> ClientResponse {
        if self.state != St::Done {
            self.out.stuck = true;
        }
        // A client reads what `content-length` promised and no more: anything after it is
        // not part of this response (and a filter that sends it is wrong).
        if let Some(n) = self
            .out
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            if self.out.body.len() > n {
                w.anomalies.push(format!(
                    "{} body bytes released for a content-length of {n}",
                    self.out.body.len()
                ));
                self.out.body.truncate(n);
            }
        }
        self.out
    }
}
