//! The storage provider against multipart objects: truncated, rearranged (swapped,
//! duplicated, dropped, relabelled, appended parts, with rewritten ETags), foreign parts
//! and end parts, a flipped part, another object presented under a cached table's ETag,
//! a ListParts that never ends. Every read form releases at most a true prefix.

use super::check::{check_read, marked};
use super::drive::Http;
use super::tests_adversarial::fails_closed;
use super::*;
use crate::format::PART_OVERHEAD;
use crate::ops::Counter;

const O: usize = 28;
const MIB: usize = 1 << 20;
const PO: usize = PART_OVERHEAD as usize;

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
            let mut r = h.send(req.clone());
            if form == "whole" {
                // The process knew the object at its old size: the first read is told
                // to retry (503 SlowDown, nothing released); the retry reads it afresh.
                assert_eq!(r.status, 503, "{cut}: {}", r.text());
                assert!(r.body.len() < 1000 && r.text().contains("SlowDown"));
                r = h.send(req);
            }
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
