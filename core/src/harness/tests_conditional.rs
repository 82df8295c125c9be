//! Conditional writes: refused by default (`conditional_writes: refuse`), and with
//! `backend` enforced by the backend, `If-Match` checked against the ETag the client
//! sees and sent upstream as the backend's ETag of that version.

use md5::{Digest as _, Md5};

use super::check::{marked, md5_hex};
use super::drive::SentKind;
use super::*;

const MIB: usize = 1 << 20;

fn backend_mode(seed: u64) -> Harness {
    Harness::new(
        Options::shared().with("conditional_writes", "backend".into()),
        seed,
    )
}

/// A PUT with Content-MD5: HEAD then shows the plaintext MD5 as the ETag.
fn put_md5(key: &str, d: &[u8]) -> Request {
    use base64::Engine as _;
    Request::put(&obj(key), d).header("content-md5", &B64.encode(Md5::digest(d)))
}

fn copy(src: &str, dst: &str) -> Request {
    Request::new("PUT", &obj(dst)).header(
        "x-amz-copy-source",
        &format!("/{BUCKET}/{}", client::encode(src, false)),
    )
}

/// Upstream requests (not call-outs) since `from`.
fn upstream(h: &Harness, from: usize) -> Vec<&Sent> {
    h.sent_since(from)
        .iter()
        .filter(|s| s.kind == SentKind::Upstream)
        .collect()
}

#[test]
fn refused_by_default_never_ignored() {
    let mut h = Harness::shared(100);
    h.put("k", b"original");
    let id = h.create_upload("mp");
    let e1 = h.part_ok("mp", &id, 1, b"part");
    let cases = [
        Request::put(&obj("k"), b"new").header("if-none-match", "*"),
        Request::put(&obj("k"), b"new").header("if-match", &md5_hex(b"original")),
        Request::post(
            &format!("{}?uploadId={}", obj("mp"), enc(&id)),
            complete_body(&[(1, e1.clone())]).as_bytes(),
        )
        .header("if-none-match", "*"),
        copy("k", "k2").header("if-none-match", "*"),
        Request::new("DELETE", &obj("k")).header("if-match", &md5_hex(b"original")),
        // Sizes the backend only knows as ciphertext sizes.
        Request::new("DELETE", &obj("k")).header("x-amz-if-match-size", "8"),
    ];
    for r in cases {
        let from = h.mark();
        let got = h.send(r);
        assert_eq!(
            (got.status, got.code().as_deref()),
            (501, Some("NotImplemented")),
            "{}",
            got.text()
        );
        assert!(h.sent_since(from).is_empty(), "nothing reaches the backend");
    }
    assert_eq!(h.get("k").body, b"original");
    assert!(h.world.s3.object("mp").is_none() && h.world.s3.object("k2").is_none());
    // The same requests without conditions go on.
    assert_eq!(h.complete("mp", &id, &[(1, e1)]).status, 200);
}

#[test]
fn if_none_match_star_is_enforced_by_the_backend() {
    let mut h = backend_mode(101);
    let r = h.send(Request::put(&obj("n"), b"first").header("if-none-match", "*"));
    assert_eq!(r.status, 200, "{}", r.text());
    let from = h.mark();
    let r = h.send(Request::put(&obj("n"), b"second").header("if-none-match", "*"));
    assert_eq!(
        (r.status, r.code().as_deref()),
        (412, Some("PreconditionFailed"))
    );
    assert_eq!(
        upstream(&h, from)[0].headers.get("if-none-match"),
        Some("*")
    );
    assert_eq!(h.get("n").body, b"first");
    // Only `*` exists for writes.
    let r = h.send(Request::put(&obj("n"), b"x").header("if-none-match", &md5_hex(b"first")));
    assert_eq!(r.status, 501);
    // CompleteMultipartUpload onto an existing key, and onto a new one.
    let big = marked(5 * MIB + 3, 1);
    for (key, want) in [("n", 412), ("fresh", 200)] {
        let id = h.create_upload(key);
        let e = h.part_ok(key, &id, 1, &big);
        let r = h.send(
            Request::post(
                &format!("{}?uploadId={}", obj(key), enc(&id)),
                complete_body(&[(1, e)]).as_bytes(),
            )
            .header("if-none-match", "*"),
        );
        assert_eq!(r.status, want, "{key}: {}", r.text());
    }
    assert_eq!(h.get("fresh").body, big);
    // CopyObject's destination, single-part and multipart sources.
    for src in ["n", "fresh"] {
        let r = h.send(copy(src, "n").header("if-none-match", "*"));
        assert_eq!(r.status, 412, "{src}: {}", r.text());
        let r = h.send(copy(src, &format!("copy-of-{src}")).header("if-none-match", "*"));
        assert_eq!(r.status, 200, "{src}: {}", r.text());
    }
    assert_eq!(h.get("copy-of-fresh").body, big);
    assert_eq!(h.get("n").body, b"first");
}

#[test]
fn if_match_compares_the_visible_etag_and_sends_the_backends() {
    let mut h = backend_mode(102);
    h.send(put_md5("m", b"v1"));
    let backend_etag = h.world.s3.object("m").unwrap().etag.clone();
    assert_ne!(backend_etag, md5_hex(b"v1"));
    // The ETag the client sees: the write goes upstream pinned to the backend's.
    let from = h.mark();
    let r = h.send(put_md5("m", b"v2").header("if-match", &md5_hex(b"v1")));
    assert_eq!(r.status, 200, "{}", r.text());
    let up = upstream(&h, from);
    assert_eq!(up.len(), 1);
    // (Unquoted: what RGW 16 needs on writes.)
    assert_eq!(
        up[0].headers.get("if-match"),
        Some(backend_etag.trim_matches('"'))
    );
    assert_eq!(h.get("m").body, b"v2");
    // A stale ETag, or the backend's own (which no client sees): 412, nothing written.
    let stale_backend = h.world.s3.object("m").unwrap().etag.clone();
    for bad in [md5_hex(b"v1"), stale_backend] {
        let from = h.mark();
        let r = h.send(put_md5("m", b"v3").header("if-match", &bad));
        assert_eq!(
            (r.status, r.code().as_deref()),
            (412, Some("PreconditionFailed")),
            "{bad}"
        );
        assert!(upstream(&h, from).is_empty());
    }
    assert_eq!(h.get("m").body, b"v2");
    // No object: 404 NoSuchKey, as S3 answers.
    let r = h.send(Request::put(&obj("none"), b"x").header("if-match", "*"));
    assert_eq!((r.status, r.code().as_deref()), (404, Some("NoSuchKey")));
    assert!(h.world.s3.object("none").is_none());
    // DeleteObject.
    let r = h.send(Request::new("DELETE", &obj("m")).header("if-match", &md5_hex(b"nope")));
    assert_eq!(r.status, 412);
    let r = h.send(Request::new("DELETE", &obj("m")).header("if-match", &md5_hex(b"v2")));
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(h.world.s3.object("m").is_none());
}

/// The object changes between the filter's HEAD and the write: the backend, which gets
/// the ETag of the version the filter checked, refuses the write.
#[test]
fn a_change_after_the_check_is_caught_by_the_backend() {
    let mut h = backend_mode(103);
    h.send(put_md5("r", b"old"));
    let old = h.world.s3.object("r").unwrap().clone();
    h.send(put_md5("r", b"new"));
    // The HEAD still shows the old version (the write raced it).
    h.world.s3.answer = Some(Box::new(move |req: &drive::Http| {
        (req.headers.get(":method") == Some("HEAD")).then(|| {
            let mut r = drive::Http::with_status(200);
            r.headers.set("etag", old.etag.clone());
            r.headers.set("content-length", old.data.len().to_string());
            for (k, v) in &old.meta {
                r.headers.set(k, v.clone());
            }
            r
        })
    }));
    let r = h.send(Request::put(&obj("r"), b"mine").header("if-match", &md5_hex(b"old")));
    assert_eq!(
        (r.status, r.code().as_deref()),
        (412, Some("PreconditionFailed")),
        "{}",
        r.text()
    );
    h.world.s3.answer = None;
    assert_eq!(h.get("r").body, b"new");
}

/// A version 3 object (no Content-MD5: its MD5 is in the trailer) checked by a process
/// that never saw it: the trailer is read before the condition is evaluated, so the
/// client's ETag (from the PUT) matches; GetObjectAttributes shows it too.
#[test]
fn if_match_in_a_fresh_process_reads_the_trailer_first() {
    let mut h = backend_mode(104);
    let r = h.send(Request::put(&obj("t"), b"v1"));
    assert_eq!(r.header("etag"), Some(md5_hex(b"v1").as_str()));
    h.restart(0);
    let from = h.mark();
    let r = h.send(Request::put(&obj("t"), b"v2").header("if-match", &md5_hex(b"v1")));
    assert_eq!(r.status, 200, "{}", r.text());
    let calls = h.sent_since(from);
    assert!(
        calls.iter().any(|s| s
            .headers
            .get("range")
            .is_some_and(|r| r.starts_with("bytes="))),
        "the trailer was read"
    );
    assert_eq!(h.get("t").body, b"v2");
    // A stale ETag still fails.
    h.restart(0);
    let r = h.send(Request::put(&obj("t"), b"v3").header("if-match", &md5_hex(b"v1")));
    assert_eq!(r.status, 412);
    h.restart(0);
    let r = h.send(
        Request::get(&format!("{}?attributes", obj("t"))).header("x-amz-object-attributes", "ETag"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.xml("ETag").map(|e| e.trim_matches('"').to_string()),
        Some(hex::encode(Md5::digest(b"v2")))
    );
    h.assert_clean();
}
