//! The part table of a completed multipart object, and reads of any plaintext range of it.
//!
//! A multipart object stores its parts one after the other, each a part-layout stream
//! starting with a 16-byte header (magic, part number, plaintext length; see FORMAT.md).
//! The table (part number and plaintext length of every part, in order) is found from the
//! object alone by walking those headers, the first time an object version is read by
//! range or part number; it is then cached (keyed by ETag and stored size). A header is not
//! authenticated by itself, so each read of the walk also takes the last frame of the part
//! before the header: that frame's associated data binds the part's number, layout and
//! length, so every entry of a finished walk is authenticated (a provider that rewrote
//! headers to shift a genuine part to another offset is caught), and for version 2 objects
//! the last entry is the authenticated final part, so the table is the whole object.

use crate::crypto::{DataKey, Suite};
use crate::format::{
    parse_end_table, parse_part_header, part_follows, sealed_etag, take_up_to, Decrypt,
    FormatError, FrameDecryptor, Geometry, Layout, Window, FRAME_OVERHEAD, MAX_PART_NUMBER,
    MAX_SINGLE, PART_HEADER_LEN, PART_OVERHEAD,
};

/// Part number and plaintext length of each part, in order; `final_last`: the last part
/// is in layout `final`, `end` or `closing` (version 2 objects; an end part is an entry of
/// length 0); `closing`: it is a closing part. [`PartTable::new`] bounds every table: at
/// most 10,000 parts (increasing numbers in 1..=10,000) of at most 5 GiB each, so sums of
/// lengths and offsets stay below 2^46. `etag`: the plaintext multipart MD5 sealed in an
/// end or closing part's table (version 2 tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartTable {
    parts: Vec<(u32, u64)>,
    final_last: bool,
    closing: bool,
    pub etag: Option<[u8; 16]>,
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
    pub fn new(parts: Vec<(u32, u64)>, final_last: bool) -> Option<PartTable> {
        let n = parts.len();
        let ok = !parts.is_empty()
            && parts
                .windows(2)
                .all(|w| matches!(w, [(a, _), (b, _)] if a < b))
            && parts.iter().enumerate().all(|(i, &(num, l))| {
                // Only a final part may be empty (the end marker of FORMAT.md).
                (1..=MAX_PART_NUMBER).contains(&num)
                    && l <= MAX_SINGLE
                    && (l > 0 || (final_last && i.checked_add(1) == Some(n)))
            });
        ok.then_some(PartTable {
            parts,
            final_last,
            closing: false,
            etag: None,
        })
    }

    /// The table a closing part seals: the lengths of all parts, the closing one last.
    pub fn from_closing(lengths: &[u64]) -> Option<PartTable> {
        let parts = lengths
            .iter()
            .copied()
            .zip(1u32..)
            .map(|(l, n)| (n, l))
            .collect();
        let mut t = PartTable::new(parts, true)?;
        // A closing part holds plaintext.
        if lengths.last() == Some(&0) {
            return None;
        }
        t.closing = true;
        Some(t)
    }

    /// Parts stored, the end marker included (the `-N` of the ETag).
    pub fn count(&self) -> usize {
        self.parts.len()
    }

    /// The ETag clients see, if the object sealed it: the hex of its plaintext multipart
    /// MD5 and the count of the client's parts.
    pub fn visible_etag(&self) -> Option<String> {
        let m = self.etag?;
        Some(format!("\"{}-{}\"", hex::encode(m), self.visible_count()))
    }

    /// Whether the table ends with a final part (what version 2 objects must do).
    pub fn ends_final(&self) -> bool {
        self.final_last
    }

    /// Parts a client sees (`x-amz-mp-parts-count`): all but an empty end marker.
    pub fn visible_count(&self) -> usize {
        match self.parts.split_last() {
            Some((&(_, 0), others)) if self.final_last => others.len(),
            _ => self.parts.len(),
        }
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
        // (Bounded: see PartTable.)
        self.parts
            .iter()
            .map(|p| p.1.saturating_add(PART_OVERHEAD))
            .sum()
    }

    fn geometry(&self, i: usize) -> Option<Geometry> {
        let &(n, len) = self.parts.get(i)?;
        let last = i.checked_add(1) == Some(self.parts.len());
        Some(if self.closing && last {
            Geometry::closing(n, len)
        } else if self.final_last && last {
            Geometry::part_in(Layout::Final, n, len)
        } else {
            Geometry::part(n, len)
        })
    }

    /// Plaintext offset and length of the part numbered `number` (not the empty end marker).
    pub fn part_range(&self, number: u32) -> Option<(u64, u64)> {
        let mut off = 0;
        for &(n, l) in &self.parts {
            if n == number {
                return (l > 0).then_some((off, l));
            }
            off = off.checked_add(l)?;
        }
        None
    }

    /// (part number, stored length, stored offset) of each part.
    pub fn stored_parts(&self) -> Vec<(u32, u64, u64)> {
        // (Bounded: see PartTable; nothing saturates.)
        let mut off: u64 = 0;
        self.parts
            .iter()
            .map(|&(n, l)| {
                let stored = l.saturating_add(PART_OVERHEAD);
                let r = (n, stored, off);
                off = off.saturating_add(stored);
                r
            })
            .collect()
    }

    /// The table an end part seals: the lengths of the parts before it, and the end part.
    pub fn from_end(lengths: &[u64]) -> Option<PartTable> {
        let parts = lengths
            .iter()
            .copied()
            .chain(std::iter::once(0))
            .zip(1u32..)
            .map(|(l, n)| (n, l))
            .collect();
        PartTable::new(parts, true)
    }

    /// Cache encoding: `number:len` pairs separated by commas, `F` after a final part,
    /// `C` after a closing part, then `/` and the hex of a sealed ETag if any.
    pub fn encode(&self) -> String {
        let v: Vec<String> = self.parts.iter().map(|(n, l)| format!("{n}:{l}")).collect();
        let mut s = v.join(",");
        if self.closing {
            s.push('C');
        } else if self.final_last {
            s.push('F');
        }
        if let Some(m) = self.etag {
            s.push('/');
            s.push_str(&hex::encode(m));
        }
        s
    }

    pub fn decode(s: &[u8]) -> Option<PartTable> {
        let s = std::str::from_utf8(s).ok()?;
        let (s, etag) = match s.split_once('/') {
            Some((s, m)) => (s, Some(hex::decode(m).ok()?.try_into().ok()?)),
            None => (s, None),
        };
        let (s, final_last, closing) = if let Some(rest) = s.strip_suffix('C') {
            (rest, true, true)
        } else if let Some(rest) = s.strip_suffix('F') {
            (rest, true, false)
        } else {
            (s, false, false)
        };
        let mut parts = Vec::new();
        for item in s.split(',') {
            let (n, l) = item.split_once(':')?;
            parts.push((n.parse().ok()?, l.parse().ok()?));
        }
        let mut t = PartTable::new(parts, final_last)?;
        if closing {
            if t.parts.last().is_some_and(|p| p.1 == 0) {
                return None;
            }
            t.closing = true;
        }
        t.etag = etag;
        Some(t)
    }

    /// The plan to read plaintext bytes `first..=last` (`last < plain_len`).
    pub fn plan(&self, first: u64, last: u64) -> Option<RangePlan> {
        if first > last || last >= self.plain_len() {
            return None;
        }
        let mut segments = Vec::new();
        let (mut plain_off, mut stored_off) = (0u64, 0u64);
        let (mut stored_first, mut stored_last) = (None, 0);
        for (i, &(_, len)) in self.parts.iter().enumerate() {
            let geo = self.geometry(i)?;
            // This part's plaintext is plain_off..plain_end; an empty part holds no byte of
            // any range.
            let plain_end = plain_off.checked_add(len)?;
            if len > 0 && plain_end > first && plain_off <= last {
                let (p0, p1) = (plain_off, plain_end.checked_sub(1)?);
                let a = first.max(p0).checked_sub(p0)?;
                let b = last.min(p1).checked_sub(p0)?;
                let (f0, f1) = (geo.frame_of(a), geo.frame_of(b));
                // Where the read of this part ends: after frame `f1`, or at the end of the
                // part (its trailing frames included) when the range goes on.
                let seg_end = if last > p1 {
                    geo.cipher_len()?
                } else {
                    geo.frame_cipher_end(f1)?
                };
                // The first segment starts at its first frame; later ones at their header.
                let f0_start = geo.frame_cipher_start(f0)?;
                let seg_start = if stored_first.is_none() { f0_start } else { 0 };
                stored_first.get_or_insert(stored_off.checked_add(seg_start)?);
                stored_last = stored_off.checked_add(seg_end)?.checked_sub(1)?;
                segments.push(Segment {
                    geo,
                    window: Window {
                        lead: f0_start.checked_sub(seg_start)?,
                        first: f0,
                        last: f1,
                        skip: a.checked_sub(geo.frame_plain_start(f0))?,
                        take: b.checked_sub(a)?.checked_add(1)?,
                    },
                    stored_len: seg_end.checked_sub(seg_start)?,
                });
            }
            plain_off = plain_end;
            stored_off = stored_off.checked_add(len)?.checked_add(PART_OVERHEAD)?;
        }
        Some(RangePlan {
            stored_first: stored_first?,
            stored_last,
            segments,
        })
    }
}

/// Stored bytes of the last frame of a part (one that passed [`part_follows`]).
fn last_frame_len(geo: &Geometry) -> u64 {
    match geo.layout {
        Layout::Closing => geo.trailer_len(),
        // Every part layout has 1, 512 or 1024 frames, of at most 5 GiB / 512 plaintext
        // bytes for a part of at most 5 GiB: nothing to saturate.
        _ => geo
            .frame_plain_len(geo.frames.saturating_sub(1))
            .saturating_add(FRAME_OVERHEAD),
    }
}

/// Finds a part table by reading part headers one by one, each read together with the
/// last frame of the part before it (and, at the end, the last frame of the last part),
/// which authenticates that part's number, layout and length.
pub struct Walk {
    suite: Suite,
    dek: DataKey,
    stored_len: u64,
    parts_expected: u64,
    /// Version 2 rules: numbered 1..N, the last part (only it) in layout `final`.
    v2: bool,
    /// Stored offset where the parts walked so far end (the next header, or the end): at
    /// most `stored_len`, and the sum of parts that passed [`part_follows`] (at most
    /// 10,000 parts of at most 5 GiB).
    next: u64,
    parts: Vec<Geometry>,
    /// The multipart MD5 sealed in the end part or closing table frame walked, if any.
    etag: Option<[u8; 16]>,
    /// What the caller caches the table under (the object version it belongs to).
    pub version: String,
}

impl Walk {
    /// An object of `stored_len` bytes with `parts_expected` parts (from its `-N` ETag)
    /// under `dek`; `v2`: it has a version 2 envelope.
    pub fn new(
        suite: Suite,
        dek: &DataKey,
        stored_len: u64,
        parts_expected: u64,
        v2: bool,
    ) -> Walk {
        Walk {
            suite,
            dek: DataKey::from_bytes(dek.0),
            stored_len,
            parts_expected,
            v2,
            next: 0,
            parts: Vec::new(),
            etag: None,
            version: String::new(),
        }
    }

    /// The stored bytes (first, last inclusive) where a version 2 object keeps its sealed
    /// part table, if it has one: its last 28,688 bytes are an end part, or end with a
    /// closing part's table frame. Reading them first usually gives the whole table in
    /// one request.
    pub fn end_read(&self) -> Option<(u64, u64)> {
        let first = self.stored_len.checked_sub(PART_OVERHEAD)?;
        let last = self.stored_len.checked_sub(1)?;
        (self.v2 && self.parts_expected >= 1).then_some((first, last))
    }

    /// The sealed bytes of the end part or closing table frame in the bytes read at
    /// [`Walk::end_read`], verified under the object's key as this object's part number
    /// `N` (an end part: `N ≥ 2`): its layout and sealed bytes. `None`: they are not.
    fn open_end(&self, bytes: &[u8]) -> Option<(Layout, Vec<u8>)> {
        if bytes.len() as u64 != PART_OVERHEAD || !self.v2 || self.parts_expected < 1 {
            return None;
        }
        let number = u32::try_from(self.parts_expected).ok()?;
        let end = parse_part_header(bytes.get(..PART_HEADER_LEN as usize)?)
            .filter(|g| g.layout == Layout::End && g.part == number && number >= 2);
        // (An end part is read whole, its header included.)
        let (geo, frame) = match end {
            Some(g) => (g, bytes),
            None => {
                let g = Geometry::closing_table(number);
                let len = usize::try_from(g.cipher_len()?).ok()?;
                (g, bytes.get(bytes.len().checked_sub(len)?..)?)
            }
        };
        let mut d = FrameDecryptor::whole(self.suite, &self.dek, geo);
        let mut sealed = Vec::new();
        d.push(frame, &mut sealed).ok()?;
        d.finish().ok()?;
        Some((geo.layout, sealed))
    }

    /// The table sealed in the bytes read at [`Walk::end_read`], if they are an end part or
    /// a closing table frame of this object that verifies and holds a table consistent
    /// with the stored size and part count (with the object's ETag, if sealed). `None`:
    /// walk instead (the walk is the authority: a sealed table that is there but does not
    /// verify fails the walk too).
    pub fn try_end(&self, bytes: &[u8]) -> Option<PartTable> {
        let (layout, sealed) = self.open_end(bytes)?;
        let t = if layout == Layout::End {
            let before = self.parts_expected.checked_sub(1)?;
            PartTable::from_end(&parse_end_table(&sealed, before).ok()??)
        } else {
            PartTable::from_closing(&parse_end_table(&sealed, self.parts_expected).ok()??)
        };
        let mut t = t.filter(|t| t.stored_len() == self.stored_len)?;
        t.etag = sealed_etag(&sealed);
        Some(t)
    }

    /// The ETag sealed in the bytes read at [`Walk::end_read`] (an end part or closing
    /// table frame of this object that verifies, with a version 2 table): the ETag
    /// clients see and the count of the client's parts. `None`: the object does not seal
    /// it there (it ends with a client's final part, or was completed before ETags were
    /// sealed), or the bytes are not what they should be.
    pub fn end_etag(&self, bytes: &[u8]) -> Option<([u8; 16], u64)> {
        let (layout, sealed) = self.open_end(bytes)?;
        let visible = match layout {
            Layout::End => self.parts_expected.checked_sub(1)?,
            _ => self.parts_expected,
        };
        parse_end_table(&sealed, visible).ok()?;
        Some((sealed_etag(&sealed)?, visible))
    }

    /// The stored bytes (first, last inclusive) to read next: the last frame of the part
    /// before, if any, and the next header, if the object goes on.
    pub fn next_read(&self) -> (u64, u64) {
        let tail = self.parts.last().map_or(0, last_frame_len);
        let head = if self.next < self.stored_len {
            PART_HEADER_LEN
        } else {
            0
        };
        // The last part walked ends at `next` (so its last frame does), and `next` is far
        // below u64::MAX (see the field): nothing saturates but the empty object's `0 - 1`.
        (
            self.next.saturating_sub(tail),
            self.next.saturating_add(head).saturating_sub(1),
        )
    }

    /// Takes the bytes read at [`Walk::next_read`]. `Ok(Some(table))` when the walk
    /// reached the end of the object consistently.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<PartTable>, FormatError> {
        let (first, last) = self.next_read();
        let len = last.checked_sub(first).and_then(|n| n.checked_add(1));
        if len != Some(bytes.len() as u64) {
            return Err(FormatError::Integrity);
        }
        let (frame, header) = self
            .next
            .checked_sub(first)
            .and_then(|tail| usize::try_from(tail).ok())
            .and_then(|tail| bytes.split_at_checked(tail))
            .ok_or(FormatError::Integrity)?;
        if let Some(&last) = self.parts.last() {
            // A closing part's last frame is its table frame.
            let geo = match last.layout {
                Layout::Closing => Geometry::closing_table(last.part),
                _ => last,
            };
            let i = geo.frames.checked_sub(1).ok_or(FormatError::Integrity)?;
            let w = Window {
                lead: 0,
                first: i,
                last: i,
                skip: 0,
                take: geo.frame_plain_len(i),
            };
            let mut d = FrameDecryptor::new(self.suite, &self.dek, geo, w);
            let mut out = Vec::new();
            d.push(frame, &mut out)?;
            d.finish()?;
            if geo.layout == Layout::Table {
                // A closing part's sealed table (it always has one: it is what
                // authenticates the closing part's length) must be every part walked.
                let walked: Vec<u64> = self.parts.iter().map(|g| g.object_len()).collect();
                if parse_end_table(&out, walked.len() as u64)? != Some(walked) {
                    return Err(FormatError::Integrity);
                }
                self.etag = sealed_etag(&out);
            }
            if geo.layout == Layout::End {
                // The end part's sealed table, if any, must be the parts walked.
                let walked: Vec<u64> = self.parts.iter().map(|g| g.object_len()).collect();
                let before = walked.split_last().map_or(&[][..], |(_, before)| before);
                if parse_end_table(&out, before.len() as u64)?.is_some_and(|t| t != before) {
                    return Err(FormatError::Integrity);
                }
                self.etag = sealed_etag(&out);
            }
        }
        if header.is_empty() {
            // The end: every part's last frame verified, in order.
            let final_last = self.parts.last().is_some_and(Geometry::is_last_layout);
            if self.parts.len() as u64 != self.parts_expected || final_last != self.v2 {
                return Err(FormatError::Integrity);
            }
            let parts = std::mem::take(&mut self.parts);
            let closing = parts.last().is_some_and(|g| g.layout == Layout::Closing);
            let mut t = PartTable::new(
                parts.iter().map(|g| (g.part, g.object_len())).collect(),
                final_last,
            )
            .ok_or(FormatError::Integrity)?;
            t.closing = closing;
            t.etag = self.etag;
            return Ok(Some(t));
        }
        let geo = parse_part_header(header).ok_or(FormatError::Integrity)?;
        let previous = self.parts.last().map_or(0, |g| g.part);
        if !part_follows(geo, previous, self.v2)
            || self.parts.last().is_some_and(Geometry::is_last_layout)
            || self.parts.len() as u64 >= self.parts_expected
        {
            return Err(FormatError::Integrity);
        }
        self.next = geo
            .cipher_len()
            .and_then(|n| self.next.checked_add(n))
            .filter(|&next| next <= self.stored_len)
            .ok_or(FormatError::Integrity)?;
        self.parts.push(geo);
        Ok(None)
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
            let n = take_up_to(left, data.len());
            let (now, rest) = data.split_at(n);
            d.push(now, out)?;
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
mod tests;
