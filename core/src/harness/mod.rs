//! An in-memory harness that runs the filter's [`Exchange`] the way Envoy does, against a
//! fake S3 backend and a fake webdis, like quinn-proto's test `Pair` runs two endpoints
//! against each other: no sockets, no Envoy, no clock but the one the test steps.
//!
//! - [`Harness`] holds one or more proxies (each an Envoy process: a configuration, its
//!   shared data and one worker's [`VmState`]), the backend ([`s3::FakeS3`]) and Redis
//!   behind webdis ([`webdis::FakeWebdis`]), a steppable clock and a seeded random source.
//! - [`Request`] is what a client sends: signed like a real client (SigV4 headers or a
//!   presigned URL, aws-chunked streaming bodies as the AWS CLI and SDKs send them).
//! - [`Harness::send`] drives one request through a fresh [`Exchange`] exactly as
//!   `wasm/src/glue.rs` does (headers, request body in chunks, call-outs with tokens,
//!   the upstream request, response headers and body in chunks, waits for shared table
//!   lookups) and returns what the client got ([`ClientResponse`]); [`Harness::send_all`]
//!   interleaves several requests on one worker.
//! - Everything sent upstream and every call-out is logged ([`drive::Sent`]) so that
//!   [`check`] can hold the filter to its invariants: what goes upstream as object data
//!   is ciphertext in the object format, and what comes back downstream is verified.
//!
//! Built for the crate's tests and, with the `harness` feature, for fuzz targets.
// Test support: a misused harness panics like a failed assertion would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod check;
pub mod client;
pub mod drive;
mod flow;
pub mod s3;
mod s3_multipart;
mod s3_objects;
mod s3_xml;
pub mod sim;
pub mod webdis;

#[cfg(test)]
mod tests_adversarial;
#[cfg(test)]
mod tests_attributes;
#[cfg(test)]
mod tests_auth;
#[cfg(test)]
mod tests_boundary;
#[cfg(test)]
mod tests_conditional;
#[cfg(test)]
mod tests_copy;
#[cfg(test)]
mod tests_edges;
#[cfg(test)]
mod tests_etags;
#[cfg(test)]
mod tests_multipart;
#[cfg(test)]
mod tests_multipart_etags;
#[cfg(test)]
mod tests_object_etags;
#[cfg(test)]
mod tests_objects;
#[cfg(test)]
mod tests_predecessor;
#[cfg(test)]
mod tests_props;
#[cfg(test)]
mod tests_protocol;
#[cfg(test)]
mod tests_redis;
#[cfg(test)]
mod tests_sse;
#[cfg(test)]
mod tests_tamper_multipart;
#[cfg(test)]
mod tests_upstream;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

pub use client::{Auth, Chunked, Payload, Request};
pub use drive::{ClientResponse, Fault, FaultRule, Sent, SentKind, Splitter};

use crate::config::{
    Config, ENV_ACTIVE_KEY_ID, ENV_BACKEND_ACCESS_KEY_ID, ENV_BACKEND_SECRET_ACCESS_KEY,
    ENV_CLIENT_CREDENTIALS, ENV_KEKS, ENV_REDIS_AUTH,
};
use crate::crypto::SeededRandom;
use crate::ops::{Counter, SharedStore, Stats, VmState};

/// The clock's start: 2023-11-14T22:13:20Z.
pub const NOW: i64 = 1_700_000_000;
/// The bucket every harness starts with.
pub const BUCKET: &str = "b";
/// What clients sign with (the configured client credentials).
pub const CLIENT_KEY: &str = "AKIDHARNESSCLIENT";
pub const CLIENT_SECRET: &str = "client/secret+key";
/// What the filter signs upstream requests with, and what the fake backend verifies.
pub const BACKEND_KEY: &str = "AKIDHARNESSBACKEND";
pub const BACKEND_SECRET: &str = "backend/secret+key";
/// The backend's authority as the filter signs it.
pub const UPSTREAM_AUTHORITY: &str = "s3.backend:9000";
/// The authority clients send to Envoy.
pub const CLIENT_AUTHORITY: &str = "s3.local:8080";
/// webdis basic auth in Redis mode.
pub const REDIS_AUTH: &str = "harness:redis-pw";
/// The predecessor's key string (`S3PROXY_ENCRYPT_KEY`; read only with `predecessor_read`).
pub const PREDECESSOR_KEY: &str = "the harness predecessor key";
/// The key-encryption key of the default configuration.
pub const KEK: [u8; 32] = [7u8; 32];
pub const KEY_ID: &str = "k1";

/// Envoy shared data of one proxy: one key space for all its workers.
#[derive(Default)]
pub struct MemStore(pub RefCell<HashMap<String, Vec<u8>>>);

impl SharedStore for MemStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        // An empty value reads as absent (the glue removes by writing an empty value).
        self.0.borrow().get(key).filter(|v| !v.is_empty()).cloned()
    }
    fn set(&self, key: &str, value: &[u8]) -> bool {
        self.0.borrow_mut().insert(key.to_string(), value.to_vec());
        true
    }
    fn remove(&self, key: &str) {
        self.0.borrow_mut().remove(key);
    }
    fn update(&self, key: &str, f: &dyn Fn(Option<&[u8]>) -> Vec<u8>) -> bool {
        let new = f(self.get(key).as_deref());
        self.set(key, &new)
    }
}

impl MemStore {
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.0.borrow().keys().cloned().collect();
        k.sort();
        k
    }
}

/// Counters and log notes of one proxy.
#[derive(Default)]
pub struct CountingStats {
    pub counts: RefCell<HashMap<&'static str, u64>>,
    pub notes: RefCell<Vec<String>>,
}

impl Stats for CountingStats {
    fn add(&self, c: Counter, n: u64) {
        *self.counts.borrow_mut().entry(c.name()).or_default() += n;
    }
    fn note(&self, msg: &str) {
        self.notes.borrow_mut().push(msg.to_string());
    }
}

impl CountingStats {
    pub fn get(&self, c: Counter) -> u64 {
        self.counts.borrow().get(c.name()).copied().unwrap_or(0)
    }
}

/// How a proxy is configured.
#[derive(Clone, Debug)]
pub struct Options {
    /// `state_store: redis` (upload state in the fake webdis) instead of shared data.
    pub redis: bool,
    /// Further plugin configuration (`"suite"`, `"passthrough_unencrypted"`, ...).
    pub plugin: serde_json::Map<String, serde_json::Value>,
    /// Key-encryption keys (id, key); the first is active unless `active` names another.
    pub keks: Vec<(String, [u8; 32])>,
    pub active: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            redis: false,
            plugin: serde_json::Map::new(),
            keks: vec![(KEY_ID.to_string(), KEK)],
            active: None,
        }
    }
}

impl Options {
    pub fn shared() -> Options {
        Options::default()
    }
    pub fn redis() -> Options {
        Options {
            redis: true,
            ..Options::default()
        }
    }
    /// A plugin configuration setting.
    pub fn with(mut self, key: &str, value: serde_json::Value) -> Options {
        self.plugin.insert(key.to_string(), value);
        self
    }
    pub fn keks(mut self, keks: &[(&str, [u8; 32])], active: Option<&str>) -> Options {
        self.keks = keks.iter().map(|(i, k)| (i.to_string(), *k)).collect();
        self.active = active.map(str::to_string);
        self
    }

    /// The configuration as Envoy would load it (plugin JSON and environment).
    pub fn config(&self) -> Config {
        let mut json = self.plugin.clone();
        json.insert("upstream_authority".into(), UPSTREAM_AUTHORITY.into());
        if self.redis {
            json.insert("state_store".into(), "redis".into());
        }
        let keks = self
            .keks
            .iter()
            .map(|(id, k)| format!("{id}={}", B64.encode(k)))
            .collect::<Vec<_>>()
            .join(",");
        let active = self.active.clone();
        let redis = self.redis;
        let env = move |k: &str| match k {
            ENV_KEKS => Some(keks.clone()),
            ENV_ACTIVE_KEY_ID => active.clone(),
            ENV_CLIENT_CREDENTIALS => Some(format!("{CLIENT_KEY}:{CLIENT_SECRET}")),
            ENV_BACKEND_ACCESS_KEY_ID => Some(BACKEND_KEY.into()),
            ENV_BACKEND_SECRET_ACCESS_KEY => Some(BACKEND_SECRET.into()),
            ENV_REDIS_AUTH if redis => Some(REDIS_AUTH.into()),
            "S3PROXY_ENCRYPT_KEY" => Some(PREDECESSOR_KEY.into()),
            _ => None,
        };
        let bytes = serde_json::to_vec(&serde_json::Value::Object(json)).unwrap();
        Config::load(&bytes, &env).expect("harness configuration")
    }
}

/// One Envoy process (one worker): its configuration, shared data, VM state and stats.
pub struct Proxy {
    pub cfg: Rc<Config>,
    pub store: Rc<MemStore>,
    pub vm: Rc<VmState>,
    pub stats: Rc<CountingStats>,
}

impl Proxy {
    fn new(opts: &Options) -> Proxy {
        Proxy {
            cfg: Rc::new(opts.config()),
            store: Rc::new(MemStore::default()),
            vm: Rc::new(VmState::default()),
            stats: Rc::new(CountingStats::default()),
        }
    }

    pub fn counter(&self, c: Counter) -> u64 {
        self.stats.get(c)
    }
}

/// The whole system under test.
pub struct Harness {
    pub proxies: Vec<Proxy>,
    /// The backend, the webdis, the logs, the clock, faults and splitters.
    pub world: drive::World,
    pub rng: Rc<SeededRandom>,
}

impl Harness {
    /// One proxy configured by `opts`, an empty backend with bucket [`BUCKET`], the
    /// clock at [`NOW`], everything random derived from `seed`.
    pub fn new(opts: Options, seed: u64) -> Harness {
        let proxy = Proxy::new(&opts);
        let world = drive::World::new(&proxy.cfg, seed);
        Harness {
            proxies: vec![proxy],
            world,
            rng: Rc::new(SeededRandom::new(seed)),
        }
    }

    pub fn shared(seed: u64) -> Harness {
        Harness::new(Options::shared(), seed)
    }

    pub fn redis(seed: u64) -> Harness {
        Harness::new(Options::redis(), seed)
    }

    /// Another Envoy in front of the same backend (and webdis): its index.
    pub fn add_proxy(&mut self, opts: Options) -> usize {
        self.proxies.push(Proxy::new(&opts));
        self.proxies.len() - 1
    }

    /// Another worker of proxy `of`'s Envoy: the same configuration and shared data, its
    /// own VM (its index).
    pub fn add_worker(&mut self, of: usize) -> usize {
        let p = &self.proxies[of];
        let w = Proxy {
            cfg: Rc::clone(&p.cfg),
            store: Rc::clone(&p.store),
            vm: Rc::new(VmState::default()),
            stats: Rc::clone(&p.stats),
        };
        self.proxies.push(w);
        self.proxies.len() - 1
    }

    /// Proxy `i` restarts: its shared data and VM state are gone.
    pub fn restart(&mut self, i: usize) {
        let p = &mut self.proxies[i];
        p.store = Rc::new(MemStore::default());
        p.vm = Rc::new(VmState::default());
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxies[0]
    }

    pub fn cfg(&self) -> &Config {
        &self.proxies[0].cfg
    }

    pub fn now(&self) -> i64 {
        self.world.clock.get()
    }

    /// Steps the clock.
    pub fn advance(&mut self, secs: i64) {
        self.world.advance_ms(secs.max(0) as u64 * 1000);
    }

    /// Sends a request through proxy 0.
    pub fn send(&mut self, r: Request) -> ClientResponse {
        self.send_on(0, r)
    }

    /// Sends a request through proxy `p` and runs it to its end.
    pub fn send_on(&mut self, p: usize, r: Request) -> ClientResponse {
        self.send_all(vec![(p, r)]).pop().unwrap()
    }

    /// Sends several requests at once; their callbacks interleave (seeded order) as
    /// those of concurrent requests on one Envoy worker do.
    pub fn send_all(&mut self, reqs: Vec<(usize, Request)>) -> Vec<ClientResponse> {
        let flows = reqs
            .into_iter()
            .map(|(p, r)| {
                let proxy = &self.proxies[p];
                let prepared = r.prepare(CLIENT_AUTHORITY, &proxy.cfg.plugin.region, self.now());
                drive::Flow::new(
                    p,
                    proxy,
                    Rc::clone(&self.rng) as _,
                    prepared,
                    r.cut_after,
                    &mut self.world,
                )
            })
            .collect();
        drive::run(&self.proxies, &mut self.world, flows)
    }

    /// What the backend received since log position `from` (see [`Harness::mark`]).
    pub fn sent_since(&self, from: usize) -> &[Sent] {
        &self.world.sent[from.min(self.world.sent.len())..]
    }

    /// The current log position.
    pub fn mark(&self) -> usize {
        self.world.sent.len()
    }

    /// Panics if the driver saw Envoy-impossible steps (see [`drive::World::anomalies`]).
    pub fn assert_clean(&self) {
        assert!(
            self.world.anomalies.is_empty(),
            "driver anomalies: {:?}",
            self.world.anomalies
        );
    }

    // Conveniences for the common operations (path-style, bucket [`BUCKET`]).

    pub fn put(&mut self, key: &str, data: &[u8]) -> ClientResponse {
        self.send(Request::put(&obj(key), data))
    }

    pub fn get(&mut self, key: &str) -> ClientResponse {
        self.send(Request::get(&obj(key)))
    }

    pub fn get_range(&mut self, key: &str, range: &str) -> ClientResponse {
        self.send(Request::get(&obj(key)).header("range", range))
    }

    pub fn get_part(&mut self, key: &str, n: u32) -> ClientResponse {
        self.send(Request::get(&format!("{}?partNumber={n}", obj(key))))
    }

    pub fn head(&mut self, key: &str) -> ClientResponse {
        self.send(Request::new("HEAD", &obj(key)))
    }

    pub fn delete(&mut self, key: &str) -> ClientResponse {
        self.send(Request::new("DELETE", &obj(key)))
    }

    /// CreateMultipartUpload; the UploadId.
    pub fn create_upload(&mut self, key: &str) -> String {
        let r = self.send(Request::new("POST", &format!("{}?uploads", obj(key))));
        assert_eq!(r.status, 200, "create: {}", r.text());
        r.xml("UploadId").expect("an UploadId")
    }

    pub fn upload_part(&mut self, key: &str, id: &str, n: u32, data: &[u8]) -> ClientResponse {
        self.send(Request::put(&part_path(key, id, n), data))
    }

    /// UploadPart that must succeed: the part's ETag.
    pub fn part_ok(&mut self, key: &str, id: &str, n: u32, data: &[u8]) -> String {
        let r = self.upload_part(key, id, n, data);
        assert_eq!(r.status, 200, "part {n}: {}", r.text());
        r.header("etag").expect("an ETag").to_string()
    }

    pub fn complete(&mut self, key: &str, id: &str, parts: &[(u32, String)]) -> ClientResponse {
        self.send(Request::post(
            &format!("{}?uploadId={}", obj(key), enc(id)),
            complete_body(parts).as_bytes(),
        ))
    }

    /// A whole multipart upload of `parts` (numbered 1..); Complete's response.
    pub fn multipart(&mut self, key: &str, parts: &[&[u8]]) -> ClientResponse {
        let id = self.create_upload(key);
        let etags: Vec<(u32, String)> = (1u32..)
            .zip(parts)
            .map(|(n, p)| (n, self.part_ok(key, &id, n, p)))
            .collect();
        self.complete(key, &id, &etags)
    }

    /// ListObjectsV2 through the filter: (key, size, etag) of each entry.
    pub fn list(&mut self, query: &str) -> Vec<(String, u64, String)> {
        let sep = if query.is_empty() { "" } else { "&" };
        let r = self.send(Request::get(&format!("/{BUCKET}?list-type=2{sep}{query}")));
        assert_eq!(r.status, 200, "list: {}", r.text());
        s3_xml::entries(&r.text())
    }
}

/// Path of an object of [`BUCKET`] (the key percent-encoded, `/` kept).
pub fn obj(key: &str) -> String {
    format!("/{BUCKET}/{}", crate::s3::uri_encode(key, false))
}

/// A query value percent-encoded.
pub fn enc(v: &str) -> String {
    crate::s3::uri_encode(v, true)
}

/// Path of UploadPart `n` of upload `id` of `key`.
pub fn part_path(key: &str, id: &str, n: u32) -> String {
    format!("{}?partNumber={n}&uploadId={}", obj(key), enc(id))
}

/// A CompleteMultipartUpload part list.
pub fn complete_body(parts: &[(u32, String)]) -> String {
    let mut s = String::from("<CompleteMultipartUpload>");
    for (n, e) in parts {
        s.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
            crate::s3::error::xml_escape(e)
        ));
    }
    s.push_str("</CompleteMultipartUpload>");
    s
}

/// Deterministic, high-entropy test data: a SplitMix64 stream of `seed`.
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut g = drive::SplitMix(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x0123_4567_89ab_cdef);
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        out.extend_from_slice(&g.next_u64().to_le_bytes());
    }
    out.truncate(n);
    out
}
