//! The native shell: moves headers and body bytes between Envoy's dynamic-module ABI
//! ([`crate::abi`]) and [`s3crypt_core::ops`], as `wasm/src/glue.rs` does for proxy-wasm.
//! All decisions are the engine's; this file has no `unsafe` code.
//!
//! What replaces proxy-wasm's pieces:
//! * one VM per worker → one [`Worker`] per (worker thread, configuration), thread-local:
//!   the engine's per-worker state and the requests waiting for another's part-table
//!   lookup. Streams of one worker run on its thread, one callback at a time.
//! * proxy-wasm shared data → [`STORE`], one `Mutex<HashMap>` for the whole process (all
//!   workers, every configuration; upload state survives a configuration reload as it
//!   does in wasm shared data). A lock is held only for one get/set/update, never across
//!   a call into Envoy, and `update` runs its closure under the lock, so no concurrent
//!   update is lost.
//! * the root context's tick (waking waiters) → Envoy schedulers: a stream that ends a
//!   lookup commits an event on each waiter's scheduler, and Envoy calls the waiter's
//!   `on_http_filter_scheduled` on its worker, after the current callback.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use s3crypt_core::config::Config;
use s3crypt_core::headers::Headers;
use s3crypt_core::ops::{
    BodyError, CallOut, CallOutStep, Clock, Counter, Exchange, OsRandom, Ports, Reply, RequestStep,
    ResponseResume, ResponseStep, SharedStore, Stats, VmState,
};
use s3crypt_core::s3::error::S3Error;

use crate::abi::{
    log, Body, BodyStatus, CalloutStart, ConfigHandle, HeaderMap, HeadersStatus, Level, Scheduler,
    Stream, TrailersStatus,
};

/// Scheduler event: a part-table lookup this stream waited for has ended.
const EVENT_WAKE: u64 = 1;

/// A filter configuration, shared by every worker (hence only `Send + Sync` parts): the
/// JSON each worker loads its [`Config`] from, and the counters' ids.
pub struct FilterConfig {
    id: u64,
    json: String,
    counters: Arc<Vec<(Counter, usize)>>,
    /// Workers' state for this configuration is dropped once this is gone (its KEKs do
    /// not stay in memory after a reload).
    alive: Arc<()>,
}

static CONFIG_IDS: AtomicU64 = AtomicU64::new(1);

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

impl FilterConfig {
    /// Checks the configuration (as the wasm filter does when configured: a bad one is
    /// rejected, so Envoy refuses the filter and nothing is served unencrypted) and
    /// defines the counters (only possible now).
    pub fn new(h: &ConfigHandle, _name: &str, json: &str) -> Option<FilterConfig> {
        match Config::load(json.as_bytes(), &env) {
            Ok(c) => log(Level::Info, &format!("s3crypt: configured: {c:?}")),
            Err(e) => {
                log(
                    Level::Critical,
                    &format!("s3crypt: configuration rejected: {e}"),
                );
                return None;
            }
        }
        let counters = Counter::ALL
            .iter()
            .filter_map(|c| h.define_counter(c.name()).map(|id| (*c, id)))
            .collect();
        Some(FilterConfig {
            id: CONFIG_IDS.fetch_add(1, Ordering::Relaxed),
            json: json.to_string(),
            counters: Arc::new(counters),
            alive: Arc::new(()),
        })
    }
}

/// A stream waiting for a lookup: its serial and its scheduler.
type Waiter = (u64, Rc<Scheduler>);

/// What the streams of one worker thread share for one configuration.
struct Worker {
    /// Alive while its configuration is.
    of: Weak<()>,
    cfg: Rc<Config>,
    engine: Rc<VmState>,
    /// Streams waiting for a part-table lookup, by object version: their serial and
    /// scheduler.
    waiters: RefCell<HashMap<String, Vec<Waiter>>>,
}

thread_local! {
    /// This worker's state per configuration id; entries of configurations Envoy has
    /// destroyed are dropped when the next stream starts on this worker.
    static WORKERS: RefCell<HashMap<u64, Option<Rc<Worker>>>> = RefCell::new(HashMap::new());
    static SERIALS: Cell<u64> = const { Cell::new(1) };
}

fn worker(cfg: &FilterConfig) -> Option<Rc<Worker>> {
    WORKERS.with(|w| {
        let mut w = w.borrow_mut();
        w.retain(|_, v| v.as_ref().is_none_or(|v| v.of.strong_count() > 0));
        w.entry(cfg.id)
            .or_insert_with(|| match Config::load(cfg.json.as_bytes(), &env) {
                Ok(c) => Some(Rc::new(Worker {
                    of: Arc::downgrade(&cfg.alive),
                    cfg: Rc::new(c),
                    engine: Rc::new(VmState::default()),
                    waiters: RefCell::new(HashMap::new()),
                })),
                Err(e) => {
                    log(
                        Level::Critical,
                        &format!("s3crypt: configuration rejected on a worker: {e}"),
                    );
                    None
                }
            })
            .clone()
    })
}

/// The process-wide store (see the module documentation).
static STORE: LazyLock<Mutex<HashMap<String, Vec<u8>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

struct ProcessStore;

fn store() -> std::sync::MutexGuard<'static, HashMap<String, Vec<u8>>> {
    // A panic while holding the lock cannot leave a half-written value (every write is
    // one `insert`/`remove`), so a poisoned lock is still consistent.
    STORE.lock().unwrap_or_else(|e| e.into_inner())
}

impl SharedStore for ProcessStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        store().get(key).cloned()
    }
    fn set(&self, key: &str, value: &[u8]) -> bool {
        store().insert(key.to_string(), value.to_vec());
        true
    }
    fn remove(&self, key: &str) {
        store().remove(key);
    }
    fn update(&self, key: &str, f: &dyn Fn(Option<&[u8]>) -> Vec<u8>) -> bool {
        let mut s = store();
        let new = f(s.get(key).map(Vec::as_slice));
        s.insert(key.to_string(), new);
        true
    }
}

struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .unwrap_or(0)
    }
}

/// Counters of one stream (Envoy: `<metrics_namespace>.s3crypt_*`).
struct StreamStats {
    s: Stream,
    ids: Arc<Vec<(Counter, usize)>>,
}

impl Stats for StreamStats {
    fn add(&self, c: Counter, n: u64) {
        if let Some((_, id)) = self.ids.iter().find(|(k, _)| *k == c) {
            self.s.increment_counter(*id, n);
        }
    }
    fn note(&self, msg: &str) {
        log(Level::Info, msg);
    }
}

/// Whether the stream goes on after a step.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Go {
    On,
    Hold,
}

/// A header hook's status for whether the stream goes on. Holding stops the body too
/// (Envoy buffers it, with backpressure, and hands it to the body hook on continue), as
/// proxy-wasm's pause does: nothing of the request passes before the engine decided.
fn headers_status(go: Go) -> HeadersStatus {
    match go {
        Go::On => HeadersStatus::Continue,
        Go::Hold => HeadersStatus::StopAllIterationAndWatermark,
    }
}

/// A body hook's status for whether the stream goes on.
fn body_status(go: Go) -> BodyStatus {
    match go {
        Go::On => BodyStatus::Continue,
        Go::Hold => BodyStatus::StopIterationAndBuffer,
    }
}

/// The filter of one stream.
pub struct Filter {
    s: Stream,
    serial: u64,
    /// `None`: no usable configuration on this worker; every request gets 503.
    worker: Option<Rc<Worker>>,
    ex: Option<RefCell<Exchange>>,
    sched: RefCell<Option<Rc<Scheduler>>>,
    /// Response headers held until the request's document arrived and was checked
    /// ([`ResponseStep::AfterRequest`]), with their end-of-stream flag.
    response_waiting: RefCell<Option<(Headers, bool)>>,
    /// Reused input and output buffers for body chunks.
    inbuf: RefCell<Vec<u8>>,
    buf: RefCell<Vec<u8>>,
    /// Inside which body hook we are (a whole-body replacement then replaces the
    /// received chunk too).
    in_body: Cell<Option<Body>>,
    /// Hooks of this stream running now (Envoy may call `stream_complete` from inside a
    /// call we make, e.g. a reset): the stream's end is handled when they returned.
    depth: Cell<u32>,
    complete_pending: Cell<bool>,
    completed: Cell<bool>,
}

impl Filter {
    pub fn new(cfg: &FilterConfig, s: Stream) -> Filter {
        let serial = SERIALS.with(|c| {
            let v = c.get();
            c.set(v.wrapping_add(1));
            v
        });
        let worker = worker(cfg);
        let ex = worker.as_ref().map(|w| {
            RefCell::new(Exchange::new(
                Rc::clone(&w.cfg),
                Ports {
                    stats: Rc::new(StreamStats {
                        s: s.dup(),
                        ids: Arc::clone(&cfg.counters),
                    }),
                    store: Rc::new(ProcessStore),
                    clock: Rc::new(SystemClock),
                    // getrandom: the kernel's CSPRNG.
                    rng: Rc::new(OsRandom),
                },
                Rc::clone(&w.engine),
                String::new(),
            ))
        });
        Filter {
            s,
            serial,
            worker,
            ex,
            sched: RefCell::new(None),
            response_waiting: RefCell::new(None),
            inbuf: RefCell::new(Vec::new()),
            buf: RefCell::new(Vec::new()),
            in_body: Cell::new(None),
            depth: Cell::new(0),
            complete_pending: Cell::new(false),
            completed: Cell::new(false),
        }
    }

    /// Runs one hook; the end of the stream, if Envoy signalled it meanwhile, is handled
    /// after it.
    pub fn hook<T>(&self, f: impl FnOnce(&Filter) -> T) -> T {
        /// Leaves the hook even when `f` panics (the stream is then reset by the caller).
        struct Depth<'a>(&'a Cell<u32>);
        impl Drop for Depth<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get().saturating_sub(1));
            }
        }
        self.depth.set(self.depth.get().saturating_add(1));
        let r = {
            let _d = Depth(&self.depth);
            f(self)
        };
        if self.depth.get() == 0 && self.complete_pending.replace(false) {
            self.complete();
        }
        r
    }

    /// Envoy destroyed the filter (possibly inside a call a hook of it made): the stream
    /// handle is dead from now on; the stream's end is handled now or after that hook.
    pub fn destroyed(&self) {
        self.s.kill();
        self.stream_complete();
    }

    /// A hook panicked: reset the stream (if Envoy still has it).
    pub fn fail(&self) {
        self.s.reset("s3crypt_internal_error");
    }

    /// The stream ended (completed or reset).
    pub fn stream_complete(&self) {
        if self.depth.get() > 0 {
            self.complete_pending.set(true);
        } else {
            self.complete();
        }
    }

    /// A lookup this stream made ends with it (its waiters are refused with 503 and
    /// retry), and it waits for nothing.
    fn complete(&self) {
        if self.completed.replace(true) {
            return;
        }
        let Some(w) = &self.worker else { return };
        for list in w.waiters.borrow_mut().values_mut() {
            list.retain(|(serial, _)| *serial != self.serial);
        }
        if let Some(ex) = &self.ex {
            ex.borrow_mut().abandon();
        }
        wake_waiters(w);
    }

    fn unconfigured(&self) {
        self.send_reply(&Reply::error(
            &S3Error::service_unavailable(
                "s3crypt: the filter is not configured; no request is served",
            ),
            "/",
            "",
        ));
    }

    fn send_reply(&self, r: &Reply) {
        self.s.send_response(r.status, &r.headers, &r.body);
    }

    /// Refuses the request with an S3 XML error the shell decided itself.
    fn reject(&self, e: &S3Error) {
        log(Level::Info, &format!("s3crypt: request rejected: {e}"));
        self.send_reply(&Reply::error(e, "", ""));
    }

    pub fn request_headers(&self, end_of_stream: bool) -> HeadersStatus {
        let Some(ex) = &self.ex else {
            self.unconfigured();
            return HeadersStatus::StopAllIterationAndWatermark;
        };
        let h = Headers::from_pairs(self.s.headers(HeaderMap::Request));
        if let Some(id) = h.get("x-request-id") {
            ex.borrow_mut().set_request_id(id);
        }
        let step = ex.borrow_mut().on_request_headers(&h, end_of_stream);
        headers_status(self.apply_request_step(step))
    }

    pub fn request_body(&self, end_of_stream: bool) -> BodyStatus {
        let Some(ex) = &self.ex else {
            return BodyStatus::StopIterationNoBuffer;
        };
        self.with_chunk(Body::ReceivedRequest, |chunk, out| {
            let r = ex.borrow_mut().on_request_body(chunk, end_of_stream, out);
            match r {
                Ok(None) => {
                    if !self.s.replace_body(Body::ReceivedRequest, out) {
                        return self.body_not_replaced();
                    }
                    if end_of_stream {
                        self.release_waiting_response();
                    }
                    BodyStatus::Continue
                }
                Ok(Some(call)) => {
                    // The body is held (emptied here) until the call-outs decided what it is.
                    if !self.s.replace_body(Body::ReceivedRequest, &[]) {
                        return self.body_not_replaced();
                    }
                    body_status(self.call_out(&call))
                }
                Err(BodyError::Reply(reply)) => {
                    log(
                        Level::Info,
                        &format!(
                            "s3crypt: request rejected: {}",
                            String::from_utf8_lossy(&reply.body)
                        ),
                    );
                    // Nothing more goes upstream; the local reply resets the upstream
                    // request, so the backend never receives a complete body.
                    self.s.replace_body(Body::ReceivedRequest, &[]);
                    self.send_reply(&reply);
                    BodyStatus::StopIterationNoBuffer
                }
                Err(BodyError::Reset(msg)) => {
                    log(Level::Warn, &msg);
                    self.s.replace_body(Body::ReceivedRequest, &[]);
                    self.s.reset("s3crypt_request_rejected");
                    BodyStatus::StopIterationNoBuffer
                }
            }
        })
    }

    /// A body chunk could not be replaced by what the engine made of it: nothing of it may
    /// pass (it may be plaintext going upstream, or unverified plaintext going down).
    fn body_not_replaced(&self) -> BodyStatus {
        log(
            Level::Critical,
            "s3crypt: a body chunk could not be replaced; stream reset",
        );
        self.s.reset("s3crypt_body_not_replaced");
        BodyStatus::StopIterationNoBuffer
    }

    /// Runs `f` on the chunk that arrived in the body hook of `body` and this stream's
    /// reused output buffer (emptied), with [`Filter::in_body`] set meanwhile.
    fn with_chunk<R>(&self, body: Body, f: impl FnOnce(&[u8], &mut Vec<u8>) -> R) -> R {
        // Both buffers are taken (a nested body hook gets fresh ones) and given back, so a
        // stream allocates them once, not per chunk.
        let mut chunk = std::mem::take(&mut *self.inbuf.borrow_mut());
        chunk.clear();
        self.s.read_body(body, &mut chunk);
        let mut out = std::mem::take(&mut *self.buf.borrow_mut());
        out.clear();
        let outer = self.in_body.replace(Some(body));
        let r = f(&chunk, &mut out);
        self.in_body.set(outer);
        *self.buf.borrow_mut() = out;
        *self.inbuf.borrow_mut() = chunk;
        r
    }

    /// HTTP trailers carry nothing S3 defines (aws-chunked trailers are inside the body)
    /// and are not signed: a request with any is refused, and nothing of it completes
    /// upstream.
    pub fn request_trailers(&self) -> TrailersStatus {
        let t = self.s.headers(HeaderMap::RequestTrailers);
        if t.is_empty() {
            return TrailersStatus::Continue;
        }
        for (k, _) in &t {
            self.s.set_header(HeaderMap::RequestTrailers, k, None);
        }
        self.reject(&S3Error::invalid_request(
            "s3crypt: HTTP trailers are not supported (aws-chunked trailers go in the body)",
        ));
        TrailersStatus::StopIteration
    }

    pub fn response_headers(&self, end_of_stream: bool) -> HeadersStatus {
        let Some(ex) = &self.ex else {
            return HeadersStatus::Continue;
        };
        let h = Headers::from_pairs(self.s.headers(HeaderMap::Response));
        let step = ex.borrow_mut().on_response_headers(&h, end_of_stream);
        match step {
            ResponseStep::Forward(out) => {
                self.forward_response(&out);
                HeadersStatus::Continue
            }
            ResponseStep::ForwardAfter(out, c) => {
                self.forward_response(&out);
                headers_status(self.call_out(&c))
            }
            ResponseStep::AfterRequest => {
                *self.response_waiting.borrow_mut() = Some((h, end_of_stream));
                HeadersStatus::StopAllIterationAndWatermark
            }
        }
    }

    pub fn response_body(&self, end_of_stream: bool) -> BodyStatus {
        let Some(ex) = &self.ex else {
            return BodyStatus::Continue;
        };
        self.with_chunk(Body::ReceivedResponse, |chunk, out| {
            let r = ex.borrow_mut().on_response_body(chunk, end_of_stream, out);
            match r {
                Ok(hold) => {
                    if !self.s.replace_body(Body::ReceivedResponse, out) {
                        return self.body_not_replaced();
                    }
                    match hold {
                        None => BodyStatus::Continue,
                        Some(c) => body_status(self.call_out(&c)),
                    }
                }
                Err(e) => {
                    let msg = match e {
                        BodyError::Reset(m) => m,
                        BodyError::Reply(r) => String::from_utf8_lossy(&r.body).into_owned(),
                    };
                    log(Level::Warn, &msg);
                    // Never release unauthenticated plaintext: drop this chunk and reset.
                    self.s.replace_body(Body::ReceivedResponse, &[]);
                    self.s.reset("s3crypt_response_rejected");
                    BodyStatus::StopIterationNoBuffer
                }
            }
        })
    }

    /// Response trailers from the backend are not passed on.
    pub fn response_trailers(&self) -> TrailersStatus {
        for (k, _) in self.s.headers(HeaderMap::ResponseTrailers) {
            self.s.set_header(HeaderMap::ResponseTrailers, &k, None);
        }
        TrailersStatus::Continue
    }

    pub fn callout_done(&self, id: u64, ok: bool, headers: Vec<(String, String)>, body: Vec<u8>) {
        let Some(ex) = &self.ex else { return };
        let Ok(token) = u32::try_from(id) else { return };
        let h = Headers::from_pairs(headers);
        let resp = (ok && h.get(":status").is_some()).then_some((&h, body.as_slice()));
        let step = ex.borrow_mut().on_callout_response_with(token, resp);
        let Some(step) = step else {
            return; // not this request's call-out
        };
        // The engine says which half of the stream the call-out held.
        let response = matches!(step, CallOutStep::Response(_));
        let go = self.apply_callout_step(step);
        // A part-table lookup may have ended: reads waiting for it go on.
        if let Some(w) = &self.worker {
            wake_waiters(w);
        }
        if go == Go::On {
            if response {
                self.s.continue_encoding();
            } else {
                self.s.continue_decoding();
            }
        }
    }

    /// A lookup this request waited for has ended: plan it from the shared table.
    pub fn scheduled(&self, event: u64) {
        if event != EVENT_WAKE || self.completed.get() {
            return;
        }
        let Some(ex) = &self.ex else { return };
        let step = ex.borrow_mut().table_shared();
        match step {
            RequestStep::Forward(h) => {
                if self.forward_request(&h) {
                    self.s.continue_decoding();
                }
            }
            RequestStep::Reply(r) => self.send_reply(&r),
            _ => self.s.reset("s3crypt_lookup_failed"),
        }
    }

    /// The request ended with its document accepted: the response held for it goes on.
    fn release_waiting_response(&self) {
        let Some((h, eos)) = self.response_waiting.borrow_mut().take() else {
            return;
        };
        let Some(ex) = &self.ex else { return };
        let step = ex.borrow_mut().on_response_headers(&h, eos);
        match step {
            ResponseStep::Forward(out) => {
                self.forward_response(&out);
                self.s.continue_encoding();
            }
            ResponseStep::ForwardAfter(out, c) => {
                self.forward_response(&out);
                if self.call_out(&c) == Go::On {
                    self.s.continue_encoding();
                }
            }
            ResponseStep::AfterRequest => {
                log(
                    Level::Warn,
                    "s3crypt: a response waits for a request that ended",
                );
                self.s.reset("s3crypt_response_rejected");
            }
        }
    }

    fn apply_request_step(&self, step: RequestStep) -> Go {
        match step {
            RequestStep::Forward(h) => {
                if self.forward_request(&h) {
                    Go::On
                } else {
                    Go::Hold
                }
            }
            RequestStep::Reply(r) => {
                self.send_reply(&r);
                Go::Hold
            }
            RequestStep::CallOut(c) => self.call_out(&c),
            RequestStep::Wait(version) => {
                let Some(w) = &self.worker else {
                    return Go::Hold;
                };
                let Some(sched) = self.scheduler() else {
                    self.s.reset("s3crypt_no_scheduler");
                    return Go::Hold;
                };
                w.waiters
                    .borrow_mut()
                    .entry(version)
                    .or_default()
                    .push((self.serial, sched));
                Go::Hold
            }
            RequestStep::Body(b) => {
                // The held body was emptied chunk by chunk: this is all of it.
                if !self.replace_whole_body(Body::BufferedRequest, Body::ReceivedRequest, &b) {
                    return Go::Hold;
                }
                self.release_waiting_response();
                Go::On
            }
        }
    }

    /// Sends a call-out; if it cannot be sent, the engine hears "no answer" at once.
    fn call_out(&self, c: &CallOut) -> Go {
        let Some(ex) = &self.ex else { return Go::Hold };
        match self
            .s
            .callout(&c.cluster, &c.headers, c.body.as_deref(), c.timeout_ms)
        {
            CalloutStart::Started(id) => match u32::try_from(id) {
                Ok(token) => {
                    ex.borrow_mut().dispatched(token);
                    Go::Hold
                }
                Err(_) => {
                    // Never happens (Envoy counts call-outs per stream from 1); fail closed.
                    self.s.reset("s3crypt_callout_id");
                    Go::Hold
                }
            },
            CalloutStart::Failed(rc) => {
                log(
                    Level::Warn,
                    &format!("s3crypt: call-out to {} not sent (code {rc})", c.cluster),
                );
                let step = ex.borrow_mut().on_callout_response(None);
                self.apply_callout_step(step)
            }
        }
    }

    fn apply_callout_step(&self, step: CallOutStep) -> Go {
        match step {
            CallOutStep::Request(s) => self.apply_request_step(s),
            CallOutStep::Response(ResponseResume::Continue) => Go::On,
            CallOutStep::Response(ResponseResume::Body(b)) => {
                // The response body was held at its end, every chunk emptied: this is all
                // of it.
                if !self.replace_whole_body(Body::BufferedResponse, Body::ReceivedResponse, &b) {
                    return Go::Hold;
                }
                Go::On
            }
            CallOutStep::Response(ResponseResume::Lookup(c) | ResponseResume::Then(c)) => {
                self.call_out(&c)
            }
            CallOutStep::Response(ResponseResume::Reset(msg)) => {
                log(Level::Warn, &msg);
                self.s.reset("s3crypt_response_rejected");
                Go::Hold
            }
        }
    }

    /// Replaces the whole body of one direction: what Envoy buffered, and the chunk of
    /// the body hook we are in, if any.
    fn replace_whole_body(&self, buffered: Body, received: Body, b: &[u8]) -> bool {
        let in_hook = matches!(
            (self.in_body.get(), received),
            (Some(Body::ReceivedRequest), Body::ReceivedRequest)
                | (Some(Body::ReceivedResponse), Body::ReceivedResponse)
        );
        let ok = if in_hook {
            self.s.replace_body(buffered, &[]) && self.s.replace_body(received, b)
        } else {
            self.s.replace_body(buffered, b)
        };
        if !ok {
            self.body_not_replaced();
        }
        ok
    }

    /// The request headers become what the engine rebuilt (and the route is chosen
    /// again, as proxy-wasm's header replacement does); `false` (400 InvalidRequest
    /// answered) if Envoy refused a header: the request must not go upstream other than
    /// as decided.
    fn forward_request(&self, h: &Headers) -> bool {
        if !self.replace_headers(HeaderMap::Request, h) {
            // Nothing has gone upstream yet: the client gets an S3 error instead.
            self.reject(&S3Error::invalid_request(
                "s3crypt (native build): a header with an empty value cannot be forwarded",
            ));
            return false;
        }
        self.s.clear_route_cache();
        true
    }

    /// The response headers become what the engine decided. A header Envoy refuses (an
    /// empty value) is left out: logged, the response goes on.
    fn forward_response(&self, h: &Headers) {
        if !self.replace_headers(HeaderMap::Response, h) {
            log(
                Level::Warn,
                "s3crypt: a response header could not be set (empty values cannot be sent through this ABI)",
            );
        }
    }

    /// Makes one header map exactly `new` (names compared case-insensitively; Envoy's
    /// names are lower case); `false` if Envoy refused a change. This ABI cannot carry an
    /// empty value (setting one removes the header, adding one is refused), so a header
    /// with an empty value ends up absent and the map is reported not made.
    fn replace_headers(&self, map: HeaderMap, new: &Headers) -> bool {
        let wanted: HashSet<String> = new.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
        let mut ok = true;
        for (k, _) in self.s.headers(map) {
            if !wanted.contains(&k.to_ascii_lowercase()) {
                ok &= self.s.set_header(map, &k, None);
            }
        }
        let mut seen = HashSet::new();
        for (k, v) in new.iter() {
            if v.is_empty() {
                self.s.set_header(map, k, None);
                ok = false;
            } else if seen.insert(k.to_ascii_lowercase()) {
                ok &= self.s.set_header(map, k, Some(v));
            } else {
                ok &= self.s.add_header(map, k, v);
            }
        }
        ok
    }

    fn scheduler(&self) -> Option<Rc<Scheduler>> {
        let mut s = self.sched.borrow_mut();
        if s.is_none() {
            *s = self.s.scheduler().map(Rc::new);
        }
        s.clone()
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        // Normally done at the stream's end already: not waited for any more, and a lookup
        // this stream was making ends with its exchange, so whoever waited for it is woken.
        drop(self.ex.take());
        if let Some(w) = &self.worker {
            for list in w.waiters.borrow_mut().values_mut() {
                list.retain(|(serial, _)| *serial != self.serial);
            }
            wake_waiters(w);
        }
    }
}

/// Lets the requests that waited for lookups which have ended go on: each is woken on its
/// own stream (its scheduler), where it is planned from the cached table.
fn wake_waiters(w: &Worker) {
    for version in w.engine.finished_lookups() {
        let waiting = w.waiters.borrow_mut().remove(&version);
        for (_, sched) in waiting.unwrap_or_default() {
            sched.commit(EVENT_WAKE);
        }
    }
}
