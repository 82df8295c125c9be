//! The plaintext multipart ETag (S3's `md5-of-md5s-N` of the client's parts), sealed in
//! the object's end or closing part (FORMAT.md, "The multipart ETag"): shown in every
//! response, found by a fresh process from the object alone, never forged by a provider
//! that edits or swaps that part, and the backend's ETag where the object seals none.

use super::check::{marked, multipart_md5_etag, open};
use super::*;
use crate::format::{Layout, ENVELOPE_HEADER, PART_OVERHEAD};

const MIB: usize = 1024 * 1024;

/// Two parts: a short last one (closed by a closing part) or a long one (an end part).
fn parts(long_last: bool, seed: u32) -> Vec<Vec<u8>> {
    let last = if long_last { 5 * MIB + 3 } else { 1000 };
    vec![marked(5 * MIB + 1, seed), marked(last, seed + 1)]
}

fn refs(p: &[Vec<u8>]) -> Vec<&[u8]> {
    p.iter().map(|v| &v[..]).collect()
}

/// The ETag and size a fresh process shows for `key` in a HEAD and a listing.
fn fresh_view(h: &mut Harness, key: &str) -> (Option<String>, Option<String>, u16) {
    h.restart(0);
    let listed = h.list("");
    let l = listed
        .iter()
        .find(|(k, _, _)| k == key)
        .map(|e| e.2.clone());
    h.restart(0);
    let head = h.head(key);
    (l, head.header("etag").map(str::to_string), head.status)
}

#[test]
fn a_fresh_process_finds_the_sealed_etag_with_one_read_of_the_last_part() {
    for long_last in [false, true] {
        let mut h = Harness::shared(401);
        let p = parts(long_last, 10);
        let shown = multipart_md5_etag(&refs(&p));
        let done = h.multipart("m", &refs(&p));
        assert_eq!(done.xml("ETag"), Some(shown.clone()));
        let backend = h.world.s3.object("m").unwrap().etag.clone();
        assert_ne!(backend, shown);
        assert!(backend.ends_with(if long_last { "-3\"" } else { "-2\"" }));
        // The process that completed it lists it without a lookup.
        let before = h.world.s3.requests;
        let size = (p[0].len() + p[1].len()) as u64;
        assert_eq!(h.list(""), vec![("m".to_string(), size, shown.clone())]);
        assert_eq!(h.world.s3.requests - before, 1);
        // A fresh one: the listing and one read of the object's last 28,688 bytes.
        h.restart(0);
        let from = h.mark();
        assert_eq!(h.list(""), vec![("m".to_string(), size, shown.clone())]);
        let sent = h.sent_since(from);
        assert_eq!(sent.len(), 2, "{sent:?}");
        let stored = h.world.s3.raw("m").len();
        let want = format!("bytes={}-{}", stored - PART_OVERHEAD as usize, stored - 1);
        assert_eq!(sent[1].headers.get("range"), Some(want.as_str()));
        // Then reads show it: the first whole read probes which version is there (156
        // bytes, the cache knows that one: no read of its end part), later ones do not.
        for cost in [2, 1] {
            let before = h.world.s3.requests;
            let g = h.get("m");
            assert_eq!(g.header("etag"), Some(shown.as_str()));
            assert_eq!(g.body, [&p[0][..], &p[1]].concat());
            assert_eq!(h.world.s3.requests - before, cost);
        }
        let r = h.send(Request::get(&obj("m")).header("if-match", &backend));
        assert_eq!(
            r.status, 412,
            "the backend's ETag names no version a client saw"
        );
        let r = h.send(Request::get(&obj("m")).header("if-none-match", &shown));
        assert_eq!(r.status, 304);
        h.assert_clean();
    }
}

/// A provider that edits the end or closing part, or puts another object's there (same
/// lengths, another data key), cannot make a forged plaintext ETag show: reads and
/// listings show the backend's ETag, and a whole read fails closed.
#[test]
fn a_tampered_or_foreign_last_part_never_shows_a_forged_etag() {
    for long_last in [false, true] {
        let mut h = Harness::shared(402);
        let p = parts(long_last, 20);
        let q = parts(long_last, 20); // same plaintext lengths and content, other key
        h.multipart("m", &refs(&p));
        h.multipart("o", &refs(&q));
        let shown = multipart_md5_etag(&refs(&p));
        let stored = h.world.s3.raw("m");
        let n = stored.len();
        let tail = n - PART_OVERHEAD as usize;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("a flipped table byte", {
                let mut s = stored.clone();
                s[n - 100] ^= 1;
                s
            }),
            ("another object's last part", {
                let mut s = stored.clone();
                s[tail..].copy_from_slice(&h.world.s3.raw("o")[tail..]);
                s
            }),
        ];
        for (what, bad) in cases {
            h.world.s3.set_raw("m", bad);
            let backend = h.world.s3.object("m").unwrap().etag.clone();
            let (listed, head, status) = fresh_view(&mut h, "m");
            assert_eq!(listed.as_deref(), Some(backend.as_str()), "{what}");
            assert_eq!(
                (status, head.as_deref()),
                (200, Some(backend.as_str())),
                "{what}"
            );
            let g = h.get("m");
            assert!(
                !g.ok() && g.body.len() < p[0].len() + p[1].len(),
                "{what}: {g:?}"
            );
            assert_ne!(g.header("etag"), Some(shown.as_str()));
            // Warm (the genuine ETag cached): a whole read checks the table it gets.
            h.world.s3.set_raw("m", stored.clone());
            h.restart(0);
            assert_eq!(h.get("m").header("etag"), Some(shown.as_str()));
            let mut again = stored.clone();
            again[n - 100] ^= 1;
            h.world.s3.set_raw("m", again);
            let g = h.get("m");
            assert!(!g.ok(), "{what}: a damaged table read as a success");
            h.world.s3.set_raw("m", stored.clone());
            h.restart(0);
        }
        assert_eq!(h.get("m").header("etag"), Some(shown.as_str()));
        assert!(h.proxy().counter(Counter::IntegrityFailures) > 0);
    }
}

/// Without a staged copy of its short last part, Complete cannot seal the ETag: the
/// object shows the backend's ETag in the Complete result, reads and listings alike.
#[test]
fn an_object_completed_without_its_table_shows_the_backends_etag_everywhere() {
    let mut h = Harness::new(
        Options::shared().with("stage_short_parts", false.into()),
        403,
    );
    let p = parts(false, 30);
    let done = h.multipart("m", &refs(&p));
    let backend = h.world.s3.object("m").unwrap().etag.clone();
    assert_eq!(done.xml("ETag"), Some(backend.clone()));
    assert_eq!(h.head("m").header("etag"), Some(backend.as_str()));
    let (listed, head, _) = fresh_view(&mut h, "m");
    assert_eq!(listed, Some(backend.clone()));
    assert_eq!(head, Some(backend.clone()));
    let g = h.get("m");
    assert_eq!((g.status, g.header("etag")), (200, Some(backend.as_str())));
    assert_eq!(g.body, [&p[0][..], &p[1]].concat());
    h.assert_clean();
}

/// An object completed by the previous release (a version 1 table: no ETag sealed)
/// stays readable and keeps the backend's ETag.
#[test]
fn objects_of_the_previous_release_keep_the_backends_etag() {
    let mut h = Harness::shared(404);
    let p = parts(true, 40);
    h.multipart("m", &refs(&p));
    let o = h.world.s3.object("m").unwrap();
    let (env, dek) = open(&h, o.meta(ENVELOPE_HEADER).unwrap()).unwrap();
    assert_eq!(env.layout, Layout::Part);
    let mut stored = o.data.clone();
    let tail = stored.len() - PART_OVERHEAD as usize;
    let lengths = [p[0].len() as u64, p[1].len() as u64];
    let rng: std::rc::Rc<dyn crate::crypto::Random> = h.rng.clone() as _;
    let old = crate::format::seal_end(env.suite, &dek, 3, &lengths, None, &rng).unwrap();
    stored[tail..].copy_from_slice(&old);
    h.world.s3.set_raw("m", stored);
    let backend = h.world.s3.object("m").unwrap().etag.clone();
    let (listed, head, _) = fresh_view(&mut h, "m");
    assert_eq!(listed, Some(backend.clone()));
    assert_eq!(head, Some(backend.clone()));
    h.restart(0);
    let g = h.get("m");
    assert_eq!((g.status, g.header("etag")), (200, Some(backend.as_str())));
    assert_eq!(g.body, [&p[0][..], &p[1]].concat());
    let r = h.send(Request::get(&obj("m")).header("range", "bytes=5242878-5242885"));
    assert_eq!((r.status, r.header("etag")), (206, Some(backend.as_str())));
    h.assert_clean();
}

/// `seal_multipart_etags: false` (a rolling upgrade from the previous release): Complete
/// writes the previous release's table (version 1: no ETag), so that release reads the
/// object, and every response shows the backend's ETag.
#[test]
fn with_sealing_off_complete_writes_the_previous_releases_table() {
    for long_last in [false, true] {
        let mut h = Harness::new(
            Options::shared().with("seal_multipart_etags", false.into()),
            405,
        );
        let p = parts(long_last, 50);
        let done = h.multipart("m", &refs(&p));
        let o = h.world.s3.object("m").unwrap();
        let backend = o.etag.clone();
        assert_eq!(done.xml("ETag"), Some(backend.clone()));
        // The sealed table's first byte, opened under the object's key: version 1.
        let (env, dek) = open(&h, o.meta(ENVELOPE_HEADER).unwrap()).unwrap();
        let parts_stored: u64 = if long_last { 3 } else { 2 };
        let w = crate::format::part_table::Walk::new(
            env.suite,
            &dek,
            o.data.len() as u64,
            parts_stored,
            true,
        );
        let (a, b) = w.end_read().unwrap();
        let end = &o.data[a as usize..=b as usize];
        assert!(w.try_end(end).is_some_and(|t| t.etag.is_none()));
        assert_eq!(w.end_etag(end), None);
        let (listed, head, _) = fresh_view(&mut h, "m");
        assert_eq!(
            (listed, head),
            (Some(backend.clone()), Some(backend.clone()))
        );
        assert_eq!(h.get("m").body, [&p[0][..], &p[1]].concat());
        h.assert_clean();
    }
}

/// Review finding: a provider that spoils one read of the end part (here: the part is
/// damaged while a fresh process reads it, then restored) makes that process believe
/// the object seals no ETag. It then shows the backend's ETag, never a forged one; a
/// whole read, which meets the genuine table at its end, fails closed instead of serving
/// the object under the wrong ETag; and a range read, which verifies the table, puts
/// the genuine ETag back.
#[test]
fn a_spoilt_read_of_the_end_part_cannot_serve_the_object_under_another_etag() {
    let mut h = Harness::shared(406);
    let p = parts(true, 60);
    h.multipart("m", &refs(&p));
    let shown = multipart_md5_etag(&refs(&p));
    let stored = h.world.s3.raw("m");
    let backend = h.world.s3.object("m").unwrap().etag.clone();
    let mut bad = stored.clone();
    let n = bad.len();
    bad[n - 100] ^= 1;
    h.world.s3.set_raw("m", bad);
    h.restart(0);
    assert_eq!(h.head("m").header("etag"), Some(backend.as_str()));
    h.world.s3.set_raw("m", stored);
    let g = h.get("m");
    assert!(!g.ok() && g.body.len() < p[0].len() + p[1].len(), "{g:?}");
    let r = h.send(Request::get(&obj("m")).header("range", "bytes=0-9"));
    assert_eq!((r.status, r.header("etag")), (206, Some(shown.as_str())));
    assert_eq!(h.head("m").header("etag"), Some(shown.as_str()));
    let g = h.get("m");
    assert_eq!((g.status, g.header("etag")), (200, Some(shown.as_str())));
    assert_eq!(g.body, [&p[0][..], &p[1]].concat());
}

/// A backend whose part ETags are no MD5s (AWS with SSE-KMS): the staged short last
/// part cannot be told from the named one, so Complete writes no table and cannot
/// describe the new version. Overwriting a key that way must not leave the previous
/// version's "latest" hint behind: the next read of the new version succeeds at once
/// (it was refused with 503 SlowDown before), here and in another process.
#[test]
fn overwrites_completed_without_a_table_are_read_at_once() {
    let mut h = Harness::shared(409);
    h.world.s3.opaque_part_etags = true;
    for round in 0..3u32 {
        let p = parts(false, 60 + 2 * round);
        let done = h.multipart("m", &refs(&p));
        assert_eq!(done.status, 200);
        let backend = h.world.s3.object("m").unwrap().etag.clone();
        // No table: the backend's ETag is what every response shows.
        assert_eq!(done.xml("ETag"), Some(backend.clone()));
        let g = h.get("m");
        assert_eq!(
            (g.status, g.header("etag")),
            (200, Some(backend.as_str())),
            "round {round}"
        );
        assert_eq!(g.body, [&p[0][..], &p[1]].concat());
    }
    // A single PutObject over it, then a multipart again: reads follow each version.
    let one = marked(70_000, 99);
    assert_eq!(h.put("m", &one).status, 200);
    assert_eq!(h.get("m").body, one);
    let p = parts(false, 90);
    assert_eq!(h.multipart("m", &refs(&p)).status, 200);
    let g = h.get("m");
    assert_eq!(g.status, 200);
    assert_eq!(g.body, [&p[0][..], &p[1]].concat());
    h.assert_clean();
}
