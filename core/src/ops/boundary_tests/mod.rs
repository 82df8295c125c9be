//! The request boundary driven natively through [`Exchange`]: what goes upstream is
//! rebuilt from what the client signed, unknown operations and unsigned `x-amz-*`
//! headers never get there, and upload state is only forgotten when the backend
//! confirmed an abort.

use std::cell::RefCell;
use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::*;
#[allow(unused_imports)]
use super::{
    complete::*, copy::*, cx::*, get::*, part_copy::*, put::*, request::*, response::*, table::*,
    vm::*,
};
use crate::config::{
    ENV_ACTIVE_KEY_ID, ENV_BACKEND_ACCESS_KEY_ID, ENV_BACKEND_SECRET_ACCESS_KEY,
    ENV_CLIENT_CREDENTIALS, ENV_KEKS,
};
#[allow(unused_imports)]
use crate::crypto::{self, DataKey, Suite};
#[allow(unused_imports)]
use crate::format::part_table::PartTable;
#[allow(unused_imports)]
use crate::format::*;
#[allow(unused_imports)]
use crate::s3::range::RangeSpec;
#[allow(unused_imports)]
use crate::state::{self, stage, UploadState};
#[allow(unused_imports)]
use md5::{Digest as _, Md5};
#[allow(unused_imports)]
use sha2::Sha256;

const NOW: i64 = 1_700_000_000;

#[derive(Default)]
struct MemStore(RefCell<HashMap<String, Vec<u8>>>);

impl SharedStore for MemStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.borrow().get(key).cloned()
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

struct NoStats;

impl Stats for NoStats {
    fn add(&self, _c: Counter, _n: u64) {}
}

fn config() -> Rc<Config> {
    config_with(br#"{"upstream_authority":"backend:9000"}"#)
}

/// The test configuration with this plugin configuration.
fn config_with(json: &[u8]) -> Rc<Config> {
    let env = |k: &str| match k {
        ENV_KEKS => Some(format!("k1={}", B64.encode([7u8; 32]))),
        ENV_ACTIVE_KEY_ID => Some("k1".into()),
        ENV_CLIENT_CREDENTIALS => Some("AK1:secret1".into()),
        ENV_BACKEND_ACCESS_KEY_ID => Some("BK".into()),
        ENV_BACKEND_SECRET_ACCESS_KEY => Some("bsecret".into()),
        _ => None,
    };
    Rc::new(Config::load(json, &env).unwrap())
}

fn exchange(store: &Rc<MemStore>) -> Exchange {
    exchange_at(store, Rc::new(std::cell::Cell::new(NOW)))
}

thread_local! {
    /// The VM state of a test's exchanges (each test runs on its own thread, like each
    /// Envoy worker has its own VM).
    static VM: Rc<VmState> = Rc::new(VmState::default());
}

static SEEDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// An exchange whose clock the test holds (and may step).
fn exchange_at(store: &Rc<MemStore>, clock: Rc<std::cell::Cell<i64>>) -> Exchange {
    exchange_with(store, clock, config())
}

/// An exchange under configuration `cfg`.
fn exchange_with(
    store: &Rc<MemStore>,
    clock: Rc<std::cell::Cell<i64>>,
    cfg: Rc<Config>,
) -> Exchange {
    let store: Rc<dyn SharedStore> = store.clone();
    let vm = VM.with(Rc::clone);
    let ports = Ports {
        stats: Rc::new(NoStats),
        store,
        clock,
        // Seeded, and a different seed for every exchange (as every object gets its own key).
        rng: Rc::new(crate::crypto::SeededRandom::new(
            SEEDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        )),
    };
    Exchange::new(cfg, ports, vm, "req".into())
}

fn finished_lookups() -> Vec<String> {
    VM.with(|vm| vm.finished_lookups())
}

/// A request signed by the client (every `x-amz-*`, content-type and host signed), then
/// `unsigned` headers added.
fn request(
    method: &str,
    path: &str,
    signed: &[(&str, &str)],
    unsigned: &[(&str, &str)],
) -> Headers {
    request_with(method, path, signed, unsigned, sigv4::EMPTY_SHA256)
}

fn request_with(
    method: &str,
    path: &str,
    signed: &[(&str, &str)],
    unsigned: &[(&str, &str)],
    payload: &str,
) -> Headers {
    let mut h = Headers::new();
    h.set(":method", method);
    h.set(":path", path);
    h.set(":authority", "s3.local:8080");
    h.set(":scheme", "http");
    h.set("x-forwarded-proto", "http");
    for (k, v) in signed {
        h.0.push((k.to_string(), v.to_string()));
    }
    sigv4::sign(
        method,
        path,
        &mut h,
        "AK1",
        "secret1",
        "us-east-1",
        NOW,
        payload,
    );
    for (k, v) in unsigned {
        h.0.push((k.to_string(), v.to_string()));
    }
    h
}

fn forwarded(step: RequestStep) -> Headers {
    match step {
        RequestStep::Forward(h) => h,
        other => panic!("expected Forward, got {other:?}"),
    }
}

/// The upstream request of a whole GET or HEAD: the probe of the object's last bytes
/// it makes first answered 404 (an object the backend does not have), then forwarded.
fn read_forwarded(ex: &mut Exchange, h: &Headers, eos: bool) -> Headers {
    match ex.on_request_headers(h, eos) {
        RequestStep::CallOut(c) => {
            assert!(c
                .headers
                .iter()
                .any(|(k, v)| k == "range" && v == "bytes=-156"));
            let nf = Headers(vec![(":status".into(), "404".into())]);
            match ex.on_callout_response(Some((&nf, b""))) {
                CallOutStep::Request(step) => forwarded(step),
                other => panic!("expected a request step, got {other:?}"),
            }
        }
        other => forwarded(other),
    }
}

fn replied(step: RequestStep) -> Reply {
    match step {
        RequestStep::Reply(r) => r,
        other => panic!("expected Reply, got {other:?}"),
    }
}

fn names(h: &Headers) -> Vec<String> {
    let mut v: Vec<String> = h.iter().map(|(k, _)| k.clone()).collect();
    v.sort();
    v
}

#[test]
fn upstream_is_rebuilt_from_signed_headers() {
    let store = Rc::new(MemStore::default());
    let h = request(
        "GET",
        "/b/a%20b/c?versionId=1",
        &[("x-amz-meta-x", "1"), ("range", "bytes=0-1")],
        &[
            ("user-agent", "ua"),
            ("if-none-match", "*"),
            ("cache-control", "no-cache"),
            ("x-evil", "1"),
            ("cookie", "c"),
        ],
    );
    let up = read_forwarded(&mut exchange(&store), &h, true);
    assert_eq!(up.get(":path"), Some("/b/a%20b/c?versionId=1"));
    assert_eq!(up.get(":authority"), Some("backend:9000"));
    // The filter's own signature, the signed headers, Envoy's routing header: no more.
    assert_eq!(
        names(&up),
        [
            ":authority",
            ":method",
            ":path",
            ":scheme",
            "authorization",
            "x-amz-content-sha256",
            "x-amz-date",
            "x-amz-meta-x",
            "x-forwarded-proto",
        ]
    );
    assert!(up
        .get("authorization")
        .is_some_and(|a| a.contains("Credential=BK/")));
}

#[test]
fn unsigned_amz_headers_and_unknown_operations_never_go_upstream() {
    let store = Rc::new(MemStore::default());
    let h = request("PUT", "/b/k", &[], &[("x-amz-copy-source", "/b/secret")]);
    let r = replied(exchange(&store).on_request_headers(&h, false));
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("x-amz-copy-source"));
    for p in [
        "/b/k?torrent",
        "/b/k?restore",
        "/b/k?x-id=PutObject&torrent",
        "/b/k?foo=1",
    ] {
        let h = request("PUT", p, &[], &[]);
        assert_eq!(
            replied(exchange(&store).on_request_headers(&h, false)).status,
            501,
            "{p}"
        );
    }
    for p in ["/b/x/../k", "/b/./k", "/other/../b/k", "/b/%2e%2E/k"] {
        let h = request("GET", p, &[], &[]);
        assert_eq!(
            replied(exchange(&store).on_request_headers(&h, true)).status,
            400,
            "{p}"
        );
    }
    let h = request("PUT", "/b/k", &[(ENVELOPE_HEADER, "v=1;forged")], &[]);
    assert_eq!(
        replied(exchange(&store).on_request_headers(&h, false)).status,
        400
    );
    // A signed header given twice (the signature covers both values, joined).
    let h = request(
        "PUT",
        "/b/k",
        &[("x-amz-meta-a", "1"), ("x-amz-meta-a", "2")],
        &[],
    );
    let e = replied(exchange(&store).on_request_headers(&h, false));
    assert_eq!(e.status, 400);
    assert!(String::from_utf8_lossy(&e.body).contains("more than once"));
}

#[test]
fn browser_post_uploads_are_refused_with_a_clear_error() {
    let store = Rc::new(MemStore::default());
    let form = "multipart/form-data; boundary=xyz";
    // Unsigned (the policy and its signature are in the form), to the bucket: 501 first.
    for path in ["/b", "/b/", "/"] {
        let mut h = Headers::new();
        for (k, v) in [
            (":method", "POST"),
            (":path", path),
            (":authority", "s3.local"),
            ("content-type", form),
        ] {
            h.set(k, v);
        }
        let r = replied(exchange(&store).on_request_headers(&h, false));
        assert_eq!(r.status, 501, "{path}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            body.contains("NotImplemented") && body.contains("browser POST"),
            "{body}"
        );
    }
    // Other POSTs are not mistaken for it: a signed DeleteObjects is forwarded.
    let h = request_with(
        "POST",
        "/b?delete",
        &[],
        &[("content-type", form)],
        sigv4::UNSIGNED_PAYLOAD,
    );
    forwarded(exchange(&store).on_request_headers(&h, false));
}

#[test]
fn bodies_of_unknown_meaning_are_refused() {
    let store = Rc::new(MemStore::default());
    // GET with a body.
    let mut ex = exchange(&store);
    let h = request("GET", "/b/k", &[], &[]);
    read_forwarded(&mut ex, &h, false);
    let mut out = Vec::new();
    assert!(matches!(
        ex.on_request_body(b"data", true, &mut out),
        Err(BodyError::Reply(r)) if r.status == 400
    ));
    assert!(out.is_empty());
    // Object data sent as a tagging document: held back, then refused.
    let mut ex = exchange(&store);
    let h = request_with(
        "PUT",
        "/b/k?tagging",
        &[],
        &[("content-length", "9")],
        sigv4::UNSIGNED_PAYLOAD,
    );
    forwarded(ex.on_request_headers(&h, false));
    let mut out = Vec::new();
    assert!(ex.on_request_body(b"plain", false, &mut out).is_ok());
    assert!(
        out.is_empty(),
        "nothing is forwarded before the document is checked"
    );
    assert!(matches!(
        ex.on_request_body(b"text", true, &mut out),
        Err(BodyError::Reply(r)) if r.status == 400
    ));
    // A real tagging document is forwarded as it came.
    let mut ex = exchange(&store);
    forwarded(ex.on_request_headers(&h, false));
    let doc = b"<Tagging><TagSet></TagSet></Tagging>";
    let mut out = Vec::new();
    ex.on_request_body(doc, true, &mut out).unwrap();
    assert_eq!(out, doc);
}

/// Found in CI: the backend may answer a request whose document is still arriving
/// (RGW: 404 for ?tagging of a missing object, before reading the body). Its response
/// went out, and the filter's refusal of the document came after the headers: Envoy
/// reset the stream (the client saw headers and no body). The response now waits for the
/// request to end: a refused document is answered as the S3 error, an accepted one lets
/// the backend's answer through.
#[test]
fn an_early_backend_answer_waits_for_the_document_check() {
    let store = Rc::new(MemStore::default());
    let h = request_with(
        "PUT",
        "/b/missing?tagging",
        &[],
        &[("content-length", "36")],
        sigv4::UNSIGNED_PAYLOAD,
    );
    let early = Headers(vec![
        (":status".into(), "404".into()),
        ("content-length".into(), "200".into()),
    ]);
    for (body, refused) in [
        (&b"not a tagging document, plain text!!"[..], true),
        (&b"<Tagging><TagSet></TagSet></Tagging>"[..], false),
    ] {
        let mut ex = exchange(&store);
        forwarded(ex.on_request_headers(&h, false));
        assert!(matches!(
            ex.on_response_headers(&early, false),
            ResponseStep::AfterRequest
        ));
        let mut out = Vec::new();
        let r = ex.on_request_body(body, true, &mut out);
        assert_eq!(r.is_err(), refused, "{r:?}");
        if !refused {
            match ex.on_response_headers(&early, false) {
                ResponseStep::Forward(out) => assert_eq!(out.get(":status"), Some("404")),
                other => panic!("{other:?}"),
            }
        }
    }
    // Requests without a document are not held.
    let mut ex = exchange(&store);
    let h = request("GET", "/b?acl", &[], &[]);
    forwarded(ex.on_request_headers(&h, true));
    assert!(matches!(
        ex.on_response_headers(&early, false),
        ResponseStep::Forward(_)
    ));
}

#[test]
fn abort_forgets_state_only_when_the_backend_confirmed() {
    let store = Rc::new(MemStore::default());
    let st = UploadState {
        created: NOW,
        object: state::object_tag("b", "k"),
        envelope: "e".into(),
    };
    let key = state::shared_key("u1");
    store.set(&key, st.seal("u1", "k1", &[7u8; 32]).as_bytes());
    let status = |s: &str| Headers(vec![(":status".into(), s.into())]);
    for (code, kept) in [("404", true), ("403", true), ("500", true), ("204", false)] {
        let mut ex = exchange(&store);
        let h = request("DELETE", "/b/k?uploadId=u1", &[], &[]);
        forwarded(ex.on_request_headers(&h, true));
        ex.on_response_headers(&status(code), true);
        assert_eq!(store.get(&key).is_some(), kept, "{code}");
        store.set(&key, st.seal("u1", "k1", &[7u8; 32]).as_bytes());
    }
    // The right UploadId with another key: refused here, the backend is not asked.
    let h = request("DELETE", "/b/other?uploadId=u1", &[], &[]);
    let r = replied(exchange(&store).on_request_headers(&h, true));
    assert_eq!(r.status, 404);
    assert!(store.get(&key).is_some());
}

#[test]
fn object_data_in_a_non_data_response_is_refused() {
    let store = Rc::new(MemStore::default());
    let mut ex = exchange(&store);
    let h = request("GET", "/b/k?acl", &[], &[]);
    forwarded(ex.on_request_headers(&h, true));
    let resp = Headers(vec![
        (":status".into(), "200".into()),
        (ENVELOPE_HEADER.into(), "v=1;...".into()),
        ("content-length".into(), "100".into()),
    ]);
    let ResponseStep::Forward(out) = ex.on_response_headers(&resp, false) else {
        panic!("expected Forward");
    };
    assert_eq!(out.get(":status"), Some("500"));
    let mut body = Vec::new();
    ex.on_response_body(&[0xAA; 100], true, &mut body).unwrap();
    assert!(!body.contains(&0xAA));
}

/// A sealed multipart envelope under a fresh data key wrapped by the test KEK.
fn multipart_envelope() -> (Envelope, DataKey) {
    let dek = crypto::new_dek(&crate::crypto::OsRandom).unwrap();
    let wrapped = crypto::wrap_dek(config().active_kek().unwrap(), &dek).unwrap();
    let mut env = Envelope::new(Suite::Aes256Gcm, Layout::Part, "k1", wrapped, None);
    env.seal(&dek, &crate::crypto::OsRandom).unwrap();
    (env, dek)
}

/// Upload records are authenticated: a record forged without the KEK, one moved from
/// another UploadId, a version 1 record (no MAC) and one with an impossible time are all
/// refused (404 NoSuchUpload), and nothing is encrypted under the envelope they name.
#[test]
fn forged_or_swapped_upload_records_are_refused() {
    let (env, _) = multipart_envelope();
    let st = |created: i64| UploadState {
        created,
        object: state::object_tag("b", "k"),
        envelope: env.encode(),
    };
    let put = |store: &Rc<MemStore>| {
        let h = request_with(
            "PUT",
            "/b/k?partNumber=1&uploadId=u1",
            &[("content-length", "5")],
            &[],
            sigv4::UNSIGNED_PAYLOAD,
        );
        exchange(store).on_request_headers(&h, false)
    };
    let key = state::shared_key("u1");
    // The genuine record works.
    let store = Rc::new(MemStore::default());
    store.set(&key, st(NOW).seal("u1", "k1", &[7u8; 32]).as_bytes());
    forwarded(put(&store));
    for bad in [
        st(NOW).seal("u1", "k1", &[8u8; 32]), // forged: another key
        st(NOW).seal("u2", "k1", &[7u8; 32]), // another upload's record
        format!(
            "1\n{NOW}\n{}\n{}",
            state::object_tag("b", "k"),
            env.encode()
        ), // v1
        st(NOW + 100_000).seal("u1", "k1", &[7u8; 32]), // from the future
        st(i64::MIN).seal("u1", "k1", &[7u8; 32]), // would wrap `now - created`
        st(NOW - 8 * 86_400).seal("u1", "k1", &[7u8; 32]), // past the TTL
    ] {
        let store = Rc::new(MemStore::default());
        store.set(&key, bad.as_bytes());
        let r = replied(put(&store));
        assert_eq!(r.status, 404, "{bad}");
        assert!(String::from_utf8_lossy(&r.body).contains("NoSuchUpload"));
    }
}

/// SigV4 canonicalises `host`, routing reads `:authority`: a request whose two differ
/// (possible over HTTP/2) is refused rather than signed for one bucket and sent to another.
#[test]
fn host_and_authority_must_agree() {
    let store = Rc::new(MemStore::default());
    let mut h = request("GET", "/k", &[("host", "a.s3.local:8080")], &[]);
    h.set(":authority", "b.s3.local:8080");
    let r = replied(exchange(&store).on_request_headers(&h, true));
    assert_eq!(r.status, 400);
    let h = request("GET", "/b/k", &[("host", "S3.LOCAL:8080")], &[]);
    read_forwarded(&mut exchange(&store), &h, true);
}

mod multipart;
mod reads;
