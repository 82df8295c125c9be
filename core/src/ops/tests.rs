use super::*;
#[allow(unused_imports)]
use super::{
    complete::*, copy::*, cx::*, get::*, part_copy::*, put::*, request::*, response::*, table::*,
    vm::*,
};
#[allow(unused_imports)]
use crate::crypto::{self, DataKey, Suite};
#[allow(unused_imports)]
use crate::format::part_table::PartTable;
#[allow(unused_imports)]
use crate::format::*;
#[allow(unused_imports)]
use crate::s3::range::RangeSpec;
#[allow(unused_imports)]
use crate::state::{self, stage, UploadState};
#[allow(unused_imports)]
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
#[allow(unused_imports)]
use md5::{Digest as _, Md5};
#[allow(unused_imports)]
use sha2::Sha256;

#[test]
fn widened_ranges_cover_both_interpretations() {
    let f = SINGLE_FRAME;
    let s = f + FRAME_OVERHEAD;
    assert_eq!(
        widened_range(RangeSpec::FromTo(0, 0)),
        format!("bytes=0-{}", s - 1)
    );
    assert_eq!(
        widened_range(RangeSpec::FromTo(f + 5, f + 6)),
        format!("bytes={}-{}", f, 2 * s - 1)
    );
    assert_eq!(
        widened_range(RangeSpec::From(3 * f + 1)),
        format!("bytes={}-", 3 * f)
    );
    assert_eq!(
        widened_range(RangeSpec::Suffix(10)),
        format!("bytes=-{}", 2 * s + crate::format::TRAILER_LEN)
    );
    for (a, b) in [
        (0u64, 10u64),
        (f - 1, f),
        (5 * f + 7, 9 * f),
        (12345, 12345),
    ] {
        let g = Geometry::single(20 * f);
        let RangeSpec::FromTo(_, _) = RangeSpec::FromTo(a, b) else {
            unreachable!()
        };
        let w = widened_range(RangeSpec::FromTo(a, b));
        let (ws, we) = w.trim_start_matches("bytes=").split_once('-').unwrap();
        let (ws, we): (u64, u64) = (ws.parse().unwrap(), we.parse().unwrap());
        assert!(ws <= a && we >= b, "plaintext bytes covered");
        assert!(ws <= g.frame_cipher_start(g.frame_of(a)).unwrap());
        assert!(we + 1 >= g.frame_cipher_end(g.frame_of(b)).unwrap());
    }
}

#[test]
fn empty_delimiter_dropped() {
    assert_eq!(
        drop_empty_param_delimiter("/b?delimiter=&prefix=a"),
        "/b?prefix=a"
    );
    assert_eq!(
        drop_empty_param_delimiter("/b?delimiter=%2F"),
        "/b?delimiter=%2F"
    );
    assert_eq!(drop_empty_param_delimiter("/b?delimiter="), "/b");
}

#[test]
fn helpers_for_part_reads_and_copies() {
    assert_eq!(
        remove_query_param("/b/k?partNumber=3", "partNumber"),
        "/b/k"
    );
    assert_eq!(
        remove_query_param("/b/k?versionId=v&partNumber=3&x=1", "partNumber"),
        "/b/k?versionId=v&x=1"
    );
    assert_eq!(remove_query_param("/b/k", "partNumber"), "/b/k");
    assert_eq!(parts_in_etag("\"abc-12\""), Some(12));
    assert_eq!(parts_in_etag("\"abc\""), None);
    assert_eq!(parts_in_etag("\"abc-0\""), None);
    assert_eq!(parts_in_etag("\"abc-10001\""), None);
    assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20.000Z");
    let env = |w: u8| Envelope::new(Suite::Aes256Gcm, Layout::Part, "k", [w; 40], None);
    let version = table_version("\"e-2\"", 5, &env(1));
    assert_eq!(version, format!("e-2/5/{}", "01".repeat(40)));
    // Another object with the same ETag and size is another version.
    assert_ne!(version, table_version("\"e-2\"", 5, &env(2)));
    let slot = table_slot(&version);
    let n: u64 = slot.strip_prefix("s3crypt/pt/").unwrap().parse().unwrap();
    assert!(n < TABLE_SLOTS);
    // However many versions are read, the cache has at most TABLE_SLOTS keys.
    let slots: std::collections::HashSet<String> = (0..10_000)
        .map(|i| table_slot(&format!("{i:032x}-3/1048576/00")))
        .collect();
    assert!(slots.len() as u64 <= TABLE_SLOTS && slots.len() > 200);
}

#[test]
fn etag_conditions() {
    assert!(etag_list_matches("\"abc\"", "\"abc\""));
    assert!(etag_list_matches("W/\"abc\", \"x\"", "\"abc\""));
    assert!(etag_list_matches("*", "\"abc\""));
    assert!(!etag_list_matches("\"abd\"", "\"abc\""));
    assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
}

#[test]
fn copy_source_ranges() {
    assert_eq!(copy_source_range("bytes=0-9", 10).unwrap(), (0, 9));
    assert_eq!(copy_source_range(" bytes=3-3", 10).unwrap(), (3, 3));
    for bad in [
        "bytes=0-10",
        "bytes=5-4",
        "bytes=-5",
        "bytes=5-",
        "0-1",
        "bytes=a-b",
    ] {
        let e = copy_source_range(bad, 10).unwrap_err();
        assert_eq!(e.status, 400, "{bad}");
    }
    let e = part_put_failed(Some(404), "<Error><Code>NoSuchUpload</Code></Error>");
    assert_eq!((e.status, e.code), (404, "NoSuchUpload"));
    assert_eq!(part_put_failed(None, "").status, 503);
}

/// Every chunk a copy reads decrypts to exactly the plaintext asked for, for single and
/// multipart sources, across frame and part boundaries.
#[test]
fn copy_reads_decrypt_the_requested_plaintext() {
    let dek = DataKey::from_bytes([7; 32]);
    let suite = Suite::Aes256Gcm;
    let plain: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();

    let geo = Geometry::single(plain.len() as u64);
    let mut enc = FrameEncryptor::new(suite, &dek, geo, &crate::crypto::test_rng());
    let mut single = Vec::new();
    enc.push(&plain, &mut single).unwrap();
    enc.finish(&mut single).unwrap();

    let sizes = [100_001u64, 150_000, 49_999];
    let mut multi = Vec::new();
    let mut off = 0usize;
    for (i, &n) in sizes.iter().enumerate() {
        let g = Geometry::part(i as u32 + 1, n);
        let mut e = FrameEncryptor::new(suite, &dek, g, &crate::crypto::test_rng());
        e.push(&plain[off..off + n as usize], &mut multi).unwrap();
        e.finish(&mut multi).unwrap();
        off += n as usize;
    }
    let table = PartTable::new(vec![(1, sizes[0]), (2, sizes[1]), (3, sizes[2])], false).unwrap();

    let sources = [
        (
            CopyFrom::Plain {
                len: plain.len() as u64,
            },
            plain.clone(),
        ),
        (
            CopyFrom::Single {
                suite,
                dek: DataKey::from_bytes([7; 32]),
                geo,
            },
            single,
        ),
        (
            CopyFrom::Multi {
                suite,
                dek: DataKey::from_bytes([7; 32]),
                table,
            },
            multi,
        ),
    ];
    let l = plain.len() as u64;
    let ranges = [
        (0, 0),
        (0, l - 1),
        (65_535, 65_536),
        (99_999, 100_002),
        (1, 299_000),
        (l - 1, l - 1),
    ];
    for (from, stored) in &sources {
        for &(a, b) in &ranges {
            let (s0, s1, dec) = from.read(a, b).unwrap();
            let bytes = &stored[s0 as usize..=s1 as usize];
            let mut out = Vec::new();
            match dec {
                None => out.extend_from_slice(bytes),
                Some(mut d) => {
                    d.push(bytes, &mut out).unwrap();
                    d.finish().unwrap();
                }
            }
            assert_eq!(out, &plain[a as usize..=b as usize], "{a}-{b}");
        }
    }
    // A flipped stored byte fails the chunk.
    let (from, stored) = &sources[2];
    let (s0, s1, dec) = from.read(99_999, 100_002).unwrap();
    let mut bytes = stored[s0 as usize..=s1 as usize].to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let mut d = dec.unwrap();
    let mut out = Vec::new();
    assert!(d.push(&bytes, &mut out).is_err() || d.finish().is_err());
}

#[test]
fn holdback_keeps_the_last_promised_byte_until_verified() {
    let run = |announced: u64, chunks: &[&[u8]], end_ok: bool| {
        let mut h = Holdback {
            announced: Some(announced),
            ..Holdback::default()
        };
        let mut got = Vec::new();
        let n = chunks.len();
        for (i, c) in chunks.iter().enumerate() {
            let mut out = b"xx".to_vec(); // bytes already in the buffer stay
            out.extend_from_slice(c);
            let end = i + 1 == n && end_ok;
            h.apply(&mut out, 2, end)?;
            assert_eq!(&out[..2], b"xx");
            got.extend_from_slice(&out[2..]);
        }
        Ok::<_, FormatError>(got)
    };
    // Complete and verified: everything, the last byte only at the end.
    assert_eq!(run(6, &[b"abc", b"def"], true).unwrap(), b"abcdef");
    // The stream stops early (a truncated object): one byte short of the promise.
    assert_eq!(run(6, &[b"abc", b"def"], false).unwrap(), b"abcde");
    assert_eq!(run(10, &[b"abc", b"def"], false).unwrap(), b"abcdef");
    // Shorter or longer than promised at the end: refused.
    assert!(run(10, &[b"abc", b"def"], true).is_err());
    assert!(run(4, &[b"abc", b"def"], false).is_err());
    // Nothing announced (no Content-Length): nothing held.
    let mut h = Holdback::default();
    let mut out = b"abc".to_vec();
    h.apply(&mut out, 0, false).unwrap();
    assert_eq!(out, b"abc");
}

#[test]
fn copy_budget_is_shared_and_given_back() {
    let vm = Rc::new(VmState::default());
    let a = CopyReservation::try_new(&vm, 60, 100).unwrap();
    assert!(CopyReservation::try_new(&vm, 41, 100).is_none());
    let b = CopyReservation::try_new(&vm, 40, 100).unwrap();
    assert!(CopyReservation::try_new(&vm, 1, 100).is_none());
    // Another VM's budget is its own.
    assert!(CopyReservation::try_new(&Rc::new(VmState::default()), 100, 100).is_some());
    drop(a);
    let c = CopyReservation::try_new(&vm, 60, 100).unwrap();
    drop((b, c));
    assert!(CopyReservation::try_new(&vm, 100, 100).is_some());
    assert!(CopyReservation::try_new(&vm, 101, 100).is_none());
}

/// A suffix range of a version 3 object (whose 156-byte trailer follows its last frame)
/// still reaches back to the first frame it needs.
#[test]
fn widened_suffixes_reach_the_frames_of_objects_with_a_trailer() {
    let f = crate::format::SINGLE_FRAME;
    for p in [
        1,
        100,
        f - 200,
        f - 10,
        f,
        f + 1,
        2 * f - 100,
        2 * f - 10,
        3 * f - 1,
    ] {
        let g = Geometry::single(p);
        let c = crate::format::single_stored_len(3, p).unwrap();
        for n in [1, 2, 10, f - 20, f - 9, f, f + 1, 2 * f] {
            let n = n.min(p);
            let w = widened_range(RangeSpec::Suffix(n));
            let len: u64 = w.trim_start_matches("bytes=-").parse().unwrap();
            let start = c.saturating_sub(len);
            assert!(
                start <= g.frame_cipher_start(g.frame_of(p - n)).unwrap(),
                "p={p} n={n}"
            );
        }
    }
}
