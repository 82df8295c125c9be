//! Drives [`Exchange`]s as Envoy and `wasm/src/glue.rs` do, and the world they talk to.
//!
//! One [`Flow`] (`flow.rs`) per client request, a state machine over the glue's callbacks:
//! request headers (`Forward` continues, `Reply` answers, `CallOut` pauses everything until
//! its response, `Wait` parks the request until a shared part-table lookup ends), request
//! body chunks (held for a call-out, or refused: a local reply and an upstream request
//! that never completes), the upstream request on the fake backend, response headers
//! (`ForwardAfter` holds the response for a call-out), response body chunks (any error
//! resets the stream after what was already released). Proxy-wasm turns a paused header
//! callback into StopAllIteration, so no body reaches the filter while its headers wait;
//! call-outs carry the token the host gave them; after every call-out response and at
//! every stream's end (`on_log`: [`Exchange::abandon`]) the requests waiting for finished
//! lookups are woken with [`Exchange::table_shared`].
//!
//! [`run`] interleaves the runnable flows in a seeded order and delivers call-outs in the
//! order they are due on a virtual clock (faults can fail, delay or answer them).

use std::cell::Cell;
use std::rc::Rc;

use crate::config::Config;
use crate::headers::Headers;
use crate::ops::CallOut;

pub use super::flow::Flow;
use super::flow::St;
use super::s3::FakeS3;
use super::webdis::FakeWebdis;
use super::{Proxy, NOW};

/// An HTTP request or response as the harness passes it around: headers (pseudo-headers
/// included: `:method`, `:path`, `:status`) and the whole body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Http {
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Http {
    pub fn status(&self) -> u16 {
        self.headers
            .get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
    pub fn with_status(status: u16) -> Http {
        let mut h = Headers::new();
        h.set(":status", status.to_string());
        Http {
            headers: h,
            body: Vec::new(),
        }
    }
}

/// What a client got.
#[derive(Clone, Debug, Default)]
pub struct ClientResponse {
    /// 0: no response at all (reset before the headers went out).
    pub status: u16,
    pub headers: Headers,
    /// Every byte released downstream.
    pub body: Vec<u8>,
    /// The stream was reset (after `body`).
    pub reset: bool,
    /// Answered by the filter itself (a local reply).
    pub local: bool,
    /// Never ended: waited for something that did not come.
    pub stuck: bool,
}

impl ClientResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn xml(&self, name: &str) -> Option<String> {
        crate::s3::xml::element_text(&self.text(), name)
    }
    /// The S3 error code of an error body.
    pub fn code(&self) -> Option<String> {
        self.xml("Code")
    }
    /// Complete as a client sees it: every byte its `content-length` promised arrived (a
    /// reset after them goes unnoticed: the response looks whole), or, without a length,
    /// the stream ended without a reset.
    pub fn complete(&self) -> bool {
        if self.status == 0 || self.stuck {
            return false;
        }
        match self
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            Some(n) => n == self.body.len(),
            None => !self.reset,
        }
    }
    /// A complete 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status) && self.complete()
    }
}

/// Who a logged request went to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SentKind {
    /// The client's request, forwarded by the filter.
    Upstream,
    /// A call-out the filter made, to this cluster.
    CallOut(String),
}

/// A request the filter sent out, as the other end received it.
#[derive(Clone, Debug)]
pub struct Sent {
    pub kind: SentKind,
    pub proxy: usize,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// The whole body arrived (an upstream request cut short by a refusal does not).
    pub complete: bool,
    /// The answer's status, if it was executed.
    pub status: Option<u16>,
}

impl Sent {
    pub fn method(&self) -> &str {
        self.headers.get(":method").unwrap_or("")
    }
    pub fn path(&self) -> &str {
        self.headers.get(":path").unwrap_or("")
    }
}

/// What a fault does to a request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Connection failure: never arrives; a call-out gets no response, an upstream request
    /// Envoy's 503.
    Fail,
    /// Arrives (and is executed) this many milliseconds late; a call-out whose timeout
    /// passes first gets no response.
    Delay(u64),
    /// Answered with this status and no body, not executed.
    Status(u16),
    /// Answered with this, not executed.
    Answer(Http),
}

/// Where a fault applies: `cluster` `None` means the client's forwarded requests (the
/// router), `Some(c)` call-outs to cluster `c`; `path` a substring of `:path`.
#[derive(Clone, Debug)]
pub struct FaultRule {
    pub cluster: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub fault: Fault,
    /// How many more times (`None`: always).
    pub times: Option<usize>,
}

impl FaultRule {
    pub fn callouts(cluster: &str, fault: Fault) -> FaultRule {
        FaultRule {
            cluster: Some(cluster.to_string()),
            method: None,
            path: None,
            fault,
            times: None,
        }
    }
    pub fn upstream(fault: Fault) -> FaultRule {
        FaultRule {
            cluster: None,
            method: None,
            path: None,
            fault,
            times: None,
        }
    }
    pub fn path(mut self, p: &str) -> FaultRule {
        self.path = Some(p.to_string());
        self
    }
    pub fn method(mut self, m: &str) -> FaultRule {
        self.method = Some(m.to_string());
        self
    }
    pub fn times(mut self, n: usize) -> FaultRule {
        self.times = Some(n);
        self
    }
}

/// Random faults on call-outs (property tests): each call-out fails with `fail`, or is
/// delayed by up to `max_delay_ms` with `delay`.
#[derive(Clone, Debug)]
pub struct RandomFaults {
    pub fail: f64,
    pub delay: f64,
    pub max_delay_ms: u64,
}

/// A small seeded generator (SplitMix64) for splits, orders and faults.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 + f64::EPSILON < p
    }
}

/// How bodies are cut into the chunks Envoy delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Splitter {
    Whole,
    /// Chunks of this many bytes.
    Every(usize),
    /// Cut at these offsets.
    At(Vec<usize>),
    /// Random sizes (a byte, a few, around a frame, hundreds of KiB), sometimes an empty
    /// last chunk (an HTTP/2 END_STREAM on an empty DATA frame).
    Seeded,
}

impl Splitter {
    pub fn split(&self, body: &[u8], prng: &mut SplitMix) -> Vec<Vec<u8>> {
        if body.is_empty() {
            return Vec::new();
        }
        let mut cuts: Vec<usize> = match self {
            Splitter::Whole => Vec::new(),
            Splitter::Every(n) => (1..)
                .map(|i| i * n.max(&1))
                .take_while(|&c| c < body.len())
                .collect(),
            Splitter::At(v) => v.clone(),
            Splitter::Seeded => {
                let mut v = Vec::new();
                let mut at = 0usize;
                loop {
                    at += match prng.below(10) {
                        0 | 1 => 1 + prng.below(16),
                        2..=4 => 1 + prng.below(70_000),
                        _ => 16_384 + prng.below(240_000),
                    };
                    if at >= body.len() {
                        break;
                    }
                    v.push(at);
                }
                v
            }
        };
        cuts.retain(|&c| c > 0 && c < body.len());
        cuts.sort_unstable();
        cuts.dedup();
        let mut out = Vec::with_capacity(cuts.len() + 2);
        let mut from = 0;
        for c in cuts {
            out.push(body[from..c].to_vec());
            from = c;
        }
        out.push(body[from..].to_vec());
        if *self == Splitter::Seeded && prng.below(8) == 0 {
            out.push(Vec::new());
        }
        out
    }
}

/// Everything outside the proxies.
pub struct World {
    pub s3: FakeS3,
    pub webdis: FakeWebdis,
    pub clock: Rc<Cell<i64>>,
    elapsed_ms: u64,
    /// Every request the backend and webdis received, in order.
    pub sent: Vec<Sent>,
    /// Steps a real Envoy could not have taken, or filter behaviour the glue could not
    /// carry out (headers changed after the body began, a refused token, ...).
    pub anomalies: Vec<String>,
    pub faults: Vec<FaultRule>,
    pub random_faults: Option<RandomFaults>,
    pub req_split: Splitter,
    pub resp_split: Splitter,
    /// Call-out latency when no fault says otherwise.
    pub latency_ms: u64,
    pub prng: SplitMix,
    next_token: u32,
    pub(super) next_request: u64,
}

impl World {
    pub(super) fn new(cfg: &Config, seed: u64) -> World {
        let clock = Rc::new(Cell::new(NOW));
        let (backend_key, backend_secret) = cfg.backend_identity(None).unwrap_or(("", ""));
        World {
            s3: FakeS3::new(
                &cfg.plugin.upstream_authority,
                &cfg.plugin.region,
                backend_key,
                backend_secret,
            ),
            webdis: FakeWebdis::new(cfg.redis_authorization().map(str::to_string)),
            clock,
            elapsed_ms: 0,
            sent: Vec::new(),
            anomalies: Vec::new(),
            faults: Vec::new(),
            random_faults: None,
            req_split: Splitter::Seeded,
            resp_split: Splitter::Seeded,
            latency_ms: 1,
            prng: SplitMix(seed ^ 0x5eed_f00d_1234_5678),
            next_token: 100,
            next_request: 0,
        }
    }

    /// Steps the virtual time (and the clock, in whole seconds).
    pub fn advance_ms(&mut self, ms: u64) {
        self.elapsed_ms += ms;
        self.clock.set(NOW + (self.elapsed_ms / 1000) as i64);
    }

    pub fn now(&self) -> i64 {
        self.clock.get()
    }

    /// The first fault rule that applies (its count taken), else a random one.
    pub(super) fn fault_for(&mut self, cluster: Option<&str>, h: &Headers) -> Option<Fault> {
        let method = h.get(":method").unwrap_or("");
        let path = h.get(":path").unwrap_or("");
        let hit = self.faults.iter_mut().find(|r| {
            r.times != Some(0)
                && r.cluster.as_deref() == cluster
                && r.method.as_deref().is_none_or(|m| m == method)
                && r.path.as_deref().is_none_or(|p| path.contains(p))
        });
        if let Some(r) = hit {
            if let Some(t) = r.times.as_mut() {
                *t -= 1;
            }
            return Some(r.fault.clone());
        }
        let rf = self.random_faults.clone()?;
        cluster?;
        if self.prng.chance(rf.fail) {
            Some(Fault::Fail)
        } else if self.prng.chance(rf.delay) {
            Some(Fault::Delay(
                1 + self.prng.below(rf.max_delay_ms.max(1) as usize) as u64,
            ))
        } else {
            None
        }
    }

    /// Executes a request at the backend or webdis and logs it. `headers_at`: when its
    /// headers arrived (an upstream request's go ahead of its body).
    pub(super) fn execute(
        &mut self,
        proxy: usize,
        kind: SentKind,
        req: &Http,
        to_webdis: bool,
        headers_at: Option<i64>,
    ) -> Http {
        let now = self.now();
        let resp = if to_webdis {
            self.webdis.handle(req, now)
        } else {
            self.s3.handle_at(req, now, headers_at.unwrap_or(now))
        };
        self.sent.push(Sent {
            kind,
            proxy,
            headers: req.headers.clone(),
            body: req.body.clone(),
            complete: true,
            status: Some(resp.status()),
        });
        resp
    }
}

/// A call-out in flight.
struct InFlight {
    flow: usize,
    token: u32,
    call: CallOut,
    due_ms: u64,
    /// The response once due (`None`: none comes, the host reports a failure).
    outcome: Outcome,
}

enum Outcome {
    /// Executed when due, answered.
    Execute,
    /// Executed when due, but the timeout passes first.
    ExecuteTimedOut,
    Fail,
    Answer(Http),
}

/// Dispatches a call-out of flow `i`: its token to the exchange, its fate decided.
fn dispatch(i: usize, f: &mut Flow, p: &Proxy, c: CallOut, w: &mut World, q: &mut Vec<InFlight>) {
    w.next_token += 1;
    let token = w.next_token;
    f.ex.dispatched(token);
    let known =
        c.cluster == p.cfg.plugin.upstream_cluster || c.cluster == p.cfg.plugin.redis_cluster;
    let headers = Headers(c.headers.clone());
    let fault = if known {
        w.fault_for(Some(&c.cluster), &headers)
    } else {
        w.anomalies
            .push(format!("call-out to unknown cluster {}", c.cluster));
        Some(Fault::Fail)
    };
    let now = w.elapsed_ms;
    let (due_ms, outcome) = match fault {
        None => (now + w.latency_ms, Outcome::Execute),
        Some(Fault::Delay(ms)) if ms >= c.timeout_ms => {
            (now + c.timeout_ms, Outcome::ExecuteTimedOut)
        }
        Some(Fault::Delay(ms)) => (now + ms, Outcome::Execute),
        Some(Fault::Fail) => (now + w.latency_ms, Outcome::Fail),
        Some(Fault::Status(s)) => (now + w.latency_ms, Outcome::Answer(Http::with_status(s))),
        Some(Fault::Answer(a)) => (now + w.latency_ms, Outcome::Answer(a)),
    };
    q.push(InFlight {
        flow: i,
        token,
        call: c,
        due_ms,
        outcome,
    });
}

/// Wakes the flows of proxy `p` waiting for lookups that ended (glue: `wake_waiters`).
fn wake(p: usize, proxies: &[Proxy], flows: &mut [Flow], w: &mut World) {
    for version in proxies[p].vm.finished_lookups() {
        for f in flows.iter_mut() {
            if f.proxy == p && f.state == St::Wait(version.clone()) {
                f.woken(w);
            }
        }
    }
}

/// Runs `flows` to their ends; what each client got, in order.
pub fn run(proxies: &[Proxy], w: &mut World, mut flows: Vec<Flow>) -> Vec<ClientResponse> {
    let mut q: Vec<InFlight> = Vec::new();
    loop {
        let runnable: Vec<usize> = (0..flows.len()).filter(|&i| flows[i].runnable()).collect();
        if !runnable.is_empty() {
            let i = runnable[w.prng.below(runnable.len())];
            let p = flows[i].proxy;
            let call = flows[i].step(&proxies[p], w);
            if let Some(c) = call {
                dispatch(i, &mut flows[i], &proxies[p], c, w, &mut q);
            }
            if flows[i].state == St::Done {
                // on_log: the stream ended.
                flows[i].ex.abandon();
                wake(p, proxies, &mut flows, w);
            }
            continue;
        }
        let Some(k) = (0..q.len()).min_by_key(|&k| (q[k].due_ms, q[k].token)) else {
            break;
        };
        let c = q.remove(k);
        if c.due_ms > w.elapsed_ms {
            w.advance_ms(c.due_ms - w.elapsed_ms);
        }
        let i = c.flow;
        let p = flows[i].proxy;
        let to_webdis = c.call.cluster == proxies[p].cfg.plugin.redis_cluster
            && c.call.cluster != proxies[p].cfg.plugin.upstream_cluster;
        let req = Http {
            headers: Headers(c.call.headers.clone()),
            body: c.call.body.clone().unwrap_or_default(),
        };
        let kind = SentKind::CallOut(c.call.cluster.clone());
        let resp = match c.outcome {
            Outcome::Execute => Some(w.execute(p, kind, &req, to_webdis, None)),
            Outcome::ExecuteTimedOut => {
                w.execute(p, kind, &req, to_webdis, None);
                None
            }
            Outcome::Fail => None,
            Outcome::Answer(a) => Some(a),
        };
        let call = flows[i].deliver(c.token, resp.as_ref(), w);
        if let Some(next) = call {
            dispatch(i, &mut flows[i], &proxies[p], next, w, &mut q);
        }
        // The glue wakes waiters after every call-out response.
        wake(p, proxies, &mut flows, w);
        if flows[i].state == St::Done {
            flows[i].ex.abandon();
            wake(p, proxies, &mut flows, w);
        }
    }
    flows.into_iter().map(|f| f.result(w)).collect()
}
