//! The streams: frames encrypted as plaintext arrives, and decrypted (one stream, or the
//! parts of a multipart object) as ciphertext arrives, releasing only verified plaintext.

use std::rc::Rc;

use super::*;
use crate::crypto::Random;

/// Encrypts one stream incrementally. Memory: one frame of plaintext.
pub struct FrameEncryptor {
    aead: FrameAead,
    suite: Suite,
    geo: Geometry,
    index: u64,
    /// Plaintext of the current frame.
    buf: Vec<u8>,
    consumed: u64,
    header_done: bool,
    /// Where the frame nonces come from.
    rng: Rc<dyn Random>,
}

impl FrameEncryptor {
    pub fn new(suite: Suite, dek: &DataKey, geo: Geometry, rng: &Rc<dyn Random>) -> FrameEncryptor {
        FrameEncryptor {
            aead: FrameAead::new(suite, dek),
            suite,
            geo,
            index: 0,
            buf: Vec::with_capacity(
                usize::try_from(geo.frame_len.min(SINGLE_FRAME * 16)).unwrap_or(0),
            ),
            consumed: 0,
            header_done: false,
            rng: Rc::clone(rng),
        }
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// Plaintext bytes accepted so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Adds plaintext and appends every completed frame to `out`, except the final one,
    /// which only `finish` emits (so the stream stays incomplete until the caller has
    /// checked everything it must check about the plaintext).
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        self.consumed = self
            .consumed
            .checked_add(data.len() as u64)
            .filter(|&n| n <= self.geo.plain_len)
            .ok_or(FormatError::Length)?;
        self.emit_header(out);
        loop {
            self.flush_complete(out)?;
            if data.is_empty() {
                return Ok(());
            }
            let want =
                (self.geo.frame_plain_len(self.index) as usize).saturating_sub(self.buf.len());
            if want == 0 {
                return Err(FormatError::Length);
            }
            let (now, rest) = data.split_at(want.min(data.len()));
            self.buf.extend_from_slice(now);
            data = rest;
        }
    }

    /// Emits the final frame. Fails if fewer bytes than the declared length were pushed.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        if self.consumed != self.geo.plain_len {
            return Err(FormatError::Length);
        }
        self.emit_header(out);
        self.flush_complete(out)?;
        if self.index.checked_add(1) == Some(self.geo.frames) {
            self.seal_current(out)?;
        }
        if self.index != self.geo.frames {
            return Err(FormatError::Length);
        }
        Ok(())
    }

    /// Appends the sealed trailer of a version 3 single object, after [`Self::finish`].
    pub fn seal_trailer(&mut self, t: &Trailer, out: &mut Vec<u8>) -> Result<(), FormatError> {
        if self.geo.layout != Layout::Single || self.index != self.geo.frames {
            return Err(FormatError::Length);
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce)?;
        out.extend_from_slice(&seal_trailer(
            &self.aead,
            self.suite,
            self.geo.plain_len,
            t,
            nonce,
        )?);
        Ok(())
    }

    fn emit_header(&mut self, out: &mut Vec<u8>) {
        if !self.header_done {
            self.header_done = true;
            if self.geo.header_len() > 0 {
                out.extend_from_slice(&part_header(&self.geo));
            }
        }
    }

    /// Seals every complete frame that is not the final one.
    fn flush_complete(&mut self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        while self
            .index
            .checked_add(1)
            .is_some_and(|n| n < self.geo.frames)
            && self.buf.len() as u64 == self.geo.frame_plain_len(self.index)
        {
            self.seal_current(out)?;
        }
        Ok(())
    }

    fn seal_current(&mut self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce)?;
        let aad = frame_aad(self.suite, &self.geo, self.index);
        // (A Vec's length is at most isize::MAX: the sum fits.)
        out.reserve(self.buf.len().saturating_add(FRAME_OVERHEAD as usize));
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(&self.buf);
        let tag = self.aead.seal(
            &nonce,
            &aad,
            out.get_mut(start..).ok_or(FormatError::Length)?,
        )?;
        out.extend_from_slice(&tag);
        self.buf.clear();
        self.index = self.index.checked_add(1).ok_or(FormatError::Length)?;
        Ok(())
    }
}

/// Which frames of a stream a [`FrameDecryptor`] reads, and which plaintext it releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Stored bytes in the input before frame `first`.
    pub lead: u64,
    /// First and last (inclusive) frame to verify; bytes after `last` are ignored.
    pub first: u64,
    pub last: u64,
    /// Plaintext bytes of the window to drop at its start, then to release.
    pub skip: u64,
    pub take: u64,
}

/// Decrypts a window of frames of one stream incrementally, releasing only plaintext
/// whose frame tag has verified. Memory: one frame of ciphertext.
pub struct FrameDecryptor {
    aead: FrameAead,
    suite: Suite,
    geo: Geometry,
    /// Stored bytes still to drop before the first frame of the window.
    lead: u64,
    index: u64,
    last: u64,
    /// Plaintext bytes still to drop at the start of the window.
    skip: u64,
    /// Plaintext bytes still to release.
    take: u64,
    buf: Vec<u8>,
}

impl FrameDecryptor {
    /// Decrypts the frames of `geo` that `w` names.
    pub fn new(suite: Suite, dek: &DataKey, geo: Geometry, w: Window) -> Self {
        FrameDecryptor {
            aead: FrameAead::new(suite, dek),
            suite,
            geo,
            lead: w.lead,
            index: w.first,
            last: w.last,
            skip: w.skip,
            take: w.take,
            buf: Vec::new(),
        }
    }

    /// The whole stream, from its first stored byte.
    pub fn whole(suite: Suite, dek: &DataKey, geo: Geometry) -> Self {
        let last = geo.frames.saturating_sub(1);
        let w = Window {
            lead: geo.header_len(),
            first: 0,
            last,
            skip: 0,
            take: geo.plain_len,
        };
        let mut d = Self::new(suite, dek, geo, w);
        if geo.frames == 0 {
            d.index = 1; // nothing to read
        }
        d
    }

    /// True once every frame of the window has been verified.
    pub fn done(&self) -> bool {
        self.index > self.last || (self.geo.frames == 0)
    }

    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        if self.lead > 0 {
            let n = take_up_to(&mut self.lead, data.len());
            data = data.get(n..).unwrap_or(&[]);
        }
        while !data.is_empty() && !self.done() {
            let need = self
                .geo
                .frame_plain_len(self.index)
                .checked_add(FRAME_OVERHEAD)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or(FormatError::Integrity)?;
            let want = need
                .checked_sub(self.buf.len())
                .ok_or(FormatError::Integrity)?;
            let (now, rest) = data.split_at(want.min(data.len()));
            self.buf.extend_from_slice(now);
            data = rest;
            if self.buf.len() == need {
                self.open_current(out)?;
            }
        }
        Ok(())
    }

    /// Fails unless every frame of the window arrived and verified.
    pub fn finish(&self) -> Result<(), FormatError> {
        if self.done() && self.take == 0 {
            Ok(())
        } else {
            Err(FormatError::Integrity)
        }
    }

    fn open_current(&mut self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let aad = frame_aad(self.suite, &self.geo, self.index);
        let (nonce, rest) = self
            .buf
            .split_first_chunk_mut::<NONCE_LEN>()
            .ok_or(FormatError::Integrity)?;
        let (body, tag) = rest
            .split_last_chunk_mut::<TAG_LEN>()
            .ok_or(FormatError::Integrity)?;
        self.aead.open(nonce, &aad, body, tag)?;
        let skip = take_up_to(&mut self.skip, body.len());
        let avail = body.get(skip..).unwrap_or(&[]);
        let n = take_up_to(&mut self.take, avail.len());
        out.extend_from_slice(avail.get(..n).unwrap_or(&[]));
        self.buf.clear();
        self.index = self.index.checked_add(1).ok_or(FormatError::Integrity)?;
        Ok(())
    }
}

/// Decrypts a whole multipart object: its parts one after the other, each introduced by
/// its part header. Part numbers must increase; the number of parts must match the
/// object's part count (from its `-N` ETag). Objects with version 2 envelopes must number
/// their parts 1..N and end with exactly one part in layout `final`. Memory: one frame
/// plus a header.
pub struct PartsDecryptor {
    suite: Suite,
    dek: DataKey,
    header: Vec<u8>,
    /// The current part's decryptor and the stored bytes of it still to come.
    cur: Option<(FrameDecryptor, u64)>,
    last_part: u32,
    parts_seen: u64,
    parts_expected: u64,
    /// Version 2 rules: parts numbered 1, 2, 3, … (a swapped, duplicated or missing part
    /// fails before any of it is released) and the last one, only it, in layout `final`.
    v2: bool,
    /// The last part (layout `final` or `end`) has begun: nothing may follow it.
    ended: bool,
    /// Plaintext lengths of the parts so far (an end part's table must list them).
    lengths: Vec<u64>,
    /// The sealed bytes of the end part or closing table being read (never object
    /// plaintext).
    end: Option<Vec<u8>>,
    /// The table frame still to come after the current (closing) part's frames.
    trailer: Option<Geometry>,
    /// What the response showed as the object's ETag ([`PartsDecryptor::showing`]): the
    /// multipart MD5 sealed in its table (which the table read must hold), or none (the
    /// backend's ETag: the object must seal none). `None`: not checked.
    shown: Option<Option<[u8; 16]>>,
    /// A sealed table holding the MD5 shown was read.
    shown_checked: bool,
}

impl PartsDecryptor {
    /// `v2`: the object has a version 2 envelope (numbered 1..N, ends with a final part;
    /// version 1 objects only need increasing numbers and have no final part).
    pub fn new(suite: Suite, dek: &DataKey, parts_expected: u64, v2: bool) -> Self {
        PartsDecryptor {
            suite,
            dek: DataKey::from_bytes(dek.0),
            header: Vec::with_capacity(PART_HEADER_LEN as usize),
            cur: None,
            last_part: 0,
            parts_seen: 0,
            parts_expected,
            v2,
            ended: false,
            lengths: Vec::new(),
            end: None,
            trailer: None,
            shown: None,
            shown_checked: false,
        }
    }

    /// The response shows `md5` (the multipart MD5 sealed in the object's table, learnt
    /// before the read) as its ETag: the object read must end with a table that holds it.
    /// `None`: it shows the backend's ETag, so the object must seal no MD5 (a provider
    /// that spoilt the read of its end part made the ETag look unsealed).
    pub fn showing(mut self, md5: Option<[u8; 16]>) -> Self {
        self.shown = Some(md5);
        self
    }

    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        while !data.is_empty() {
            match self.cur.as_mut() {
                None => {
                    if self.ended {
                        return Err(FormatError::Integrity); // bytes after the final part
                    }
                    let want = (PART_HEADER_LEN as usize)
                        .checked_sub(self.header.len())
                        .ok_or(FormatError::Integrity)?;
                    let (h, rest) = data.split_at(want.min(data.len()));
                    self.header.extend_from_slice(h);
                    data = rest;
                    if self.header.len() == PART_HEADER_LEN as usize {
                        let geo = parse_part_header(&self.header).ok_or(FormatError::Integrity)?;
                        // The length comes from storage: bound it before any size math.
                        if !part_follows(geo, self.last_part, self.v2)
                            || self.parts_seen >= self.parts_expected
                        {
                            return Err(FormatError::Integrity);
                        }
                        self.last_part = geo.part;
                        self.parts_seen = self
                            .parts_seen
                            .checked_add(1)
                            .ok_or(FormatError::Integrity)?;
                        self.ended = geo.is_last_layout();
                        self.end = (geo.layout == Layout::End).then(Vec::new);
                        self.trailer = (geo.layout == Layout::Closing)
                            .then(|| Geometry::closing_table(geo.part));
                        if geo.layout != Layout::End {
                            self.lengths.push(geo.plain_len);
                        }
                        self.header.clear();
                        let w = Window {
                            lead: 0,
                            first: 0,
                            last: geo.frames.checked_sub(1).ok_or(FormatError::Integrity)?,
                            skip: 0,
                            take: geo.plain_len,
                        };
                        let frames_len = geo.frames_len().ok_or(FormatError::Integrity)?;
                        self.cur = Some((
                            FrameDecryptor::new(self.suite, &self.dek, geo, w),
                            frames_len,
                        ));
                    }
                }
                Some((d, left)) => {
                    let n = take_up_to(left, data.len());
                    let (now, rest) = data.split_at(n);
                    d.push(now, self.end.as_mut().unwrap_or(out))?;
                    data = rest;
                    if *left == 0 {
                        d.finish()?;
                        self.cur = None;
                        if let Some(tg) = self.trailer.take() {
                            // A closing part's table frame follows its frames.
                            let w = Window {
                                lead: 0,
                                first: 0,
                                last: 0,
                                skip: 0,
                                take: tg.plain_len,
                            };
                            self.end = Some(Vec::new());
                            self.cur = Some((
                                FrameDecryptor::new(self.suite, &self.dek, tg, w),
                                tg.cipher_len().ok_or(FormatError::Integrity)?,
                            ));
                            continue;
                        }
                        if let Some(t) = &self.end {
                            // The sealed table, if any, is the parts just read (a closing
                            // part always has one).
                            let parts = self.lengths.len() as u64;
                            match parse_end_table(t, parts)? {
                                Some(l) if l != self.lengths => return Err(FormatError::Integrity),
                                None if t.len() as u64 == CLOSING_SEALED_LEN => {
                                    return Err(FormatError::Integrity)
                                }
                                _ => {}
                            }
                            if let Some(m) = self.shown {
                                if sealed_etag(t) != m {
                                    return Err(FormatError::Integrity);
                                }
                                self.shown_checked = true;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn finish(&self) -> Result<(), FormatError> {
        if self.cur.is_none()
            && self.header.is_empty()
            && self.parts_seen == self.parts_expected
            && (self.ended || !self.v2)
            && (self.shown_checked || !matches!(self.shown, Some(Some(_))))
        {
            Ok(())
        } else {
            Err(FormatError::Integrity)
        }
    }
}

/// What the response path needs of a decryptor (one stream or a whole multipart object).
pub trait Decrypt {
    /// Feeds stored bytes; appends verified plaintext to `out`.
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError>;
    /// Fails unless everything expected arrived and verified.
    fn finish(&self) -> Result<(), FormatError>;
}

impl Decrypt for FrameDecryptor {
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        FrameDecryptor::push(self, data, out)
    }
    fn finish(&self) -> Result<(), FormatError> {
        FrameDecryptor::finish(self)
    }
}

impl Decrypt for PartsDecryptor {
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        PartsDecryptor::push(self, data, out)
    }
    fn finish(&self) -> Result<(), FormatError> {
        PartsDecryptor::finish(self)
    }
}
