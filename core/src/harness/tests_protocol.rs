//! Request behaviours real clients rely on: suffix and out-of-bounds ranges resolved to
//! stored bytes inside the stored object.

use super::check::{check_read, find_marker, marked};
use super::drive::SentKind;
use super::*;

const F: usize = 65536;
const MIB: usize = 1 << 20;

/// Every ranged GET or HEAD of `key` the backend received since `from` asks for an
/// absolute range (`bytes=a-b`) inside its stored object of `stored` bytes.
fn ranges_inside(h: &Harness, from: usize, key: &str, stored: usize) -> Result<usize, String> {
    let mut n = 0;
    for s in h.sent_since(from) {
        let to_backend = match &s.kind {
            SentKind::Upstream => true,
            SentKind::CallOut(c) => *c == h.proxies[s.proxy].cfg.plugin.upstream_cluster,
        };
        let path = s.path().split('?').next().unwrap_or("");
        if !to_backend || path != obj(key) {
            continue;
        }
        let Some(r) = s.headers.get("range") else {
            continue;
        };
        n += 1;
        match s3::parse_range(r) {
            Some((Some(a), Some(b))) if a <= b && (b as usize) < stored => {}
            _ => {
                return Err(format!(
                    "{} {key}: range {r} of {stored} stored bytes",
                    s.method()
                ))
            }
        }
    }
    Ok(n)
}

#[test]
fn suffix_ranges_ask_only_for_stored_bytes() {
    let mut h = Harness::shared(301);
    let u = u64::MAX;
    for size in [1usize, 15, 100, F - 1, F, F + 1, 100_000, 3 * F + 7] {
        let key = format!("s{size}");
        let data = marked(size, size as u32);
        assert_eq!(h.put(&key, &data).status, 200);
        let stored = h.world.s3.raw(&key).len();
        let mut cases: Vec<(String, usize)> = [1, 10, size - 1, size, size + 1, F, 2 * F, 200_000]
            .into_iter()
            .filter(|n| *n > 0)
            .map(|n| (format!("bytes=-{n}"), size.saturating_sub(n)))
            .collect();
        cases.push((format!("bytes=-{u}"), 0));
        cases.push((format!("bytes=0-{u}"), 0));
        cases.push((format!("bytes={}-", size - 1), size - 1));
        for (range, a) in cases {
            let from = h.mark();
            let r = h.get_range(&key, &range);
            assert_eq!(r.status, 206, "{size} {range}: {}", r.text());
            assert_eq!(r.body, data[a..], "{size} {range}");
            assert_eq!(
                r.header("content-range"),
                Some(format!("bytes {a}-{}/{size}", size - 1).as_str()),
                "{size} {range}"
            );
            check_read(&r, &data, (a, size - 1)).unwrap();
            let head = h.send(Request::new("HEAD", &obj(&key)).header("range", &range));
            assert_eq!(head.status, 206, "HEAD {size} {range}");
            assert_eq!(
                head.header("content-length"),
                Some((size - a).to_string().as_str())
            );
            let n = ranges_inside(&h, from, &key, stored).unwrap();
            assert!(n >= 1, "{size} {range}: no ranged request upstream");
        }
        // `bytes=-0` is unsatisfiable on any object, and nothing is read for it.
        let from = h.mark();
        let r = h.get_range(&key, "bytes=-0");
        assert_eq!(r.status, 416, "{size}: {}", r.text());
        assert_eq!(r.code().as_deref(), Some("InvalidRange"));
        assert_eq!(find_marker(&r.body), None);
        assert!(h.sent_since(from).iter().all(|s| s.method() == "HEAD"));
    }
    // Any suffix of an empty object is unsatisfiable; the backend is never asked for a
    // byte of it.
    assert_eq!(h.put("empty", b"").status, 200);
    for range in [
        "bytes=-0",
        "bytes=-1",
        "bytes=-100000",
        &format!("bytes=-{u}"),
    ] {
        let from = h.mark();
        let r = h.get_range("empty", range);
        assert_eq!(r.status, 416, "{range}: {}", r.text());
        assert_eq!(r.code().as_deref(), Some("InvalidRange"));
        assert_eq!(ranges_inside(&h, from, "empty", 0), Ok(0), "{range}");
    }
    // Part 1 of a single object is all of it (an empty one included), read inside it.
    for (key, size) in [("s100", 100usize), ("empty", 0)] {
        let from = h.mark();
        let r = h.get_part(key, 1);
        assert!(r.ok(), "{key}: {}", r.text());
        assert_eq!(r.body.len(), size);
        let stored = h.world.s3.raw(key).len();
        ranges_inside(&h, from, key, stored).unwrap();
    }
    h.assert_clean();
}

#[test]
fn suffix_ranges_of_multipart_objects_ask_only_for_stored_bytes() {
    let mut h = Harness::shared(302);
    let p = [marked(5 * MIB + 3, 1), marked(777, 2)];
    h.multipart("m", &[&p[0], &p[1]]);
    let data = p.concat();
    let size = data.len();
    let stored = h.world.s3.raw("m").len();
    for n in [1, 777, 778, 100_000, size - 1, size, size + 1, usize::MAX] {
        let range = format!("bytes=-{n}");
        let a = size.saturating_sub(n);
        let from = h.mark();
        let r = h.get_range("m", &range);
        assert_eq!(r.status, 206, "{range}: {}", r.text());
        assert_eq!(r.body, data[a..], "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {a}-{}/{size}", size - 1).as_str())
        );
        assert!(ranges_inside(&h, from, "m", stored).unwrap() >= 1);
    }
    let r = h.get_range("m", "bytes=-0");
    assert_eq!(r.status, 416, "{}", r.text());
    assert_eq!(r.code().as_deref(), Some("InvalidRange"));
    h.assert_clean();
}

#[test]
fn a_ranged_read_of_an_object_replaced_after_its_head_is_retried() {
    use super::drive::{Fault, FaultRule, Http};
    let mut h = Harness::shared(303);
    let old = marked(3 * F + 5, 1);
    assert_eq!(h.put("x", &old).status, 200);
    let stored_etag = h.world.s3.object("x").unwrap().etag.clone();
    // The read is planned from the HEAD: the GET asks for that version only.
    let from = h.mark();
    assert_eq!(h.get_range("x", "bytes=-10").body, old[old.len() - 10..]);
    let get = h
        .sent_since(from)
        .iter()
        .find(|s| s.method() == "GET")
        .unwrap();
    assert_eq!(get.headers.get("if-match"), Some(stored_etag.as_str()));
    // The object was replaced between the HEAD and the GET: the backend refuses the
    // pinned version and the client is told to retry (not a 412 for a condition it
    // never sent).
    let mut refused = Http::with_status(412);
    refused.body =
        b"<?xml version=\"1.0\"?><Error><Code>PreconditionFailed</Code></Error>".to_vec();
    refused.headers.set("content-type", "application/xml");
    refused
        .headers
        .set("content-length", refused.body.len().to_string());
    h.world.faults.push(
        FaultRule::upstream(Fault::Answer(refused.clone()))
            .method("GET")
            .times(1),
    );
    let r = h.get_range("x", "bytes=-10");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.code().as_deref(), Some("SlowDown"));
    // A client's own If-Unmodified-Since is the backend's to judge (the read is not
    // pinned then): its 412 stays a 412.
    h.world.faults.push(
        FaultRule::upstream(Fault::Answer(refused.clone()))
            .method("GET")
            .times(1),
    );
    let r = h.send(
        Request::get(&obj("x"))
            .header("range", "bytes=-10")
            .header("if-unmodified-since", "Mon, 01 Jan 2001 00:00:00 GMT"),
    );
    assert_eq!(r.status, 412, "{}", r.text());
    h.assert_clean();
}

/// `Expect: 100-continue` goes upstream only with a request the filter authenticated (the
/// backend then asks for the body, Envoy does not: `proxy_100_continue`); a request it
/// refuses is answered before anything goes upstream, so no 100 is ever sent for it.
#[test]
fn expect_continue_goes_upstream_only_with_authenticated_requests() {
    let mut h = Harness::shared(304);
    let data = marked(3 * F + 1, 1);
    let expecting = |sent: &[Sent]| {
        sent.iter()
            .filter(|s| s.headers.get("expect").is_some())
            .map(|s| {
                (
                    s.method().to_string(),
                    s.headers.get("expect").unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    // Unauthenticated (a wrong secret, a wrong key, anonymous): refused at the headers.
    for r in [
        Request::put(&obj("e"), &data).creds(CLIENT_KEY, "not-the-secret"),
        Request::put(&obj("e"), &data).creds("AKIDUNKNOWN", "x"),
        Request::put(&obj("e"), &data).anonymous(),
    ] {
        let from = h.mark();
        let r = h.send(r.unsigned("expect", "100-continue"));
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.local);
        assert!(h.sent_since(from).is_empty());
    }
    // Authenticated: the backend is asked with the expectation (unsigned, as SDKs send it).
    let from = h.mark();
    let r = h.send(Request::put(&obj("e"), &data).unsigned("expect", "100-Continue"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        expecting(h.sent_since(from)),
        [("PUT".to_string(), "100-continue".to_string())]
    );
    // An UploadPart, after its upload's record was found.
    let id = h.create_upload("m");
    let from = h.mark();
    let r = h.send(Request::put(&part_path("m", &id, 1), &data).unsigned("expect", "100-continue"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        expecting(h.sent_since(from)),
        [("PUT".to_string(), "100-continue".to_string())]
    );
    // Other expectations are not forwarded.
    let from = h.mark();
    let r = h.send(Request::put(&obj("e"), &data).unsigned("expect", "102-processing"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(expecting(h.sent_since(from)).is_empty());
    h.assert_clean();
}

/// Presigned URLs expire as S3's do: valid through `X-Amz-Date + X-Amz-Expires`, then 403
/// AccessDenied "Request has expired" (whatever the signature: the expiry is checked
/// first, so an expired URL learns nothing about its key); an expiry longer than a week
/// is 400 AuthorizationQueryParametersError. Nothing of a refused request goes upstream.
#[test]
fn presigned_urls_expire_as_s3_says() {
    let mut h = Harness::shared(305);
    assert_eq!(h.put("p", b"presigned").status, 200);
    let from = h.mark();
    let said = |r: &ClientResponse| (r.status, r.code(), r.xml("Message"));
    let expired = (
        403,
        Some("AccessDenied".to_string()),
        Some("Request has expired".to_string()),
    );
    for (expires, age) in [
        (1, 2),
        (60, 61),
        (3600, 3601),
        (604_800, 604_801),
        (604_800, 10_000_000),
    ] {
        let r = h.send(Request::get(&obj("p")).presigned(expires).skew(-age));
        assert_eq!(said(&r), expired, "{expires} {age}");
        assert!(r.local);
        // A wrong secret on an expired URL: still only "expired".
        let r = h.send(
            Request::get(&obj("p"))
                .presigned(expires)
                .skew(-age)
                .creds(CLIENT_KEY, "wrong"),
        );
        assert_eq!(said(&r), expired, "{expires} {age}");
    }
    assert!(h.sent_since(from).is_empty());
    // Valid through its last second.
    for (expires, age) in [(1, 1), (60, 60), (604_800, 604_800)] {
        let r = h.send(Request::get(&obj("p")).presigned(expires).skew(-age));
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"presigned"[..]),
            "{expires} {age}"
        );
    }
    let week =
        Some("X-Amz-Expires must be less than a week (in seconds) that is 604800".to_string());
    for expires in [604_801, 999_999_999, i64::MAX] {
        let r = h.send(Request::get(&obj("p")).presigned(expires));
        assert_eq!(
            said(&r),
            (
                400,
                Some("AuthorizationQueryParametersError".to_string()),
                week.clone()
            ),
            "{expires}"
        );
    }
    for expires in [0, -1] {
        let r = h.send(Request::get(&obj("p")).presigned(expires));
        assert_eq!(r.status, 400, "{expires}");
        assert_eq!(
            r.code().as_deref(),
            Some("AuthorizationQueryParametersError")
        );
    }
    h.assert_clean();
}

/// Signature Version 2, in the header or in a presigned URL, is refused the way S3 refuses
/// it where only Version 4 is accepted: 400 InvalidRequest, nothing sent upstream.
#[test]
fn signature_version_2_is_refused_clearly() {
    let mut h = Harness::shared(306);
    assert_eq!(h.put("p", b"v2").status, 200);
    let msg = "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.";
    let from = h.mark();
    let v2 = format!("AWS {CLIENT_KEY}:frJIUN8DYpKDtOLCwo//yllqDzg=");
    let reqs = [
        Request::get(&obj("p"))
            .anonymous()
            .unsigned("authorization", &v2)
            .unsigned("date", "Tue, 14 Nov 2023 22:13:20 GMT"),
        Request::put(&obj("p"), b"replaced by v2")
            .anonymous()
            .unsigned("authorization", &v2),
        Request::get(&format!(
            "{}?AWSAccessKeyId={CLIENT_KEY}&Expires=1700003600&Signature=frJIUN8DYpKDtOLCwo%2F%2FyllqDzg%3D",
            obj("p")
        ))
        .anonymous(),
        Request::get(&format!("{}?Signature=x&Expires=1700003600", obj("p"))).anonymous(),
        Request::get(&format!("/{BUCKET}?AWSAccessKeyId={CLIENT_KEY}&Expires=1&Signature=x"))
            .anonymous(),
        Request::get(&obj("p"))
            .anonymous()
            .unsigned("authorization", "Bearer token"),
    ];
    for r in reqs {
        let r = h.send(r);
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.code().as_deref(), Some("InvalidRequest"));
        assert_eq!(r.xml("Message").as_deref(), Some(msg));
        assert!(r.local);
    }
    assert!(h.sent_since(from).is_empty());
    assert_eq!(h.get("p").body, b"v2");
    h.assert_clean();
}

/// The backend answers a CORS preflight as S3 does for a bucket that allows the origin.
fn answer_preflights(h: &mut Harness) {
    h.world.s3.answer = Some(Box::new(|req: &super::drive::Http| {
        if req.headers.get(":method") != Some("OPTIONS") {
            return None;
        }
        let mut r = super::drive::Http::with_status(200);
        for (k, v) in [
            ("access-control-allow-origin", req.headers.get("origin")?),
            (
                "access-control-allow-methods",
                req.headers.get("access-control-request-method")?,
            ),
            ("access-control-max-age", "3000"),
            (
                "vary",
                "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
            ),
            ("content-length", "0"),
        ] {
            r.headers.set(k, v.to_string());
        }
        if let Some(a) = req.headers.get("access-control-request-headers") {
            r.headers.set("access-control-allow-headers", a.to_string());
        }
        Some(r)
    }));
}

fn options(path: &str) -> Request {
    Request::new("OPTIONS", path)
        .anonymous()
        .unsigned("origin", "https://app.example")
        .unsigned("access-control-request-method", "PUT")
}

#[test]
fn cors_preflights_are_rebuilt_from_an_allow_list() {
    let mut h = Harness::shared(307);
    answer_preflights(&mut h);
    // A browser's preflight, with everything an attacker would add to it: unsigned
    // x-amz-* headers, a method override, cookies, a query naming an operation.
    for q in [
        "",
        "?uploads",
        "?uploadId=u1&partNumber=1",
        "?x-id=PutObject&torrent",
    ] {
        let from = h.mark();
        let r = h.send(
            options(&format!("{}{q}", obj("k")))
                .unsigned(
                    "access-control-request-headers",
                    "content-type,x-amz-meta-a",
                )
                .unsigned("x-amz-copy-source", "/b/secret")
                .unsigned("x-amz-meta-evil", "1")
                .unsigned("x-http-method-override", "DELETE")
                .unsigned("x-method-override", "PUT")
                .unsigned("cookie", "c=1")
                .unsigned("range", "bytes=0-1"),
        );
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        assert_eq!(r.header("access-control-allow-methods"), Some("PUT"));
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("content-type,x-amz-meta-a")
        );
        let sent = h.sent_since(from);
        assert_eq!(sent.len(), 1, "{q}");
        assert_eq!(sent[0].method(), "OPTIONS");
        assert_eq!(sent[0].path(), obj("k"), "{q}: the query is dropped");
        assert!(sent[0].body.is_empty());
        let mut names: Vec<&str> = sent[0].headers.iter().map(|(k, _)| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                ":authority",
                ":method",
                ":path",
                ":scheme",
                "access-control-request-headers",
                "access-control-request-method",
                "origin",
                "x-forwarded-proto",
            ],
            "{q}"
        );
        assert_eq!(sent[0].headers.get(":authority"), Some(UPSTREAM_AUTHORITY));
    }
    // A bucket-level preflight (a browser listing or uploading with POST).
    let from = h.mark();
    let r = h.send(options(&format!("/{BUCKET}?list-type=2")));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.sent_since(from)[0].path(), format!("/{BUCKET}"));
    h.assert_clean();
}

#[test]
fn options_that_are_not_preflights_are_refused() {
    let mut h = Harness::shared(308);
    answer_preflights(&mut h);
    let from = h.mark();
    let refused: Vec<(&str, Request)> = vec![
        (
            "a body",
            options(&obj("k")).body(b"<Delete><Object><Key>k</Key></Object></Delete>"),
        ),
        (
            "a declared body",
            options(&obj("k")).unsigned("content-length", "5"),
        ),
        (
            "a chunked body",
            options(&obj("k")).unsigned("transfer-encoding", "chunked"),
        ),
        (
            "no origin",
            Request::new("OPTIONS", &obj("k"))
                .anonymous()
                .unsigned("access-control-request-method", "GET"),
        ),
        (
            "no method",
            Request::new("OPTIONS", &obj("k"))
                .anonymous()
                .unsigned("origin", "https://a.example"),
        ),
        (
            "an unknown method",
            Request::new("OPTIONS", &obj("k"))
                .anonymous()
                .unsigned("origin", "https://a.example")
                .unsigned("access-control-request-method", "PATCH"),
        ),
        (
            "an origin that is not one",
            Request::new("OPTIONS", &obj("k"))
                .anonymous()
                .unsigned("origin", "https://a.example/path?x")
                .unsigned("access-control-request-method", "GET"),
        ),
        (
            "two origins",
            options(&obj("k")).unsigned("origin", "https://b.example"),
        ),
        (
            "headers that are not names",
            options(&obj("k")).unsigned("access-control-request-headers", "a:b;c"),
        ),
        ("no bucket", options("/")),
        ("a dot segment", options(&format!("/{BUCKET}/a/../k"))),
    ];
    for (what, r) in refused {
        let r = h.send(r);
        // (No bucket: the resource is no operation S3 has, 501.)
        let want = if what == "no bucket" { 501 } else { 400 };
        assert_eq!(r.status, want, "{what}: {}", r.text());
        assert!(r.local, "{what}");
    }
    assert!(
        h.sent_since(from).is_empty(),
        "{:?}",
        h.sent_since(from)
            .iter()
            .map(|s| s.path())
            .collect::<Vec<_>>()
    );
    h.assert_clean();
}

/// The `Origin` of an ordinary (signed) request goes upstream, and the backend's CORS
/// headers come back on every kind of response: decrypted objects, ranges, listings,
/// uploads, errors.
#[test]
fn cors_headers_of_ordinary_responses_come_back() {
    let mut h = Harness::shared(309);
    let data = marked(100_000, 1);
    let o = "https://app.example";
    let from = h.mark();
    let put = h.send(Request::put(&obj("c"), &data).unsigned("origin", o));
    assert_eq!(put.status, 200);
    assert!(h
        .sent_since(from)
        .iter()
        .all(|s| s.headers.get("origin") == Some(o)));
    for r in [
        put,
        h.send(Request::get(&obj("c")).unsigned("origin", o)),
        h.send(
            Request::get(&obj("c"))
                .header("range", "bytes=-10")
                .unsigned("origin", o),
        ),
        h.send(Request::new("HEAD", &obj("c")).unsigned("origin", o)),
        h.send(Request::get(&format!("/{BUCKET}?list-type=2")).unsigned("origin", o)),
        h.send(Request::get(&obj("missing")).unsigned("origin", o)),
    ] {
        assert_eq!(r.header("access-control-allow-origin"), Some(o), "{r:?}");
        assert_eq!(r.header("access-control-expose-headers"), Some("ETag"));
        assert_eq!(r.header("vary"), Some("Origin"));
    }
    assert_eq!(h.get("c").body, data);
    // An origin that is not one is not forwarded.
    let from = h.mark();
    h.send(Request::get(&obj("c")).unsigned("origin", "x\u{7f}"));
    assert!(h
        .sent_since(from)
        .iter()
        .all(|s| s.headers.get("origin").is_none()));
    h.assert_clean();
}
