//! proxy-wasm glue: moves headers and body bytes between Envoy and [`s3crypt_core::ops`].
//! Kept thin on purpose; all decisions are made (and tested natively) in the engine.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

use s3crypt_core::config::Config;
use s3crypt_core::headers::Headers;
use s3crypt_core::ops::{
    BodyError, CallOut, CallOutStep, Clock, Counter, Exchange, OsRandom, Ports, Reply, RequestStep,
    ResponseResume, ResponseStep, SharedStore, Stats, VmState,
};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // A panic aborts the VM (panic = "abort"); say why first, at the level operators alert on.
    std::panic::set_hook(Box::new(|info| {
        log(LogLevel::Critical, &format!("s3crypt: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root {
            cfg: None,
            metrics: Rc::new(Metrics::default()),
            vm: Rc::new(Vm::default()),
        })
    });
}}

/// Name of the gauge of wasm linear memory, summed over the plugin's VMs (one per worker).
const MEMORY_GAUGE: &str = "s3crypt_wasm_memory_bytes";

/// Envoy counters, defined once per VM, and the linear-memory gauge.
#[derive(Default)]
struct Metrics {
    ids: Vec<(Counter, u32)>,
    memory: Option<u32>,
    /// What this VM has added to the memory gauge so far.
    memory_reported: Cell<u64>,
}

impl Metrics {
    fn define() -> Metrics {
        let ids = Counter::ALL
            .iter()
            .filter_map(|c| {
                hostcalls::define_metric(MetricType::Counter, c.name())
                    .ok()
                    .map(|id| (*c, id))
            })
            .collect();
        let memory = hostcalls::define_metric(MetricType::Gauge, MEMORY_GAUGE).ok();
        Metrics {
            ids,
            memory,
            memory_reported: Cell::new(0),
        }
    }

    /// Adds this VM's linear-memory growth since the last report to the shared gauge, so
    /// the gauge is the sum over all VMs (linear memory never shrinks).
    fn report_memory(&self) {
        let Some(id) = self.memory else { return };
        let now = core::arch::wasm32::memory_size(0) as u64 * 65536;
        let delta = now.saturating_sub(self.memory_reported.get());
        if delta > 0 && hostcalls::increment_metric(id, i64::try_from(delta).unwrap_or(0)).is_ok() {
            self.memory_reported.set(now);
        }
    }
}

impl Stats for Metrics {
    fn add(&self, c: Counter, n: u64) {
        if let Some((_, id)) = self.ids.iter().find(|(k, _)| *k == c) {
            let _ = hostcalls::increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    fn note(&self, msg: &str) {
        log(LogLevel::Info, msg);
    }
}

/// Envoy shared data: one key space for all workers (VMs) of the process.
struct EnvoySharedData;

/// Envoy's clock (the host's wall time), read each time the engine asks.
struct HostClock;

impl Clock for HostClock {
    fn now(&self) -> i64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .unwrap_or(0)
    }
}

impl SharedStore for EnvoySharedData {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        hostcalls::get_shared_data(key)
            .ok()
            .and_then(|(v, _)| v)
            .filter(|v| !v.is_empty())
    }
    fn set(&self, key: &str, value: &[u8]) -> bool {
        hostcalls::set_shared_data(key, Some(value), None).is_ok()
    }
    fn remove(&self, key: &str) {
        // This ABI has no delete for shared data: an empty value reads as absent.
        let _ = hostcalls::set_shared_data(key, Some(&[]), None);
    }
    fn update(&self, key: &str, f: &dyn Fn(Option<&[u8]>) -> Vec<u8>) -> bool {
        // Compare-and-swap: a write that another worker's overtook is made again from
        // what that one wrote.
        for _ in 0..16 {
            let (cur, cas) = hostcalls::get_shared_data(key).unwrap_or((None, None));
            let new = f(cur.as_deref().filter(|v| !v.is_empty()));
            match hostcalls::set_shared_data(key, Some(&new), cas) {
                Ok(()) => return true,
                Err(_) => continue,
            }
        }
        false
    }
}

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

struct Root {
    cfg: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
    /// What this VM's HTTP contexts share.
    vm: Rc<Vm>,
}

/// The state the HTTP contexts of one VM (one Envoy worker) share: the engine's, and the
/// requests waiting for another's part-table lookup, by object version.
#[derive(Default)]
struct Vm {
    engine: Rc<VmState>,
    waiters: RefCell<HashMap<String, Vec<Waiter>>>,
    /// Stream-ending actions decided inside a stream callback (context id, action). Envoy
    /// logs a stream that ends at once, calling `proxy_on_log` back into the VM, which the
    /// SDK refuses while it is still in that stream's callback (a "RefCell already
    /// borrowed" panic that took Envoy down): the root runs them on its next tick,
    /// outside any stream callback.
    deferred: RefCell<Vec<(u32, Deferred)>>,
}

/// A stream-ending action run from the root's tick (see [`Vm::deferred`]).
enum Deferred {
    /// A local reply.
    Reply(Reply),
    /// A reset (`true`: of the response).
    Reset(bool),
    /// Let a held response go on.
    Resume,
    /// Replace the held response headers, then let it go on.
    Headers(Headers),
    /// Replace the held response body (all of it), then let it go on.
    Body(Vec<u8>),
}

impl Vm {
    /// Runs `d` on stream `id` from the root's next tick.
    fn defer(&self, id: u32, d: Deferred) {
        self.deferred.borrow_mut().push((id, d));
        let _ = hostcalls::set_tick_period(RESET_TICK);
    }
}

/// Sends a local reply on the effective stream.
fn send_reply_now(r: &Reply) -> Result<(), proxy_wasm::types::Status> {
    let hs: Vec<(&str, &str)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    hostcalls::send_http_response(u32::from(r.status), hs, Some(&r.body))
}

/// Tick period of the root context: memory gauge, and resets deferred from call-outs.
const TICK: Duration = Duration::from_secs(1);
const RESET_TICK: Duration = Duration::from_millis(5);

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let json = self.get_plugin_configuration().unwrap_or_default();
        match Config::load(&json, &|k| std::env::var(k).ok()) {
            Ok(c) => {
                log(LogLevel::Info, &format!("s3crypt: configured: {c:?}"));
                self.cfg = Some(Rc::new(c));
                // A reconfigured VM keeps its share of the memory gauge (the gauge is
                // shared by name, so its id stays the same).
                let reported = self.metrics.memory_reported.get();
                self.metrics = Rc::new(Metrics::define());
                self.metrics.memory_reported.set(reported);
                self.metrics.report_memory();
                self.set_tick_period(TICK);
                true
            }
            Err(e) => {
                // Failing configuration makes Envoy reject the plugin: fail closed.
                log(
                    LogLevel::Critical,
                    &format!("s3crypt: configuration rejected: {e}"),
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let deferred: Vec<(u32, Deferred)> = std::mem::take(&mut *self.vm.deferred.borrow_mut());
        if !deferred.is_empty() {
            for (id, d) in deferred {
                if hostcalls::set_effective_context(id).is_err() {
                    continue; // gone already
                }
                let _ = match d {
                    Deferred::Reply(r) => send_reply_now(&r),
                    Deferred::Reset(true) => hostcalls::reset_http_response(),
                    Deferred::Reset(false) => hostcalls::reset_http_request(),
                    Deferred::Resume => hostcalls::resume_http_response(),
                    Deferred::Headers(h) => {
                        hostcalls::set_map(MapType::HttpResponseHeaders, pairs(&h))
                            .and_then(|()| hostcalls::resume_http_response())
                    }
                    Deferred::Body(b) => {
                        hostcalls::set_buffer(BufferType::HttpResponseBody, 0, 0, &b)
                            .and_then(|()| hostcalls::resume_http_response())
                    }
                };
            }
            self.set_tick_period(TICK);
        }
        self.metrics.report_memory();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        self.metrics.report_memory();
        let Some(cfg) = self.cfg.as_ref().map(Rc::clone) else {
            // Without a configuration nothing can be verified or encrypted: every request
            // gets 503 (returning no context would abort the VM).
            return Some(Box::new(Unconfigured));
        };
        let stats: Rc<dyn Stats> = self.metrics.clone();
        Some(Box::new(Http {
            id: context_id,
            vm: Rc::clone(&self.vm),
            ex: Rc::new(RefCell::new(Exchange::new(
                cfg,
                Ports {
                    stats,
                    store: Rc::new(EnvoySharedData),
                    clock: Rc::new(HostClock),
                    // WASI random_get: Envoy fills it from its CSPRNG.
                    rng: Rc::new(OsRandom),
                },
                Rc::clone(&self.vm.engine),
                String::new(),
            ))),
            buf: Vec::new(),
            in_callout: false,
            response_waiting: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The HTTP context of a plugin that has no configuration: refuses every request.
struct Unconfigured;

impl Context for Unconfigured {}

impl HttpContext for Unconfigured {
    fn on_http_request_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        let body = s3crypt_core::s3::error::S3Error::service_unavailable(
            "s3crypt: the filter is not configured; no request is served",
        )
        .to_xml("/", "");
        self.send_http_response(
            503,
            vec![("content-type", "application/xml")],
            Some(body.as_bytes()),
        );
        Action::Pause
    }
}

/// A request waiting for a part-table lookup: its context id and its exchange.
type Waiter = (u32, Rc<RefCell<Exchange>>);

/// Lets the requests that waited for lookups which have ended go on: each is planned
/// from the cached table (or refused) in its own context. What they do then needs no
/// call-out (a call-out made here would be routed to the current context).
fn wake_waiters(vm: &Vm, own: u32) {
    let mut switched = false;
    for version in vm.engine.finished_lookups() {
        let waiting = vm.waiters.borrow_mut().remove(&version);
        for (id, ex) in waiting.unwrap_or_default() {
            if hostcalls::set_effective_context(id).is_err() {
                continue; // gone
            }
            switched = true;
            let step = ex.borrow_mut().table_shared();
            match step {
                RequestStep::Forward(h) => {
                    let _ = hostcalls::set_map(MapType::HttpRequestHeaders, pairs(&h));
                    let _ = hostcalls::resume_http_request();
                }
                RequestStep::Reply(r) => {
                    // From another stream's callback: deferred (see `Vm::deferred`).
                    vm.defer(id, Deferred::Reply(r));
                }
                _ => {
                    // From another stream's callback: deferred (see `Vm::deferred`).
                    vm.defer(id, Deferred::Reset(false));
                }
            }
        }
    }
    if switched {
        let _ = hostcalls::set_effective_context(own);
    }
}

struct Http {
    /// This context's id (to come back to after waking others).
    id: u32,
    vm: Rc<Vm>,
    ex: Rc<RefCell<Exchange>>,
    /// Reused output buffer for body chunks.
    buf: Vec<u8>,
    /// Inside `on_http_call_response` (a reset must be deferred, see [`Vm::resets`]).
    in_callout: bool,
    /// Response headers held until the request's document arrived and was checked
    /// ([`ResponseStep::AfterRequest`]), with their end-of-stream flag.
    response_waiting: Option<(Headers, bool)>,
}

impl Http {
    /// The request ended with its document accepted: the response held for it goes on
    /// (from the root's tick: resuming may end the stream, which Envoy logs at once).
    fn release_waiting_response(&mut self) {
        let Some((h, eos)) = self.response_waiting.take() else {
            return;
        };
        let step = self.ex.borrow_mut().on_response_headers(&h, eos);
        match step {
            ResponseStep::Forward(out) => self.vm.defer(self.id, Deferred::Headers(out)),
            ResponseStep::ForwardAfter(out, c) => {
                self.set_http_response_headers(pairs(&out));
                let _ = self.hold_response_for(&c);
            }
            ResponseStep::AfterRequest => {
                log(
                    LogLevel::Warn,
                    "s3crypt: a response waits for a request that ended",
                );
                self.reset_http_response();
            }
        }
    }

    fn send_reply(&self, r: Reply) {
        let _ = send_reply_now(&r);
    }

    fn apply_request_step(&mut self, step: RequestStep) -> Action {
        match step {
            RequestStep::Forward(h) => {
                self.set_http_request_headers(pairs(&h));
                Action::Continue
            }
            RequestStep::Reply(r) => {
                if self.in_callout {
                    // (See `Vm::deferred`.)
                    self.vm.defer(self.id, Deferred::Reply(r));
                } else {
                    self.send_reply(r);
                }
                Action::Pause
            }
            RequestStep::CallOut(c) => self.call_out(&c),
            RequestStep::Wait(version) => {
                let me = (self.id, Rc::clone(&self.ex));
                self.vm
                    .waiters
                    .borrow_mut()
                    .entry(version)
                    .or_default()
                    .push(me);
                Action::Pause
            }
            RequestStep::Body(b) => {
                // The held body was emptied chunk by chunk: this is all of it.
                self.set_http_request_body(0, 0, &b);
                self.release_waiting_response();
                Action::Continue
            }
        }
    }

    /// Sends a call-out made while the request waits (headers or held body).
    fn call_out(&mut self, c: &CallOut) -> Action {
        if self.dispatch(c) {
            Action::Pause
        } else {
            let step = self.ex.borrow_mut().on_callout_response(None);
            self.apply_callout_step(step)
        }
    }

    /// Dispatches a call-out; its token goes to the exchange, which takes only the
    /// response that carries it.
    fn dispatch(&self, c: &CallOut) -> bool {
        let hs: Vec<(&str, &str)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match self.dispatch_http_call(
            &c.cluster,
            hs,
            c.body.as_deref(),
            vec![],
            Duration::from_millis(c.timeout_ms),
        ) {
            Ok(token) => {
                self.ex.borrow_mut().dispatched(token);
                true
            }
            Err(_) => false,
        }
    }

    /// Applies what the engine decided after a call-out; `Continue` means the paused
    /// request (or response) may go on.
    fn apply_callout_step(&mut self, step: CallOutStep) -> Action {
        match step {
            CallOutStep::Request(s) => self.apply_request_step(s),
            CallOutStep::Response(ResponseResume::Continue) => Action::Continue,
            CallOutStep::Response(ResponseResume::Body(b)) => {
                // The response body was held at its end, every chunk emptied: this is all
                // of it.
                if self.in_callout {
                    self.vm.defer(self.id, Deferred::Body(b));
                    return Action::Pause;
                }
                self.set_http_response_body(0, 0, &b);
                Action::Continue
            }
            CallOutStep::Response(ResponseResume::Lookup(c) | ResponseResume::Then(c)) => {
                self.hold_response_for(&c)
            }
            CallOutStep::Response(ResponseResume::Reset(msg)) => {
                log(LogLevel::Warn, &msg);
                if self.in_callout {
                    self.vm.defer(self.id, Deferred::Reset(true));
                } else {
                    self.reset_http_response();
                }
                Action::Pause
            }
        }
    }

    /// A call-out made from the response: hold the response until it answers.
    fn hold_response_for(&mut self, c: &CallOut) -> Action {
        if self.dispatch(c) {
            Action::Pause
        } else {
            let step = self.ex.borrow_mut().on_callout_response(None);
            self.apply_callout_step(step)
        }
    }
}

fn pairs(h: &Headers) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

impl Context for Http {
    fn on_http_call_response(&mut self, token: u32, _nh: usize, body_size: usize, _nt: usize) {
        let h = Headers::from_pairs(self.get_http_call_response_headers());
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        let resp = h.get(":status").is_some().then_some((&h, body.as_slice()));
        let step = self.ex.borrow_mut().on_callout_response_with(token, resp);
        let Some(step) = step else {
            return; // not this request's call-out
        };
        // The engine says which half of the stream the call-out held.
        let response = matches!(step, CallOutStep::Response(_));
        self.in_callout = true;
        let action = self.apply_callout_step(step);
        self.in_callout = false;
        // A part-table lookup may have ended: reads waiting for it go on.
        wake_waiters(&self.vm, self.id);
        if let Action::Continue = action {
            if response {
                // (See `Vm::deferred`.)
                self.vm.defer(self.id, Deferred::Resume);
            } else {
                self.resume_http_request();
            }
        }
    }
}

impl HttpContext for Http {
    /// The stream ends: a lookup it was making ends with it (its waiters are refused
    /// with 503 and retry), and it waits for nothing.
    fn on_log(&mut self) {
        let id = self.id;
        for list in self.vm.waiters.borrow_mut().values_mut() {
            list.retain(|(i, _)| *i != id);
        }
        self.ex.borrow_mut().abandon();
        wake_waiters(&self.vm, id);
    }

    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let h = Headers::from_pairs(self.get_http_request_headers());
        if let Some(id) = h.get("x-request-id") {
            self.ex.borrow_mut().set_request_id(id);
        }
        let step = self.ex.borrow_mut().on_request_headers(&h, end_of_stream);
        self.apply_request_step(step)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let chunk = self.get_http_request_body(0, body_size).unwrap_or_default();
        let mut out = std::mem::take(&mut self.buf);
        out.clear();
        let r = self
            .ex
            .borrow_mut()
            .on_request_body(&chunk, end_of_stream, &mut out);
        let action = match r {
            Ok(None) => {
                self.set_http_request_body(0, body_size, &out);
                if end_of_stream {
                    self.release_waiting_response();
                }
                Action::Continue
            }
            Ok(Some(call)) => {
                // The body is held (emptied here) until the call-outs decided what it is.
                self.set_http_request_body(0, body_size, &[]);
                self.call_out(&call)
            }
            Err(BodyError::Reply(reply)) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "s3crypt: request rejected: {}",
                        String::from_utf8_lossy(&reply.body)
                    ),
                );
                // Nothing more goes upstream; Envoy resets the upstream request, so the
                // backend never receives a complete body.
                self.set_http_request_body(0, body_size, &[]);
                self.send_reply(reply);
                Action::Pause
            }
            Err(BodyError::Reset(msg)) => {
                log(LogLevel::Warn, &msg);
                self.set_http_request_body(0, body_size, &[]);
                self.reset_http_request();
                Action::Pause
            }
        };
        self.buf = out;
        action
    }

    /// HTTP trailers carry nothing S3 defines (aws-chunked trailers are inside the body) and
    /// are not signed: a request with any is refused, and nothing of it completes upstream
    /// (an upload's final frame is only sent at the end of its body, which trailers delay).
    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        if num_trailers == 0 {
            return Action::Continue;
        }
        self.set_http_request_trailers(vec![]);
        let e = s3crypt_core::s3::error::S3Error::invalid_request(
            "s3crypt: HTTP trailers are not supported (aws-chunked trailers go in the body)",
        );
        log(LogLevel::Info, &format!("s3crypt: request rejected: {e}"));
        self.send_reply(Reply::error(&e, "", ""));
        Action::Pause
    }

    /// Response trailers from the backend are not passed on.
    fn on_http_response_trailers(&mut self, num_trailers: usize) -> Action {
        if num_trailers > 0 {
            self.set_http_response_trailers(vec![]);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let h = Headers::from_pairs(self.get_http_response_headers());
        let step = self.ex.borrow_mut().on_response_headers(&h, end_of_stream);
        match step {
            ResponseStep::Forward(out) => {
                self.set_http_response_headers(pairs(&out));
                Action::Continue
            }
            ResponseStep::ForwardAfter(out, c) => {
                self.set_http_response_headers(pairs(&out));
                self.hold_response_for(&c)
            }
            ResponseStep::AfterRequest => {
                self.response_waiting = Some((h, end_of_stream));
                Action::Pause
            }
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let chunk = self
            .get_http_response_body(0, body_size)
            .unwrap_or_default();
        let mut out = std::mem::take(&mut self.buf);
        out.clear();
        let r = self
            .ex
            .borrow_mut()
            .on_response_body(&chunk, end_of_stream, &mut out);
        let action = match r {
            Ok(hold) => {
                self.set_http_response_body(0, body_size, &out);
                match hold {
                    None => Action::Continue,
                    Some(c) => self.hold_response_for(&c),
                }
            }
            Err(e) => {
                let msg = match e {
                    BodyError::Reset(m) => m,
                    BodyError::Reply(r) => String::from_utf8_lossy(&r.body).into_owned(),
                };
                log(LogLevel::Warn, &msg);
                // Never release unauthenticated plaintext: drop this chunk and reset.
                self.set_http_response_body(0, body_size, &[]);
                self.reset_http_response();
                Action::Pause
            }
        };
        self.buf = out;
        action
    }
}
