//! The part table of a completed multipart object, and reads of any plaintext range of it.
//!
//! A multipart object stores its parts one after the other, each a part-layout stream
//! starting with a 16-byte header (magic, part number, plaintext length; see FORMAT.md).
//! The table (part number and plaintext length of every part, in order) is found from the
//! object alone by walking those headers: one 16-byte ranged read per part, the first
//! time an object version is read by range or part number; it is then cached (keyed by
//! ETag and stored size). The headers are not trusted: every frame's associated data
//! binds its part number, index and the part's length, so a wrong table can only make a
//! read fail, never release wrong plaintext.

use crate::crypto::{DataKey, Suite};
use crate::format::{
    parse_part_header, Decrypt, FormatError, FrameDecryptor, Geometry, Window, MAX_SINGLE,
    PART_HEADER_LEN, PART_OVERHEAD,
};

/// Part number and plaintext length of each part, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartTable {
    parts: Vec<(u32, u64)>,
}

/// A plaintext range of a multipart object: the stored bytes to read and how to decrypt them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangePlan {
    /// First and last (inclusive) stored byte to read.
    pub stored_first: u64,
    pub stored_last: u64,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    geo: Geometry,
    window: Window,
    /// Stored bytes of the read that belong to this segment.
    stored_len: u64,
}

impl PartTable {
    pub fn new(parts: Vec<(u32, u64)>) -> Option<PartTable> {
        let ok = !parts.is_empty()
            && parts.windows(2).all(|w| w[0].0 < w[1].0)
            && parts
                .iter()
                .all(|&(n, l)| (1..=10_000).contains(&n) && l > 0 && l <= MAX_SINGLE);
        ok.then_some(PartTable { parts })
    }

    pub fn count(&self) -> usize {
        self.parts.len()
    }

    /// The parts are numbered 1, 2, 3, … without gaps.
    pub fn numbered_from_one(&self) -> bool {
        self.parts
            .iter()
            .zip(1u32..)
            .all(|(&(n, _), want)| n == want)
    }

    pub fn plain_len(&self) -> u64 {
        self.parts.iter().map(|p| p.1).sum()
    }

    pub fn stored_len(&self) -> u64 {
        self.parts.iter().map(|p| p.1 + PART_OVERHEAD).sum()
    }

    /// Plaintext offset and length of the part numbered `number`.
    pub fn part_range(&self, number: u32) -> Option<(u64, u64)> {
        let mut off = 0;
        for &(n, l) in &self.parts {
            if n == number {
                return Some((off, l));
            }
            off += l;
        }
        None
    }

    /// (part number, stored length, stored offset) of each part.
    pub fn stored_parts(&self) -> Vec<(u32, u64, u64)> {
        let mut off = 0;
        self.parts
            .iter()
            .map(|&(n, l)| {
                let r = (n, l + PART_OVERHEAD, off);
                off += l + PART_OVERHEAD;
                r
            })
            .collect()
    }

    /// Cache encoding: `number:len` pairs separated by commas.
    pub fn encode(&self) -> String {
        let v: Vec<String> = self.parts.iter().map(|(n, l)| format!("{n}:{l}")).collect();
        v.join(",")
    }

    pub fn decode(s: &[u8]) -> Option<PartTable> {
        let s = std::str::from_utf8(s).ok()?;
        let mut parts = Vec::new();
        for item in s.split(',') {
            let (n, l) = item.split_once(':')?;
            parts.push((n.parse().ok()?, l.parse().ok()?));
        }
        PartTable::new(parts)
    }

    /// The plan to read plaintext bytes `first..=last` (`last < plain_len`).
    pub fn plan(&self, first: u64, last: u64) -> Option<RangePlan> {
        if first > last || last >= self.plain_len() {
            return None;
        }
        let mut segments = Vec::new();
        let (mut plain_off, mut stored_off) = (0u64, 0u64);
        let (mut stored_first, mut stored_last) = (None, 0);
        for &(n, len) in &self.parts {
            let (p0, p1) = (plain_off, plain_off + len - 1);
            if p1 >= first && p0 <= last {
                let geo = Geometry::part(n, len);
                let a = first.max(p0) - p0;
                let b = last.min(p1) - p0;
                let (f0, f1) = (geo.frame_of(a), geo.frame_of(b));
                // Where the read of this part ends: after frame `f1`, or at the end of the
                // part (its trailing frames included) when the range goes on.
                let seg_end = if last > p1 {
                    geo.cipher_len()
                } else {
                    geo.frame_cipher_start(f1)
                        + geo.frame_plain_len(f1)
                        + crate::format::FRAME_OVERHEAD
                };
                // The first segment starts at its first frame; later ones at their header.
                let seg_start = if stored_first.is_none() {
                    geo.frame_cipher_start(f0)
                } else {
                    0
                };
                stored_first.get_or_insert(stored_off + seg_start);
                stored_last = stored_off + seg_end - 1;
                segments.push(Segment {
                    geo,
                    window: Window {
                        lead: geo.frame_cipher_start(f0) - seg_start,
                        first: f0,
                        last: f1,
                        skip: a - geo.frame_plain_start(f0),
                        take: b - a + 1,
                    },
                    stored_len: seg_end - seg_start,
                });
            }
            plain_off += len;
            stored_off += len + PART_OVERHEAD;
        }
        Some(RangePlan {
            stored_first: stored_first?,
            stored_last,
            segments,
        })
    }
}

/// Finds a part table by reading part headers one by one.
#[derive(Debug, Clone)]
pub struct Walk {
    stored_len: u64,
    parts_expected: u64,
    /// Part numbers must be 1, 2, 3, … (objects with version 2 envelopes).
    numbered: bool,
    next: u64,
    parts: Vec<(u32, u64)>,
}

impl Walk {
    /// An object of `stored_len` bytes with `parts_expected` parts (from its `-N` ETag);
    /// `numbered`: its parts must be numbered 1..N without gaps (version 2 envelopes).
    pub fn new(stored_len: u64, parts_expected: u64, numbered: bool) -> Walk {
        Walk {
            stored_len,
            parts_expected,
            numbered,
            next: 0,
            parts: Vec::new(),
        }
    }

    /// Stored offset of the next header to read.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Takes the 16 header bytes read at [`Walk::next_offset`]. `Ok(Some(table))` when
    /// the walk reached the end of the object consistently.
    pub fn push(&mut self, header: &[u8]) -> Result<Option<PartTable>, FormatError> {
        if header.len() != PART_HEADER_LEN as usize {
            return Err(FormatError::Integrity);
        }
        let (n, len) = parse_part_header(header).ok_or(FormatError::Integrity)?;
        let expected_number = self.parts.last().map_or(1, |&(p, _)| p.saturating_add(1));
        if len == 0
            || len > MAX_SINGLE
            || self.parts.last().is_some_and(|&(p, _)| p >= n)
            || (self.numbered && n != expected_number)
            || self.parts.len() as u64 >= self.parts_expected
        {
            return Err(FormatError::Integrity);
        }
        self.parts.push((n, len));
        self.next += len + PART_OVERHEAD;
        if self.next > self.stored_len {
            return Err(FormatError::Integrity);
        }
        if self.next < self.stored_len {
            return Ok(None);
        }
        if self.parts.len() as u64 != self.parts_expected {
            return Err(FormatError::Integrity);
        }
        PartTable::new(std::mem::take(&mut self.parts))
            .map(Some)
            .ok_or(FormatError::Integrity)
    }
}

/// Decrypts the stored bytes of a [`RangePlan`], part after part. Memory: one frame.
pub struct RangeDecryptor {
    suite: Suite,
    dek: DataKey,
    segments: std::vec::IntoIter<Segment>,
    cur: Option<(FrameDecryptor, u64)>,
    done: bool,
}

impl RangeDecryptor {
    pub fn new(suite: Suite, dek: &DataKey, plan: RangePlan) -> RangeDecryptor {
        let mut d = RangeDecryptor {
            suite,
            dek: DataKey::from_bytes(dek.0),
            segments: plan.segments.into_iter(),
            cur: None,
            done: false,
        };
        d.advance();
        d
    }

    fn advance(&mut self) {
        self.cur = self.segments.next().map(|s| {
            (
                FrameDecryptor::new(self.suite, &self.dek, s.geo, s.window),
                s.stored_len,
            )
        });
        self.done = self.cur.is_none();
    }
}

impl Decrypt for RangeDecryptor {
    fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        while !data.is_empty() {
            let Some((d, left)) = self.cur.as_mut() else {
                return Err(FormatError::Integrity); // more bytes than planned
            };
            let n = (*left).min(data.len() as u64) as usize;
            let (now, rest) = data.split_at(n);
            d.push(now, out)?;
            *left -= n as u64;
            data = rest;
            if *left == 0 {
                d.finish()?;
                self.advance();
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), FormatError> {
        if self.done {
            Ok(())
        } else {
            Err(FormatError::Integrity)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{part_header, FrameEncryptor};
    use proptest::prelude::*;

    fn object(dek: &DataKey, parts: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, p) in parts {
            let mut e =
                FrameEncryptor::new(Suite::Aes256Gcm, dek, Geometry::part(*n, p.len() as u64));
            e.push(p, &mut out).unwrap();
            e.finish(&mut out).unwrap();
        }
        out
    }

    fn walk(stored: &[u8], n: u64) -> Result<PartTable, FormatError> {
        let mut w = Walk::new(stored.len() as u64, n, false);
        loop {
            let o = w.next_offset() as usize;
            let h = stored.get(o..o + 16).ok_or(FormatError::Integrity)?;
            if let Some(t) = w.push(h)? {
                return Ok(t);
            }
        }
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
        assert!(PartTable::decode(b"").is_none());
    }

    #[test]
    fn a_wrong_table_fails_closed() {
        let dek = DataKey::from_bytes([4; 32]);
        let parts = vec![(1, pattern(70_000, 1)), (2, pattern(70_000, 2))];
        let stored = object(&dek, &parts);
        // Lie about the lengths (same total): reads must fail, never return wrong bytes.
        let lie = PartTable::new(vec![(1, 69_999), (2, 70_001)]).unwrap();
        for (a, b) in [(0, 10), (69_990, 70_010), (139_000, 139_999)] {
            assert!(read(&dek, &stored, &lie, a, b, 4096).is_err(), "{a}-{b}");
        }
        let lie = PartTable::new(vec![(2, 70_000), (3, 70_000)]).unwrap();
        assert!(read(&dek, &stored, &lie, 0, 5, 4096).is_err());
        // Another key.
        let t = walk(&stored, 2).unwrap();
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
            let t = walk(&stored, parts.len() as u64).unwrap();
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
        let t = PartTable::new(vec![(1, 100), (3, 50)]).unwrap();
        assert_eq!(&part_header(3, 50)[..4], b"s3cP");
        let plan = t.plan(100, 149).unwrap();
        assert_eq!(plan.stored_first, 100 + PART_OVERHEAD + PART_HEADER_LEN);
        // Part 3 has 50 one-byte frames; its trailing empty frames are not read.
        let frame = 1 + crate::format::FRAME_OVERHEAD;
        assert_eq!(
            plan.stored_last,
            100 + PART_OVERHEAD + PART_HEADER_LEN + 50 * frame - 1
        );
    }
}
