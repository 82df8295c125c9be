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
}

struct NoStats;

impl Stats for NoStats {
    fn add(&self, _c: Counter, _n: u64) {}
}

fn config() -> Rc<Config> {
    let env = |k: &str| match k {
        ENV_KEKS => Some(format!("k1={}", B64.encode([7u8; 32]))),
        ENV_ACTIVE_KEY_ID => Some("k1".into()),
        ENV_CLIENT_CREDENTIALS => Some("AK1:secret1".into()),
        ENV_BACKEND_ACCESS_KEY_ID => Some("BK".into()),
        ENV_BACKEND_SECRET_ACCESS_KEY => Some("bsecret".into()),
        _ => None,
    };
    Rc::new(Config::load(br#"{"upstream_authority":"backend:9000"}"#, &env).unwrap())
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
    Exchange::new(config(), ports, vm, "req".into())
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
    let up = forwarded(exchange(&store).on_request_headers(&h, true));
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
fn bodies_of_unknown_meaning_are_refused() {
    let store = Rc::new(MemStore::default());
    // GET with a body.
    let mut ex = exchange(&store);
    let h = request("GET", "/b/k", &[], &[]);
    forwarded(ex.on_request_headers(&h, false));
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
    forwarded(exchange(&store).on_request_headers(&h, true));
}

/// The authenticated record of upload `u1` of `b/k` (a fresh multipart envelope), and
/// its data key.
fn upload_u1_record() -> (String, DataKey) {
    let (env, dek) = multipart_envelope();
    let record = UploadState {
        created: NOW,
        object: state::object_tag("b", "k"),
        envelope: env.encode(),
    }
    .seal("u1", "k1", &[7u8; 32]);
    (record, dek)
}

/// CompleteMultipartUpload of upload `u1` of `b/k` with this part list, its hash signed.
fn complete_request(list: &[u8]) -> Headers {
    let hash = hex::encode(Sha256::digest(list));
    let len = list.len().to_string();
    request_with(
        "POST",
        "/b/k?uploadId=u1",
        &[("content-length", len.as_str())],
        &[],
        &hash,
    )
}

/// A Complete body as the filter rebuilds it, before its padding.
fn rebuilt(parts: &[(u32, &str)]) -> String {
    let mut x = String::from(
        r#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#,
    );
    for (n, e) in parts {
        x.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
        ));
    }
    x + "</CompleteMultipartUpload>"
}

/// A sent Complete body without the spaces that pad it to its announced length.
fn unpadded(sent: &[u8]) -> String {
    let text = String::from_utf8(sent.to_vec()).unwrap();
    let close = "</CompleteMultipartUpload>";
    let body = text.strip_suffix(close).unwrap();
    format!("{}{close}", body.trim_end_matches(' '))
}

/// CompleteMultipartUpload of a version 2 upload: the part list is held until the parts
/// are listed; a last part that can be followed gets the end part (sealing the listed
/// lengths under the upload's key) and the list sent upstream has exactly the length announced
/// ahead of it; a short part before the last, or a listed part missing, is refused.
#[test]
fn complete_ends_the_object_with_a_final_part() {
    let (record, dek) = upload_u1_record();
    let list = b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"e1\"</ETag></Part><Part><PartNumber>2</PartNumber><ETag>\"e2\"</ETag></Part></CompleteMultipartUpload>";
    let listing = |sizes: &[(u32, u64)]| {
        let mut x = String::from("<ListPartsResult><IsTruncated>false</IsTruncated>");
        for (n, s) in sizes {
            x.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><Size>{s}</Size></Part>"
            ));
        }
        x + "</ListPartsResult>"
    };
    let ok = |status: &str| Headers::from_pairs(vec![(":status".into(), status.into())]);
    let complete = || complete_request(list);
    // Starts a Complete and feeds the list: the call-out it makes (the list is held).
    let start = |ex: &mut Exchange| {
        let up = forwarded(ex.on_request_headers(&complete(), false));
        let announced: usize = up.get("content-length").unwrap().parse().unwrap();
        assert_eq!(announced, list.len() + COMPLETE_ROOM as usize);
        let mut out = Vec::new();
        let call = ex
            .on_request_body(list, true, &mut out)
            .unwrap()
            .expect("held");
        assert!(out.is_empty());
        let path = call
            .headers
            .iter()
            .find(|(k, _)| k == ":path")
            .unwrap()
            .1
            .clone();
        assert!(
            path.starts_with("/b/k?") && path.contains("uploadId=u1"),
            "{path}"
        );
        announced
    };
    let big = crate::format::MIN_PART_SIZE + 10;

    // Last part of 5 MiB or more: the end part, part 3, goes up; then the list with it.
    let store = Rc::new(MemStore::default());
    store.set(&state::shared_key("u1"), record.as_bytes());
    let mut ex = exchange(&store);
    let announced = start(&mut ex);
    let body = listing(&[(2, big), (1, big)]);
    let CallOutStep::Request(RequestStep::CallOut(put)) =
        ex.on_callout_response(Some((&ok("200"), body.as_bytes())))
    else {
        panic!("expected the end marker upload");
    };
    // The end part seals the two parts' plaintext lengths under the upload's key.
    let marker = put.body.clone().unwrap();
    let overhead = crate::format::PART_OVERHEAD;
    assert_eq!(marker.len() as u64, overhead);
    let mut d = crate::format::FrameDecryptor::whole(Suite::Aes256Gcm, &dek, Geometry::end(3));
    let mut sealed = Vec::new();
    d.push(&marker, &mut sealed).unwrap();
    d.finish().unwrap();
    let lengths = crate::format::parse_end_table(&sealed, 2).unwrap();
    assert_eq!(lengths, Some(vec![big - overhead, big - overhead]));
    assert!(put
        .headers
        .iter()
        .any(|(k, v)| k == ":path" && v.contains("partNumber=3")));
    let mut etag = ok("200");
    etag.set("etag", "\"m3\"");
    let CallOutStep::Request(RequestStep::Body(sent)) = ex.on_callout_response(Some((&etag, b"")))
    else {
        panic!("expected the list");
    };
    assert_eq!(sent.len(), announced);
    // The list goes upstream rebuilt from the checked numbers and ETags, the end
    // part's element last, then the spaces the room left.
    assert_eq!(
        unpadded(&sent),
        rebuilt(&[(1, "\"e1\""), (2, "\"e2\""), (3, "\"m3\"")])
    );

    // A short last part is final already: the list goes up padded, nothing uploaded.
    let mut ex = exchange(&store);
    let announced = start(&mut ex);
    let body = listing(&[(1, big), (2, 40_000)]);
    let CallOutStep::Request(RequestStep::Body(sent)) =
        ex.on_callout_response(Some((&ok("200"), body.as_bytes())))
    else {
        panic!("expected the list");
    };
    assert_eq!(sent.len(), announced);
    assert_eq!(unpadded(&sent), rebuilt(&[(1, "\"e1\""), (2, "\"e2\"")]));

    // A short part before the last, a part the backend does not list: refused.
    for (sizes, code) in [
        (vec![(1, 40_000), (2, 40_000)], "EntityTooSmall"),
        (vec![(2, 40_000)], "InvalidPart"),
    ] {
        let mut ex = exchange(&store);
        start(&mut ex);
        let body = listing(&sizes);
        let CallOutStep::Request(RequestStep::Reply(r)) =
            ex.on_callout_response(Some((&ok("200"), body.as_bytes())))
        else {
            panic!("expected a refusal");
        };
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains(code));
    }

    // Pages: part 1 on the first, part 2 on the second; a backend that keeps saying
    // "truncated" without listing the parts gets no more requests than there are parts.
    let page = |parts: &[(u32, u64)], next: Option<u32>| {
        let mut x = listing(parts);
        if let Some(m) = next {
            x = x.replace(
                "<IsTruncated>false</IsTruncated>",
                &format!("<IsTruncated>true</IsTruncated><NextPartNumberMarker>{m}</NextPartNumberMarker>"),
            );
        }
        x
    };
    let mut ex = exchange(&store);
    let announced = start(&mut ex);
    let first = page(&[(1, big)], Some(1));
    let CallOutStep::Request(RequestStep::CallOut(next)) =
        ex.on_callout_response(Some((&ok("200"), first.as_bytes())))
    else {
        panic!("expected the second page");
    };
    assert!(next
        .headers
        .iter()
        .any(|(k, v)| k == ":path" && v.contains("part-number-marker=1")));
    let second = page(&[(2, 40_000)], None);
    let CallOutStep::Request(RequestStep::Body(sent)) =
        ex.on_callout_response(Some((&ok("200"), second.as_bytes())))
    else {
        panic!("expected the list");
    };
    assert_eq!(sent.len(), announced);
    let mut ex = exchange(&store);
    start(&mut ex);
    let mut calls = 0;
    for marker in 1..=50 {
        let empty = page(&[], Some(marker));
        match ex.on_callout_response(Some((&ok("200"), empty.as_bytes()))) {
            CallOutStep::Request(RequestStep::CallOut(_)) => calls += 1,
            CallOutStep::Request(RequestStep::Reply(r)) => {
                assert_eq!(r.status, 400);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(calls < 2, "{calls} more pages asked for");

    // No record for the upload (shared-data mode): 404, nothing listed.
    let empty = Rc::new(MemStore::default());
    let mut ex = exchange(&empty);
    forwarded(ex.on_request_headers(&complete(), false));
    let Err(BodyError::Reply(r)) = ex.on_request_body(list, true, &mut Vec::new()) else {
        panic!("expected 404");
    };
    assert_eq!(r.status, 404);
}

/// A part table cached for one object never serves another that the provider gives the
/// same ETag and stored size: the cache is keyed by the object's wrapped data key too.
#[test]
fn a_cached_part_table_belongs_to_one_object() {
    let ((a, _), (b, _)) = (multipart_envelope(), multipart_envelope());
    let overhead = crate::format::PART_OVERHEAD;
    let table = PartTable::from_end(&[8 << 20, 8 << 20]).unwrap();
    let stored = table.stored_len();
    let etag = "\"e-3\"";
    // Reads part 1 of an object whose HEAD shows `env`: what comes after the HEAD.
    let read = |store: &Rc<MemStore>, env: &Envelope| {
        let mut ex = exchange(store);
        let h = request("GET", "/b/k?partNumber=1", &[], &[]);
        let step = ex.on_request_headers(&h, true);
        let RequestStep::CallOut(_) = step else {
            panic!("expected the HEAD, got {step:?}");
        };
        let head = Headers::from_pairs(vec![
            (":status".into(), "200".into()),
            ("etag".into(), etag.into()),
            ("content-length".into(), stored.to_string()),
            (ENVELOPE_HEADER.into(), env.encode()),
        ]);
        match ex.on_callout_response(Some((&head, b""))) {
            CallOutStep::Request(step) => step,
            other => panic!("unexpected {other:?}"),
        }
    };
    let store = Rc::new(MemStore::default());
    let version = table_version(etag, stored, &a);
    store.set(
        &table_slot(&version),
        format!("{version}\n{}", table.encode()).as_bytes(),
    );
    // A's own read uses the cache (the data read goes upstream at once) …
    let up = forwarded(read(&store, &a));
    let part1 = format!("bytes=16-{}", (8 << 20) + overhead - 1);
    assert_eq!(up.get("range"), Some(part1.as_str()));
    // … B, with A's ETag and size, looks for its own table (its end part).
    let RequestStep::CallOut(c) = read(&store, &b) else {
        panic!("B must not use A's table");
    };
    let range = c
        .headers
        .iter()
        .find(|(k, _)| k == "range")
        .unwrap()
        .1
        .clone();
    assert_eq!(range, format!("bytes={}-{}", stored - overhead, stored - 1));
}

/// A short last part is staged when the backend stored it, and Complete closes the object
/// with it: the closing part (uploaded under the last part's number) holds the same
/// plaintext and seals every part's length, and the list sent upstream names it in the
/// last part's place. A staged copy that is not the listed part (another ETag) is not used: the
/// object completes as listed. Complete's success frees the slot.
#[test]
fn a_short_last_part_is_staged_and_closes_the_object() {
    use crate::format::{parse_end_table, FrameDecryptor, PART_OVERHEAD};
    let (record, dek) = upload_u1_record();
    let store = Rc::new(MemStore::default());
    store.set(&state::shared_key("u1"), record.as_bytes());
    let ok = |status: &str| Headers::from_pairs(vec![(":status".into(), status.into())]);

    // UploadPart 2 of 5,000 bytes: encrypted as it streams, staged once stored.
    let plain: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let h = request_with(
        "PUT",
        "/b/k?partNumber=2&uploadId=u1",
        &[("content-length", "5000")],
        &[],
        sigv4::UNSIGNED_PAYLOAD,
    );
    let mut ex = exchange(&store);
    forwarded(ex.on_request_headers(&h, false));
    let mut cipher = Vec::new();
    for c in plain.chunks(1500) {
        let end = c.as_ptr() as usize + c.len() == plain.as_ptr() as usize + plain.len();
        assert!(ex.on_request_body(c, end, &mut cipher).unwrap().is_none());
    }
    assert_eq!(cipher.len() as u64, 5000 + PART_OVERHEAD);
    let md5 = hex::encode(Md5::digest(&cipher));
    let mut stored = ok("200");
    stored.set("etag", format!("\"{md5}\""));
    assert!(matches!(
        ex.on_response_headers(&stored, true),
        ResponseStep::Forward(_)
    ));
    let owners: Vec<_> = (0..8).map(|i| store.get(&stage::owner_key(i))).collect();
    let slot = stage::find_slot(&owners, "u1").expect("staged");
    let rec = store.get(&stage::slot_key(slot)).unwrap();
    assert_eq!(stage::decode(&rec, "u1").unwrap().cipher, cipher);

    let big = crate::format::MIN_PART_SIZE + 10;
    let complete = |last_etag: &str| {
        let list = format!("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"e1\"</ETag></Part><Part><PartNumber>2</PartNumber><ETag>{last_etag}</ETag></Part></CompleteMultipartUpload>");
        let h = complete_request(list.as_bytes());
        let mut ex = exchange(&store);
        forwarded(ex.on_request_headers(&h, false));
        let mut out = Vec::new();
        ex.on_request_body(list.as_bytes(), true, &mut out)
            .unwrap()
            .expect("held");
        let listing = format!("<ListPartsResult><IsTruncated>false</IsTruncated><Part><PartNumber>1</PartNumber><ETag>\"e1\"</ETag><Size>{big}</Size></Part><Part><PartNumber>2</PartNumber><ETag>{last_etag}</ETag><Size>{}</Size></Part></ListPartsResult>", cipher.len());
        let step = ex.on_callout_response(Some((&ok("200"), listing.as_bytes())));
        (ex, step)
    };

    // Listed with another ETag than the staged copy's: completes as listed.
    let (_, step) = complete("\"0123456789abcdef0123456789abcdef\"");
    let CallOutStep::Request(RequestStep::Body(sent)) = step else {
        panic!("expected the list, got {step:?}");
    };
    assert_eq!(
        unpadded(&sent),
        rebuilt(&[(1, "\"e1\""), (2, "\"0123456789abcdef0123456789abcdef\"")])
    );

    // The staged copy of the listed part: the closing part goes up as part 3.
    let (mut ex, step) = complete(&format!("\"{md5}\""));
    let CallOutStep::Request(RequestStep::CallOut(put)) = step else {
        panic!("expected the closing part, got {step:?}");
    };
    assert!(put
        .headers
        .iter()
        .any(|(k, v)| k == ":path" && v.contains("partNumber=2") && v.contains("uploadId=u1")));
    let closing = put.body.clone().unwrap();
    assert_eq!(
        closing.len(),
        cipher.len(),
        "one part overhead, like every part"
    );
    let trailer = (crate::format::CLOSING_SEALED_LEN + crate::format::FRAME_OVERHEAD) as usize;
    let (frames, table) = closing.split_at(closing.len() - trailer);
    let mut d = FrameDecryptor::whole(Suite::Aes256Gcm, &dek, Geometry::closing(2, 5000));
    let mut got = Vec::new();
    d.push(frames, &mut got).unwrap();
    d.finish().unwrap();
    assert_eq!(got, plain);
    let mut t = FrameDecryptor::whole(Suite::Aes256Gcm, &dek, Geometry::closing_table(2));
    let mut sealed = Vec::new();
    t.push(table, &mut sealed).unwrap();
    t.finish().unwrap();
    assert_eq!(
        parse_end_table(&sealed, 2).unwrap(),
        Some(vec![big - PART_OVERHEAD, 5000])
    );
    let mut etag = ok("200");
    etag.set("etag", "\"c3\"");
    let CallOutStep::Request(RequestStep::Body(sent)) = ex.on_callout_response(Some((&etag, b"")))
    else {
        panic!("expected the list");
    };
    assert_eq!(unpadded(&sent), rebuilt(&[(1, "\"e1\""), (2, "\"c3\"")]));
    // The backend completed it: the record and the staged copy are gone.
    let done = Headers::from_pairs(vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/xml".into()),
    ]);
    let _ = ex.on_response_headers(&done, false);
    let mut out = Vec::new();
    let _ = ex.on_response_body(
        b"<CompleteMultipartUploadResult><ETag>\"x-2\"</ETag></CompleteMultipartUploadResult>",
        true,
        &mut out,
    );
    assert!(store.get(&stage::slot_key(slot)).is_none());
    assert!(store.get(&state::shared_key("u1")).is_none());
}

/// Concurrent first readers of one object version share one lookup of its part table:
/// the second waits instead of reading the table itself and is planned from what the
/// first found; when the first reader's lookup ends without a table (it went away), the
/// waiting one is told to retry (503), never given a table of its own making up.
#[test]
fn concurrent_first_readers_share_one_table_lookup() {
    let (env, dek) = multipart_envelope();
    let overhead = crate::format::PART_OVERHEAD;
    let stored = PartTable::from_end(&[8 << 20, 8 << 20])
        .unwrap()
        .stored_len();
    let etag = "\"shared-3\"";
    let head = Headers::from_pairs(vec![
        (":status".into(), "200".into()),
        ("etag".into(), etag.into()),
        ("content-length".into(), stored.to_string()),
        (ENVELOPE_HEADER.into(), env.encode()),
    ]);
    // A range read of part 1 up to its HEAD's answer.
    let start = |store: &Rc<MemStore>| {
        let mut ex = exchange(store);
        let h = request("GET", "/b/k?partNumber=1", &[], &[]);
        let RequestStep::CallOut(_) = ex.on_request_headers(&h, true) else {
            panic!("expected the HEAD");
        };
        let CallOutStep::Request(step) = ex.on_callout_response(Some((&head, b""))) else {
            panic!("expected a request step");
        };
        (ex, step)
    };
    let store = Rc::new(MemStore::default());
    let _ = finished_lookups();
    let (mut first, step) = start(&store);
    let RequestStep::CallOut(read) = step else {
        panic!("the first reader looks the table up, got {step:?}");
    };
    assert!(read
        .headers
        .iter()
        .any(|(k, v)| k == "range" && *v == format!("bytes={}-{}", stored - overhead, stored - 1)));
    let (mut second, step) = start(&store);
    let RequestStep::Wait(version) = step else {
        panic!("the second reader waits, got {step:?}");
    };
    assert_eq!(version, table_version(etag, stored, &env));
    assert!(finished_lookups().is_empty());
    // The first finds the end part's table, caches it and goes on; the second is planned
    // from the cache (the same range upstream), with no request of its own.
    let end = crate::format::seal_end(
        Suite::Aes256Gcm,
        &dek,
        3,
        &[8 << 20, 8 << 20],
        &crate::crypto::test_rng(),
    )
    .unwrap();
    let partial = Headers::from_pairs(vec![
        (":status".into(), "206".into()),
        ("etag".into(), etag.into()),
    ]);
    let CallOutStep::Request(RequestStep::Forward(up1)) =
        first.on_callout_response(Some((&partial, &end)))
    else {
        panic!("expected the first read to go upstream");
    };
    assert_eq!(finished_lookups(), vec![version.clone()]);
    let up2 = forwarded(second.table_shared());
    let part1 = format!("bytes=16-{}", (8 << 20) + overhead - 1);
    assert_eq!(up1.get("range"), Some(part1.as_str()));
    assert_eq!(up2.get("range"), Some(part1.as_str()));

    // A lookup that ends without a table: the waiting reader is refused with 503.
    let store = Rc::new(MemStore::default());
    let (mut first, _) = start(&store);
    let (mut second, step) = start(&store);
    assert!(matches!(step, RequestStep::Wait(_)));
    first.abandon();
    assert_eq!(finished_lookups().len(), 1);
    let r = replied(second.table_shared());
    assert_eq!(r.status, 503);
    // Nothing in flight now: the next reader looks the table up itself.
    let (_, step) = start(&store);
    assert!(matches!(step, RequestStep::CallOut(_)));
}

/// Every request the filter sends is signed with the time it is sent: a Complete whose
/// parts take 20 minutes to list (a slow backend, 10,000 parts) signs its next request
/// with the later time, not the request's start (S3 refuses a signature more than 15
/// minutes off).
#[test]
fn call_outs_are_signed_when_they_are_sent() {
    let (record, _) = upload_u1_record();
    let store = Rc::new(MemStore::default());
    store.set(&state::shared_key("u1"), record.as_bytes());
    let clock = Rc::new(std::cell::Cell::new(NOW));
    let mut ex = exchange_at(&store, clock.clone());
    let list = b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"e1\"</ETag></Part></CompleteMultipartUpload>";
    let up = forwarded(ex.on_request_headers(&complete_request(list), false));
    assert_eq!(up.get("x-amz-date"), Some(sigv4::amz_date(NOW).as_str()));
    let listing = ex
        .on_request_body(list, true, &mut Vec::new())
        .unwrap()
        .unwrap();
    let date = |c: &CallOut| {
        c.headers
            .iter()
            .find(|(k, _)| k == "x-amz-date")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(date(&listing), Some(sigv4::amz_date(NOW)));
    clock.set(NOW + 20 * 60);
    let big = crate::format::MIN_PART_SIZE + 10;
    let body = format!("<ListPartsResult><IsTruncated>false</IsTruncated><Part><PartNumber>1</PartNumber><Size>{big}</Size></Part></ListPartsResult>");
    let ok = Headers::from_pairs(vec![(":status".into(), "200".into())]);
    let CallOutStep::Request(RequestStep::CallOut(end)) =
        ex.on_callout_response(Some((&ok, body.as_bytes())))
    else {
        panic!("expected the end part's upload");
    };
    assert_eq!(date(&end), Some(sigv4::amz_date(NOW + 20 * 60)));
}

/// A call-out response is taken only with the token of the call-out dispatched for the
/// request's pending state: another token (a response routed to the wrong request) is
/// refused and changes nothing; the right one then goes on.
#[test]
fn call_out_responses_must_carry_their_token() {
    let store = Rc::new(MemStore::default());
    let mut ex = exchange(&store);
    let h = request("GET", "/b/k?partNumber=1", &[], &[]);
    let RequestStep::CallOut(_) = ex.on_request_headers(&h, true) else {
        panic!("expected the HEAD");
    };
    ex.dispatched(7);
    let gone = Headers::from_pairs(vec![(":status".into(), "404".into())]);
    assert!(ex.on_callout_response_with(8, Some((&gone, b""))).is_none());
    assert!(ex.on_callout_response_with(7, Some((&gone, b""))).is_some());
    // Taken once: the same token again is not this request's any more.
    assert!(ex.on_callout_response_with(7, Some((&gone, b""))).is_none());
}
