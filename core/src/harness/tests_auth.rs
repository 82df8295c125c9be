//! Who may ask: SigV4 in the Authorization header and in presigned URLs (expiry, limits,
//! tampering, unsigned headers ignored), wrong and unknown credentials, anonymous
//! requests, the client's clock skew.

use super::*;

#[test]
fn presigned_urls() {
    let mut h = Harness::shared(9);
    let r = h.send(Request::put(&obj("p"), b"via presigned put").presigned(60));
    assert_eq!(r.status, 200, "{}", r.text());
    let g = h.send(Request::get(&obj("p")).presigned(60));
    assert_eq!(
        (g.status, g.body.as_slice()),
        (200, &b"via presigned put"[..])
    );
    // An unsigned Range on a presigned GET is ignored.
    let g = h.send(
        Request::get(&obj("p"))
            .presigned(60)
            .unsigned("range", "bytes=0-1"),
    );
    assert_eq!((g.status, g.body.len()), (200, 17));
    // Expired: signed two hours ago for 60 seconds.
    let r = h.send(Request::get(&obj("p")).presigned(60).skew(-7200));
    assert_eq!((r.status, r.code().as_deref()), (403, Some("AccessDenied")));
    for expires in [0, 604_801] {
        let r = h.send(Request::get(&obj("p")).presigned(expires));
        assert_eq!(
            r.code().as_deref(),
            Some("AuthorizationQueryParametersError"),
            "{expires}"
        );
    }
    assert_eq!(
        h.send(Request::get(&obj("p")).presigned(604_800)).status,
        200
    );
    // Tampered: the expiry changed after signing.
    let (mut hd, _) =
        Request::get(&obj("p"))
            .presigned(60)
            .prepare(CLIENT_AUTHORITY, "us-east-1", h.now());
    let p = hd
        .get(":path")
        .unwrap()
        .replace("X-Amz-Expires=60", "X-Amz-Expires=61");
    hd.set(":path", p);
    let mut ex = crate::ops::Exchange::new(
        Rc::clone(&h.proxy().cfg),
        crate::ops::Ports {
            stats: h.proxy().stats.clone(),
            store: h.proxy().store.clone(),
            clock: h.world.clock.clone(),
            rng: h.rng.clone(),
        },
        Rc::clone(&h.proxy().vm),
        "t".into(),
    );
    let crate::ops::RequestStep::Reply(r) = ex.on_request_headers(&hd, true) else {
        panic!("a tampered URL must be refused");
    };
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("SignatureDoesNotMatch"));
    h.assert_clean();
}

#[test]
fn signatures_are_verified() {
    let mut h = Harness::shared(10);
    h.put("x", b"data");
    let seen = h.world.s3.requests;
    let r = h.send(Request::put(&obj("x"), b"other").creds(CLIENT_KEY, "wrong"));
    assert_eq!(
        (r.status, r.code().as_deref()),
        (403, Some("SignatureDoesNotMatch"))
    );
    let r = h.send(Request::get(&obj("x")).creds("AKIDUNKNOWN", CLIENT_SECRET));
    assert_eq!(r.code().as_deref(), Some("InvalidAccessKeyId"));
    let r = h.send(Request::get(&obj("x")).anonymous());
    assert_eq!(r.status, 403);
    // A body that does not match its signed hash never completes upstream.
    assert_eq!(h.world.s3.requests, seen, "nothing reached the backend");
    assert!(h.proxy().counter(crate::ops::Counter::AuthFailures) >= 3);
    assert_eq!(h.get("x").body, b"data");
    h.assert_clean();
}

#[test]
fn clock_skew_is_refused() {
    let mut h = Harness::shared(11);
    for skew in [16 * 60, -16 * 60] {
        let r = h.send(Request::put(&obj("s"), b"x").skew(skew));
        assert_eq!(
            (r.status, r.code().as_deref()),
            (403, Some("RequestTimeTooSkewed")),
            "{skew}"
        );
    }
    assert!(h.world.s3.keys().is_empty());
    assert_eq!(
        h.send(Request::put(&obj("s"), b"x").skew(14 * 60)).status,
        200
    );
    assert_eq!(h.send(Request::get(&obj("s")).skew(-14 * 60)).status, 200);
    // A tighter configured skew.
    let mut h = Harness::new(Options::shared().with("max_clock_skew_secs", 60.into()), 11);
    assert_eq!(h.send(Request::put(&obj("s"), b"x").skew(120)).status, 403);
    assert_eq!(h.send(Request::put(&obj("s"), b"x").skew(59)).status, 200);
    // The proxy's clock moves on: a request signed 20 minutes ago is refused.
    let old = Request::get(&obj("s")).skew(-20 * 60);
    assert_eq!(h.send(old).status, 403);
    h.assert_clean();
}
