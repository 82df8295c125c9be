//! Multipart uploads in shared-data mode: create/upload/complete/abort/list parts, the
//! object's end (closing part, end part, final part when staging is off or evicted),
//! range and part reads with the part table, Complete's checks, concurrent first readers.

use super::check::{check_read, check_upstream, decrypt_stored, find_marker, marked, part_magics};
use super::drive::{Fault, FaultRule, SentKind};
use super::*;
use crate::format::PART_OVERHEAD;

const MIB: usize = 1 << 20;

/// Requests that reached the backend since `from`.
fn backend_requests(h: &Harness, from: usize) -> usize {
    h.sent_since(from)
        .iter()
        .filter(|s| {
            s.kind == SentKind::Upstream || s.kind == SentKind::CallOut("s3_backend".into())
        })
        .count()
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn parts_out_of_order_complete_and_read_back() {
    let mut h = Harness::shared(20);
    let p: Vec<Vec<u8>> = vec![
        marked(5 * MIB + 1, 1),
        marked(5 * MIB + 1, 2),
        marked(1000, 3),
    ];
    let data = concat(&[&p[0], &p[1], &p[2]]);
    let r =
        h.send(Request::new("POST", &format!("{}?uploads", obj("mp"))).header("x-amz-meta-k", "v"));
    let id = r.xml("UploadId").unwrap();
    let mut etags = vec![(3, h.part_ok("mp", &id, 3, &p[2]))];
    etags.push((1, h.part_ok("mp", &id, 1, &p[0])));
    etags.push((2, h.part_ok("mp", &id, 2, &p[1])));
    etags.sort();
    let done = h.complete("mp", &id, &etags);
    assert_eq!(done.status, 200, "{}", done.text());
    let shown = super::check::multipart_md5_etag(&[&p[0], &p[1], &p[2]]);
    assert_eq!(done.xml("ETag"), Some(shown.clone()));
    // Complete rewrote the short last part as a closing part (same stored size).
    assert_eq!(part_magics(&h, "mp"), ["s3cP", "s3cP", "s3cC"]);
    let stored = h.world.s3.raw("mp");
    assert_eq!(stored.len(), data.len() + 3 * PART_OVERHEAD as usize);
    assert_eq!(find_marker(&stored), None);
    assert_eq!(decrypt_stored(&h, "mp").unwrap(), data);
    let r = h.get("mp");
    assert_eq!((r.status, r.header("etag")), (200, Some(shown.as_str())));
    assert_eq!(r.body, data);
    let g = h.get("mp");
    assert!(g.ok() && g.body == data);
    assert_eq!(g.header("x-amz-meta-k"), Some("v"));
    assert_eq!(
        h.head("mp").header("content-length"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(
        h.list("")
            .into_iter()
            .map(|(k, s, _)| (k, s))
            .collect::<Vec<_>>(),
        [("mp".to_string(), data.len() as u64)]
    );
    check_upstream(&h, 0).unwrap();
    // The upload's state is gone: a late part is refused here.
    let late = h.upload_part("mp", &id, 4, b"late");
    assert_eq!(late.code().as_deref(), Some("NoSuchUpload"));
    assert!(
        h.proxy()
            .store
            .keys()
            .iter()
            .all(|k| !k.starts_with("s3crypt/mpu/") && !k.starts_with("s3crypt/stage/")),
        "{:?}",
        h.proxy().store.keys()
    );
    // A last part of 5 MiB or more can be followed: the filter adds the end part.
    let q: Vec<Vec<u8>> = vec![marked(5 * MIB + 1, 4), marked(5 * MIB, 5)];
    let done = h.multipart("big", &[&q[0], &q[1]]);
    assert_eq!(
        done.xml("ETag"),
        Some(super::check::multipart_md5_etag(&[&q[0], &q[1]])),
        "{}",
        done.text()
    );
    assert!(h.world.s3.object("big").unwrap().etag.ends_with("-3\""));
    assert_eq!(part_magics(&h, "big"), ["s3cP", "s3cP", "s3cE"]);
    let g = h.get("big");
    assert!(g.ok() && g.body == concat(&[&q[0], &q[1]]));
    assert_eq!(
        h.list("prefix=big")
            .into_iter()
            .map(|(_, s, _)| s)
            .collect::<Vec<_>>(),
        [g.body.len() as u64]
    );
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn list_parts_reupload_bad_digest_and_abort() {
    let mut h = Harness::shared(21);
    let id = h.create_upload("lp");
    h.part_ok("lp", &id, 2, &marked(5 * MIB, 5));
    let first = h.part_ok("lp", &id, 1, &marked(5 * MIB + 7, 6));
    // Re-uploading a part number with the same content: new random nonces (another
    // backend ETag), but the same ETag for the client, the MD5 of the plaintext.
    let again = h.part_ok("lp", &id, 1, &marked(5 * MIB + 7, 6));
    assert_eq!(first, again);
    let md5 = <md5::Md5 as md5::Digest>::digest(marked(5 * MIB + 7, 6));
    assert_eq!(first, format!("\"{}\"", hex::encode(md5)));
    let list = |h: &mut Harness| {
        let r = h.send(Request::get(&format!(
            "{}?uploadId={}",
            obj("lp"),
            enc(&id)
        )));
        assert_eq!(r.status, 200, "{}", r.text());
        let t = r.text();
        let n = crate::s3::xml::element_texts(&t, "PartNumber");
        let s = crate::s3::xml::element_texts(&t, "Size");
        n.into_iter().zip(s).collect::<Vec<_>>()
    };
    assert_eq!(
        list(&mut h),
        [
            ("1".into(), (5 * MIB + 7).to_string()),
            ("2".into(), (5 * MIB).to_string())
        ]
    );
    let bad = h.send(Request::put(&part_path("lp", &id, 3), &[7u8; 1000]).header(
        "content-md5",
        &B64.encode(<md5::Md5 as md5::Digest>::digest(b"y")),
    ));
    assert_eq!(bad.code().as_deref(), Some("BadDigest"));
    assert_eq!(list(&mut h).len(), 2, "the refused part was not stored");
    // An empty part cannot be encrypted (Envoy cannot add a body to a request without one).
    let empty = h.upload_part("lp", &id, 3, b"");
    assert_eq!(empty.status, 400);
    let ab = h.send(Request::new(
        "DELETE",
        &format!("{}?uploadId={}", obj("lp"), enc(&id)),
    ));
    assert_eq!(ab.status, 204);
    assert!(h.world.s3.uploads.is_empty());
    assert_eq!(
        h.upload_part("lp", &id, 3, b"after abort")
            .code()
            .as_deref(),
        Some("NoSuchUpload")
    );
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn part_number_and_range_reads_use_the_sealed_table() {
    let mut h = Harness::shared(22);
    let p: Vec<Vec<u8>> = vec![
        marked(5 * MIB + 1, 21),
        marked(5 * MIB + 3, 22),
        marked(1000, 23),
    ];
    let data = concat(&[&p[0], &p[1], &p[2]]);
    assert_eq!(h.multipart("pr", &[&p[0], &p[1], &p[2]]).status, 200);
    let p1 = p[0].len();
    // The first ranged read: a HEAD, one read of the sealed table, the data.
    let m = h.mark();
    let r = h.get_range("pr", "bytes=100-200");
    assert_eq!(r.body, data[100..=200]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-200/{}", data.len()).as_str())
    );
    assert_eq!(backend_requests(&h, m), 3);
    let n = data.len();
    let ranges = [
        (format!("bytes={}-{}", p1 - 10, p1 + 10), p1 - 10, p1 + 10),
        ("bytes=7-".into(), 7, n - 1),
        ("bytes=-500".into(), n - 500, n - 1),
        ("bytes=-1005".into(), n - 1005, n - 1),
        (format!("bytes={}-{}", n - 1, n + 100), n - 1, n - 1),
        (format!("bytes={p1}-{p1}"), p1, p1),
        (format!("bytes=-{}", n + 5), 0, n - 1),
    ];
    let m = h.mark();
    for (range, a, b) in &ranges {
        let r = h.get_range("pr", range);
        assert_eq!(r.status, 206, "{range}");
        assert!(r.complete(), "{range}");
        assert_eq!(r.body, data[*a..=*b], "{range}");
        check_read(&r, &data, (*a, *b)).unwrap();
    }
    // Later reads of the same version: a HEAD and the data.
    assert_eq!(backend_requests(&h, m), 2 * ranges.len());
    let r = h.get_range("pr", &format!("bytes={n}-"));
    assert_eq!(r.code().as_deref(), Some("InvalidRange"));
    let mut off = 0;
    for (i, part) in p.iter().enumerate() {
        let r = h.get_part("pr", i as u32 + 1);
        assert_eq!(r.status, 206);
        assert_eq!(r.body, *part);
        assert_eq!(r.header("x-amz-mp-parts-count"), Some("3"));
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {off}-{}/{n}", off + part.len() - 1).as_str())
        );
        let hd = h.send(Request::new(
            "HEAD",
            &format!("{}?partNumber={}", obj("pr"), i + 1),
        ));
        assert_eq!(
            hd.header("content-length"),
            Some(part.len().to_string().as_str())
        );
        assert_eq!(hd.header("x-amz-mp-parts-count"), Some("3"));
        off += part.len();
    }
    for bad in [4, 10_000] {
        assert_eq!(
            h.get_part("pr", bad).code().as_deref(),
            Some("InvalidPartNumber"),
            "{bad}"
        );
    }
    assert_eq!(h.get_part("pr", 0).status, 400);
    // A last part of 5 MiB or more: the end part seals the table.
    let q: Vec<Vec<u8>> = vec![marked(5 * MIB + 1, 24), marked(5 * MIB, 25)];
    h.multipart("pr-big", &[&q[0], &q[1]]);
    let m = h.mark();
    let r = h.get_range("pr-big", "bytes=-10");
    assert_eq!(r.body, q[1][q[1].len() - 10..]);
    assert_eq!(backend_requests(&h, m), 3);
    let g = h.get_part("pr-big", 2);
    assert_eq!(
        (g.body == q[1], g.header("x-amz-mp-parts-count")),
        (true, Some("2"))
    );
    assert_eq!(
        h.get_part("pr-big", 3).code().as_deref(),
        Some("InvalidPartNumber")
    );
    // A single-part object is its own part 1.
    let one = marked(200_000, 26);
    h.put("one", &one);
    assert_eq!(h.get_part("one", 1).body, one);
    assert_eq!(
        h.get_part("one", 2).code().as_deref(),
        Some("InvalidPartNumber")
    );
    let both =
        h.send(Request::get(&format!("{}?partNumber=1", obj("one"))).header("range", "bytes=0-1"));
    assert_eq!(both.status, 400);
    h.assert_clean();
}

#[test]
fn complete_checks_the_part_list() {
    let mut h = Harness::shared(23);
    let id = h.create_upload("c");
    let e1 = h.part_ok("c", &id, 1, &marked(5 * MIB, 1));
    let e2 = h.part_ok("c", &id, 2, &marked(3000, 2));
    let e3 = h.part_ok("c", &id, 3, &marked(3000, 3));
    let m = h.mark();
    // Gaps and disorder: refused by the filter, the backend never asked to complete.
    for list in [
        vec![(1, e1.clone()), (3, e3.clone())],
        vec![(2, e2.clone()), (1, e1.clone())],
    ] {
        let r = h.complete("c", &id, &list);
        assert_eq!(
            r.code().as_deref(),
            Some("InvalidPartOrder"),
            "{}",
            r.text()
        );
    }
    assert!(h
        .sent_since(m)
        .iter()
        .all(|s| !s.complete || s.method() != "POST"));
    // A part before the last shorter than 5 MiB: S3's rule, checked by the filter.
    let r = h.complete(
        "c",
        &id,
        &[(1, e1.clone()), (2, e2.clone()), (3, e3.clone())],
    );
    assert_eq!(r.code().as_deref(), Some("EntityTooSmall"), "{}", r.text());
    // An ETag that is not the stored part's: the backend refuses.
    let r = h.complete(
        "c",
        &id,
        &[
            (1, e1.clone()),
            (2, "\"0123456789abcdef0123456789abcdef\"".into()),
        ],
    );
    assert_eq!(r.code().as_deref(), Some("InvalidPart"), "{}", r.text());
    // A part checksum the filter cannot blank is refused; plain ones are blanked.
    let odd = format!("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{e1}</ETag><ChecksumCRC32 a=\"1\">AAAAAA==</ChecksumCRC32></Part></CompleteMultipartUpload>");
    let r = h.send(Request::post(
        &format!("{}?uploadId={}", obj("c"), enc(&id)),
        odd.as_bytes(),
    ));
    assert_eq!(r.status, 400, "{}", r.text());
    let with_sums = format!("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{e1}</ETag><ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part><Part><PartNumber>2</PartNumber><ETag>{e2}</ETag><ChecksumCRC32>BBBBBB==</ChecksumCRC32></Part></CompleteMultipartUpload>");
    let m = h.mark();
    let r = h.send(Request::post(
        &format!("{}?uploadId={}", obj("c"), enc(&id)),
        with_sums.as_bytes(),
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = h
        .sent_since(m)
        .iter()
        .find(|s| s.method() == "POST" && s.path().contains("uploadId"))
        .unwrap();
    let text = String::from_utf8_lossy(&sent.body);
    assert!(
        !text.contains("Checksum") && !text.contains("AAAAAA"),
        "{text}"
    );
    assert_eq!(
        h.get("c").body,
        [marked(5 * MIB, 1), marked(3000, 2)].concat()
    );
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn evicted_staged_parts_complete_without_a_table_and_reads_walk() {
    let mut h = Harness::shared(24);
    let ids: Vec<String> = (0..9).map(|i| h.create_upload(&format!("ev{i}"))).collect();
    let tails: Vec<Vec<u8>> = (0..9).map(|i| marked(2000 + i, 40 + i as u32)).collect();
    let etags: Vec<String> = (0..9)
        .map(|i| h.part_ok(&format!("ev{i}"), &ids[i], 2, &tails[i]))
        .collect();
    let head = marked(5 * MIB + 1, 39);
    for i in [0, 8] {
        let k = format!("ev{i}");
        let e1 = h.part_ok(&k, &ids[i], 1, &head);
        assert_eq!(
            h.complete(&k, &ids[i], &[(1, e1), (2, etags[i].clone())])
                .status,
            200
        );
    }
    for (i, id) in ids.iter().enumerate().take(8).skip(1) {
        h.send(Request::new(
            "DELETE",
            &format!("{}?uploadId={}", obj(&format!("ev{i}")), enc(id)),
        ));
    }
    assert_eq!(
        part_magics(&h, "ev0"),
        ["s3cP", "s3cF"],
        "evicted: the client's final part"
    );
    assert_eq!(part_magics(&h, "ev8"), ["s3cP", "s3cC"]);
    for (i, walk) in [(0, 3), (8, 0)] {
        let k = format!("ev{i}");
        let m = h.mark();
        let r = h.get_range(&k, "bytes=-100");
        let whole = [head.clone(), tails[i].clone()].concat();
        assert_eq!(r.body, whole[whole.len() - 100..]);
        // HEAD, the look for a sealed table, the walk if there is none, the data.
        assert_eq!(backend_requests(&h, m), 1 + 1 + walk + 1, "{k}");
        assert_eq!(h.get(&k).body, whole);
        assert_eq!(h.get_part(&k, 2).body, tails[i]);
    }
    // Every staging slot was freed by the completions and aborts.
    assert!(
        h.proxy()
            .store
            .keys()
            .iter()
            .all(|k| !k.starts_with("s3crypt/stage/")),
        "{:?}",
        h.proxy().store.keys()
    );
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn without_staging_objects_end_with_the_final_part() {
    let mut h = Harness::new(
        Options::shared().with("stage_short_parts", false.into()),
        25,
    );
    let p: Vec<Vec<u8>> = vec![marked(5 * MIB + 5, 1), marked(4000, 2)];
    assert_eq!(h.multipart("f", &[&p[0], &p[1]]).status, 200);
    assert_eq!(part_magics(&h, "f"), ["s3cP", "s3cF"]);
    let data = p.concat();
    assert_eq!(
        h.get_range("f", "bytes=5242880-5242890").body,
        data[5_242_880..=5_242_890]
    );
    assert_eq!(h.get_part("f", 2).body, p[1]);
    assert_eq!(h.get("f").body, data);
    h.assert_clean();
}

#[test]
fn abort_of_another_key_keeps_the_upload_and_only_a_confirmed_abort_forgets() {
    let mut h = Harness::shared(26);
    let id = h.create_upload("a");
    let m = h.mark();
    let r = h.send(Request::new(
        "DELETE",
        &format!("{}?uploadId={}", obj("b"), enc(&id)),
    ));
    assert_eq!((r.status, r.code().as_deref()), (404, Some("NoSuchUpload")));
    assert_eq!(backend_requests(&h, m), 0, "the backend was not asked");
    // The backend fails the abort: the state stays, the upload goes on.
    h.world.faults.push(
        FaultRule::upstream(Fault::Status(500))
            .method("DELETE")
            .times(1),
    );
    let r = h.send(Request::new(
        "DELETE",
        &format!("{}?uploadId={}", obj("a"), enc(&id)),
    ));
    assert_eq!(r.status, 500);
    let e = h.part_ok("a", &id, 1, b"still here");
    assert_eq!(h.complete("a", &id, &[(1, e)]).status, 200);
    assert_eq!(h.get("a").body, b"still here");
    h.assert_clean();
}

#[test]
fn chacha_uploads_and_reads() {
    let mut h = Harness::new(
        Options::shared().with("suite", "chacha20-poly1305".into()),
        27,
    );
    let p: Vec<Vec<u8>> = vec![marked(5 * MIB, 1), marked(777, 2)];
    h.multipart("cc", &[&p[0], &p[1]]);
    let single = marked(100_000, 3);
    h.put("s", &single);
    assert!(h
        .world
        .s3
        .object("s")
        .unwrap()
        .meta(crate::format::ENVELOPE_HEADER)
        .unwrap()
        .contains(";s=2;"));
    assert_eq!(h.get("cc").body, p.concat());
    assert_eq!(
        h.get_range("cc", "bytes=-800").body,
        p.concat()[p.concat().len() - 800..]
    );
    assert_eq!(
        h.get_range("s", "bytes=70000-70010").body,
        single[70000..=70010]
    );
    // A deployment on the other suite reads both.
    let aes = h.add_proxy(Options::shared());
    assert_eq!(h.send_on(aes, Request::get(&obj("cc"))).body, p.concat());
    assert_eq!(h.send_on(aes, Request::get(&obj("s"))).body, single);
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn concurrent_first_readers_share_one_table_lookup() {
    let mut h = Harness::shared(28);
    let p: Vec<Vec<u8>> = vec![
        marked(5 * MIB + 1, 60),
        marked(5 * MIB + 2, 61),
        marked(3000, 62),
    ];
    let data = p.concat();
    h.multipart("shared", &[&p[0], &p[1], &p[2]]);
    let stored = h.world.s3.raw("shared").len();
    let table_at = format!("bytes={}-", stored - PART_OVERHEAD as usize);
    // A slow backend for the table read: the other readers arrive while it is in flight.
    h.world
        .faults
        .push(FaultRule::callouts("s3_backend", Fault::Delay(1500)).method("GET"));
    let reads: Vec<(usize, Request)> = (0..6)
        .map(|i| {
            (
                0,
                Request::get(&obj("shared")).header(
                    "range",
                    &format!("bytes={}-{}", i * 999_999, i * 999_999 + 99),
                ),
            )
        })
        .collect();
    let m = h.mark();
    let got = h.send_all(reads);
    for (i, r) in got.iter().enumerate() {
        assert!(r.ok(), "{i}: {r:?}");
        assert_eq!(r.body, data[i * 999_999..i * 999_999 + 100], "{i}");
    }
    let table_reads = h
        .sent_since(m)
        .iter()
        .filter(|s| {
            s.headers
                .get("range")
                .is_some_and(|r| r.starts_with(&table_at))
        })
        .count();
    assert_eq!(table_reads, 1);
    // A lookup that ends without a table (the backend fails it): the one who looked and
    // those who waited are told to retry; then a read finds it.
    h.restart(0);
    h.world.faults.clear();
    h.world.faults.push(
        FaultRule::callouts("s3_backend", Fault::Fail)
            .method("GET")
            .times(1),
    );
    let reads: Vec<(usize, Request)> = (0..3)
        .map(|_| (0, Request::get(&obj("shared")).header("range", "bytes=0-9")))
        .collect();
    let got = h.send_all(reads);
    assert!(got.iter().all(|r| r.status == 503 && !r.stuck), "{got:?}");
    assert_eq!(h.get_range("shared", "bytes=0-9").body, data[..10]);
    h.assert_clean();
}
