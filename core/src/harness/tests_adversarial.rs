//! The storage provider as the adversary: it flips, truncates, swaps and rearranges what
//! it stores, strips envelopes, answers with other statuses or another object's bytes.
//! Every read then fails or releases a verified prefix of the true plaintext; nothing
//! tampered is ever a complete success. (And the checks themselves catch what they must.)

use super::check::{check_read, check_sent, check_upstream, find_marker, marked};
use super::drive::{Http, Sent, SentKind};
use super::*;
use crate::format::{ENVELOPE_HEADER, PART_OVERHEAD};
use crate::headers::Headers;
use crate::ops::Counter;

const F: usize = 65536;
const O: usize = 28;
const MIB: usize = 1 << 20;
const PO: usize = PART_OVERHEAD as usize;

/// A read that must not succeed: at most a verified prefix of `truth[a..=b]`.
fn fails_closed(r: &ClientResponse, truth: &[u8], want: (usize, usize), what: &str) {
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

/// Uploads `parts` as `key`; the stored bytes and the backend's ETag (unquoted).
fn upload(h: &mut Harness, key: &str, parts: &[&[u8]]) -> (Vec<u8>, String) {
    assert_eq!(h.multipart(key, parts).status, 200);
    let o = h.world.s3.object(key).unwrap();
    (o.data.clone(), o.etag.trim_matches('"').to_string())
}

/// Every read form of a multipart object: (what, request, the plaintext window it wants).
fn read_forms(key: &str, parts: &[usize]) -> Vec<(String, Request, (usize, usize))> {
    let n: usize = parts.iter().sum();
    let p3 = parts[..2.min(parts.len())].iter().sum::<usize>();
    let mut v = vec![
        ("whole".to_string(), Request::get(&obj(key)), (0, n - 1)),
        (
            "range".into(),
            Request::get(&obj(key))
                .header("range", &format!("bytes={}-{}", 5 * MIB - 10, 5 * MIB + 10)),
            (5 * MIB - 10, 5 * MIB + 10),
        ),
        (
            "suffix".into(),
            Request::get(&obj(key)).header("range", "bytes=-100"),
            (n - 100, n - 1),
        ),
    ];
    if parts.len() > 2 {
        v.push((
            "range in part 3".into(),
            Request::get(&obj(key)).header("range", &format!("bytes={}-{}", p3 + 5, p3 + 50)),
            (p3 + 5, p3 + 50),
        ));
    }
    let mut off = 0;
    for (i, l) in parts.iter().enumerate() {
        v.push((
            format!("part {}", i + 1),
            Request::get(&format!("{}?partNumber={}", obj(key), i + 1)),
            (off, off + l - 1),
        ));
        off += l;
    }
    v
}

#[test]
fn truncated_multipart_objects_never_look_complete() {
    for cut in [
        "inside-frame",
        "whole-frames",
        "frame-boundary-of-5-MiB-part",
        "most-of-last-part",
        "whole-end-part",
        "whole-last-part",
    ] {
        let mut h = Harness::shared(46);
        let big_last = matches!(
            cut,
            "whole-frames" | "frame-boundary-of-5-MiB-part" | "whole-end-part"
        );
        let p1 = marked(5 * MIB, 90);
        let p2 = marked(if big_last { 5 * MIB } else { 10_000 }, 91);
        let data = [p1.clone(), p2.clone()].concat();
        let (stored, _) = upload(&mut h, "t", &[&p1, &p2]);
        assert_eq!(stored.len(), data.len() + if big_last { 3 } else { 2 } * PO);
        let frame = p2.len().div_ceil(1024) + O;
        let marker = if big_last { PO } else { 0 };
        let n = match cut {
            "inside-frame" => 5000,
            "whole-frames" => marker + 3 * frame,
            "frame-boundary-of-5-MiB-part" => marker + 1,
            "most-of-last-part" => p2.len(),
            "whole-end-part" => marker,
            _ => p2.len() + PO,
        };
        h.world.s3.truncate("t", stored.len() - n);
        let before = h.proxy().counter(Counter::IntegrityFailures);
        for (form, req, want) in read_forms("t", &[p1.len(), p2.len()]) {
            let r = h.send(req);
            fails_closed(&r, &data, want, &format!("{cut}, {form}"));
            if form == "whole" {
                assert!(
                    r.status == 200 && r.body.len() < data.len(),
                    "{cut}: {}",
                    r.status
                );
            }
        }
        assert!(
            h.proxy().counter(Counter::IntegrityFailures) > before,
            "{cut}"
        );
        h.assert_clean();
    }
}

#[test]
fn rearranged_multipart_objects_release_only_a_true_prefix() {
    let tampers = [
        "swap",
        "duplicate",
        "drop-middle",
        "drop-middle-and-rewrite-etag",
        "drop-last-and-rewrite-etag",
        "drop-end-part-and-rewrite-etag",
        "foreign-end-part",
        "shift-by-rewritten-headers",
        "append-a-part",
    ];
    for tamper in tampers {
        let mut h = Harness::shared(47);
        // Part 1 longer than part 2, so that a part moved to another slot changes offsets;
        // the third part is a final part, or 5 MiB (then the filter adds an end part).
        let marked_end = matches!(
            tamper,
            "drop-end-part-and-rewrite-etag" | "foreign-end-part"
        );
        let p: Vec<Vec<u8>> = vec![
            marked(5 * MIB + 4096, 95),
            marked(5 * MIB, 96),
            marked(if marked_end { 5 * MIB } else { 10_000 }, 97),
        ];
        let data = p.concat();
        let (stored, etag) = upload(&mut h, "mp", &[&p[0], &p[1], &p[2]]);
        assert!(etag.ends_with(if marked_end { "-4" } else { "-3" }));
        let (n1, n2) = (p[0].len() + PO, p[1].len() + PO);
        let (s1, s2, s3) = (&stored[..n1], &stored[n1..n1 + n2], &stored[n1 + n2..]);
        let mut relabelled = s1.to_vec();
        relabelled[4..8].copy_from_slice(&2u32.to_be_bytes());
        let foreign = if tamper == "foreign-end-part" {
            let q: Vec<Vec<u8>> = p.iter().map(|x| marked(x.len(), 99)).collect();
            let (other, _) = upload(&mut h, "other", &[&q[0], &q[1], &q[2]]);
            other[other.len() - PO..].to_vec()
        } else {
            Vec::new()
        };
        let new: Vec<u8> = match tamper {
            "swap" => [s2, s1, s3].concat(),
            "duplicate" => [s1, s1, s3].concat(),
            "drop-middle" | "drop-middle-and-rewrite-etag" => [s1, s3].concat(),
            "drop-last-and-rewrite-etag" => [s1, s2].concat(),
            "drop-end-part-and-rewrite-etag" => stored[..stored.len() - PO].to_vec(),
            "foreign-end-part" => [&stored[..stored.len() - PO], &foreign[..]].concat(),
            "shift-by-rewritten-headers" => [s1, &relabelled[..], s3].concat(),
            _ => [&stored[..], s2].concat(),
        };
        h.world.s3.set_raw("mp", new);
        let base = etag.rsplit_once('-').unwrap().0.to_string();
        if tamper.ends_with("rewrite-etag") {
            h.world.s3.set_etag(
                "mp",
                &format!("\"{base}-{}\"", if marked_end { 3 } else { 2 }),
            );
        }
        if tamper == "append-a-part" {
            h.world.s3.set_etag("mp", &format!("\"{base}-4\""));
        }
        let mut succeeded = Vec::new();
        for (form, req, want) in read_forms("mp", &[p[0].len(), p[1].len(), p[2].len()]) {
            let r = h.send(req);
            check_read(&r, &data, want).unwrap_or_else(|e| panic!("{tamper}, {form}: {e}"));
            // Swapping parts 1 and 2 (same total) leaves part 3 genuine and in its place:
            // a read of it alone, through the sealed table, is correct.
            let in_place = tamper == "swap"
                && matches!(form.as_str(), "range in part 3" | "suffix" | "part 3");
            if r.ok() && !in_place {
                succeeded.push(form);
            }
        }
        assert!(
            succeeded.is_empty(),
            "{tamper}: reads that succeeded on a tampered object: {succeeded:?}"
        );
        h.assert_clean();
    }
}

#[test]
fn swapped_or_foreign_parts_are_detected() {
    let mut h = Harness::shared(48);
    let a: Vec<Vec<u8>> = vec![marked(5 * MIB, 7), marked(5 * MIB, 8)];
    let b: Vec<Vec<u8>> = vec![marked(5 * MIB, 9), marked(5 * MIB, 10)];
    let (stored, _) = upload(&mut h, "a", &[&a[0], &a[1]]);
    let (other, _) = upload(&mut h, "b", &[&b[0], &b[1]]);
    let data = a.concat();
    let n = 5 * MIB + PO;
    h.world.s3.set_raw(
        "a",
        [&stored[n..2 * n], &stored[..n], &stored[2 * n..]].concat(),
    );
    fails_closed(&h.get("a"), &data, (0, data.len() - 1), "swapped");
    // Part 2 replaced by part 2 of another upload (another data key).
    h.world
        .s3
        .set_raw("a", [&stored[..n], &other[n..]].concat());
    let r = h.get("a");
    fails_closed(&r, &data, (0, data.len() - 1), "foreign part");
    assert!(r.body.len() <= a[0].len());
    let r = h.get_part("a", 2);
    fails_closed(&r, &data, (5 * MIB, 10 * MIB - 1), "foreign part 2");
    assert!(h.proxy().counter(Counter::IntegrityFailures) >= 2);
    h.assert_clean();
}

#[test]
fn ranged_reads_of_a_tampered_part_fail_closed() {
    let mut h = Harness::shared(49);
    let p: Vec<Vec<u8>> = vec![marked(5 * MIB, 25), marked(5 * MIB, 26)];
    let data = p.concat();
    upload(&mut h, "tr", &[&p[0], &p[1]]);
    h.world.s3.flip("tr", 5 * MIB + PO + 5000, 1);
    assert_eq!(h.get_part("tr", 1).body, p[0]);
    fails_closed(
        &h.get_part("tr", 2),
        &data,
        (5 * MIB, 10 * MIB - 1),
        "part 2",
    );
    let r = h.get_range(
        "tr",
        &format!("bytes={}-{}", 5 * MIB - 10, 5 * MIB + 10_000),
    );
    fails_closed(&r, &data, (5 * MIB - 10, 5 * MIB + 10_000), "across");
    h.assert_clean();
}

#[test]
fn a_cached_part_table_never_serves_another_object() {
    // Two objects of the same stored size with different part sizes; the provider gives
    // the second the first's ETag. Its reads must use its own table, not the first's.
    let mut h = Harness::shared(50);
    let a: Vec<Vec<u8>> = vec![
        marked(5 * MIB + 100, 1),
        marked(5 * MIB + 200, 2),
        marked(1000, 3),
    ];
    let b: Vec<Vec<u8>> = vec![
        marked(5 * MIB + 200, 4),
        marked(5 * MIB + 100, 5),
        marked(1000, 6),
    ];
    let (_, etag) = upload(&mut h, "a", &[&a[0], &a[1], &a[2]]);
    upload(&mut h, "b", &[&b[0], &b[1], &b[2]]);
    let at = 5 * MIB + 150;
    assert_eq!(
        h.get_range("a", &format!("bytes={at}-{}", at + 99)).body,
        a.concat()[at..at + 100]
    );
    h.world.s3.set_etag("b", &format!("\"{etag}\""));
    let r = h.get_range("b", &format!("bytes={at}-{}", at + 99));
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.body, b.concat()[at..at + 100]);
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
    let mut h = Harness::shared(52);
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
}

#[test]
fn a_backend_that_keeps_saying_truncated_gets_no_more_lists_than_parts() {
    let mut h = Harness::shared(53);
    let id = h.create_upload("t");
    let p = [marked(5 * MIB, 1), marked(5 * MIB, 2), marked(100, 3)];
    let etags: Vec<(u32, String)> = (1u32..)
        .zip(&p)
        .map(|(n, d)| (n, h.part_ok("t", &id, n, d)))
        .collect();
    // ListParts answers "truncated", lists nothing and moves its marker on, forever.
    h.world.s3.answer = Some(Box::new(|req: &Http| {
        let path = req.headers.get(":path")?;
        if req.headers.get(":method") != Some("GET") || !path.contains("uploadId=") {
            return None;
        }
        let marker: u32 = path
            .split("part-number-marker=")
            .nth(1)
            .and_then(|m| m.split('&').next()?.parse().ok())
            .unwrap_or(0);
        let body = format!("<ListPartsResult><IsTruncated>true</IsTruncated><NextPartNumberMarker>{}</NextPartNumberMarker></ListPartsResult>", marker + 1);
        let mut r = Http::with_status(200);
        r.headers.set("content-length", body.len().to_string());
        r.body = body.into_bytes();
        Some(r)
    }));
    let m = h.mark();
    let r = h.complete("t", &id, &etags);
    assert_eq!(r.code().as_deref(), Some("InvalidPart"), "{}", r.text());
    let lists = h
        .sent_since(m)
        .iter()
        .filter(|s| s.method() == "GET")
        .count();
    assert!(lists <= p.len(), "{lists} pages asked for");
    assert!(h.world.s3.object("t").is_none());
    h.assert_clean();
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
