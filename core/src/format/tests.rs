// Tests index and compute freely: a panic is a failed test.
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use super::*;
use crate::crypto;
use proptest::prelude::*;

/// The vectors' nonces: frame i's is `base` with i added to its last 8 bytes.
struct CountingNonces(std::cell::Cell<[u8; NONCE_LEN]>);

impl crate::crypto::Random for CountingNonces {
    fn fill(&self, buf: &mut [u8]) -> Result<(), crate::crypto::CryptoError> {
        let n = self.0.get();
        buf.copy_from_slice(&n);
        let mut next = n;
        let tail = u64::from_be_bytes(n[4..].try_into().unwrap()).wrapping_add(1);
        next[4..].copy_from_slice(&tail.to_be_bytes());
        self.0.set(next);
        Ok(())
    }
}

fn counting_nonces(base: [u8; NONCE_LEN]) -> std::rc::Rc<dyn crate::crypto::Random> {
    std::rc::Rc::new(CountingNonces(std::cell::Cell::new(base)))
}

fn dek() -> DataKey {
    DataKey::from_bytes([0x11; 32])
}

fn encrypt(geo: Geometry, pt: &[u8], chunk: usize) -> Vec<u8> {
    encrypt_with(Suite::Aes256Gcm, geo, pt, chunk)
}

fn encrypt_with(suite: Suite, geo: Geometry, pt: &[u8], chunk: usize) -> Vec<u8> {
    let mut e = FrameEncryptor::new(suite, &dek(), geo, &crate::crypto::test_rng());
    let mut out = Vec::new();
    for c in pt.chunks(chunk.max(1)) {
        e.push(c, &mut out).unwrap();
    }
    e.finish(&mut out).unwrap();
    out
}

fn decrypt_whole(geo: Geometry, ct: &[u8], chunk: usize) -> Result<Vec<u8>, FormatError> {
    decrypt_whole_with_suite(Suite::Aes256Gcm, geo, ct, chunk)
}

fn decrypt_whole_with_suite(
    suite: Suite,
    geo: Geometry,
    ct: &[u8],
    chunk: usize,
) -> Result<Vec<u8>, FormatError> {
    let mut d = FrameDecryptor::whole(suite, &dek(), geo);
    let mut out = Vec::new();
    for c in ct.chunks(chunk.max(1)) {
        d.push(c, &mut out)?;
    }
    d.finish()?;
    Ok(out)
}

#[test]
fn sizes_single() {
    let f = SINGLE_FRAME;
    for (p, c) in [
        (0, 0),
        (1, 29),
        (f - 1, f + 27),
        (f, f + 28),
        (f + 1, f + 57),
    ] {
        assert_eq!(Geometry::single(p).cipher_len(), Some(c), "p={p}");
        assert_eq!(Geometry::single_from_cipher(c).unwrap().plain_len, p);
    }
    // Sizes a single object can never have.
    for c in [1, 27, 28, f + 29] {
        assert!(Geometry::single_from_cipher(c).is_none(), "c={c}");
    }
}

#[test]
fn sizes_part() {
    for p in [0u64, 1, 1023, 1024, 1025, 5 << 20, (5 << 20) + 1] {
        let g = Geometry::part(3, p);
        assert_eq!(g.cipher_len(), Some(p + PART_OVERHEAD));
        assert_eq!(Geometry::part_from_cipher(3, p + PART_OVERHEAD).unwrap(), g);
        // Frames cover the plaintext exactly, in order.
        let total: u64 = (0..g.frames).map(|i| g.frame_plain_len(i)).sum();
        assert_eq!(total, p);
    }
    assert_eq!(
        plain_size_from_listing(3 * PART_OVERHEAD + 10, "\"abc-3\""),
        Some(10)
    );
    assert_eq!(
        plain_size_from_listing(29, "\"d41d8cd98f00b204e9800998ecf8427e\""),
        Some(1)
    );
}

#[test]
fn round_trip_edges() {
    let f = SINGLE_FRAME as usize;
    for n in [0, 1, f - 1, f, f + 1, 3 * f + 5] {
        let pt: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        let g = Geometry::single(n as u64);
        let ct = encrypt(g, &pt, 4099);
        assert_eq!(Some(ct.len() as u64), g.cipher_len());
        assert_eq!(decrypt_whole(g, &ct, 1000).unwrap(), pt);
        let gp = Geometry::part(7, n as u64);
        let ct = encrypt(gp, &pt, 777);
        assert_eq!(Some(ct.len() as u64), gp.cipher_len());
        assert_eq!(parse_part_header(&ct), Some(gp));
        assert_eq!(decrypt_whole(gp, &ct, 5000).unwrap(), pt);
    }
}

#[test]
fn final_frame_withheld_until_finish() {
    let g = Geometry::single(10);
    let mut e = FrameEncryptor::new(Suite::Aes256Gcm, &dek(), g, &crate::crypto::test_rng());
    let mut out = Vec::new();
    e.push(&[1; 10], &mut out).unwrap();
    assert!(out.is_empty());
    e.finish(&mut out).unwrap();
    assert_eq!(out.len(), 38);
}

#[test]
fn length_violations() {
    let g = Geometry::single(10);
    let mut e = FrameEncryptor::new(Suite::Aes256Gcm, &dek(), g, &crate::crypto::test_rng());
    let mut out = Vec::new();
    assert_eq!(e.push(&[1; 11], &mut out), Err(FormatError::Length));
    e.push(&[1; 9], &mut out).unwrap();
    assert_eq!(e.finish(&mut out), Err(FormatError::Length));
}

#[test]
fn tamper_truncate_reorder_splice() {
    let f = SINGLE_FRAME as usize;
    let pt = vec![9u8; 2 * f + 100];
    let g = Geometry::single(pt.len() as u64);
    let ct = encrypt(g, &pt, f);
    // Any single flipped byte fails.
    for pos in [0, 11, 12, 500, f + 27, f + 28, ct.len() - 1] {
        let mut t = ct.clone();
        t[pos] ^= 0x80;
        assert_eq!(
            decrypt_whole(g, &t, 4096),
            Err(FormatError::Integrity),
            "pos {pos}"
        );
    }
    // Truncation at a frame boundary: the stream stops before its final frame.
    let cut = &ct[..2 * (f + 28)];
    assert!(decrypt_whole(g, cut, 4096).is_err());
    // ... even when re-interpreted as a shorter object, the final flag and length differ.
    let g2 = Geometry::single_from_cipher(cut.len() as u64).unwrap();
    assert!(decrypt_whole(g2, cut, 4096).is_err());
    // Reordering two full frames.
    let mut sw = ct.clone();
    let (a, b) = sw.split_at_mut(f + 28);
    a.swap_with_slice(&mut b[..f + 28]);
    assert!(decrypt_whole(g, &sw, 4096).is_err());
    // Same plaintext under another data key (another object): no frame opens.
    let mut e = FrameEncryptor::new(
        Suite::Aes256Gcm,
        &DataKey::from_bytes([0x22; 32]),
        g,
        &crate::crypto::test_rng(),
    );
    let mut other = Vec::new();
    e.push(&pt, &mut other).unwrap();
    e.finish(&mut other).unwrap();
    assert!(decrypt_whole(g, &other, 4096).is_err());
    // A part's frames cannot pass as another part number.
    let gp = Geometry::part(1, 5000);
    let p1 = encrypt(gp, &[3u8; 5000], 100);
    assert!(decrypt_whole(Geometry::part(2, 5000), &p1, 100).is_err());
}

#[test]
/// Version 2 objects number their parts 1..N: a swapped pair of equal parts, a
/// duplicated part or a gap fails at the first wrong header, before any of that part
/// is released (version 1 only needed increasing numbers).
fn numbered_parts_release_only_a_true_prefix() {
    let part = |n: u32, b: u8| encrypt(Geometry::part(n, 1000), &[b; 1000], 77);
    let (p1, p2) = (part(1, 1), part(2, 2));
    let p3 = encrypt(Geometry::part_in(Layout::Final, 3, 1000), &[3; 1000], 77);
    let run = |obj: Vec<u8>, numbered: bool| {
        let mut d = PartsDecryptor::new(Suite::Aes256Gcm, &dek(), 3, numbered);
        let mut out = Vec::new();
        let r = d.push(&obj, &mut out).and_then(|()| d.finish());
        (r, out)
    };
    let ok = [p1.clone(), p2.clone(), p3.clone()].concat();
    assert_eq!(run(ok, true).0, Ok(()));
    for (name, obj, released) in [
        ("swap", [p2.clone(), p1.clone(), p3.clone()].concat(), 0),
        ("dup", [p1.clone(), p1.clone(), p3.clone()].concat(), 1000),
        ("gap", [p1.clone(), p3.clone(), p3.clone()].concat(), 1000),
    ] {
        let (r, out) = run(obj, true);
        assert!(r.is_err(), "{name}");
        assert_eq!(out.len(), released, "{name}");
        assert!(out.iter().all(|&b| b == 1), "{name}: only part 1's bytes");
    }
    // Unnumbered (version 1): a swap that keeps numbers increasing is not caught here.
    let (r, _) = run([p2.clone(), p3.clone()].concat(), false);
    assert!(r.is_err()); // (two parts where three were expected)
}

#[test]
/// A version 2 object ends with exactly one part in layout `final`: dropping it (with
/// the part count rewritten to match), adding a part after it, a final part in the
/// middle or relabelling a part's header all fail, with only a true prefix released.
fn the_final_part_ends_a_version_2_object() {
    let part = |layout, n: u32, len: usize| {
        encrypt(
            Geometry::part_in(layout, n, len as u64),
            &vec![n as u8; len],
            77,
        )
    };
    let (p1, p2) = (part(Layout::Part, 1, 1000), part(Layout::Part, 2, 1000));
    let f3 = part(Layout::Final, 3, 500);
    let marker = part(Layout::Final, 3, 0);
    assert_eq!(marker.len() as u64, PART_OVERHEAD);
    let run = |obj: &[u8], parts: u64, v2: bool| {
        let mut d = PartsDecryptor::new(Suite::Aes256Gcm, &dek(), parts, v2);
        let mut out = Vec::new();
        let r = d.push(obj, &mut out).and_then(|()| d.finish());
        (r, out.len())
    };
    assert_eq!(run(&[&p1[..], &p2, &f3].concat(), 3, true), (Ok(()), 2500));
    assert_eq!(
        run(&[&p1[..], &p2, &marker].concat(), 3, true),
        (Ok(()), 2000)
    );
    // Final part dropped and the count rewritten: everything verifies but the end.
    let (r, n) = run(&[&p1[..], &p2].concat(), 2, true);
    assert!(r.is_err());
    assert_eq!(n, 2000);
    // A part after the final one, a final part in the middle.
    let (r, n) = run(
        &[&p1[..], &p2, &f3, &part(Layout::Part, 4, 10)].concat(),
        4,
        true,
    );
    assert!(r.is_err());
    assert_eq!(n, 2500);
    let mid = part(Layout::Final, 2, 1000);
    let (r, n) = run(&[&p1[..], &mid, &f3].concat(), 3, true);
    assert!(r.is_err());
    assert_eq!(n, 2000);
    // A relabelled header (`s3cP` <-> `s3cF`) fails that part's first frame.
    let mut relabel = [&p1[..], &p2, &f3].concat();
    relabel[2 * p1.len() + 3] = b'P';
    let (r, n) = run(&relabel, 3, true);
    assert!(r.is_err());
    assert_eq!(n, 2000);
    let mut relabel = [&p1[..], &p2].concat();
    relabel[p1.len() + 3] = b'F';
    assert_eq!(run(&relabel, 2, true).1, 1000);
    assert!(run(&relabel, 2, true).0.is_err());
    // Version 1 objects have no final part.
    assert!(run(&[&p1[..], &p2, &f3].concat(), 3, false).0.is_err());
    assert_eq!(run(&[&p1[..], &p2].concat(), 2, false), (Ok(()), 2000));
}

#[test]
/// The end part seals the lengths of the parts before it: a whole read checks them,
/// the table survives only intact, and more runs than fit are sealed as "no table".
fn the_end_part_seals_the_part_table() {
    let part = |n: u32, len: usize| encrypt(Geometry::part(n, len as u64), &vec![n as u8; len], 77);
    let (p1, p2) = (part(1, 1000), part(2, 700));
    let end = seal_end(
        Suite::Aes256Gcm,
        &dek(),
        3,
        &[1000, 700],
        None,
        &crate::crypto::test_rng(),
    )
    .unwrap();
    assert_eq!(end.len() as u64, PART_OVERHEAD);
    assert_eq!(parse_part_header(&end), Some(Geometry::end(3)));
    let run = |obj: &[u8], parts: u64| {
        let mut d = PartsDecryptor::new(Suite::Aes256Gcm, &dek(), parts, true);
        let mut out = Vec::new();
        let r = d.push(obj, &mut out).and_then(|()| d.finish());
        (r, out.len())
    };
    assert_eq!(run(&[&p1[..], &p2, &end].concat(), 3), (Ok(()), 1700));
    // A table that does not describe the parts read.
    let wrong = seal_end(
        Suite::Aes256Gcm,
        &dek(),
        3,
        &[1000, 701],
        None,
        &crate::crypto::test_rng(),
    )
    .unwrap();
    assert!(run(&[&p1[..], &p2, &wrong].concat(), 3).0.is_err());
    // Runs: equal lengths share one; too many runs, no table.
    let t = end_table(&[8, 8, 8, 3], END_SEALED_LEN, None);
    assert_eq!(&t[..9], &[1, 0, 0, 0, 4, 0, 0, 0, 2]);
    assert_eq!(parse_end_table(&t, 4), Ok(Some(vec![8, 8, 8, 3])));
    assert_eq!(sealed_etag(&t), None);
    assert!(parse_end_table(&t, 3).is_err());
    // Version 2 tables seal the multipart MD5 after the counts.
    let m = [0xabu8; 16];
    let t2 = end_table(&[8, 8, 8, 3], END_SEALED_LEN, Some(&m));
    assert_eq!(&t2[..9], &[2, 0, 0, 0, 4, 0, 0, 0, 2]);
    assert_eq!(&t2[9..25], &m);
    assert_eq!(parse_end_table(&t2, 4), Ok(Some(vec![8, 8, 8, 3])));
    assert_eq!(sealed_etag(&t2), Some(m));
    let mut v3 = t2.clone();
    v3[0] = 3;
    assert!(parse_end_table(&v3, 4).is_err());
    let many: Vec<u64> = (1..=END_MAX_RUNS as u64 + 1).collect();
    assert_eq!(
        parse_end_table(
            &end_table(&many, END_SEALED_LEN, Some(&m)),
            many.len() as u64
        ),
        Ok(None)
    );
    let few: Vec<u64> = (1..=END_MAX_RUNS as u64).collect();
    assert_eq!(
        parse_end_table(&end_table(&few, END_SEALED_LEN, Some(&m)), few.len() as u64),
        Ok(Some(few))
    );
    let mut junk = t.clone();
    junk[100] = 1;
    assert!(parse_end_table(&junk, 4).is_err());
    // The ETag a response showed must be the one the table it reads seals.
    let m = [0x11u8; 16];
    let sealed = seal_end(
        Suite::Aes256Gcm,
        &dek(),
        3,
        &[1000, 700],
        Some(&m),
        &crate::crypto::test_rng(),
    )
    .unwrap();
    let showing = |obj: &[u8], parts: u64, md5: Option<[u8; 16]>| {
        let mut d = PartsDecryptor::new(Suite::Aes256Gcm, &dek(), parts, true).showing(md5);
        d.push(obj, &mut Vec::new()).and_then(|()| d.finish())
    };
    let with = [&p1[..], &p2, &sealed].concat();
    assert_eq!(showing(&with, 3, Some(m)), Ok(()));
    assert!(showing(&with, 3, Some([0x12; 16])).is_err());
    // Shown without one (the backend's ETag), the object must seal none.
    assert!(showing(&with, 3, None).is_err());
    assert_eq!(showing(&[&p1[..], &p2, &end].concat(), 3, None), Ok(()));
    // A table without an ETag, or no table at all (a final last part), holds none.
    assert!(showing(&[&p1[..], &p2, &end].concat(), 3, Some(m)).is_err());
    let f2 = encrypt(
        Geometry::part_in(Layout::Final, 2, 700),
        &vec![2u8; 700],
        78,
    );
    assert_eq!(showing(&[&p1[..], &f2].concat(), 2, None), Ok(()));
    assert!(showing(&[&p1[..], &f2].concat(), 2, Some(m)).is_err());
    // An end part first, or in a version 1 object, or relabelled as a final part.
    assert!(run(&end, 1).0.is_err());
    let mut d = PartsDecryptor::new(Suite::Aes256Gcm, &dek(), 3, false);
    assert!(d
        .push(&[&p1[..], &p2, &end].concat(), &mut Vec::new())
        .is_err());
    let mut relabel = end.clone();
    relabel[3] = b'F';
    assert!(run(&[&p1[..], &p2, &relabel].concat(), 3).0.is_err());
}

#[test]
fn multipart_object_decrypts_sequentially() {
    let parts: Vec<(u32, Vec<u8>)> = vec![(1, vec![1u8; 70_000]), (2, vec![2u8; 3]), (5, vec![])];
    let mut obj = Vec::new();
    let mut pt = Vec::new();
    for (n, body) in &parts {
        obj.extend(encrypt(Geometry::part(*n, body.len() as u64), body, 999));
        pt.extend_from_slice(body);
    }
    assert_eq!(obj.len() as u64, pt.len() as u64 + 3 * PART_OVERHEAD);
    assert_eq!(
        plain_size_from_listing(obj.len() as u64, "\"x-3\""),
        Some(pt.len() as u64)
    );
    for step in [1usize, 16, 1000, 1 << 20] {
        let mut d = PartsDecryptor::new(Suite::Aes256Gcm, &dek(), 3, false);
        let mut out = Vec::new();
        for c in obj.chunks(step) {
            d.push(c, &mut out).unwrap();
        }
        d.finish().unwrap();
        assert_eq!(out, pt);
    }
    // A missing part, a part count that does not match, swapped parts: all fail.
    let p1 = Geometry::part(1, 70_000).cipher_len().unwrap() as usize;
    let mut d = PartsDecryptor::new(Suite::Aes256Gcm, &dek(), 3, false);
    d.push(&obj[..p1], &mut Vec::new()).unwrap();
    assert!(d.finish().is_err());
    let mut d = PartsDecryptor::new(Suite::Aes256Gcm, &dek(), 2, false);
    assert!(d.push(&obj, &mut Vec::new()).is_err());
    let mut swapped = obj[p1..].to_vec();
    swapped.extend_from_slice(&obj[..p1]);
    let mut d = PartsDecryptor::new(Suite::Aes256Gcm, &dek(), 3, false);
    assert!(d.push(&swapped, &mut Vec::new()).is_err());
}

#[test]
fn envelope_round_trip_and_tamper() {
    let d = dek();
    let w = crypto::wrap_dek(&[5u8; 32], &d).unwrap();
    let mut env = Envelope::new(
        Suite::Aes256Gcm,
        Layout::Single,
        "prod-2026",
        w,
        Some(12345),
    );
    env.md5 = Some([0xab; 16]);
    env.checksum = Some(StoredChecksum {
        header: "x-amz-checksum-crc32".into(),
        value: "AAAAAA==".into(),
    });
    env.seal(&d, &crate::crypto::OsRandom).unwrap();
    let s = env.encode();
    // Version 2: the digests are sealed, nothing of them is in clear.
    assert!(s.starts_with("v=2;s=1;t=s;k=prod-2026;w="), "{s}");
    assert!(
        !s.contains("abab") && !s.contains("crc32") && !s.contains("AAAAAA=="),
        "{s}"
    );
    let mut back = Envelope::decode(&s).unwrap();
    assert_eq!((back.md5, &back.checksum), (None, &None));
    back.open(&d).unwrap();
    assert_eq!(back, env);
    let mut t = back.clone();
    t.plain_len = Some(12344);
    assert!(t.open(&d).is_err());
    let mut t = back.clone();
    t.key_id = "prod-2027".into();
    assert!(t.open(&d).is_err());
    let mut t = back.clone();
    t.tag[NONCE_LEN + 3] ^= 1; // inside the sealed digests
    assert!(t.open(&d).is_err());
    // Envelopes without digests have the same length (the block is fixed).
    let mut plain = env.clone();
    plain.md5 = None;
    plain.checksum = None;
    plain.seal(&d, &crate::crypto::OsRandom).unwrap();
    assert_eq!(plain.encode().len(), s.len());
    // A v2 envelope cannot carry digests in clear, nor a v1 tag; v1 not a v2 block.
    for bad in [
        "",
        "v=2;s=1;t=s;k=a;w=AA;l=1;a=AA",
        &s.replacen(";e=", ";m=abababababababababababababababab;e=", 1),
        &s.replacen("v=2", "v=1", 1),
        &s.replacen("v=2", "v=4", 1),
        &s.replacen("v=2", "v=3", 1)
            .replace("t=s", "t=m")
            .replace(";l=12345", ""),
        &s.replace("s=1", "s=9"),
        &format!("{s};x=1"),
        &format!("{s};l=5"),
    ] {
        assert!(Envelope::decode(bad).is_err(), "{bad}");
    }
}

/// Version 1 envelopes (digests in clear, as the previous release wrote them) are
/// still read: decoded, verified and their digests used.
#[test]
fn version_1_envelopes_stay_readable() {
    let d = dek();
    let w = crypto::wrap_dek(&[5u8; 32], &d).unwrap();
    let mut env = Envelope::new(Suite::Aes256Gcm, Layout::Single, "old", w, Some(7));
    env.version = 1;
    env.md5 = Some([0xcd; 16]);
    env.seal(&d, &crate::crypto::OsRandom).unwrap();
    let s = env.encode();
    assert!(
        s.starts_with("v=1;") && s.contains(";m=cdcd") && s.contains(";a="),
        "{s}"
    );
    let mut back = Envelope::decode(&s).unwrap();
    back.open(&d).unwrap();
    assert_eq!(back.md5, Some([0xcd; 16]));
    // In v1 the clear digest is authenticated: changing it breaks the tag.
    let mut t = Envelope::decode(&s.replace(";m=cdcd", ";m=cdce")).unwrap();
    assert!(t.open(&d).is_err());
    assert!(Envelope::decode(&s.replace(";a=", ";e=")).is_err());
}

/// Suite 2 (ChaCha20-Poly1305): same sizes, round trips in both layouts, and
/// tampering, truncation, reordering and a suite mix-up are all detected.
#[test]
fn chacha_round_trip_and_tamper() {
    let c = Suite::ChaCha20Poly1305;
    let f = SINGLE_FRAME as usize;
    for n in [0, 1, f - 1, f, f + 1, 3 * f + 5] {
        let pt: Vec<u8> = (0..n).map(|i| (i * 13 % 251) as u8).collect();
        let g = Geometry::single(n as u64);
        let ct = encrypt_with(c, g, &pt, 4099);
        assert_eq!(Some(ct.len() as u64), g.cipher_len());
        assert_eq!(decrypt_whole_with_suite(c, g, &ct, 1000).unwrap(), pt);
        if n > 0 {
            if n >= 64 {
                assert_ne!(ct[NONCE_LEN..NONCE_LEN + 64], pt[..64]);
            }
            // Read with the other suite: every frame fails.
            assert_eq!(
                decrypt_whole_with_suite(Suite::Aes256Gcm, g, &ct, 1000),
                Err(FormatError::Integrity)
            );
            assert_eq!(
                decrypt_whole_with_suite(c, g, &encrypt(g, &pt, 4099), 1000),
                Err(FormatError::Integrity)
            );
        }
        let gp = Geometry::part(7, n as u64);
        let ct = encrypt_with(c, gp, &pt, 777);
        assert_eq!(Some(ct.len() as u64), gp.cipher_len());
        assert_eq!(decrypt_whole_with_suite(c, gp, &ct, 5000).unwrap(), pt);
    }
    let pt = vec![9u8; 2 * f + 100];
    let g = Geometry::single(pt.len() as u64);
    let ct = encrypt_with(c, g, &pt, f);
    for pos in [0, 11, 12, 500, f + 27, f + 28, ct.len() - 1] {
        let mut t = ct.clone();
        t[pos] ^= 0x80;
        assert_eq!(
            decrypt_whole_with_suite(c, g, &t, 4096),
            Err(FormatError::Integrity),
            "pos {pos}"
        );
    }
    let cut = &ct[..2 * (f + 28)];
    assert!(decrypt_whole_with_suite(c, g, cut, 4096).is_err());
    let g2 = Geometry::single_from_cipher(cut.len() as u64).unwrap();
    assert!(decrypt_whole_with_suite(c, g2, cut, 4096).is_err());
    let mut sw = ct.clone();
    let (a, b) = sw.split_at_mut(f + 28);
    a.swap_with_slice(&mut b[..f + 28]);
    assert!(decrypt_whole_with_suite(c, g, &sw, 4096).is_err());
    // A multipart object of suite 2.
    let mut obj = encrypt_with(c, Geometry::part(1, 70_000), &[1u8; 70_000], 999);
    obj.extend(encrypt_with(c, Geometry::part(3, 5), &[2u8; 5], 999));
    let mut d = PartsDecryptor::new(c, &dek(), 2, false);
    let mut out = Vec::new();
    d.push(&obj, &mut out).unwrap();
    d.finish().unwrap();
    assert_eq!(out.len(), 70_005);
    let mut d = PartsDecryptor::new(Suite::Aes256Gcm, &dek(), 2, false);
    assert!(d.push(&obj, &mut Vec::new()).is_err());
}

#[test]
fn chacha_envelope_round_trip_and_tamper() {
    let d = dek();
    let w = crypto::wrap_dek(&[5u8; 32], &d).unwrap();
    let mut env = Envelope::new(Suite::ChaCha20Poly1305, Layout::Part, "k2", w, None);
    env.seal(&d, &crate::crypto::OsRandom).unwrap();
    let s = env.encode();
    assert!(s.starts_with("v=2;s=2;t=m;k=k2;"), "{s}");
    let back = Envelope::decode(&s).unwrap();
    assert_eq!(back.suite, Suite::ChaCha20Poly1305);
    assert_eq!(back, env);
    back.verify(&d).unwrap();
    // The suite is authenticated: relabelled as suite 1 it no longer verifies.
    let relabelled = Envelope::decode(&s.replace("s=2", "s=1")).unwrap();
    assert!(relabelled.verify(&d).is_err());
    let mut t = back.clone();
    t.tag[NONCE_LEN] ^= 1;
    assert!(t.verify(&d).is_err());
    assert!(back.verify(&DataKey::from_bytes([0x12; 32])).is_err());
}

/// The committed test vectors (docs/vectors/format-v1.json, with version 1
/// envelopes, and format-v2.json, with the version 2 envelopes written now) are what
/// this code writes. Regenerate with S3CRYPT_REGEN_VECTORS=1 after a deliberate format
/// change (which also needs a new format version).
#[test]
fn committed_test_vectors() {
    let (_, _) = vectors_of_version(1);
    let (_, _) = vectors_of_version(3);
    let (header, stored) = vectors_of_version(2);
    // The suite-2 example printed in docs/FORMAT.md ("Test vectors").
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md")).unwrap();
    assert!(doc.contains(&format!("\nenvelope  {header}\n")), "{header}");
    let line = doc.lines().find(|l| l.starts_with("stored    ")).unwrap();
    assert_eq!(line["stored".len()..].replace(' ', ""), stored);
}

/// The multipart MD5 the version 2 tables of the vectors seal (`c0 c1 … cf`).
const VECTOR_MULTIPART_MD5: [u8; 16] = [
    0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf,
];

/// Writes (or checks) docs/vectors/format-v{version}.json; returns the envelope and
/// stored bytes of `chacha20-poly1305/single-short`.
fn vectors_of_version(version: u8) -> (String, String) {
    use sha2::{Digest, Sha256};
    let kek: [u8; 32] = std::array::from_fn(|i| i as u8);
    let dek_bytes: [u8; 32] = std::array::from_fn(|i| 0x40 + i as u8);
    let wrapped = crypto::wrap_dek(&kek, &DataKey::from_bytes(dek_bytes)).unwrap();
    let nonce_base: [u8; 12] = std::array::from_fn(|i| 0xa0 + i as u8);
    let env_nonce: [u8; 12] = std::array::from_fn(|i| 0xe0 + i as u8);
    let mut cases: Vec<(&str, Geometry, Vec<u8>)> = vec![
        ("single-empty", Geometry::single(0), vec![]),
        (
            "single-short",
            Geometry::single(19),
            b"s3crypt test vector".to_vec(),
        ),
        (
            "single-two-frames",
            Geometry::single(SINGLE_FRAME + 1),
            (0..SINGLE_FRAME + 1).map(|i| (i % 251) as u8).collect(),
        ),
        (
            "part-2-of-3000",
            Geometry::part(2, 3000),
            (0..3000u64).map(|i| (i % 7) as u8).collect(),
        ),
    ];
    if version == 3 {
        // Version 3 envelopes are for single objects only (multipart objects stay 2).
        cases.truncate(3);
    }
    if version == 2 {
        // The last part of a version 2 object, and the empty end marker (FORMAT.md).
        cases.push((
            "final-3-of-1000",
            Geometry::part_in(Layout::Final, 3, 1000),
            (0..1000u64).map(|i| (i % 7) as u8).collect(),
        ));
        cases.push((
            "end-4-after-3-parts",
            Geometry::end(4),
            end_table(&[5 << 20, 5 << 20, 6 << 20], END_SEALED_LEN, None),
        ));
        // A closing part: 512 frames, then its table frame (nonce: frame 512's).
        cases.push((
            "closing-3-of-1000",
            Geometry::closing(3, 1000),
            (0..1000u64).map(|i| (i % 7) as u8).collect(),
        ));
        // The same with version 2 tables, sealing the object's multipart MD5 (as written
        // now; the two above are tables of the previous release, still read).
        cases.push((
            "end-4-after-3-parts-etag",
            Geometry::end(4),
            end_table(
                &[5 << 20, 5 << 20, 6 << 20],
                END_SEALED_LEN,
                Some(&VECTOR_MULTIPART_MD5),
            ),
        ));
        cases.push((
            "closing-3-of-1000-etag",
            Geometry::closing(3, 1000),
            (0..1000u64).map(|i| (i % 7) as u8).collect(),
        ));
    }
    let mut out = String::from("{\n  \"kek_id\": \"vector-kek\",\n");
    out.push_str(&format!(
        "  \"kek\": \"{}\",\n  \"dek\": \"{}\",\n  \"wrapped_dek\": \"{}\",\n",
        hex::encode(kek),
        hex::encode(dek_bytes),
        hex::encode(wrapped)
    ));
    out.push_str(&format!(
        "  \"frame_nonce_base\": \"{}\",\n  \"envelope_nonce\": \"{}\",\n  \"cases\": [\n",
        hex::encode(nonce_base),
        hex::encode(env_nonce)
    ));
    let suites = [Suite::Aes256Gcm, Suite::ChaCha20Poly1305];
    let total = suites.len() * cases.len();
    let mut doc_example = None;
    for (n, (suite, (name, geo, pt))) in suites
        .iter()
        .flat_map(|s| cases.iter().map(move |c| (*s, c)))
        .enumerate()
    {
        let name = match suite {
            Suite::Aes256Gcm => name.to_string(),
            _ => format!("{}/{name}", suite.name()),
        };
        let dek = DataKey::from_bytes(dek_bytes);
        let mut e = FrameEncryptor::new(suite, &dek, *geo, &counting_nonces(nonce_base));
        let mut ct = Vec::new();
        e.push(pt, &mut ct).unwrap();
        e.finish(&mut ct).unwrap();
        assert_eq!(decrypt_whole_with(suite, &dek, *geo, &ct), *pt);
        // Version 3: the sealed trailer (its nonce: that of the frame after the last),
        // with the MD5 and a CRC32 the client sent as an aws-chunked trailer.
        let trailer = (version == 3 && !pt.is_empty()).then(|| Trailer {
            md5: md5::Md5::digest(pt).into(),
            checksum: Some(StoredChecksum {
                header: "x-amz-checksum-crc32".into(),
                value: B64.encode(crc32fast::hash(pt).to_be_bytes()),
            }),
        });
        if let Some(t) = &trailer {
            e.seal_trailer(t, &mut ct).unwrap();
            let at = ct.len() - TRAILER_LEN as usize;
            assert_eq!(
                open_trailer(suite, &dek, geo.plain_len, &ct[at..]),
                Ok(t.clone())
            );
            assert_eq!(single_stored_len(3, geo.plain_len), Some(ct.len() as u64));
        }
        if geo.layout == Layout::Closing {
            let mut n = nonce_base;
            let tail = u64::from_be_bytes(n[4..].try_into().unwrap()) + CLOSING_FRAMES;
            n[4..].copy_from_slice(&tail.to_be_bytes());
            let mut t = FrameEncryptor::new(
                suite,
                &dek,
                Geometry::closing_table(geo.part),
                &counting_nonces(n),
            );
            let etag = name.ends_with("-etag").then_some(&VECTOR_MULTIPART_MD5);
            let table = end_table(&[5 << 20, 5 << 20, 1000], CLOSING_SEALED_LEN, etag);
            t.push(&table, &mut ct).unwrap();
            t.finish(&mut ct).unwrap();
            assert_eq!(ct.len() as u64, geo.plain_len + PART_OVERHEAD);
            let mut d = PartsDecryptor::new(suite, &dek, 1, true);
            let mut got = Vec::new();
            // (As part 3 of an object: the decryptor wants 1..N, so check the frames.)
            assert!(d.push(&ct, &mut got).is_err());
        }
        let header = if geo.layout == Layout::Single {
            let mut env = Envelope::new(
                suite,
                Layout::Single,
                "vector-kek",
                wrapped,
                Some(geo.plain_len),
            );
            env.version = version;
            env.md5 = Some(md5::Md5::digest(pt).into());
            if version == 3 {
                // Neither is known before the body: they are in the trailer.
                env.md5 = None;
            } else if version >= 2 {
                env.checksum = Some(StoredChecksum {
                    header: "x-amz-checksum-crc32".into(),
                    value: B64.encode(crc32fast::hash(pt).to_be_bytes()),
                });
            }
            env.seal_with_nonce(&dek, env_nonce).unwrap();
            env.encode()
        } else {
            let mut env = Envelope::new(suite, Layout::Part, "vector-kek", wrapped, None);
            env.version = version;
            env.seal_with_nonce(&dek, env_nonce).unwrap();
            env.encode()
        };
        if name == "chacha20-poly1305/single-short" {
            doc_example = Some((header.clone(), hex::encode(&ct)));
        }
        let show = if ct.len() <= 256 {
            hex::encode(&ct)
        } else {
            format!("{}...", hex::encode(&ct[..128]))
        };
        out.push_str(&format!(
            "    {{\"name\": \"{}\", \"suite\": {}, \"layout\": \"{}\", \"part\": {}, \"plaintext_len\": {}, \"plaintext_sha256\": \"{}\", \"envelope_header\": \"{}\", \"stored_len\": {}, \"stored_sha256\": \"{}\", \"stored_hex\": \"{}\"}}{}\n",
            name,
            suite.id(),
            match geo.layout {
                Layout::Single => "single",
                Layout::Part => "part",
                Layout::Final => "final",
                Layout::End => "end",
                Layout::Closing => "closing",
                Layout::Table => "table",
                Layout::Trailer => "trailer",
            },
            geo.part,
            pt.len(),
            hex::encode(Sha256::digest(pt)),
            header,
            ct.len(),
            hex::encode(Sha256::digest(&ct)),
            show,
            if n + 1 < total { "," } else { "" }
        ));
    }
    out.push_str("  ]\n}\n");
    let path = format!(
        "{}/../docs/vectors/format-v{version}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var("S3CRYPT_REGEN_VECTORS").is_ok() {
        std::fs::write(&path, &out).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        committed, out,
        "docs/vectors/format-v{version}.json differs from what the code writes"
    );
    doc_example.unwrap()
}

fn decrypt_whole_with(suite: Suite, dek: &DataKey, geo: Geometry, ct: &[u8]) -> Vec<u8> {
    let mut d = FrameDecryptor::whole(suite, dek, geo);
    let mut out = Vec::new();
    d.push(ct, &mut out).unwrap();
    d.finish().unwrap();
    out
}

proptest! {
    #[test]
    fn prop_single_size_bijection(p in 0u64..(1u64 << 40)) {
        let g = Geometry::single(p);
        let c = g.cipher_len().unwrap();
        prop_assert_eq!(Geometry::single_from_cipher(c), Some(g));
        prop_assert_eq!(plain_size_from_listing(c, "\"0123\""), Some(p));
    }

    #[test]
    fn prop_frames_partition(p in 0u64..(1u64 << 34), part in 1u32..=10000) {
        for g in [Geometry::single(p), Geometry::part(part, p)] {
            let mut off = 0;
            for i in [0, 1, g.frames / 2, g.frames.saturating_sub(1)] {
                if i >= g.frames { continue; }
                prop_assert!(g.frame_plain_len(i) <= g.frame_len);
                prop_assert_eq!(g.frame_cipher_start(i), Some(g.header_len() + g.frame_plain_start(i) + i * FRAME_OVERHEAD));
                off = g.frame_plain_start(i);
            }
            prop_assert!(off <= p);
            if p > 0 {
                let last = g.frame_of(p - 1);
                prop_assert!(last < g.frames);
                prop_assert_eq!(g.frame_plain_start(last) + g.frame_plain_len(last), p);
            }
        }
    }

    #[test]
    fn prop_round_trip_any_split(n in 0usize..200_000, split in 1usize..70_000) {
        let pt: Vec<u8> = (0..n).map(|i| (i % 256) as u8).collect();
        let g = Geometry::single(n as u64);
        let ct = encrypt(g, &pt, split);
        prop_assert_eq!(decrypt_whole(g, &ct, split / 2 + 1).unwrap(), pt);
    }
}
