//! `predecessor_read`: objects the Python predecessor stored (built here from
//! PREDECESSOR-FORMAT.md with the crate's AEAD; tests/predecessor.py is the independent
//! writer of the end-to-end tests) read through the filter: whole, by range and part,
//! listed; tampered segments, metadata and manifests release nothing unverified; off by
//! default.

use std::io::Write as _;

use super::check::marked;
use super::*;
use crate::crypto::{new_dek, wrap_dek, DataKey, FrameAead, Suite};
use crate::predecessor::{kek_from_key_string, manifest_key};

const MIB: usize = 1 << 20;

fn compat(seed: u64) -> Harness {
    Harness::new(
        Options::shared().with("predecessor_read", serde_json::json!({})),
        seed,
    )
}

fn segment(dek: &DataKey, nonce: u8, plain: &[u8]) -> Vec<u8> {
    let mut b = plain.to_vec();
    let n = [nonce; 12];
    let tag = FrameAead::new(Suite::Aes256Gcm, dek)
        .seal(&n, &[], &mut b)
        .unwrap();
    [&n[..], &b, &tag].concat()
}

fn wrapped(dek: &DataKey) -> String {
    B64.encode(wrap_dek(&kek_from_key_string(PREDECESSOR_KEY), dek).unwrap())
}

fn md5_hex(b: &[u8]) -> String {
    hex::encode(<md5::Md5 as md5::Digest>::digest(b))
}

/// A single-layout object.
fn put_single(h: &mut Harness, key: &str, data: &[u8]) {
    let dek = new_dek(&SeededRandom::new(5)).unwrap();
    let len = data.len().to_string();
    let meta = [
        ("x-amz-meta-isec", wrapped(&dek)),
        ("x-amz-meta-client-etag", md5_hex(data)),
        ("x-amz-meta-plaintext-size", len),
    ];
    let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.world.s3.put_raw(key, segment(&dek, 1, data), &meta);
}

/// A streaming-layout object of `parts` plaintext parts (one segment each) and its manifest.
fn put_streaming(h: &mut Harness, key: &str, parts: &[&[u8]]) {
    let dek = new_dek(&SeededRandom::new(6)).unwrap();
    let mut stored = Vec::new();
    let mut list = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let s = segment(&dek, i as u8 + 1, p);
        list.push(serde_json::json!({"pn": i + 1, "ps": p.len(), "cs": s.len(), "etag": "x", "md5": "y", "ip": []}));
        stored.extend_from_slice(&s);
    }
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let doc = serde_json::json!({"v": 1, "pc": parts.len(), "ts": total, "dek": wrapped(&dek), "parts": list});
    h.world.s3.put_raw(key, stored.clone(), &[]);
    h.world
        .s3
        .set_etag(key, &format!("\"{}-{}\"", md5_hex(&stored), parts.len()));
    h.world
        .s3
        .put_raw(&manifest_key(key), manifest_body(&doc), &[]);
}

fn manifest_body(doc: &serde_json::Value) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(doc.to_string().as_bytes()).unwrap();
    B64.encode(e.finish().unwrap()).into_bytes()
}

#[test]
fn single_objects_read_whole_by_range_and_part() {
    let mut h = compat(1);
    let data = marked(300_000, 1);
    put_single(&mut h, "s", &data);
    let g = h.get("s");
    assert_eq!((g.status, g.body == data, g.reset), (200, true, false));
    assert_eq!(
        g.header("etag"),
        Some(format!("\"{}\"", md5_hex(&data)).as_str())
    );
    assert_eq!(g.header("x-amz-meta-isec"), None);
    let hd = h.head("s");
    assert_eq!(hd.header("content-length"), Some("300000"));
    for (r, a, b) in [("bytes=10-19", 10, 19), ("bytes=-5", 299_995, 299_999)] {
        let g = h.get_range("s", r);
        assert_eq!((g.status, g.body == data[a..=b]), (206, true), "{r}");
    }
    assert_eq!(h.get_part("s", 1).body, data);
    assert_eq!(h.get_part("s", 2).status, 416);
    assert_eq!(h.proxy().counter(Counter::PredecessorServed), 5);
}

#[test]
fn tampered_single_objects_release_nothing() {
    let mut h = compat(2);
    let data = marked(70_000, 2);
    put_single(&mut h, "s", &data);
    h.world.s3.flip("s", 500, 1);
    let g = h.get("s");
    assert!(
        g.reset && g.body.is_empty(),
        "{} {}",
        g.status,
        g.body.len()
    );
    // A client-etag that is not the plaintext's: the segment verifies, but is held.
    put_single(&mut h, "t", &data);
    h.world
        .s3
        .set_meta("t", "x-amz-meta-client-etag", Some(&md5_hex(b"other")));
    let g = h.get("t");
    assert!(g.reset && g.body.is_empty());
    // A plaintext-size that is not the stored size's: refused before the body.
    put_single(&mut h, "u", &data);
    h.world
        .s3
        .set_meta("u", "x-amz-meta-plaintext-size", Some("5"));
    assert_eq!(h.get("u").status, 500);
}

#[test]
fn multipart_objects_read_and_list() {
    let mut h = compat(3);
    let (a, b, c) = (marked(5 * MIB, 3), marked(5 * MIB, 4), marked(1234, 5));
    put_streaming(&mut h, "m", &[&a, &b, &c]);
    let all = [a.clone(), b.clone(), c.clone()].concat();
    let g = h.get("m");
    assert_eq!((g.status, g.body == all, g.reset), (200, true, false));
    for (first, last) in [
        (5 * MIB - 3, 5 * MIB + 3),
        (0, 0),
        (all.len() - 10, all.len() - 1),
    ] {
        let g = h.get_range("m", &format!("bytes={first}-{last}"));
        assert_eq!(g.body, all[first..=last], "{first}-{last}");
    }
    let p = h.get_part("m", 3);
    assert_eq!(
        (p.body == c, p.header("x-amz-mp-parts-count")),
        (true, Some("3"))
    );
    let listed = h.list("");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].0.as_str(), listed[0].1), ("m", all.len() as u64));
    // A flipped byte in the second segment: the first is released, nothing after it.
    h.world.s3.flip("m", 5 * MIB + 28 + 99, 4);
    let g = h.get("m");
    assert!(g.reset && g.body == a, "{}", g.body.len());
}

#[test]
fn internal_objects_refused_and_off_by_default() {
    let mut h = compat(4);
    put_streaming(&mut h, "m", &[b"abc"]);
    let r = h.get(&manifest_key("m"));
    assert_eq!(r.status, 403);
    assert_eq!(h.put(&manifest_key("m"), b"forged").status, 403);
    let mut off = Harness::shared(5);
    put_streaming(&mut off, "m", &[b"abc"]);
    put_single(&mut off, "s", b"single");
    for k in ["m", "s"] {
        let g = off.get(k);
        assert!(
            g.status == 500 && g.body.windows(3).all(|w| w != b"abc"),
            "{k}"
        );
    }
    // Listings of the predecessor's internal objects show them without predecessor_read.
    assert_eq!(off.list("").len(), 3);
}

#[test]
fn delete_objects_cannot_name_internal_objects() {
    let mut h = compat(6);
    put_streaming(&mut h, "m", &[b"abc"]);
    let doc = format!(
        "<Delete><Object><Key>m</Key></Object><Object><Key>{}</Key></Object></Delete>",
        manifest_key("m")
    );
    let md5 = B64.encode(<md5::Md5 as md5::Digest>::digest(doc.as_bytes()));
    let r = h.send(
        Request::post(&format!("/{BUCKET}?delete"), doc.as_bytes()).header("content-md5", &md5),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(h.world.s3.keys().len(), 2, "nothing deleted");
    assert_eq!(h.get("m").body, b"abc");
}

#[test]
fn empty_and_plaintext_objects_in_a_passthrough_scope() {
    // (An empty object answers the probe 416: it is not retried forever.)
    let mut h = Harness::new(
        Options::shared()
            .with("predecessor_read", serde_json::json!({}))
            .with("passthrough_unencrypted", serde_json::json!([BUCKET])),
        7,
    );
    h.world.s3.put_raw("empty", Vec::new(), &[]);
    let g = h.get("empty");
    assert_eq!((g.status, g.body.len(), g.reset), (200, 0, false));
    h.world.s3.put_raw("plain", b"plain body".to_vec(), &[]);
    assert_eq!(h.get("plain").body, b"plain body");
    assert_eq!(h.get_range("plain", "bytes=2-4").body, b"ain");
    put_single(&mut h, "s", b"secret");
    assert_eq!(h.get("s").body, b"secret");
}

#[test]
fn oversized_and_empty_manifests_are_refused() {
    let mut h = compat(8);
    put_streaming(&mut h, "m", &[b"abc"]);
    let big = vec![b'A'; crate::predecessor::MAX_MANIFEST_BODY + 10];
    h.world.s3.put_raw(&manifest_key("m"), big, &[]);
    let m = h.mark();
    assert_eq!(h.get("m").status, 500);
    // The manifest was asked for by range: never more than a manifest can be.
    let asked = h
        .sent_since(m)
        .iter()
        .filter(|s| s.path().contains(".meta"))
        .all(|s| s.headers.get("range").is_some());
    assert!(asked);
    h.world.s3.put_raw(&manifest_key("m"), Vec::new(), &[]);
    assert_eq!(h.get("m").status, 500);
}

#[test]
fn a_v1_page_of_hidden_entries_says_where_to_go_on() {
    let mut h = compat(9);
    for k in ["a", "b"] {
        put_streaming(&mut h, k, &[b"abc"]);
    }
    // ".s3proxy-internal/…" sorts first: a page of 2 holds only the two manifests.
    let r = h.send(Request::get(&format!("/{BUCKET}?max-keys=2")));
    let t = r.text();
    assert!(!t.contains("<Key>"), "{t}");
    assert!(t.contains("<IsTruncated>true</IsTruncated>"), "{t}");
    let next = crate::s3::xml::element_text(&t, "NextMarker").unwrap();
    assert_eq!(next, manifest_key("b"));
    let r = h.send(Request::get(&format!(
        "/{BUCKET}?max-keys=2&marker={}",
        enc(&next)
    )));
    let keys = crate::s3::xml::element_texts(&r.text(), "Key");
    assert_eq!(keys, ["a", "b"]);
}
