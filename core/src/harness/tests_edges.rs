//! Edge cases: retried Completes, ListParts and listings paged short by the backend,
//! empty and chunked uploads and parts, interrupted uploads, odd keys, concurrent parts
//! and copies against the copy budget, conditions on multipart ranges, overwritten
//! multipart objects, namespaced part lists.

use super::check::{check_upstream, marked, part_magics};
use super::drive::{Fault, FaultRule};
use super::*;
use crate::auth::checksum::ChecksumAlgorithm;

const MIB: usize = 1 << 20;

#[test]
fn a_complete_retried_after_the_backend_failed_it() {
    for big_last in [false, true] {
        let mut h = Harness::shared(80);
        let p = [
            marked(5 * MIB + 9, 1),
            marked(if big_last { 5 * MIB } else { 4321 }, 2),
        ];
        let id = h.create_upload("r");
        let parts = vec![
            (1, h.part_ok("r", &id, 1, &p[0])),
            (2, h.part_ok("r", &id, 2, &p[1])),
        ];
        h.world.faults.push(
            FaultRule::upstream(Fault::Status(500))
                .method("POST")
                .times(1),
        );
        let r = h.complete("r", &id, &parts);
        assert_eq!(r.status, 500);
        // The closing (or end) part went up before the failure; the retry makes it again.
        let r = h.complete("r", &id, &parts);
        assert_eq!(r.status, 200, "{big_last}: {}", r.text());
        let magics = if big_last {
            vec!["s3cP", "s3cP", "s3cE"]
        } else {
            vec!["s3cP", "s3cC"]
        };
        assert_eq!(part_magics(&h, "r"), magics);
        let data = p.concat();
        assert_eq!(h.get("r").body, data);
        assert_eq!(h.get_range("r", "bytes=-7").body, data[data.len() - 7..]);
        check_upstream(&h, 0).unwrap();
        h.assert_clean();
    }
}

#[test]
fn list_parts_and_listings_paged_short_by_the_backend() {
    let mut h = Harness::shared(81);
    h.world.s3.max_page = 1;
    let p = [marked(5 * MIB, 1), marked(5 * MIB + 1, 2), marked(100, 3)];
    let r = h.multipart("paged", &[&p[0], &p[1], &p[2]]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.get("paged").body, p.concat());
    // A client's own ListParts, page by page, shows plaintext sizes.
    let id = h.create_upload("lp");
    h.part_ok("lp", &id, 1, &[1; 100]);
    h.part_ok("lp", &id, 2, &[2; 200]);
    let r = h.send(Request::get(&format!(
        "{}?uploadId={}&max-parts=1",
        obj("lp"),
        enc(&id)
    )));
    assert_eq!(r.xml("Size").as_deref(), Some("100"));
    assert_eq!(r.xml("IsTruncated").as_deref(), Some("true"));
    let next = r.xml("NextPartNumberMarker").unwrap();
    let r = h.send(Request::get(&format!(
        "{}?uploadId={}&part-number-marker={next}",
        obj("lp"),
        enc(&id)
    )));
    assert_eq!(r.xml("Size").as_deref(), Some("200"));
    for k in ["a", "b", "c"] {
        h.put(k, k.as_bytes());
    }
    let r = h.send(Request::get(&format!("/{BUCKET}?list-type=2")));
    assert_eq!(s3_xml::entries(&r.text()).len(), 1);
    assert_eq!(r.xml("IsTruncated").as_deref(), Some("true"));
    h.assert_clean();
}

#[test]
fn empty_and_chunked_uploads_and_parts() {
    let mut h = Harness::shared(82);
    for (i, mode) in [
        Chunked::Signed,
        Chunked::UnsignedTrailer(ChecksumAlgorithm::Crc32),
    ]
    .into_iter()
    .enumerate()
    {
        let k = format!("empty{i}");
        let r = h.send(Request::put(&obj(&k), b"").chunked(mode, 1000));
        assert_eq!(r.status, 200, "{mode:?}: {}", r.text());
        let g = h.get(&k);
        assert!(g.ok() && g.body.is_empty(), "{g:?}");
        assert_eq!(h.head(&k).header("content-length"), Some("0"));
    }
    // Parts streamed aws-chunked, as the AWS CLI sends them, with their checksums.
    let p = [marked(5 * MIB + 1, 5), marked(7000, 6)];
    let id = h.create_upload("cp");
    let mut etags = Vec::new();
    for (n, (part, mode)) in (1u32..).zip([
        (&p[0], Chunked::UnsignedTrailer(ChecksumAlgorithm::Crc32)),
        (&p[1], Chunked::Signed),
    ]) {
        let r = h.send(Request::put(&part_path("cp", &id, n), part).chunked(mode, 65_536));
        assert_eq!(r.status, 200, "{n}: {}", r.text());
        if let Chunked::UnsignedTrailer(a) = mode {
            assert_eq!(
                r.header(a.header_name()),
                Some(client::checksum(a, part).as_str())
            );
        }
        etags.push((n, r.header("etag").unwrap().to_string()));
    }
    assert_eq!(h.complete("cp", &id, &etags).status, 200);
    assert_eq!(h.get("cp").body, p.concat());
    // A presigned UploadPart.
    let id = h.create_upload("pp");
    let r = h.send(Request::put(&part_path("pp", &id, 1), b"presigned part").presigned(60));
    assert_eq!(r.status, 200, "{}", r.text());
    let e = r.header("etag").unwrap().to_string();
    assert_eq!(h.complete("pp", &id, &[(1, e)]).status, 200);
    assert_eq!(h.get("pp").body, b"presigned part");
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn interrupted_uploads_store_nothing() {
    let mut h = Harness::shared(83);
    let data = marked(300_000, 7);
    let id = h.create_upload("mp");
    for cut in [0, 1, 65_536, 65_564, 299_999] {
        let m = h.mark();
        let r = h.send(Request::put(&obj("k"), &data).cut_after(cut));
        assert!(r.reset && r.status == 0, "{cut}: {r:?}");
        let r = h.send(Request::put(&part_path("mp", &id, 1), &data).cut_after(cut));
        assert!(r.reset, "{cut}");
        let r = h.send(
            Request::put(&obj("c"), &data)
                .chunked(Chunked::Signed, 10_000)
                .cut_after(cut),
        );
        assert!(r.reset, "{cut}");
        // Nothing arrived whole; what went up was frames short of the final one.
        assert!(h.sent_since(m).iter().all(|s| !s.complete), "{cut}");
        check_upstream(&h, m).unwrap();
    }
    assert!(h.world.s3.keys().is_empty());
    assert!(h.world.s3.uploads[&id].parts.is_empty());
    // A part list cut short never completes the upload.
    let e = h.part_ok("mp", &id, 1, b"one");
    let body = complete_body(&[(1, e.clone())]);
    let r = h.send(
        Request::post(
            &format!("{}?uploadId={}", obj("mp"), enc(&id)),
            body.as_bytes(),
        )
        .cut_after(20),
    );
    assert!(r.reset);
    assert!(h.world.s3.uploads.contains_key(&id));
    assert_eq!(h.complete("mp", &id, &[(1, e)]).status, 200);
    h.assert_clean();
}

#[test]
fn keys_with_odd_characters() {
    let mut h = Harness::shared(84);
    let keys = [
        "a b+c/ü€?&=#.txt",
        "with%25percent",
        "x~y!'()*",
        "trailing/",
        "ends with space ",
    ];
    for (i, k) in keys.iter().enumerate() {
        let data = marked(1000 + i, i as u32);
        let r = h.put(k, &data);
        assert_eq!(r.status, 200, "{k}: {}", r.text());
        assert_eq!(h.get(k).body, data, "{k}");
        assert_eq!(
            h.world.s3.raw(k).len(),
            1000 + i + 28 + 156,
            "{k}: stored under its own name"
        );
        let dst = format!("copy of {k}");
        let c = Request::new("PUT", &obj(&dst)).header(
            "x-amz-copy-source",
            &format!("/{BUCKET}/{}", client::encode(k, false)),
        );
        assert_eq!(h.send(c).status, 200, "{k}");
        assert_eq!(h.get(&dst).body, data);
        let r = h.multipart(&format!("mp {k}"), &[&data]);
        assert_eq!(r.status, 200, "{k}: {}", r.text());
    }
    let listed: Vec<String> = h.list("").into_iter().map(|(k, _, _)| k).collect();
    for k in keys {
        assert!(listed.iter().any(|l| l == k), "{k} in {listed:?}");
    }
    h.assert_clean();
}

#[test]
fn concurrent_parts_and_copies_within_the_copy_budget() {
    let opts = Options::shared()
        .with("max_copy_part_bytes", 200_000.into())
        .with("max_copy_buffer_bytes", 200_000.into());
    let mut h = Harness::new(opts, 85);
    let src = marked(150_000, 1);
    h.put("src", &src);
    let id = h.create_upload("dst");
    let copy = |n: u32| {
        (
            0,
            Request::new("PUT", &part_path("dst", &id, n)).header("x-amz-copy-source", "/b/src"),
        )
    };
    // Two copies at once: the second does not fit the budget while the first holds it.
    let got = h.send_all(vec![copy(1), copy(2)]);
    let codes: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert!(codes.contains(&200) && codes.contains(&503), "{codes:?}");
    assert!(got.iter().any(|r| r.code().as_deref() == Some("SlowDown")));
    // Once it ended, the budget is back.
    let r = h.send(copy(2).1);
    assert_eq!(r.status, 200, "{}", r.text());
    // Parts of one upload sent at once, interleaved.
    let p: Vec<Vec<u8>> = vec![marked(5 * MIB, 2), marked(5 * MIB + 3, 3), marked(10, 4)];
    let id = h.create_upload("par");
    let reqs: Vec<(usize, Request)> = (1u32..)
        .zip(&p)
        .map(|(n, d)| (0, Request::put(&part_path("par", &id, n), d)))
        .collect();
    let got = h.send_all(reqs);
    let etags: Vec<(u32, String)> = (1u32..)
        .zip(&got)
        .map(|(n, r)| (n, r.header("etag").unwrap().to_string()))
        .collect();
    assert_eq!(h.complete("par", &id, &etags).status, 200);
    assert_eq!(h.get("par").body, p.concat());
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn conditions_and_overwrites_of_multipart_objects() {
    let mut h = Harness::shared(86);
    let p = [marked(5 * MIB + 1, 1), marked(2000, 2)];
    h.multipart("m", &[&p[0], &p[1]]);
    let etag = h.head("m").header("etag").unwrap().to_string();
    let r = h.send(
        Request::get(&obj("m"))
            .header("range", "bytes=10-19")
            .header("if-match", &etag),
    );
    assert_eq!(r.body, p[0][10..20]);
    let r = h.send(
        Request::get(&obj("m"))
            .header("range", "bytes=10-19")
            .header("if-none-match", &etag),
    );
    assert_eq!(r.status, 304);
    let r =
        h.send(Request::get(&format!("{}?partNumber=2", obj("m"))).header("if-match", "\"other\""));
    assert_eq!(r.status, 412);
    // Overwritten by another multipart object: reads see the new one, not a cached table.
    let q = [marked(5 * MIB + 999, 3), marked(5000, 4)];
    h.multipart("m", &[&q[0], &q[1]]);
    let data = q.concat();
    assert_eq!(
        h.get_range("m", "bytes=5243800-5243900").body,
        data[5_243_800..=5_243_900]
    );
    assert_eq!(h.get_part("m", 2).body, q[1]);
    // A namespaced part list, as SDKs send it.
    let id = h.create_upload("ns");
    let e = h.part_ok("ns", &id, 1, b"namespaced");
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Part><ETag>{e}</ETag><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>");
    let r = h.send(Request::post(
        &format!("{}?uploadId={}", obj("ns"), enc(&id)),
        body.as_bytes(),
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.get("ns").body, b"namespaced");
    h.assert_clean();
}

#[test]
fn head_and_part_reads_that_walk_the_parts() {
    let mut h = Harness::new(
        Options::shared().with("stage_short_parts", false.into()),
        87,
    );
    let p = [
        marked(5 * MIB + 11, 1),
        marked(5 * MIB + 12, 2),
        marked(13, 3),
    ];
    h.multipart("w", &[&p[0], &p[1], &p[2]]);
    let r = h.send(Request::new("HEAD", &format!("{}?partNumber=2", obj("w"))));
    assert_eq!(
        r.header("content-length"),
        Some((5 * MIB + 12).to_string().as_str())
    );
    assert_eq!(r.header("x-amz-mp-parts-count"), Some("3"));
    assert_eq!(h.get_part("w", 3).body, p[2]);
    assert_eq!(
        h.get_range("w", &format!("bytes={}-", 10 * MIB + 20)).body,
        p.concat()[10 * MIB + 20..]
    );
    h.assert_clean();
}

#[test]
fn heads_with_ranges_and_version_listings() {
    let mut h = Harness::shared(88);
    let p = [marked(5 * MIB + 1, 1), marked(1500, 2)];
    h.multipart("m", &[&p[0], &p[1]]);
    h.put("s", &marked(100_000, 3));
    for (k, total) in [("m", p[0].len() + p[1].len()), ("s", 100_000)] {
        let r = h.send(Request::new("HEAD", &obj(k)).header("range", "bytes=10-19"));
        assert_eq!(r.status, 206, "{k}");
        assert_eq!(r.header("content-length"), Some("10"), "{k}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes 10-19/{total}").as_str()),
            "{k}"
        );
        assert!(r.body.is_empty());
    }
    // ListObjectVersions shows plaintext sizes too.
    let r = h.send(Request::get(&format!("/{BUCKET}?versions")));
    assert_eq!(r.status, 200, "{}", r.text());
    let sizes = crate::s3::xml::element_texts(&r.text(), "Size");
    assert_eq!(
        sizes,
        [(p[0].len() + p[1].len()).to_string(), "100000".to_string()]
    );
    h.assert_clean();
}

#[test]
fn first_readers_on_two_workers_each_find_the_table() {
    let mut h = Harness::shared(89);
    let w2 = h.add_worker(0);
    let p = [marked(5 * MIB + 1, 1), marked(1500, 2)];
    h.multipart("m", &[&p[0], &p[1]]);
    let data = p.concat();
    // Each worker is its own VM: a read on each looks the table up (at most one per
    // worker), both planned right; afterwards the process-wide cache serves both.
    h.world
        .faults
        .push(FaultRule::callouts("s3_backend", Fault::Delay(500)).method("GET"));
    let got = h.send_all(vec![
        (0, Request::get(&obj("m")).header("range", "bytes=0-9")),
        (w2, Request::get(&obj("m")).header("range", "bytes=-9")),
    ]);
    assert_eq!(got[0].body, data[..10]);
    assert_eq!(got[1].body, data[data.len() - 9..]);
    h.world.faults.clear();
    let m = h.mark();
    assert_eq!(
        h.send_on(w2, Request::get(&obj("m")).header("range", "bytes=5-6"))
            .body,
        data[5..7]
    );
    assert_eq!(
        h.sent_since(m).len(),
        2,
        "a HEAD and the data: the table was cached"
    );
    h.assert_clean();
}

/// A part list is sent upstream rebuilt, in the Content-Length announced before it
/// arrived plus 256 bytes of room. Element text that needs escaping (`>` is legal raw
/// in XML text, the rebuilt list writes `&gt;`) could outgrow that room (a well-formed
/// Complete got a 500 InternalError, which SDKs retry): an ETag with markup names no
/// part, and is refused with 400 InvalidPart before anything goes upstream.
#[test]
fn a_part_list_with_an_etag_that_needs_escaping_is_refused() {
    let mut h = Harness::shared(90);
    let id = h.create_upload("e");
    h.part_ok("e", &id, 1, b"one");
    let odd = format!("\"{}\"", ">".repeat(300));
    let body = format!("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{odd}</ETag></Part></CompleteMultipartUpload>");
    let r = h.send(Request::post(
        &format!("{}?uploadId={}", obj("e"), enc(&id)),
        body.as_bytes(),
    ));
    assert_eq!(
        (r.status, r.code().as_deref()),
        (400, Some("InvalidPart")),
        "{}",
        r.text()
    );
}

#[test]
fn call_outs_are_signed_when_they_are_sent() {
    // A backend that accepts 5 seconds of skew, ListParts one part per page, each page
    // 4 seconds late: Complete's later requests (the end part's upload) are signed when
    // they are sent, not when the request began.
    let mut h = Harness::shared(91);
    h.world.s3.max_skew = 5;
    h.world.s3.max_page = 1;
    let p = [marked(5 * MIB, 1), marked(5 * MIB + 1, 2)];
    let id = h.create_upload("slow");
    let etags: Vec<(u32, String)> = (1u32..)
        .zip(&p)
        .map(|(n, d)| (n, h.part_ok("slow", &id, n, d)))
        .collect();
    h.world
        .faults
        .push(FaultRule::callouts("s3_backend", Fault::Delay(4000)).method("GET"));
    let t0 = h.now();
    let r = h.complete("slow", &id, &etags);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(h.now() - t0 >= 8);
    assert_eq!(part_magics(&h, "slow"), ["s3cP", "s3cP", "s3cE"]);
    h.assert_clean();
}

#[test]
fn an_unknown_suite_is_refused_at_configuration() {
    let opts = Options::shared().with("suite", "aes-128-gcm".into());
    let json =
        serde_json::json!({"upstream_authority": UPSTREAM_AUTHORITY, "suite": "aes-128-gcm"});
    let env = |k: &str| match k {
        crate::config::ENV_KEKS => Some(format!("k1={}", B64.encode(KEK))),
        crate::config::ENV_CLIENT_CREDENTIALS => Some("a:b".into()),
        crate::config::ENV_BACKEND_ACCESS_KEY_ID | crate::config::ENV_BACKEND_SECRET_ACCESS_KEY => {
            Some("x".into())
        }
        _ => None,
    };
    let e = crate::config::Config::load(json.to_string().as_bytes(), &env)
        .err()
        .unwrap();
    assert!(e.contains("suite \"aes-128-gcm\" is not supported"), "{e}");
    assert!(std::panic::catch_unwind(|| opts.config()).is_err());
}
