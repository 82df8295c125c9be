//! The object data the filter sends upstream is signed so the backend verifies every
//! byte it stores (`upstream_payload`): single PUTs, UploadParts, the end and closing
//! parts and UploadPartCopy parts, in each mode; the fake backend verifies every chunk
//! signature and the trailer checksum (FakeS3::unframe, the check of every upstream
//! body), and refuses a body changed in transit.

use super::check::{check_upstream, marked, part_magics};
use super::client::Request;
use super::drive::{Http, Sent};
use super::*;
use crate::auth::checksum::{ChecksumAlgorithm, Checksummer};
use crate::auth::sigv4;

const MIB: usize = 1 << 20;
const MODES: [&str; 3] = ["signed-chunks", "signed-chunks-crc32c", "unsigned"];

fn harness(mode: &str, seed: u64) -> Harness {
    Harness::new(
        Options::shared().with("upstream_payload", mode.into()),
        seed,
    )
}

/// Every PUT that carried object data since `from`.
fn data_puts(h: &Harness, from: usize) -> Vec<Sent> {
    h.sent_since(from)
        .iter()
        .filter(|s| s.method() == "PUT" && !s.path().contains("tagging"))
        .filter(|s| s.headers.get("x-amz-copy-source").is_none())
        .cloned()
        .collect()
}

fn crc32c(b: &[u8]) -> String {
    let mut c = Checksummer::new(ChecksumAlgorithm::Crc32c);
    c.update(b);
    c.finalize_base64()
}

/// How a body went upstream in `mode`: streamed bodies in signed chunks (with the
/// trailer), whole bodies with their SHA-256 (and checksum header), empty bodies with
/// the empty hash.
fn assert_covered(mode: &str, s: &Sent, streamed: bool) {
    let sha = s.headers.get("x-amz-content-sha256").unwrap_or("");
    let what = format!("{mode} {}", s.path());
    match mode {
        "unsigned" => {
            assert_eq!(sha, sigv4::UNSIGNED_PAYLOAD, "{what}");
            assert_eq!(s.headers.get("x-amz-trailer"), None, "{what}");
            assert_eq!(s.headers.get("x-amz-checksum-crc32c"), None, "{what}");
        }
        _ => {
            let crc = mode == "signed-chunks-crc32c";
            if s.body.is_empty() {
                assert_eq!(sha, sigv4::EMPTY_SHA256, "{what}");
                assert_eq!(s.headers.get("content-length"), Some("0"), "{what}");
                let want = crc.then(|| crc32c(b""));
                assert_eq!(
                    s.headers.get("x-amz-checksum-crc32c"),
                    want.as_deref(),
                    "{what}"
                );
            } else if streamed {
                let want = if crc {
                    sigv4::STREAMING_SIGNED_TRAILER
                } else {
                    sigv4::STREAMING_SIGNED
                };
                assert_eq!(sha, want, "{what}");
                assert_eq!(s.headers.get("content-encoding"), None, "{what}");
                let trailer = crc.then_some("x-amz-checksum-crc32c");
                assert_eq!(s.headers.get("x-amz-trailer"), trailer, "{what}");
                assert_eq!(
                    s.headers.get("content-length"),
                    Some(s.body.len().to_string().as_str())
                );
            } else {
                assert_eq!(sha, sigv4::sha256_hex(&s.body), "{what}");
                let want = crc.then(|| crc32c(&s.body));
                assert_eq!(
                    s.headers.get("x-amz-checksum-crc32c"),
                    want.as_deref(),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn single_puts_and_empty_objects_in_each_mode() {
    for mode in MODES {
        let mut h = harness(mode, 90);
        for (key, n) in [("big", 5 * 65536 + 777), ("one", 10), ("empty", 0)] {
            let data = marked(n, 1);
            let from = h.mark();
            let r = h.put(key, &data);
            assert_eq!(r.status, 200, "{mode} {key}: {}", r.text());
            let puts = data_puts(&h, from);
            assert_eq!(puts.len(), 1);
            assert_covered(mode, &puts[0], true);
            assert_eq!(h.get(key).body, data, "{mode} {key}");
        }
        check_upstream(&h, 0).unwrap();
        h.assert_clean();
    }
}

#[test]
fn parts_end_parts_closing_parts_and_part_copies_in_each_mode() {
    for mode in MODES {
        let mut h = harness(mode, 91);
        // A short last part: the closing part is written by the filter.
        let p = [marked(5 * MIB + 3, 1), marked(4321, 2)];
        let from = h.mark();
        assert_eq!(h.multipart("closed", &[&p[0], &p[1]]).status, 200, "{mode}");
        assert_eq!(part_magics(&h, "closed"), ["s3cP", "s3cC"]);
        let puts = data_puts(&h, from);
        assert_eq!(puts.len(), 3, "{mode}");
        assert_covered(mode, &puts[0], true);
        assert_covered(mode, &puts[1], true);
        assert_covered(mode, &puts[2], false);
        assert_eq!(h.get("closed").body, p.concat());
        // A big last part: the end part.
        let q = [marked(5 * MIB + 1, 3), marked(5 * MIB, 4)];
        let from = h.mark();
        assert_eq!(h.multipart("ended", &[&q[0], &q[1]]).status, 200, "{mode}");
        assert_eq!(part_magics(&h, "ended"), ["s3cP", "s3cP", "s3cE"]);
        let puts = data_puts(&h, from);
        assert_eq!(puts.len(), 3, "{mode}");
        assert_covered(mode, &puts[2], false);
        assert_eq!(h.get("ended").body, q.concat());
        // UploadPartCopy: the re-encrypted part goes up as one UploadPart.
        let id = h.create_upload("copied");
        let from = h.mark();
        let r = h.send(
            Request::new("PUT", &part_path("copied", &id, 1))
                .header("x-amz-copy-source", &format!("/{BUCKET}/ended"))
                .header("x-amz-copy-source-range", "bytes=100-300099"),
        );
        assert_eq!(r.status, 200, "{mode}: {}", r.text());
        let etag = r.xml("ETag").unwrap();
        let puts: Vec<Sent> = h
            .sent_since(from)
            .iter()
            .filter(|s| s.method() == "PUT" && s.path().contains("partNumber=1"))
            .filter(|s| s.headers.get("x-amz-copy-source").is_none())
            .cloned()
            .collect();
        assert_eq!(puts.len(), 1, "{mode}");
        assert_covered(mode, &puts[0], false);
        assert_eq!(h.complete("copied", &id, &[(1, etag)]).status, 200);
        assert_eq!(h.get("copied").body, q.concat()[100..300_100]);
        check_upstream(&h, 0).unwrap();
        h.assert_clean();
    }
}

/// A provider-side check: a byte changed in transit (in the data or in the framing) is
/// refused by the backend in the signed modes and nothing is stored; unsigned, the
/// backend stores what it got (and only the filter's read check would catch it).
#[test]
fn a_body_changed_in_transit_is_refused_by_the_backend() {
    for mode in MODES {
        let mut h = harness(mode, 92);
        let data = marked(3 * 65536 + 99, 7);
        let from = h.mark();
        assert_eq!(h.put("k", &data).status, 200);
        let id = h.create_upload("m");
        let pfrom = h.mark();
        h.part_ok("m", &id, 1, &marked(70_000, 8));
        let sent = [
            data_puts(&h, from).remove(0),
            data_puts(&h, pfrom).remove(0),
        ];
        for s in sent {
            let date = s
                .headers
                .get("x-amz-date")
                .and_then(sigv4::parse_amz_date)
                .unwrap();
            for at in [0, 100, s.body.len() / 2, s.body.len() - 3] {
                let mut body = s.body.clone();
                body[at] ^= 0x01;
                let before = h.world.s3.requests;
                let stored = h.world.s3.object("k").map(|o| o.data.clone());
                let r = h.world.s3.handle(
                    &Http {
                        headers: s.headers.clone(),
                        body,
                    },
                    date,
                );
                assert!(h.world.s3.requests > before);
                if mode == "unsigned" {
                    if s.path() == obj("k") {
                        assert_eq!(r.status(), 200, "{mode}: a lax backend stores it");
                    }
                } else {
                    assert!(
                        matches!(r.status(), 400 | 403),
                        "{mode} {} byte {at}: {}",
                        s.path(),
                        r.status()
                    );
                    assert_eq!(h.world.s3.object("k").map(|o| o.data.clone()), stored);
                }
            }
        }
    }
}
