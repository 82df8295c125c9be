//! Multipart ETags as S3 defines them for the plaintext: UploadPart and UploadPartCopy
//! answer the MD5 of the part's plaintext, ListParts lists it, CompleteMultipartUpload
//! takes it (and only it: the ETag of the part's newest upload) and maps it to the
//! backend's ETag; in Redis nothing of the plaintext MD5 is in clear.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use md5::{Digest as _, Md5};

use super::check::{check_upstream, marked};
use super::drive::{Fault, FaultRule, SentKind};
use super::*;
use crate::state::parts;

const MIB: usize = 1 << 20;

fn md5_etag(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(data)))
}

/// ListParts through the filter: (number, size, ETag) of each part.
fn list_parts(h: &mut Harness, p: usize, key: &str, id: &str) -> Vec<(u32, u64, String)> {
    let r = h.send_on(
        p,
        Request::get(&format!("{}?uploadId={}", obj(key), enc(id))),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.text();
    let mut out = Vec::new();
    for one in t.split("<Part>").skip(1) {
        let n = crate::s3::xml::element_text(one, "PartNumber").unwrap();
        let s = crate::s3::xml::element_text(one, "Size").unwrap();
        let e = crate::s3::xml::element_text(one, "ETag").unwrap();
        out.push((n.parse().unwrap(), s.parse().unwrap(), e));
    }
    out
}

fn complete_on(
    h: &mut Harness,
    p: usize,
    key: &str,
    id: &str,
    parts: &[(u32, String)],
) -> ClientResponse {
    h.send_on(
        p,
        Request::post(
            &format!("{}?uploadId={}", obj(key), enc(id)),
            complete_body(parts).as_bytes(),
        ),
    )
}

/// Nothing reached the backend since `mark`: no call-out (webdis aside), and the
/// Complete whose headers went ahead of its held body was reset, never executed, its
/// body never sent.
fn nothing_to_backend(h: &Harness, mark: usize) {
    let sent: Vec<_> = h
        .sent_since(mark)
        .iter()
        .filter(|s| match &s.kind {
            SentKind::CallOut(c) => c != "redis_webdis",
            SentKind::Upstream => s.complete || s.status.is_some() || !s.body.is_empty(),
        })
        .map(|s| format!("{} {:?}", s.method(), s.headers.get(":path")))
        .collect();
    assert!(sent.is_empty(), "sent to the backend: {sent:?}");
}

/// The backend's ETag of a stored part (the MD5 of its ciphertext).
fn backend_etag(h: &Harness, id: &str, n: u32) -> String {
    h.world.s3.uploads[id].parts[&n].etag.clone()
}

#[test]
fn part_etags_are_the_plaintext_md5_and_complete_maps_them() {
    let mut h = Harness::shared(90);
    let id = h.create_upload("e");
    let p = [marked(5 * MIB + 1, 1), marked(3000, 2)];
    let e1 = h.part_ok("e", &id, 1, &p[0]);
    let e2 = h.part_ok("e", &id, 2, &p[1]);
    assert_eq!(e1, md5_etag(&p[0]));
    assert_eq!(e2, md5_etag(&p[1]));
    // The backend holds other ETags (its ciphertext's), which the client never sees.
    assert_ne!(backend_etag(&h, &id, 1), e1);
    assert_eq!(
        list_parts(&mut h, 0, "e", &id),
        [
            (1, p[0].len() as u64, e1.clone()),
            (2, p[1].len() as u64, e2.clone())
        ]
    );
    // Bare hex, other case: the same ETag.
    let bare = e1.trim_matches('"').to_ascii_uppercase();
    let r = h.complete("e", &id, &[(1, bare), (2, e2)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.get("e").body, p.concat());
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn a_part_uploaded_again_maps_to_its_newest_upload() {
    let mut h = Harness::shared(91);
    let id = h.create_upload("re");
    let a = marked(5 * MIB, 3);
    let b = marked(2000, 4);
    let c = marked(2000, 5);
    let e1 = h.part_ok("re", &id, 1, &a);
    let stored1 = backend_etag(&h, &id, 1);
    // The same content again: the same ETag for the client, a new one at the backend
    // (fresh nonces); Complete sends the newest.
    let e1b = h.part_ok("re", &id, 1, &a);
    assert_eq!(e1, e1b);
    assert_ne!(backend_etag(&h, &id, 1), stored1);
    let e2 = h.part_ok("re", &id, 2, &b);
    // Other content under the same number: the earlier ETag names nothing any more.
    let e2c = h.part_ok("re", &id, 2, &c);
    assert_ne!(e2, e2c);
    assert_eq!(
        list_parts(&mut h, 0, "re", &id)
            .into_iter()
            .map(|(_, _, e)| e)
            .collect::<Vec<_>>(),
        [e1.clone(), e2c.clone()]
    );
    let m = h.mark();
    let r = h.complete("re", &id, &[(1, e1.clone()), (2, e2)]);
    assert_eq!(r.code().as_deref(), Some("InvalidPart"), "{}", r.text());
    assert_eq!(r.status, 400);
    nothing_to_backend(&h, m);
    let r = h.complete("re", &id, &[(1, e1), (2, e2c)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.get("re").body, [a, c].concat());
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn a_complete_naming_any_other_etag_is_invalid_part_before_the_backend_is_asked() {
    let mut h = Harness::shared(92);
    let id = h.create_upload("bad");
    let p = [marked(5 * MIB, 6), marked(5 * MIB, 7)];
    let e1 = h.part_ok("bad", &id, 1, &p[0]);
    let e2 = h.part_ok("bad", &id, 2, &p[1]);
    let backend1 = backend_etag(&h, &id, 1);
    for parts in [
        // The backend's ETag (what an older filter answered): S3 would not take it.
        vec![(1, backend1), (2, e2.clone())],
        // Another part's ETag, swapped ETags, a made-up one, an empty one.
        vec![(1, e2.clone()), (2, e2.clone())],
        vec![(1, e2.clone()), (2, e1.clone())],
        vec![(1, e1.clone()), (2, md5_etag(b"something else"))],
        vec![(1, e1.clone()), (2, String::new())],
        // A part that was never uploaded.
        vec![(1, e1.clone()), (2, e2.clone()), (3, e2.clone())],
    ] {
        let m = h.mark();
        let r = h.complete("bad", &id, &parts);
        assert_eq!(
            (r.status, r.code().as_deref()),
            (400, Some("InvalidPart")),
            "{parts:?}: {}",
            r.text()
        );
        nothing_to_backend(&h, m);
    }
    let r = h.complete("bad", &id, &[(1, e1), (2, e2)]);
    assert_eq!(r.status, 200, "{}", r.text());
    h.assert_clean();
}

#[test]
fn shared_data_entries_are_forged_or_moved_in_vain() {
    let mut h = Harness::shared(93);
    let id = h.create_upload("sd");
    let p = [marked(5 * MIB, 8), marked(1000, 9)];
    let e1 = h.part_ok("sd", &id, 1, &p[0]);
    let e2 = h.part_ok("sd", &id, 2, &p[1]);
    let key = parts::shared_key(&id);
    let store = Rc::clone(&h.proxy().store);
    let v = store.get(&key).unwrap();
    let entries = parts::shared_entries(&v);
    assert_eq!(entries.len(), 2);
    // Entries swapped between parts: neither opens.
    let swapped = parts::shared_with(Some(&v), 1, &entries[&2]);
    let swapped = parts::shared_with(Some(&swapped), 2, &entries[&1]);
    store.set(&key, &swapped);
    let r = h.complete("sd", &id, &[(1, e1.clone()), (2, e2.clone())]);
    assert_eq!(r.code().as_deref(), Some("InvalidPart"), "{}", r.text());
    store.set(&key, &v);
    let r = h.complete("sd", &id, &[(1, e1), (2, e2)]);
    assert_eq!(r.status, 200, "{}", r.text());
    // Completed: the entries are forgotten with the record.
    assert!(h.proxy().store.get(&key).is_none());
    assert_eq!(h.get("sd").body, p.concat());
}

#[test]
fn redis_entries_hide_the_plaintext_md5_and_serve_every_replica() {
    let mut h = Harness::redis(94);
    let b = h.add_proxy(Options::redis());
    let c = h.add_proxy(Options::redis());
    let r = h.send_on(0, Request::new("POST", &format!("{}?uploads", obj("rd"))));
    let id = r.xml("UploadId").unwrap();
    let p = [marked(5 * MIB + 3, 10), marked(4000, 11)];
    let r1 = h.send_on(0, Request::put(&part_path("rd", &id, 1), &p[0]));
    let r2 = h.send_on(b, Request::put(&part_path("rd", &id, 2), &p[1]));
    let (e1, e2) = (
        r1.header("etag").unwrap().to_string(),
        r2.header("etag").unwrap().to_string(),
    );
    assert_eq!((e1.clone(), e2.clone()), (md5_etag(&p[0]), md5_etag(&p[1])));
    // What whoever can read Redis sees: no MD5 of the plaintext, in any encoding.
    let key = parts::redis_key(&id);
    let stored = h.world.webdis.hash_raw(&key).expect("a hash of entries");
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["1", "2"]);
    for (i, part) in p.iter().enumerate() {
        let md5 = Md5::digest(part);
        let forms = [
            hex::encode(md5),
            hex::encode(md5).to_ascii_uppercase(),
            B64.encode(md5),
            String::from_utf8_lossy(&md5).into_owned(),
        ];
        for v in stored.values() {
            for f in &forms {
                assert!(!v.contains(f.as_str()), "part {} MD5 in clear: {v}", i + 1);
            }
        }
    }
    for key_bytes in h.world.webdis.keys() {
        let raw = h.world.webdis.get_raw(&key_bytes).unwrap_or_default();
        assert!(!raw.contains(&hex::encode(Md5::digest(&p[0]))));
    }
    // The hash lives no longer than an upload.
    let ttl = h.cfg().plugin.upload_ttl_secs;
    let exp = h.world.webdis.expiry(&key).expect("a TTL");
    assert!(exp > h.now() && exp <= h.now() + ttl);
    // A third replica lists and completes with them.
    let listed: Vec<String> = list_parts(&mut h, c, "rd", &id)
        .into_iter()
        .map(|(_, _, e)| e)
        .collect();
    assert_eq!(listed, [e1.clone(), e2.clone()]);
    // Entries swapped in Redis: refused, nothing sent to the backend.
    let (v1, v2) = (stored["1"].clone(), stored["2"].clone());
    let hashes = &mut h.world.webdis.hashes;
    hashes
        .get_mut(&key)
        .unwrap()
        .0
        .insert("1".into(), v2.clone());
    hashes
        .get_mut(&key)
        .unwrap()
        .0
        .insert("2".into(), v1.clone());
    let m = h.mark();
    let r = complete_on(&mut h, c, "rd", &id, &[(1, e1.clone()), (2, e2.clone())]);
    assert_eq!(r.code().as_deref(), Some("InvalidPart"), "{}", r.text());
    nothing_to_backend(&h, m);
    // Another backend ETag put into an entry: refused too.
    let forged = format!(
        "{} \"0123456789abcdef0123456789abcdef\"",
        v1.rsplit_once(' ').unwrap().0
    );
    let hashes = &mut h.world.webdis.hashes;
    hashes.get_mut(&key).unwrap().0.insert("1".into(), forged);
    hashes.get_mut(&key).unwrap().0.insert("2".into(), v2);
    let r = complete_on(&mut h, c, "rd", &id, &[(1, e1.clone()), (2, e2.clone())]);
    assert_eq!(r.code().as_deref(), Some("InvalidPart"), "{}", r.text());
    h.world
        .webdis
        .hashes
        .get_mut(&key)
        .unwrap()
        .0
        .insert("1".into(), v1);
    let r = complete_on(&mut h, c, "rd", &id, &[(1, e1), (2, e2)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.send_on(b, Request::get(&obj("rd"))).body, p.concat());
    assert!(
        h.world.webdis.live_keys(h.now()).is_empty(),
        "{:?}",
        h.world.webdis.live_keys(h.now())
    );
}

#[test]
fn a_part_whose_etag_redis_did_not_record_is_reset_and_retried() {
    let mut h = Harness::redis(95);
    let id = h.create_upload("rf");
    let p = [marked(5 * MIB, 12), marked(100, 13)];
    let e1 = h.part_ok("rf", &id, 1, &p[0]);
    for cmd in ["/HSET/", "/EXPIRE/"] {
        h.world.faults.push(
            FaultRule::callouts("redis_webdis", Fault::Fail)
                .path(cmd)
                .times(1),
        );
        let r = h.upload_part("rf", &id, 2, &p[1]);
        assert!(
            r.reset || r.status >= 500,
            "{cmd}: {} {}",
            r.status,
            r.text()
        );
        assert_ne!(r.header("etag"), Some(md5_etag(&p[1]).as_str()), "{cmd}");
    }
    let e2 = h.part_ok("rf", &id, 2, &p[1]);
    let r = h.complete("rf", &id, &[(1, e1), (2, e2)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.get("rf").body, p.concat());
}

#[test]
fn upload_part_copy_answers_the_plaintext_md5_of_the_copied_range() {
    for mut h in [Harness::shared(96), Harness::redis(97)] {
        let src = marked(6 * MIB, 14);
        assert_eq!(h.put("src", &src).status, 200);
        let id = h.create_upload("pc");
        let copy = |n: u32, range: &str| {
            Request::new("PUT", &part_path("pc", &id, n))
                .header("x-amz-copy-source", &format!("/{BUCKET}/src"))
                .header("x-amz-copy-source-range", range)
        };
        let r = h.send(copy(1, &format!("bytes=0-{}", 5 * MIB - 1)));
        assert_eq!(r.status, 200, "{}", r.text());
        let c1 = r.xml("ETag").unwrap();
        assert_eq!(c1, md5_etag(&src[..5 * MIB]));
        let r = h.send(copy(2, "bytes=100-199"));
        let c2 = r.xml("ETag").unwrap();
        assert_eq!(c2, md5_etag(&src[100..200]));
        let listed: Vec<String> = list_parts(&mut h, 0, "pc", &id)
            .into_iter()
            .map(|(_, _, e)| e)
            .collect();
        assert_eq!(listed, [c1.clone(), c2.clone()]);
        let r = h.complete("pc", &id, &[(1, c1), (2, c2)]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(h.get("pc").body, [&src[..5 * MIB], &src[100..200]].concat());
    }
}
