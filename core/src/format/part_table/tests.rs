// Tests index and compute freely: a panic is a failed test.
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use super::*;
use crate::format::{part_header, FrameEncryptor};
use proptest::prelude::*;

fn object(dek: &DataKey, parts: &[(u32, Vec<u8>)]) -> Vec<u8> {
    object_in(dek, parts, false)
}

/// The stored bytes of these parts; `v2`: the last one in layout `final`.
fn object_in(dek: &DataKey, parts: &[(u32, Vec<u8>)], v2: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (n, p)) in parts.iter().enumerate() {
        let layout = if v2 && i + 1 == parts.len() {
            Layout::Final
        } else {
            Layout::Part
        };
        let geo = Geometry::part_in(layout, *n, p.len() as u64);
        let mut e = FrameEncryptor::new(Suite::Aes256Gcm, dek, geo, &crate::crypto::test_rng());
        e.push(p, &mut out).unwrap();
        e.finish(&mut out).unwrap();
    }
    out
}

fn walk(stored: &[u8], n: u64) -> Result<PartTable, FormatError> {
    walk_with(&DataKey::from_bytes([3; 32]), stored, n, false).map(|(t, _)| t)
}

/// Walks `stored`; returns the table and the number of reads it took.
fn walk_with(
    dek: &DataKey,
    stored: &[u8],
    n: u64,
    v2: bool,
) -> Result<(PartTable, usize), FormatError> {
    let mut w = Walk::new(Suite::Aes256Gcm, dek, stored.len() as u64, n, v2);
    for reads in 1.. {
        let (a, b) = w.next_read();
        let h = stored
            .get(a as usize..=b as usize)
            .ok_or(FormatError::Integrity)?;
        if let Some(t) = w.push(h)? {
            return Ok((t, reads));
        }
    }
    unreachable!()
}

fn read(
    dek: &DataKey,
    stored: &[u8],
    t: &PartTable,
    first: u64,
    last: u64,
    chunk: usize,
) -> Result<Vec<u8>, FormatError> {
    let plan = t.plan(first, last).unwrap();
    let body = &stored[plan.stored_first as usize..=plan.stored_last as usize];
    let mut d = RangeDecryptor::new(Suite::Aes256Gcm, dek, plan);
    let mut out = Vec::new();
    for c in body.chunks(chunk.max(1)) {
        d.push(c, &mut out)?;
    }
    d.finish()?;
    Ok(out)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn walk_finds_table_and_rejects_inconsistency() {
    let dek = DataKey::from_bytes([3; 32]);
    let parts = vec![
        (1, pattern(5000, 1)),
        (2, pattern(3001, 2)),
        (7, pattern(10, 3)),
    ];
    let stored = object(&dek, &parts);
    let t = walk(&stored, 3).unwrap();
    assert_eq!(t.encode(), "1:5000,2:3001,7:10");
    assert_eq!(PartTable::decode(t.encode().as_bytes()), Some(t.clone()));
    assert_eq!(t.stored_len(), stored.len() as u64);
    assert_eq!(t.part_range(2), Some((5000, 3001)));
    assert_eq!(t.part_range(3), None);
    // Wrong part count, truncated object, swapped parts.
    assert!(walk(&stored, 2).is_err());
    assert!(walk(&stored, 4).is_err());
    assert!(walk(&stored[..stored.len() - 1], 3).is_err());
    let swapped = object(
        &dek,
        &[parts[1].clone(), parts[0].clone(), parts[2].clone()],
    );
    assert!(walk(&swapped, 3).is_err());
    assert!(PartTable::decode(b"2:5,1:5").is_none());
    assert!(PartTable::decode(b"1:0").is_none());
    assert!(PartTable::decode(b"1:5,2:0").is_none());
    assert!(PartTable::decode(b"").is_none());
    let marked = PartTable::decode(b"1:5,2:0F").unwrap();
    assert!(marked.ends_final());
    assert_eq!((marked.count(), marked.visible_count()), (2, 1));
    assert_eq!(marked.part_range(2), None);
    assert_eq!(PartTable::decode(marked.encode().as_bytes()), Some(marked));
}

#[test]
/// The walk authenticates every entry: a provider that rewrites part headers so that
/// a genuine later part lands at another plaintext offset is caught, which a walk of
/// headers alone would accept (and a range read would then release the right bytes
/// at the wrong place).
fn walk_authenticates_each_part() {
    let dek = DataKey::from_bytes([3; 32]);
    let p = |n: u32, len: usize| (n, pattern(len, n as u8));
    let parts = vec![p(1, 9000), p(2, 7000), p(3, 500)];
    let stored = object_in(&dek, &parts, true);
    let (t, reads) = walk_with(&dek, &stored, 3, true).unwrap();
    assert_eq!((t.encode().as_str(), reads), ("1:9000,2:7000,3:500F", 4));
    // Part 1 twice, its copy relabelled "part 2, 9000 bytes": offsets stay consistent
    // with the stored size if the provider also drops bytes, but part 2's last frame
    // is part 1's.
    let one = &stored[..(9000 + PART_OVERHEAD) as usize];
    let mut forged = one.to_vec();
    let mut copy = one.to_vec();
    copy[4..8].copy_from_slice(&2u32.to_be_bytes());
    forged.extend_from_slice(&copy);
    forged.extend_from_slice(&stored[(16000 + 2 * PART_OVERHEAD) as usize..]);
    assert!(walk_with(&dek, &forged, 3, true).is_err());
    // A header whose length was changed (same total): the frame read as the end of
    // the part is not its last frame.
    let mut lied = stored.clone();
    lied[8..16].copy_from_slice(&8999u64.to_be_bytes());
    assert!(walk_with(&dek, &lied, 3, true).is_err());
    // Version 2: the final part dropped (count rewritten), or relabelled.
    let two = &stored[..(16000 + 2 * PART_OVERHEAD) as usize];
    assert!(walk_with(&dek, two, 2, true).is_err());
    let mut relabel = stored.clone();
    let at = (16000 + 2 * PART_OVERHEAD) as usize + 3;
    relabel[at] = b'P';
    assert!(walk_with(&dek, &relabel, 3, true).is_err());
    // A part after the final one; version 1 objects have no final part.
    let mut more = stored.clone();
    more.extend_from_slice(&object(&dek, &[p(4, 10)]));
    assert!(walk_with(&dek, &more, 4, true).is_err());
    assert!(walk_with(&dek, &stored, 3, false).is_err());
    let v1 = object(&dek, &parts);
    assert_eq!(walk_with(&dek, &v1, 3, false).unwrap().1, 4);
    assert!(walk_with(&dek, &v1, 3, true).is_err());
    // Another object's key.
    assert!(walk_with(&DataKey::from_bytes([4; 32]), &stored, 3, true).is_err());
}

#[test]
/// An object closed by an end part: its table comes from the end part in one read,
/// the walk (the authority) agrees, and an end part that is not this object's, or
/// whose table does not fit, sends the reader to the walk.
fn the_end_part_gives_the_table_in_one_read() {
    let dek = DataKey::from_bytes([3; 32]);
    let parts = vec![(1, pattern(9000, 1)), (2, pattern(7000, 2))];
    let mut stored = object(&dek, &parts);
    stored.extend(
        crate::format::seal_end(
            Suite::Aes256Gcm,
            &dek,
            3,
            &[9000, 7000],
            Some(&[0x5a; 16]),
            &crate::crypto::test_rng(),
        )
        .unwrap(),
    );
    let w = Walk::new(Suite::Aes256Gcm, &dek, stored.len() as u64, 3, true);
    let (a, b) = w.end_read().unwrap();
    let t = w.try_end(&stored[a as usize..=b as usize]).unwrap();
    assert_eq!(
        t.encode(),
        format!("1:9000,2:7000,3:0F/{}", "5a".repeat(16))
    );
    assert_eq!(PartTable::decode(t.encode().as_bytes()), Some(t.clone()));
    assert_eq!(t.visible_count(), 2);
    // The ETag clients see: the sealed multipart MD5 and the client's two parts.
    let shown = format!("\"{}-2\"", "5a".repeat(16));
    assert_eq!(t.visible_etag(), Some(shown));
    assert_eq!(
        w.end_etag(&stored[a as usize..=b as usize]),
        Some(([0x5a; 16], 2))
    );
    let (walked, reads) = walk_with(&dek, &stored, 3, true).unwrap();
    assert_eq!((walked, reads), (t.clone(), 4));
    let plain: Vec<u8> = parts.iter().flat_map(|p| p.1.clone()).collect();
    assert_eq!(
        read(&dek, &stored, &t, 8990, 9010, 100).unwrap(),
        plain[8990..=9010]
    );
    // Another key, another part count, a wrong stored size: no table from it.
    let other = Walk::new(
        Suite::Aes256Gcm,
        &DataKey::from_bytes([4; 32]),
        stored.len() as u64,
        3,
        true,
    );
    assert!(other.try_end(&stored[a as usize..]).is_none());
    let w4 = Walk::new(Suite::Aes256Gcm, &dek, stored.len() as u64, 4, true);
    assert!(w4.try_end(&stored[a as usize..]).is_none());
    let mut longer = stored.clone();
    longer.splice(0..0, [0u8; 10]);
    let wl = Walk::new(Suite::Aes256Gcm, &dek, longer.len() as u64, 3, true);
    assert!(wl
        .try_end(&longer[longer.len() - PART_OVERHEAD as usize..])
        .is_none());
    // A table that lies about the parts: the walk refuses the object.
    let mut lying = object(&dek, &parts);
    lying.extend(
        crate::format::seal_end(
            Suite::Aes256Gcm,
            &dek,
            3,
            &[9001, 6999],
            None,
            &crate::crypto::test_rng(),
        )
        .unwrap(),
    );
    assert!(walk_with(&dek, &lying, 3, true).is_err());
    // Version 1 readers never look for an end part.
    assert!(
        Walk::new(Suite::Aes256Gcm, &dek, stored.len() as u64, 3, false)
            .end_read()
            .is_none()
    );
}

#[test]
/// An object whose short last part was rewritten as a closing part: one read of its
/// last 28,688 bytes gives the table, the walk and a whole read agree, ranges across
/// the closing part read back, and every way a provider could bend it fails closed.
fn the_closing_part_gives_the_table_in_one_read() {
    use crate::format::{seal_closing, PartsDecryptor, CLOSING_SEALED_LEN};
    let dek = DataKey::from_bytes([3; 32]);
    let suite = Suite::Aes256Gcm;
    let parts = vec![(1, pattern(9000, 1)), (2, pattern(9000, 2))];
    let last = pattern(4321, 3);
    let lengths = [9000, 9000, 4321];
    let build = |lengths: &[u64], last: &[u8]| {
        let mut stored = object(&dek, &parts);
        stored.extend(
            seal_closing(
                suite,
                &dek,
                3,
                last,
                lengths,
                None,
                &crate::crypto::test_rng(),
            )
            .unwrap(),
        );
        stored
    };
    let stored = build(&lengths, &last);
    // Exactly one part overhead per part, as listings assume.
    assert_eq!(stored.len() as u64, 22_321 + 3 * PART_OVERHEAD);
    let w = Walk::new(suite, &dek, stored.len() as u64, 3, true);
    let (a, b) = w.end_read().unwrap();
    let t = w.try_end(&stored[a as usize..=b as usize]).unwrap();
    assert_eq!(t.encode(), "1:9000,2:9000,3:4321C");
    assert_eq!(PartTable::decode(t.encode().as_bytes()), Some(t.clone()));
    assert_eq!(
        (t.visible_count(), t.part_range(3)),
        (3, Some((18000, 4321)))
    );
    let (walked, reads) = walk_with(&dek, &stored, 3, true).unwrap();
    assert_eq!((walked, reads), (t.clone(), 4));
    let plain: Vec<u8> = parts
        .iter()
        .flat_map(|p| p.1.clone())
        .chain(last.clone())
        .collect();
    for (x, y) in [(17990, 18010), (18000, 22320), (0, 22320), (22320, 22320)] {
        let got = read(&dek, &stored, &t, x, y, 777).unwrap();
        assert_eq!(got, plain[x as usize..=y as usize], "{x}-{y}");
    }
    let whole = |bytes: &[u8], n: u64| -> Result<Vec<u8>, FormatError> {
        let mut d = PartsDecryptor::new(suite, &dek, n, true);
        let mut out = Vec::new();
        for c in bytes.chunks(1000) {
            d.push(c, &mut out)?;
        }
        d.finish().map(|()| out)
    };
    assert_eq!(whole(&stored, 3).unwrap(), plain);
    // A one-part object is closed the same way.
    let mut one = Vec::new();
    one.extend(
        seal_closing(
            suite,
            &dek,
            1,
            &last,
            &[4321],
            None,
            &crate::crypto::test_rng(),
        )
        .unwrap(),
    );
    let w1 = Walk::new(suite, &dek, one.len() as u64, 1, true);
    let tail1 = &one[one.len() - PART_OVERHEAD as usize..];
    assert_eq!(w1.try_end(tail1).unwrap().encode(), "1:4321C");
    // A table that lies about the parts (same total): the walk and a whole read fail.
    let lying = build(&[9001, 8999, 4321], &last);
    let wl = Walk::new(suite, &dek, lying.len() as u64, 3, true);
    assert!(
        wl.try_end(&lying[a as usize..]).is_some(),
        "the table alone verifies"
    );
    assert!(walk_with(&dek, &lying, 3, true).is_err());
    assert!(whole(&lying, 3).is_err());
    // Truncated (inside the table frame, or a whole frame), a byte flipped in the
    // table frame, the last part dropped with the count rewritten, another key.
    for cut in [1usize, 28, CLOSING_SEALED_LEN as usize + 28] {
        let short = &stored[..stored.len() - cut];
        let ws = Walk::new(suite, &dek, short.len() as u64, 3, true);
        let tail = &short[short.len() - PART_OVERHEAD as usize..];
        assert!(ws.try_end(tail).is_none(), "cut {cut}");
        assert!(walk_with(&dek, short, 3, true).is_err(), "cut {cut}");
        assert!(whole(short, 3).is_err(), "cut {cut}");
    }
    let mut flipped = stored.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 1;
    assert!(w.try_end(&flipped[a as usize..]).is_none());
    assert!(walk_with(&dek, &flipped, 3, true).is_err());
    assert!(whole(&flipped, 3).is_err());
    let two = object(&dek, &parts);
    assert!(walk_with(&dek, &two, 2, true).is_err());
    let other = Walk::new(
        suite,
        &DataKey::from_bytes([4; 32]),
        stored.len() as u64,
        3,
        true,
    );
    assert!(other.try_end(&stored[a as usize..]).is_none());
    // The closing part moved before another part, or followed by one.
    let mut after = stored.clone();
    after.extend(object(&dek, &[(4, pattern(10, 4))]));
    assert!(walk_with(&dek, &after, 4, true).is_err());
    assert!(whole(&after, 4).is_err());
    // Too many distinct lengths for its table: no closing part is written.
    let many: Vec<u64> = (1..=crate::format::CLOSING_MAX_RUNS as u64 + 1).collect();
    let n = many.len() as u32;
    let tail = vec![0u8; *many.last().unwrap() as usize];
    assert!(seal_closing(
        suite,
        &dek,
        n,
        &tail,
        &many,
        Some(&[1; 16]),
        &crate::crypto::test_rng()
    )
    .is_err());
}

#[test]
/// A last part without plaintext (an end part is one) holds no byte of any range.
fn an_empty_last_part_is_read_by_no_range() {
    let dek = DataKey::from_bytes([3; 32]);
    let parts = vec![
        (1, pattern(9000, 1)),
        (2, pattern(7000, 2)),
        (3, Vec::new()),
    ];
    let stored = object_in(&dek, &parts, true);
    let (t, _) = walk_with(&dek, &stored, 3, true).unwrap();
    assert_eq!((t.visible_count(), t.plain_len()), (2, 16000));
    let plain: Vec<u8> = parts.iter().flat_map(|p| p.1.clone()).collect();
    for (a, b) in [(0, 15999), (8999, 9000), (15999, 15999)] {
        let got = read(&dek, &stored, &t, a, b, 999).unwrap();
        assert_eq!(got, plain[a as usize..=b as usize]);
    }
    assert!(t.plan(0, 16000).is_none());
}

#[test]
fn a_wrong_table_fails_closed() {
    let dek = DataKey::from_bytes([4; 32]);
    let parts = vec![(1, pattern(70_000, 1)), (2, pattern(70_000, 2))];
    let stored = object(&dek, &parts);
    // Lie about the lengths (same total): reads must fail, never return wrong bytes.
    let lie = PartTable::new(vec![(1, 69_999), (2, 70_001)], false).unwrap();
    for (a, b) in [(0, 10), (69_990, 70_010), (139_000, 139_999)] {
        assert!(read(&dek, &stored, &lie, a, b, 4096).is_err(), "{a}-{b}");
    }
    let lie = PartTable::new(vec![(2, 70_000), (3, 70_000)], false).unwrap();
    assert!(read(&dek, &stored, &lie, 0, 5, 4096).is_err());
    // Another key.
    let t = walk_with(&dek, &stored, 2, false).unwrap().0;
    assert!(read(&DataKey::from_bytes([5; 32]), &stored, &t, 0, 5, 4096).is_err());
    // Truncated input.
    let plan = t.plan(0, 139_999).unwrap();
    let body = &stored[plan.stored_first as usize..plan.stored_last as usize];
    let mut d = RangeDecryptor::new(Suite::Aes256Gcm, &dek, plan);
    let mut out = Vec::new();
    d.push(body, &mut out).unwrap();
    assert!(d.finish().is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn any_range_reads_back(sizes in proptest::collection::vec(1usize..9000, 1..5),
                            a in 0u64..40000, l in 0u64..40000, chunk in 1usize..5000) {
        let dek = DataKey::from_bytes([9; 32]);
        let parts: Vec<(u32, Vec<u8>)> = sizes.iter().enumerate()
            .map(|(i, &s)| ((i as u32) * 2 + 1, pattern(s, i as u8))).collect();
        let plain: Vec<u8> = parts.iter().flat_map(|p| p.1.clone()).collect();
        let stored = object(&dek, &parts);
        let t = walk_with(&dek, &stored, parts.len() as u64, false).unwrap().0;
        prop_assert_eq!(t.plain_len(), plain.len() as u64);
        let total = plain.len() as u64;
        let first = a % total;
        let last = (first + l).min(total - 1);
        let got = read(&dek, &stored, &t, first, last, chunk).unwrap();
        prop_assert_eq!(&got[..], &plain[first as usize..=last as usize]);
    }
}

#[test]
fn header_bytes_are_where_the_table_says() {
    let t = PartTable::new(vec![(1, 100), (3, 50)], false).unwrap();
    assert_eq!(&part_header(&Geometry::part(3, 50))[..4], b"s3cP");
    let f = Geometry::part_in(Layout::Final, 3, 50);
    assert_eq!(&part_header(&f)[..4], b"s3cF");
    let plan = t.plan(100, 149).unwrap();
    assert_eq!(plan.stored_first, 100 + PART_OVERHEAD + PART_HEADER_LEN);
    // Part 3 has 50 one-byte frames; its trailing empty frames are not read.
    let frame = 1 + crate::format::FRAME_OVERHEAD;
    assert_eq!(
        plan.stored_last,
        100 + PART_OVERHEAD + PART_HEADER_LEN + 50 * frame - 1
    );
}
