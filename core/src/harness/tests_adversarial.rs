//! The storage provider as the adversary: it flips, truncates, swaps and rearranges what
//! it stores, strips envelopes, answers with other statuses or another object's bytes.
//! Every read then fails or releases a verified prefix of the true plaintext; nothing
//! tampered is ever a complete success. (And the checks themselves catch what they must.)

use super::check::{check_read, check_sent, check_upstream, find_marker, marked};
use super::drive::{Http, Sent, SentKind};
use super::*;
use crate::format::ENVELOPE_HEADER;
use crate::headers::Headers;
use crate::ops::Counter;

const F: usize = 65536;
const O: usize = 28;

/// A read that must not succeed: at most a verified prefix of `truth[a..=b]`.
pub(super) fn fails_closed(r: &ClientResponse, truth: &[u8], want: (usize, usize), what: &str) {
    check_read(r, truth, want).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        !r.ok(),
        "{what}: a tampered object read as a success ({} bytes)",
        r.body.len()
    );
}

#[test]
fn flipped_bytes_release_no_unauthenticated_plaintext() {
    for (where_, pos, bad_frame) in [
        ("first frame", 100, 0),
        ("last frame", 3 * (F + O) + 13, 3),
        ("a tag", F + O - 1, 0),
    ] {
        let mut h = Harness::shared(40);
        let data = marked(3 * F + 10, 3);
        h.put("t", &data);
        h.world.s3.flip("t", pos, 1);
        let r = h.get("t");
        fails_closed(&r, &data, (0, data.len() - 1), where_);
        assert!(
            r.body.len() <= bad_frame * F,
            "{where_}: {} bytes released past the bad frame",
            r.body.len()
        );
        assert!(h.proxy().counter(Counter::IntegrityFailures) >= 1);
        // A range that does not touch the bad frame still reads.
        let other = if bad_frame == 0 {
            (2 * F, 2 * F + 9)
        } else {
            (5, 9)
        };
        let r = h.get_range("t", &format!("bytes={}-{}", other.0, other.1));
        assert_eq!(r.body, data[other.0..=other.1], "{where_}");
        let r = h.get_range(
            "t",
            &format!("bytes={}-{}", bad_frame * F, bad_frame * F + 9),
        );
        fails_closed(&r, &data, (bad_frame * F, bad_frame * F + 9), where_);
        h.assert_clean();
    }
}

#[test]
fn truncated_and_swapped_single_objects_fail() {
    let mut h = Harness::shared(41);
    let data = marked(2 * F + 10, 4);
    h.put("t", &data);
    h.world.s3.truncate("t", F + O);
    // The stored size no longer matches the envelope: refused before any body byte.
    let r = h.get("t");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("integrity"));
    assert_eq!(find_marker(&r.body), None);
    let (a, b) = (marked(5000, 10), marked(5000, 11));
    h.put("a", &a);
    h.put("b", &b);
    h.world.s3.swap_data("a", "b");
    for (k, truth) in [("a", &a), ("b", &b)] {
        let r = h.get(k);
        fails_closed(&r, truth, (0, 4999), k);
        assert!(r.body.is_empty());
    }
    // What the format cannot tell (FORMAT.md): a whole object moved with its envelope to
    // another key reads as what it is.
    h.world.s3.swap_data("a", "b");
    h.world.s3.swap_objects("a", "b");
    // Another version than the filter last saw under that key, whose ETag is in its
    // trailer: the first read is told to retry (503, no body), the retry reads the
    // trailer first.
    let changed = h.proxies[0].counter(Counter::VersionsChanged);
    let first = h.get("a");
    assert_eq!(first.status, 503);
    assert!(first.text().contains("SlowDown"));
    assert_eq!(h.proxies[0].counter(Counter::VersionsChanged), changed + 1);
    assert_eq!(h.get("a").body, b);
    h.assert_clean();
}

#[test]
fn stripped_envelopes_are_integrity_errors_outside_a_passthrough_scope() {
    let mut h = Harness::shared(42);
    h.put("obj", &marked(16_000, 5));
    let forged = b"provider's own bytes ".repeat(100);
    h.world.s3.put_raw("obj", forged.clone(), &[]);
    let before = h.proxy().counter(Counter::IntegrityFailures);
    for r in [
        h.get("obj"),
        h.get_range("obj", "bytes=0-99"),
        h.get_range("obj", "bytes=-10"),
    ] {
        assert_eq!(r.status, 500);
        assert!(r.text().contains("integrity") && !r.text().contains("provider's own"));
    }
    assert_eq!(h.head("obj").status, 500);
    assert!(h.proxy().counter(Counter::IntegrityFailures) >= before + 4);
    let scoped =
        h.add_proxy(Options::shared().with("passthrough_unencrypted", serde_json::json!(["b/ob"])));
    assert_eq!(h.send_on(scoped, Request::get(&obj("obj"))).body, forged);
    assert_eq!(h.proxies[scoped].counter(Counter::PlaintextServed), 1);
    h.world.s3.put_raw("other", forged, &[]);
    assert_eq!(h.send_on(scoped, Request::get(&obj("other"))).status, 500);
    h.assert_clean();
}

#[test]
fn other_success_statuses_release_nothing() {
    for status in [203u16, 204, 226] {
        let mut h = Harness::new(
            Options::shared().with("passthrough_unencrypted", serde_json::json!(["b"])),
            43,
        );
        h.put("k", &marked(1000, 1));
        let body = if status == 204 {
            Vec::new()
        } else {
            b"unverifiable bytes".to_vec()
        };
        h.world.s3.answer = Some(Box::new(move |req: &Http| {
            (req.headers.get(":method") == Some("GET")).then(|| {
                let mut r = Http::with_status(status);
                r.headers.set("content-length", body.len().to_string());
                r.headers
                    .set("etag", "\"0123456789abcdef0123456789abcdef\"");
                r.body = body.clone();
                r
            })
        }));
        let r = h.get("k");
        assert_eq!(r.status, 500, "{status}");
        assert!(!r.text().contains("unverifiable"));
        h.assert_clean();
    }
}

#[test]
fn object_data_in_a_response_to_another_operation_is_refused() {
    let mut h = Harness::shared(44);
    h.put("k", &marked(100, 1));
    let env = h
        .world
        .s3
        .object("k")
        .unwrap()
        .meta(ENVELOPE_HEADER)
        .unwrap()
        .to_string();
    h.world.s3.answer = Some(Box::new(move |req: &Http| {
        req.headers
            .get(":path")
            .is_some_and(|p| p.contains("acl"))
            .then(|| {
                let mut r = Http::with_status(200);
                r.headers.set(ENVELOPE_HEADER, env.clone());
                r.headers.set("content-length", "100");
                r.body = vec![0xAA; 100];
                r
            })
    }));
    let r = h.send(Request::get(&format!("{}?acl", obj("k"))));
    assert_eq!(r.status, 500);
    assert!(!r.body.windows(4).any(|w| w == [0xAA; 4]));
    h.assert_clean();
}

#[test]
fn a_provider_answering_with_another_objects_bytes_is_caught() {
    let mut h = Harness::shared(45);
    let (a, b) = (marked(200_000, 1), marked(200_000, 2));
    h.put("a", &a);
    h.put("b", &b);
    let b_stored = h.world.s3.raw("b");
    let a_obj = h.world.s3.object("a").unwrap().clone();
    // GETs of `a` are answered with `b`'s stored bytes (at the range asked for) under
    // `a`'s headers, envelope included.
    h.world.s3.answer = Some(Box::new(move |req: &Http| {
        let path = req.headers.get(":path")?.split('?').next()?;
        if req.headers.get(":method") != Some("GET") || path != "/b/a" {
            return None;
        }
        let len = b_stored.len() as u64;
        let w = req
            .headers
            .get("range")
            .and_then(s3::parse_range)
            .and_then(|s| s3::resolve(s, len));
        let (s, e) = w.unwrap_or((0, len - 1));
        let mut r = Http::with_status(if w.is_some() { 206 } else { 200 });
        r.body = b_stored[s as usize..=e as usize].to_vec();
        r.headers.set("content-length", r.body.len().to_string());
        if w.is_some() {
            r.headers
                .set("content-range", format!("bytes {s}-{e}/{len}"));
        }
        r.headers.set("etag", a_obj.etag.clone());
        for (k, v) in &a_obj.meta {
            r.headers.0.push((k.clone(), v.clone()));
        }
        Some(r)
    }));
    let reads = [
        ("whole", None, (0, a.len() - 1)),
        ("range", Some("bytes=70000-70100"), (70000, 70100)),
        ("suffix", Some("bytes=-5"), (a.len() - 5, a.len() - 1)),
    ];
    for (what, range, w) in reads {
        let r = match range {
            Some(rg) => h.get_range("a", rg),
            None => h.get("a"),
        };
        fails_closed(&r, &a, w, what);
        assert!(r.body.is_empty(), "{what}");
    }
    h.assert_clean();
}

#[test]
fn wrong_missing_and_rotated_keys() {
    let mut h = Harness::shared(51);
    h.put("k", b"secret payload");
    let other = h.add_proxy(Options::shared().keks(&[(KEY_ID, [9; 32])], None));
    let r = h.send_on(other, Request::get(&obj("k")));
    assert_eq!(r.status, 500);
    assert!(r.xml("Message").unwrap().contains("could not be unwrapped"));
    let missing = h.add_proxy(Options::shared().keks(&[("another-key", [9; 32])], None));
    let r = h.send_on(missing, Request::get(&obj("k")));
    assert_eq!(r.status, 403);
    assert!(r.xml("Message").unwrap().contains(KEY_ID));
    let rotated =
        h.add_proxy(Options::shared().keks(&[(KEY_ID, KEK), ("next", [3; 32])], Some("next")));
    assert_eq!(
        h.send_on(rotated, Request::get(&obj("k"))).body,
        b"secret payload"
    );
    assert_eq!(
        h.send_on(rotated, Request::put(&obj("k2"), b"new")).status,
        200
    );
    assert!(h
        .world
        .s3
        .object("k2")
        .unwrap()
        .meta(ENVELOPE_HEADER)
        .unwrap()
        .contains("k=next;"));
    // A changed envelope (its length field) fails its tag.
    let env = h
        .world
        .s3
        .object("k")
        .unwrap()
        .meta(ENVELOPE_HEADER)
        .unwrap()
        .replace(";l=14;", ";l=13;");
    h.world.s3.set_meta("k", ENVELOPE_HEADER, Some(&env));
    assert_eq!(h.get("k").status, 500);
    h.assert_clean();
}

#[test]
fn the_checks_catch_what_they_must() {
    // Unsigned upstream bodies: the ciphertext itself is what the checks see (signed
    // framing is checked before it, see below).
    let mut h = Harness::new(
        Options::shared().with("upstream_payload", "unsigned".into()),
        52,
    );
    let data = marked(100_000, 1);
    h.put("k", &data);
    let put = h
        .world
        .sent
        .iter()
        .find(|s| s.method() == "PUT")
        .unwrap()
        .clone();
    check_sent(&h, &put).unwrap();
    // Plaintext upstream.
    let mut leak = put.clone();
    leak.body = data.clone();
    assert!(check_sent(&h, &leak).unwrap_err().contains("marker"));
    // Object data without an envelope, or one that does not verify.
    let mut bare = put.clone();
    bare.headers.remove(ENVELOPE_HEADER);
    assert!(check_sent(&h, &bare).is_err());
    let mut flipped = put.clone();
    flipped.body[500] ^= 1;
    assert!(check_sent(&h, &flipped).unwrap_err().contains("verify"));
    // A refused upload that sent its whole stream anyway.
    let mut whole = put.clone();
    whole.complete = false;
    assert!(check_sent(&h, &whole).unwrap_err().contains("whole stream"));
    let mut short = put;
    short.complete = false;
    short.body.truncate(F + O + 10);
    check_sent(&h, &short).unwrap();
    // A read that released other bytes, or a short read that claims to be complete.
    let mut r = h.get("k");
    check_read(&r, &data, (0, data.len() - 1)).unwrap();
    r.body[7] ^= 1;
    assert!(check_read(&r, &data, (0, data.len() - 1)).is_err());
    r.body = data[..10].to_vec();
    r.headers.set("content-length", "10");
    assert!(check_read(&r, &data, (0, data.len() - 1)).is_err());
    let s = Sent {
        kind: SentKind::Upstream,
        proxy: 0,
        headers: Headers::from_pairs(vec![
            (":method".into(), "PUT".into()),
            (":path".into(), "/b/x?tagging".into()),
        ]),
        body: data[..64].to_vec(),
        complete: true,
        status: None,
    };
    assert!(check_sent(&h, &s).is_err());
    check_upstream(&h, 0).unwrap();
    // Signed chunks: a changed byte breaks its chunk's signature.
    let mut h = Harness::shared(53);
    h.put("k", &data);
    let mut put = h
        .world
        .sent
        .iter()
        .find(|s| s.method() == "PUT")
        .unwrap()
        .clone();
    check_sent(&h, &put).unwrap();
    put.body[500] ^= 1;
    assert!(check_sent(&h, &put).unwrap_err().contains("framing"));
}

#[test]
fn plaintext_objects_are_served_with_every_range_inside_a_scope() {
    let mut h = Harness::new(
        Options::shared().with("passthrough_unencrypted", serde_json::json!(["b"])),
        54,
    );
    let data = marked(3 * F + 5, 40);
    h.world
        .s3
        .put_raw("plain", data.clone(), &[("x-amz-meta-x", "y")]);
    let g = h.get("plain");
    assert_eq!(
        (g.body == data, g.header("x-amz-meta-x")),
        (true, Some("y"))
    );
    for (rng, a, b) in [
        ("bytes=5-9", 5, 9),
        ("bytes=70000-", 70000, data.len() - 1),
        ("bytes=-3", data.len() - 3, data.len() - 1),
        ("bytes=65534-65538", F - 2, F + 2),
    ] {
        let r = h.get_range("plain", rng);
        assert_eq!(r.body, data[a..=b], "{rng}");
        assert_eq!(r.status, 206);
    }
    assert!(h.proxy().counter(Counter::PlaintextServed) >= 5);
    h.assert_clean();
}
