//! CopyObject (single and multipart sources, COPY and REPLACE metadata, source
//! conditions) and UploadPartCopy (ranges, sources of every layout, errors, limits,
//! plaintext sources).

use md5::{Digest as _, Md5};

use super::check::{check_upstream, decrypt_stored, find_marker, marked, part_magics};
use super::drive::{Fault, FaultRule};
use super::*;
use crate::format::ENVELOPE_HEADER;

const MIB: usize = 1 << 20;
const F: usize = 65536;

fn copy(src: &str, dst: &str) -> Request {
    Request::new("PUT", &obj(dst)).header(
        "x-amz-copy-source",
        &format!("/{BUCKET}/{}", client::encode(src, false)),
    )
}

fn part_copy(dst: &str, id: &str, n: u32, src: &str) -> Request {
    Request::new("PUT", &part_path(dst, id, n)).header(
        "x-amz-copy-source",
        &format!("/{BUCKET}/{}", client::encode(src, false)),
    )
}

#[test]
fn copy_object_copy_and_replace() {
    let mut h = Harness::shared(30);
    let data = marked(2 * F + 3, 30);
    let md5 = format!("\"{}\"", hex::encode(Md5::digest(&data)));
    let r = h.send(
        Request::put(&obj("src"), &data)
            .header("x-amz-meta-a", "1")
            .header("content-md5", &B64.encode(Md5::digest(&data))),
    );
    assert_eq!(r.status, 200);
    let c = copy("src", "dst-copy");
    let r = h.send(c);
    assert_eq!(r.status, 200, "{}", r.text());
    // The copy result shows the ETag clients see (the plaintext MD5).
    assert_eq!(r.xml("ETag").as_deref(), Some(md5.as_str()));
    let g = h.get("dst-copy");
    assert_eq!(
        (g.body == data, g.header("x-amz-meta-a")),
        (true, Some("1"))
    );
    // Source conditions compare with the ETag clients see.
    let c = copy("src", "dst-if").header("x-amz-copy-source-if-match", &md5);
    assert_eq!(h.send(c).status, 200);
    let c = copy("src", "dst-if2").header("x-amz-copy-source-if-none-match", &md5);
    assert_eq!(h.send(c).code().as_deref(), Some("PreconditionFailed"));
    let c = copy("src", "dst-if3").header("x-amz-copy-source-if-match", "\"0123\"");
    assert_eq!(h.send(c).code().as_deref(), Some("PreconditionFailed"));
    let c = copy("src", "dst-repl")
        .header("x-amz-metadata-directive", "REPLACE")
        .header("x-amz-meta-b", "2")
        .header("content-type", "text/x-new");
    assert_eq!(h.send(c).status, 200);
    let g = h.get("dst-repl");
    assert_eq!(g.body, data);
    assert_eq!(
        (
            g.header("x-amz-meta-b"),
            g.header("x-amz-meta-a"),
            g.header("content-type")
        ),
        (Some("2"), None, Some("text/x-new"))
    );
    assert!(h
        .world
        .s3
        .object("dst-repl")
        .unwrap()
        .meta(ENVELOPE_HEADER)
        .is_some());
    assert_eq!(
        h.world.s3.raw("dst-repl"),
        h.world.s3.raw("src"),
        "a server-side copy"
    );
    assert_eq!(
        h.head("dst-repl").header("content-length"),
        Some(data.len().to_string().as_str())
    );
    let c = copy("nope", "x");
    assert_eq!(h.send(c).code().as_deref(), Some("NoSuchKey"));
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn copy_object_of_a_multipart_source_is_a_multipart_copy() {
    let mut h = Harness::shared(31);
    let p: Vec<Vec<u8>> = vec![marked(5 * MIB + 1, 1), marked(3000, 2)];
    let data = p.concat();
    let id = h
        .send(Request::new("POST", &format!("{}?uploads", obj("m"))).header("x-amz-meta-k", "v"))
        .xml("UploadId")
        .unwrap();
    let e1 = h.part_ok("m", &id, 1, &p[0]);
    let e2 = h.part_ok("m", &id, 2, &p[1]);
    assert_eq!(h.complete("m", &id, &[(1, e1), (2, e2)]).status, 200);
    let c = copy("m", "m2");
    let r = h.send(c);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.xml("ETag").unwrap().ends_with("-2\""));
    // The same stored parts, byte for byte, under the source's data key.
    assert_eq!(h.world.s3.raw("m2"), h.world.s3.raw("m"));
    assert_eq!(part_magics(&h, "m2"), ["s3cP", "s3cC"]);
    let g = h.get("m2");
    assert_eq!(
        (g.body == data, g.header("x-amz-meta-k")),
        (true, Some("v"))
    );
    assert_eq!(
        h.get_range("m2", "bytes=5242870-5242890").body,
        data[5_242_870..=5_242_890]
    );
    assert_eq!(h.get_part("m2", 2).body, p[1]);
    let c = copy("m", "m3")
        .header("x-amz-metadata-directive", "REPLACE")
        .header("x-amz-meta-z", "9");
    assert_eq!(h.send(c).status, 200);
    let g = h.head("m3");
    assert_eq!(
        (g.header("x-amz-meta-z"), g.header("x-amz-meta-k")),
        (Some("9"), None)
    );
    // A failure midway: the destination's upload is aborted, nothing half-written stays.
    h.world.faults.push(
        FaultRule::callouts("s3_backend", Fault::Status(500))
            .path("partNumber=2")
            .times(1),
    );
    let c = copy("m", "m4");
    let r = h.send(c);
    assert!(r.status >= 500, "{}", r.text());
    assert!(
        h.world.s3.uploads.is_empty(),
        "the copy's upload was aborted"
    );
    assert!(h.world.s3.object("m4").is_none());
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn upload_part_copy_with_ranges_from_every_kind_of_source() {
    let mut h = Harness::shared(32);
    let mp: Vec<Vec<u8>> = vec![
        marked(5 * MIB + 1, 41),
        marked(5 * MIB + 3, 42),
        marked(1000, 43),
    ];
    let multi = mp.concat();
    h.multipart("multi", &[&mp[0], &mp[1], &mp[2]]);
    let single = marked(300_000, 44);
    h.put("single", &single);
    let id = h
        .send(Request::new("POST", &format!("{}?uploads", obj("dst"))).header("x-amz-meta-k", "v"))
        .xml("UploadId")
        .unwrap();
    let copies: Vec<(u32, &str, Option<String>, Vec<u8>)> = vec![
        (
            1,
            "multi",
            Some(format!("bytes={}-{}", 5 * MIB - 10, 10 * MIB + 10)),
            multi[5 * MIB - 10..=10 * MIB + 10].to_vec(),
        ),
        (2, "multi", None, multi.clone()),
        (3, "single", None, single.clone()),
    ];
    let mut etags = Vec::new();
    for (n, src, range, _) in &copies {
        let mut r = part_copy("dst", &id, *n, src);
        if let Some(range) = range {
            r = r.header("x-amz-copy-source-range", range);
        }
        let resp = h.send(r);
        assert_eq!(resp.status, 200, "{n}: {}", resp.text());
        etags.push((*n, resp.xml("ETag").unwrap()));
    }
    let r = h.send(Request::get(&format!(
        "{}?uploadId={}",
        obj("dst"),
        enc(&id)
    )));
    let sizes = crate::s3::xml::element_texts(&r.text(), "Size");
    assert_eq!(
        sizes,
        copies
            .iter()
            .map(|c| c.3.len().to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(h.complete("dst", &id, &etags).status, 200);
    let want: Vec<u8> = copies.iter().flat_map(|c| c.3.clone()).collect();
    let g = h.get("dst");
    assert_eq!(
        (g.body == want, g.header("x-amz-meta-k")),
        (true, Some("v"))
    );
    for (n, _, _, w) in &copies {
        assert_eq!(h.get_part("dst", *n).body, *w);
    }
    // Re-encrypted, not copied: no plaintext stored, another data key; and its short last
    // part was staged, so Complete closed the object with it.
    let stored = h.world.s3.raw("dst");
    assert_eq!(find_marker(&stored), None);
    assert_eq!(part_magics(&h, "dst"), ["s3cP", "s3cP", "s3cC"]);
    assert_eq!(decrypt_stored(&h, "dst").unwrap(), want);
    // A range of a single source across a frame boundary; re-copying a part replaces it.
    let id = h.create_upload("re");
    for range in ["bytes=65535-65537", "bytes=100-299"] {
        let r = h.send(part_copy("re", &id, 1, "single").header("x-amz-copy-source-range", range));
        assert_eq!(r.status, 200);
        etags = vec![(1, r.xml("ETag").unwrap())];
    }
    assert_eq!(h.complete("re", &id, &etags).status, 200);
    assert_eq!(h.get("re").body, single[100..300]);
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn upload_part_copy_errors_store_nothing() {
    let mut h = Harness::shared(33);
    let src = marked(100_000, 46);
    h.put("src", &src);
    let etag = h.head("src").header("etag").unwrap().to_string();
    let id = h.create_upload("dst");
    let mut fails = |r: Request| {
        let resp = h.send(r);
        (resp.status, resp.code().unwrap_or_default())
    };
    assert_eq!(
        fails(part_copy("dst", &id, 1, "src").header("x-amz-copy-source-range", "bytes=0-100000")),
        (400, "InvalidArgument".into())
    );
    assert_eq!(
        fails(part_copy("dst", &id, 1, "src").header("x-amz-copy-source-if-match", "\"0123\"")),
        (412, "PreconditionFailed".into())
    );
    assert_eq!(
        fails(part_copy("dst", &id, 1, "src").header("x-amz-copy-source-if-none-match", &etag)),
        (412, "PreconditionFailed".into())
    );
    assert_eq!(
        fails(part_copy("dst", &id, 1, "nope")),
        (404, "NoSuchKey".into())
    );
    assert_eq!(
        fails(part_copy("dst", "not-an-upload", 1, "src")),
        (404, "NoSuchUpload".into())
    );
    // A tampered source: an integrity error, nothing stored, no plaintext anywhere.
    h.world.s3.flip("src", 70_000, 1);
    let r = h.send(part_copy("dst", &id, 1, "src"));
    assert_eq!(
        (r.status, r.code().as_deref()),
        (500, Some("InternalError"))
    );
    assert!(h.world.s3.uploads[&id].parts.is_empty());
    check_upstream(&h, 0).unwrap();
    // Parts above max_copy_part_bytes are refused with a clear error.
    let mut h = Harness::new(
        Options::shared().with("max_copy_part_bytes", 65536.into()),
        33,
    );
    let src = marked(65537, 47);
    h.put("src2", &src);
    let id = h.create_upload("dst2");
    let r = h.send(part_copy("dst2", &id, 1, "src2"));
    assert_eq!(r.code().as_deref(), Some("EntityTooLarge"));
    assert!(r.xml("Message").unwrap().contains("max_copy_part_bytes"));
    let r = h
        .send(part_copy("dst2", &id, 1, "src2").header("x-amz-copy-source-range", "bytes=1-65536"));
    assert_eq!(r.status, 200);
    assert_eq!(
        h.complete("dst2", &id, &[(1, r.xml("ETag").unwrap())])
            .status,
        200
    );
    assert_eq!(h.get("dst2").body, src[1..]);
    h.assert_clean();
}

#[test]
fn envelope_less_copy_sources_only_inside_a_passthrough_scope() {
    let mut h = Harness::shared(34);
    let plain = marked(70_000, 48);
    h.world.s3.put_raw("plain", plain.clone(), &[]);
    let c = copy("plain", "dst");
    let r = h.send(c);
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(h.world.s3.keys(), ["plain"]);
    let id = h.create_upload("dst");
    let r = h.send(part_copy("dst", &id, 1, "plain"));
    assert_eq!(r.status, 500);
    assert!(h.world.s3.uploads[&id].parts.is_empty());
    // Source in scope, destination not: a server-side copy would store plaintext there.
    let scoped = h.add_proxy(
        Options::shared().with("passthrough_unencrypted", serde_json::json!(["b/plain"])),
    );
    let c = copy("plain", "dst");
    assert_eq!(h.send_on(scoped, c).status, 500);
    // Both in scope: the backend copies.
    let c = copy("plain", "plain-copy");
    assert_eq!(h.send_on(scoped, c).status, 200);
    assert_eq!(
        h.send_on(scoped, Request::get(&obj("plain-copy"))).body,
        plain
    );
    // UploadPartCopy from a source in scope encrypts it on the way.
    let id = h
        .send_on(
            scoped,
            Request::new("POST", &format!("{}?uploads", obj("enc"))),
        )
        .xml("UploadId")
        .unwrap();
    let r = h.send_on(
        scoped,
        part_copy("enc", &id, 1, "plain").header("x-amz-copy-source-range", "bytes=1-69999"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = h.send_on(
        scoped,
        Request::post(
            &format!("{}?uploadId={}", obj("enc"), enc(&id)),
            complete_body(&[(1, r.xml("ETag").unwrap())]).as_bytes(),
        ),
    );
    assert_eq!(r.status, 200);
    assert_eq!(find_marker(&h.world.s3.raw("enc")), None);
    assert_eq!(h.get("enc").body, plain[1..]);
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn copies_keep_the_source_suite() {
    let mut h = Harness::shared(35);
    let chacha = h.add_proxy(Options::shared().with("suite", "chacha20-poly1305".into()));
    let data = marked(100_000, 1);
    assert_eq!(
        h.send_on(chacha, Request::put(&obj("src"), &data)).status,
        200
    );
    // Copied through the AES deployment: server-side, the source's envelope and suite.
    assert_eq!(h.send(copy("src", "dst")).status, 200);
    let suite = |h: &Harness, k: &str| {
        h.world
            .s3
            .object(k)
            .unwrap()
            .meta(ENVELOPE_HEADER)
            .unwrap()
            .contains(";s=2;")
    };
    assert!(suite(&h, "dst"));
    assert_eq!(h.get("dst").body, data);
    // UploadPartCopy re-encrypts under the destination upload's suite.
    let id = h.create_upload("up");
    let r = h.send(part_copy("up", &id, 1, "src"));
    assert_eq!(
        h.complete("up", &id, &[(1, r.xml("ETag").unwrap())]).status,
        200
    );
    assert!(!suite(&h, "up"));
    assert_eq!(h.send_on(chacha, Request::get(&obj("up"))).body, data);
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn copies_of_a_multipart_source_without_a_sealed_table_walk_its_parts() {
    let mut h = Harness::new(
        Options::shared().with("stage_short_parts", false.into()),
        36,
    );
    let p: Vec<Vec<u8>> = vec![marked(5 * MIB + 3, 1), marked(2500, 2)];
    let data = p.concat();
    h.multipart("src", &[&p[0], &p[1]]);
    assert_eq!(part_magics(&h, "src"), ["s3cP", "s3cF"]);
    // UploadPartCopy of a range across the part boundary: the walk finds the table.
    let id = h.create_upload("dst");
    let range = format!("bytes={}-{}", 5 * MIB - 5, 5 * MIB + 1000);
    let r = h.send(part_copy("dst", &id, 1, "src").header("x-amz-copy-source-range", &range));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.complete("dst", &id, &[(1, r.xml("ETag").unwrap())])
            .status,
        200
    );
    assert_eq!(h.get("dst").body, data[5 * MIB - 5..=5 * MIB + 1000]);
    // CopyObject: a multipart copy planned from the walked table.
    h.restart(0);
    assert_eq!(h.send(copy("src", "whole")).status, 200);
    assert_eq!(h.world.s3.raw("whole"), h.world.s3.raw("src"));
    assert_eq!(h.get("whole").body, data);
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}
