//! Object format v1 (specified in docs/FORMAT.md; keep the two in step).
//!
//! * A stream is either a whole single-PUT object (layout `Single`) or one part of a
//!   multipart object (layout `Part`).
//! * A stream is a sequence of frames; frame = nonce (12) ‖ ciphertext ‖ tag (16).
//!   Nonces are random per frame. The associated data binds each frame to the format
//!   version, the suite, the layout, the part number, its index, whether it is the final
//!   frame and the stream's plaintext length.
//! * `Single`: frames of 64 KiB plaintext, the last one shorter; no frames at all for an
//!   empty object. `Part`: a 16-byte part header, then exactly 1024 frames of
//!   ceil(len/1024) bytes (the trailing ones shorter or empty), so the per-part overhead
//!   is a constant and a multipart object's plaintext size follows from its ciphertext
//!   size and its part count.
//! * The envelope (suite, layout, key id, wrapped data key, lengths, client-visible
//!   checksums) travels in the `x-amz-meta-s3crypt` header and carries a tag of its own.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::crypto::{
    self, CryptoError, DataKey, FrameAead, Suite, NONCE_LEN, TAG_LEN, WRAPPED_DEK_LEN,
};

/// Format version written by this code.
pub const VERSION: u8 = 1;
/// Version of the envelopes written now: 2 seals the plaintext digests (MD5, checksum)
/// inside the envelope's AEAD. Version 1 envelopes (digests in clear) stay readable.
pub const ENVELOPE_VERSION: u8 = 2;
/// Length of the sealed block of a version 2 envelope (fixed, so its size tells nothing).
pub const SECRETS_LEN: usize = 128;
/// The (lowercase) header that carries the envelope.
pub const ENVELOPE_HEADER: &str = "x-amz-meta-s3crypt";
/// Plaintext bytes per frame of a single-PUT object.
pub const SINGLE_FRAME: u64 = 64 * 1024;
/// Frames per part of a multipart object.
pub const PART_FRAMES: u64 = 1024;
/// Bytes a frame adds to its plaintext.
pub const FRAME_OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;
/// Length of the header in front of every part of a multipart object.
pub const PART_HEADER_LEN: u64 = 16;
/// Bytes every part of a multipart object adds to its plaintext.
pub const PART_OVERHEAD: u64 = PART_HEADER_LEN + PART_FRAMES * FRAME_OVERHEAD;
/// Magic at the start of a part header.
pub const PART_MAGIC: &[u8; 4] = b"s3cP";
/// Magic at the start of the header of a multipart object's final part.
pub const FINAL_MAGIC: &[u8; 4] = b"s3cF";
/// Magic at the start of the end part the filter adds to close a multipart object.
pub const END_MAGIC: &[u8; 4] = b"s3cE";
/// Magic at the start of a closing part: a short last part the filter rewrote during
/// CompleteMultipartUpload with the object's part table sealed after its frames.
pub const CLOSING_MAGIC: &[u8; 4] = b"s3cC";
/// Frames of plaintext in a closing part (the other half of the frame overhead of a part
/// holds its sealed table).
pub const CLOSING_FRAMES: u64 = PART_FRAMES / 2;
/// Bytes sealed in a closing part's table frame: what keeps a closing part exactly one
/// part overhead longer than its plaintext, like every other part.
pub const CLOSING_SEALED_LEN: u64 =
    PART_OVERHEAD - PART_HEADER_LEN - (CLOSING_FRAMES + 1) * FRAME_OVERHEAD;
/// Runs of equal part lengths a closing part's table can hold.
pub const CLOSING_MAX_RUNS: usize = (CLOSING_SEALED_LEN as usize - 9) / 12;
/// Bytes sealed in the end part's one frame: what keeps the end part exactly one part
/// overhead long (so listing sizes stay `C − N · PART_OVERHEAD`).
pub const END_SEALED_LEN: u64 = PART_OVERHEAD - PART_HEADER_LEN - FRAME_OVERHEAD;
/// Runs of equal part lengths the end part's table can hold.
pub const END_MAX_RUNS: usize = (END_SEALED_LEN as usize - 9) / 12;
/// S3's smallest part that may be followed by another (5 MiB): a part stored shorter than
/// this can only be the last part of an object.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's highest part number.
pub const MAX_PART_NUMBER: u32 = 10_000;
/// Largest single-PUT object and largest part S3 accepts (5 GiB).
pub const MAX_SINGLE: u64 = 5 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Single,
    /// A part of a multipart object that is not its last (for envelopes: multipart).
    Part,
    /// The last part of a multipart object with a version 2 envelope.
    Final,
    /// The end part the filter adds after a last part that could be followed: no object
    /// plaintext, one frame sealing the object's part table (version 2 envelopes).
    End,
    /// A last part shorter than 5 MiB rewritten by the filter during Complete: 512
    /// frames of plaintext, then one frame (layout `Table`) sealing the part table.
    Closing,
    /// The table frame at the end of a closing part (only in associated data).
    Table,
}

impl Layout {
    fn code(self) -> u8 {
        match self {
            Layout::Single => 0,
            Layout::Part => 1,
            Layout::Final => 2,
            Layout::End => 3,
            Layout::Closing => 4,
            Layout::Table => 5,
        }
    }
}

/// Whether a version 2 upload writes part `number` of `plain_len` bytes in layout
/// `final`: exactly the parts that can only ever be an object's last, those stored
/// shorter than [`MIN_PART_SIZE`] (S3 refuses them anywhere else) and part 10,000.
pub fn part_is_final(number: u32, plain_len: u64) -> bool {
    number == MAX_PART_NUMBER || plain_len.saturating_add(PART_OVERHEAD) < MIN_PART_SIZE
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// A frame, part header or the envelope failed authentication.
    Integrity,
    /// More or fewer bytes than the stream's declared length.
    Length,
    /// The envelope could not be parsed or names something unknown.
    Envelope,
    /// The data key could not be unwrapped.
    Unwrap,
    /// No randomness available.
    Random,
}

impl From<CryptoError> for FormatError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Authentication => FormatError::Integrity,
            CryptoError::Unwrap => FormatError::Unwrap,
            CryptoError::Random => FormatError::Random,
        }
    }
}

/// Sizes and frame boundaries of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub layout: Layout,
    /// Part number (1..=10000) for `Part`, 0 for `Single`.
    pub part: u32,
    pub plain_len: u64,
    /// Plaintext bytes in a full frame.
    pub frame_len: u64,
    pub frames: u64,
}

impl Geometry {
    pub fn single(plain_len: u64) -> Geometry {
        Geometry {
            layout: Layout::Single,
            part: 0,
            plain_len,
            frame_len: SINGLE_FRAME,
            frames: plain_len.div_ceil(SINGLE_FRAME),
        }
    }

    pub fn part(part: u32, plain_len: u64) -> Geometry {
        Geometry::part_in(Layout::Part, part, plain_len)
    }

    /// A part in layout `part` or `final` (same sizes; the layout is in every frame's AAD).
    pub fn part_in(layout: Layout, part: u32, plain_len: u64) -> Geometry {
        let frame_len = plain_len.div_ceil(PART_FRAMES).max(1);
        Geometry {
            layout,
            part,
            plain_len,
            frame_len,
            frames: PART_FRAMES,
        }
    }

    /// The end part numbered `part`: one frame of [`END_SEALED_LEN`] sealed bytes.
    pub fn end(part: u32) -> Geometry {
        Geometry {
            layout: Layout::End,
            part,
            plain_len: END_SEALED_LEN,
            frame_len: END_SEALED_LEN,
            frames: 1,
        }
    }

    /// A closing part numbered `part` of `plain_len` bytes: its frames of plaintext (the
    /// table frame after them has the geometry [`Geometry::closing_table`]).
    pub fn closing(part: u32, plain_len: u64) -> Geometry {
        Geometry {
            layout: Layout::Closing,
            part,
            plain_len,
            frame_len: plain_len.div_ceil(CLOSING_FRAMES).max(1),
            frames: CLOSING_FRAMES,
        }
    }

    /// The table frame of the closing part numbered `part`: [`CLOSING_SEALED_LEN`] sealed
    /// bytes. Its associated data names the part but not the part's length, which a
    /// reader learns from the table (so it can open the frame knowing only the part count).
    pub fn closing_table(part: u32) -> Geometry {
        Geometry {
            layout: Layout::Table,
            part,
            plain_len: CLOSING_SEALED_LEN,
            frame_len: CLOSING_SEALED_LEN,
            frames: 1,
        }
    }

    /// Plaintext of the object in this stream (none in an end part).
    pub fn object_len(&self) -> u64 {
        match self.layout {
            Layout::End | Layout::Table => 0,
            _ => self.plain_len,
        }
    }

    /// Whether nothing may follow this part (the last part of a version 2 object).
    pub fn is_last_layout(&self) -> bool {
        matches!(self.layout, Layout::Final | Layout::End | Layout::Closing)
    }

    /// Bytes of the part header in front of the frames.
    pub fn header_len(&self) -> u64 {
        match self.layout {
            Layout::Single | Layout::Table => 0,
            Layout::Part | Layout::Final | Layout::End | Layout::Closing => PART_HEADER_LEN,
        }
    }

    /// Stored length of the stream (a closing part's table frame included).
    pub fn cipher_len(&self) -> u64 {
        self.header_len() + self.plain_len + self.frames * FRAME_OVERHEAD + self.trailer_len()
    }

    /// Stored bytes after the frames of this geometry: a closing part's table frame.
    pub fn trailer_len(&self) -> u64 {
        match self.layout {
            Layout::Closing => CLOSING_SEALED_LEN + FRAME_OVERHEAD,
            _ => 0,
        }
    }

    /// The single-layout geometry whose stored length is `cipher_len`, if any.
    pub fn single_from_cipher(cipher_len: u64) -> Option<Geometry> {
        let frames = cipher_len.div_ceil(SINGLE_FRAME + FRAME_OVERHEAD);
        let plain = cipher_len.checked_sub(frames.checked_mul(FRAME_OVERHEAD)?)?;
        let g = Geometry::single(plain);
        (g.cipher_len() == cipher_len).then_some(g)
    }

    /// The part-layout geometry whose stored length is `cipher_len`, if any.
    pub fn part_from_cipher(part: u32, cipher_len: u64) -> Option<Geometry> {
        Some(Geometry::part(part, cipher_len.checked_sub(PART_OVERHEAD)?))
    }

    /// Plaintext offset at which frame `i` starts.
    pub fn frame_plain_start(&self, i: u64) -> u64 {
        i.saturating_mul(self.frame_len).min(self.plain_len)
    }

    /// Plaintext length of frame `i`.
    pub fn frame_plain_len(&self, i: u64) -> u64 {
        (self.plain_len - self.frame_plain_start(i)).min(self.frame_len)
    }

    /// Offset in the stored stream at which frame `i` starts.
    pub fn frame_cipher_start(&self, i: u64) -> u64 {
        self.header_len() + self.frame_plain_start(i) + i.saturating_mul(FRAME_OVERHEAD)
    }

    /// Index of the frame holding plaintext offset `off` (`off < plain_len`).
    pub fn frame_of(&self, off: u64) -> u64 {
        off / self.frame_len
    }
}

/// Associated data of frame `index` of a stream (31 bytes).
pub fn frame_aad(suite: Suite, geo: &Geometry, index: u64) -> [u8; 31] {
    let mut a = [0u8; 31];
    a[..7].copy_from_slice(b"s3crypt");
    a[7] = VERSION;
    a[8] = suite.id();
    a[9] = geo.layout.code();
    a[10..14].copy_from_slice(&geo.part.to_be_bytes());
    a[14..22].copy_from_slice(&index.to_be_bytes());
    a[22] = u8::from(index + 1 == geo.frames);
    a[23..31].copy_from_slice(&geo.plain_len.to_be_bytes());
    a
}

/// The 16-byte header in front of a part: magic (by layout), part number, plaintext length.
pub fn part_header(geo: &Geometry) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(match geo.layout {
        Layout::Final => FINAL_MAGIC,
        Layout::End => END_MAGIC,
        Layout::Closing => CLOSING_MAGIC,
        _ => PART_MAGIC,
    });
    h[4..8].copy_from_slice(&geo.part.to_be_bytes());
    h[8..16].copy_from_slice(&geo.plain_len.to_be_bytes());
    h
}

/// Parses a part header into the geometry it announces (not authenticated by itself:
/// every frame's AAD repeats layout, part number and length).
pub fn parse_part_header(h: &[u8]) -> Option<Geometry> {
    let layout = match h.get(..4)? {
        m if m == PART_MAGIC => Layout::Part,
        m if m == FINAL_MAGIC => Layout::Final,
        m if m == END_MAGIC => Layout::End,
        m if m == CLOSING_MAGIC => Layout::Closing,
        _ => return None,
    };
    let part = u32::from_be_bytes(h.get(4..8)?.try_into().ok()?);
    let len = u64::from_be_bytes(h.get(8..16)?.try_into().ok()?);
    match layout {
        Layout::End => (len == END_SEALED_LEN).then(|| Geometry::end(part)),
        Layout::Closing => Some(Geometry::closing(part, len)),
        _ => Some(Geometry::part_in(layout, part, len)),
    }
}

/// The end part numbered `number`, sealing the plaintext lengths of parts
/// `1 … number − 1` (`lengths`) as runs of equal lengths; more runs than fit are sealed as
/// "no table" (readers then walk the parts). `PART_OVERHEAD` bytes.
pub fn seal_end(
    suite: Suite,
    dek: &DataKey,
    number: u32,
    lengths: &[u64],
) -> Result<Vec<u8>, FormatError> {
    let table = end_table(lengths, END_SEALED_LEN);
    let mut out = Vec::with_capacity(PART_OVERHEAD as usize);
    let mut e = FrameEncryptor::new(suite, dek, Geometry::end(number));
    e.push(&table, &mut out)?;
    e.finish(&mut out)?;
    Ok(out)
}

/// The closing part numbered `number` (the object's last) holding `plain`, sealing the
/// plaintext lengths of all parts `1 … number` (`lengths`, this one's last); more runs
/// than fit are sealed as "no table". `plain.len() + PART_OVERHEAD` bytes.
pub fn seal_closing(
    suite: Suite,
    dek: &DataKey,
    number: u32,
    plain: &[u8],
    lengths: &[u64],
) -> Result<Vec<u8>, FormatError> {
    if lengths.last() != Some(&(plain.len() as u64)) || lengths.len() as u64 != u64::from(number) {
        return Err(FormatError::Length);
    }
    let table = end_table(lengths, CLOSING_SEALED_LEN);
    if table.get(5..9) == Some(&[0u8; 4][..]) {
        // More runs than fit: a closing part must hold its table (it authenticates the
        // part's length), so the object is not closed this way.
        return Err(FormatError::Length);
    }
    let geo = Geometry::closing(number, plain.len() as u64);
    let mut out = Vec::with_capacity(usize::try_from(geo.cipher_len()).unwrap_or(0));
    let mut e = FrameEncryptor::new(suite, dek, geo);
    e.push(plain, &mut out)?;
    e.finish(&mut out)?;
    let mut t = FrameEncryptor::new(suite, dek, Geometry::closing_table(number));
    t.push(&table, &mut out)?;
    t.finish(&mut out)?;
    Ok(out)
}

/// The sealed bytes of an end part or closing table frame (`size` bytes): `u8 1 ‖ u32be
/// parts ‖ u32be runs ‖ runs × (u32be count ‖ u64be length) ‖ zeros` (`runs = 0`: no
/// table, when more runs than fit would be needed).
pub fn end_table(lengths: &[u64], size: u64) -> Vec<u8> {
    let mut runs: Vec<(u32, u64)> = Vec::new();
    for &l in lengths {
        match runs.last_mut() {
            Some((n, len)) if *len == l => *n += 1,
            _ => runs.push((1, l)),
        }
    }
    if runs.len() > max_runs(size) {
        runs.clear();
    }
    let mut t = Vec::with_capacity(size as usize);
    t.push(1);
    t.extend_from_slice(&(lengths.len() as u32).to_be_bytes());
    t.extend_from_slice(&(runs.len() as u32).to_be_bytes());
    for (n, l) in runs {
        t.extend_from_slice(&n.to_be_bytes());
        t.extend_from_slice(&l.to_be_bytes());
    }
    t.resize(size as usize, 0);
    t
}

/// Runs a sealed table of `size` bytes holds.
fn max_runs(size: u64) -> usize {
    (size as usize).saturating_sub(9) / 12
}

/// Reads the (verified) sealed bytes of an end part or a closing table frame: the lengths
/// of the `parts` parts it lists, `Ok(None)` if it holds no table; an error if it is not a
/// table of exactly that many parts of at most 5 GiB.
pub fn parse_end_table(t: &[u8], parts: u64) -> Result<Option<Vec<u64>>, FormatError> {
    let bad = FormatError::Integrity;
    let u32_at = |i: usize| -> Result<u32, FormatError> {
        Ok(u32::from_be_bytes(
            t.get(i..i + 4).ok_or(bad)?.try_into().map_err(|_| bad)?,
        ))
    };
    let size = t.len() as u64;
    if (size != END_SEALED_LEN && size != CLOSING_SEALED_LEN) || t.first() != Some(&1) {
        return Err(bad);
    }
    if u64::from(u32_at(1)?) != parts {
        return Err(bad);
    }
    let runs = u32_at(5)? as usize;
    if runs > max_runs(size) {
        return Err(bad);
    }
    let end = 9 + runs * 12;
    if t.get(end..).ok_or(bad)?.iter().any(|&b| b != 0) {
        return Err(bad);
    }
    if runs == 0 {
        return Ok(None);
    }
    let mut lengths = Vec::new();
    for r in 0..runs {
        let at = 9 + r * 12;
        let n = u32_at(at)?;
        let l = u64::from_be_bytes(
            t.get(at + 4..at + 12)
                .ok_or(bad)?
                .try_into()
                .map_err(|_| bad)?,
        );
        if n == 0 || l > MAX_SINGLE || lengths.len() as u64 + u64::from(n) > parts {
            return Err(bad);
        }
        lengths.resize(lengths.len() + n as usize, l);
    }
    if lengths.len() as u64 != parts {
        return Err(bad);
    }
    Ok(Some(lengths))
}

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
    /// Test vectors only: nonce of frame i = this with i added to its last 8 bytes.
    #[cfg(test)]
    fixed_nonce: Option<[u8; NONCE_LEN]>,
}

impl FrameEncryptor {
    pub fn new(suite: Suite, dek: &DataKey, geo: Geometry) -> FrameEncryptor {
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
            #[cfg(test)]
            fixed_nonce: None,
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
        let room = self.geo.plain_len - self.consumed;
        if data.len() as u64 > room {
            return Err(FormatError::Length);
        }
        self.consumed += data.len() as u64;
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
        if self.index + 1 == self.geo.frames {
            self.seal_current(out)?;
        }
        if self.index != self.geo.frames {
            return Err(FormatError::Length);
        }
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
        while self.index + 1 < self.geo.frames
            && self.buf.len() as u64 == self.geo.frame_plain_len(self.index)
        {
            self.seal_current(out)?;
        }
        Ok(())
    }

    fn seal_current(&mut self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let mut nonce = [0u8; NONCE_LEN];
        crypto::random(&mut nonce)?;
        #[cfg(test)]
        if let Some(base) = self.fixed_nonce {
            nonce = base;
            let tail = u64::from_be_bytes(base[4..].try_into().unwrap_or_default())
                .wrapping_add(self.index);
            nonce[4..].copy_from_slice(&tail.to_be_bytes());
        }
        let aad = frame_aad(self.suite, &self.geo, self.index);
        out.reserve(self.buf.len() + FRAME_OVERHEAD as usize);
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
        self.index += 1;
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
            let n = self.lead.min(data.len() as u64) as usize;
            self.lead -= n as u64;
            data = data.get(n..).unwrap_or(&[]);
        }
        while !data.is_empty() && !self.done() {
            let need = (self.geo.frame_plain_len(self.index) + FRAME_OVERHEAD) as usize;
            let want = need - self.buf.len();
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
        let nonce: [u8; NONCE_LEN] = self
            .buf
            .get(..NONCE_LEN)
            .and_then(|n| n.try_into().ok())
            .ok_or(FormatError::Integrity)?;
        let tag_at = self.buf.len() - TAG_LEN;
        let tag: [u8; TAG_LEN] = self
            .buf
            .get(tag_at..)
            .and_then(|t| t.try_into().ok())
            .ok_or(FormatError::Integrity)?;
        let body = self
            .buf
            .get_mut(NONCE_LEN..tag_at)
            .ok_or(FormatError::Integrity)?;
        self.aead.open(&nonce, &aad, body, &tag)?;
        let skip = self.skip.min(body.len() as u64) as usize;
        self.skip -= skip as u64;
        let avail = body.get(skip..).unwrap_or(&[]);
        let n = self.take.min(avail.len() as u64) as usize;
        out.extend_from_slice(avail.get(..n).unwrap_or(&[]));
        self.take -= n as u64;
        self.buf.clear();
        self.index += 1;
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
        }
    }

    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        while !data.is_empty() {
            match self.cur.as_mut() {
                None => {
                    if self.ended {
                        return Err(FormatError::Integrity); // bytes after the final part
                    }
                    let want = PART_HEADER_LEN as usize - self.header.len();
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
                        self.parts_seen += 1;
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
                            last: geo.frames - 1,
                            skip: 0,
                            take: geo.plain_len,
                        };
                        let frames_len = geo.cipher_len() - PART_HEADER_LEN - geo.trailer_len();
                        self.cur = Some((
                            FrameDecryptor::new(self.suite, &self.dek, geo, w),
                            frames_len,
                        ));
                    }
                }
                Some((d, left)) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    let (now, rest) = data.split_at(n);
                    d.push(now, self.end.as_mut().unwrap_or(out))?;
                    *left -= n as u64;
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
                                tg.cipher_len(),
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
        {
            Ok(())
        } else {
            Err(FormatError::Integrity)
        }
    }
}

/// Whether a part header announcing `geo` may follow part number `previous` (0 before
/// the first part): numbers increase (by exactly one for version 2 objects), lengths are
/// within S3's, and layout `final` exists only in version 2 objects. (That nothing
/// follows a final part is the caller's to check.)
pub fn part_follows(geo: Geometry, previous: u32, v2: bool) -> bool {
    let number_ok = if v2 {
        previous.checked_add(1) == Some(geo.part)
    } else {
        geo.part > previous
    };
    number_ok
        && geo.part <= MAX_PART_NUMBER
        && geo.plain_len <= MAX_SINGLE
        && (v2 || geo.layout == Layout::Part)
        && (geo.layout != Layout::End || previous > 0)
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

/// Client-visible checksum recorded at upload: algorithm header name and base64 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChecksum {
    pub header: String,
    pub value: String,
}

/// The envelope stored with every encrypted object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub suite: Suite,
    pub layout: Layout,
    pub key_id: String,
    pub wrapped_dek: [u8; WRAPPED_DEK_LEN],
    /// Plaintext length (single objects only).
    pub plain_len: Option<u64>,
    /// MD5 of the plaintext, the client-visible ETag, when known before upload.
    pub md5: Option<[u8; 16]>,
    /// The client's full-object checksum, when known before upload.
    pub checksum: Option<StoredChecksum>,
    /// Envelope version: 1 (digests in clear, read only) or [`ENVELOPE_VERSION`].
    pub version: u8,
    /// Version 1: nonce ‖ tag of an empty message whose AAD is the fields above.
    /// Version 2: nonce ‖ the sealed secrets block (MD5, checksum; [`SECRETS_LEN`]
    /// bytes) ‖ tag, whose AAD is the clear fields. `md5` and `checksum` are only known
    /// after [`Envelope::open`].
    pub tag: Vec<u8>,
}

/// Key ids are short and safe to log and to put in a header.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Envelope {
    /// A new envelope for a data key wrapped under `key_id`; `seal` fills in the tag.
    pub fn new(
        suite: Suite,
        layout: Layout,
        key_id: &str,
        wrapped_dek: [u8; WRAPPED_DEK_LEN],
        plain_len: Option<u64>,
    ) -> Envelope {
        Envelope {
            suite,
            layout,
            key_id: key_id.to_string(),
            wrapped_dek,
            plain_len,
            md5: None,
            checksum: None,
            version: ENVELOPE_VERSION,
            tag: Vec::new(),
        }
    }

    fn aad(&self) -> Vec<u8> {
        let mut a = Vec::with_capacity(128);
        a.extend_from_slice(b"s3crypt-envelope");
        a.push(self.version);
        a.push(self.suite.id());
        a.push(self.layout.code());
        a.push(self.key_id.len() as u8);
        a.extend_from_slice(self.key_id.as_bytes());
        a.extend_from_slice(&self.wrapped_dek);
        match self.plain_len {
            Some(l) => {
                a.push(1);
                a.extend_from_slice(&l.to_be_bytes());
            }
            None => a.push(0),
        }
        if self.version != 1 {
            // Version 2: the digests are sealed, not authenticated in clear.
            return a;
        }
        match &self.md5 {
            Some(m) => {
                a.push(1);
                a.extend_from_slice(m);
            }
            None => a.push(0),
        }
        match &self.checksum {
            Some(c) => {
                a.push(1);
                for s in [&c.header, &c.value] {
                    a.extend_from_slice(&(s.len() as u16).to_be_bytes());
                    a.extend_from_slice(s.as_bytes());
                }
            }
            None => a.push(0),
        }
        a
    }

    /// Computes the envelope tag under the data key.
    pub fn seal(&mut self, dek: &DataKey) -> Result<(), FormatError> {
        let mut nonce = [0u8; NONCE_LEN];
        crypto::random(&mut nonce)?;
        self.seal_with_nonce(dek, nonce)
    }

    pub(crate) fn seal_with_nonce(
        &mut self,
        dek: &DataKey,
        nonce: [u8; NONCE_LEN],
    ) -> Result<(), FormatError> {
        let aead = FrameAead::new(self.suite, dek);
        let mut body = if self.version == 1 {
            Vec::new()
        } else {
            self.secrets()?.to_vec()
        };
        let tag = aead.seal(&nonce, &self.aad(), &mut body)?;
        self.tag = [&nonce[..], &body, &tag[..]].concat();
        Ok(())
    }

    /// The version 2 secrets block: `u8 flags (1 md5, 2 checksum) ‖ md5 (16, zeros if
    /// absent) ‖ u8 len ‖ checksum header ‖ u8 len ‖ checksum value ‖ zeros` to
    /// [`SECRETS_LEN`] bytes.
    fn secrets(&self) -> Result<[u8; SECRETS_LEN], FormatError> {
        let mut b = [0u8; SECRETS_LEN];
        let mut v = Vec::with_capacity(SECRETS_LEN);
        let flags = u8::from(self.md5.is_some()) | (u8::from(self.checksum.is_some()) << 1);
        v.push(flags);
        v.extend_from_slice(&self.md5.unwrap_or([0; 16]));
        let (h, val) = self
            .checksum
            .as_ref()
            .map_or(("", ""), |c| (c.header.as_str(), c.value.as_str()));
        for x in [h, val] {
            v.push(u8::try_from(x.len()).map_err(|_| FormatError::Envelope)?);
            v.extend_from_slice(x.as_bytes());
        }
        b.get_mut(..v.len())
            .ok_or(FormatError::Envelope)?
            .copy_from_slice(&v);
        Ok(b)
    }

    /// Reads a decrypted secrets block (strictly: unused bytes must be zero).
    fn read_secrets(&mut self, b: &[u8]) -> Result<(), FormatError> {
        let bad = FormatError::Envelope;
        let (&flags, rest) = b.split_first().ok_or(bad)?;
        if flags > 3 {
            return Err(bad);
        }
        let md5: [u8; 16] = rest.get(..16).and_then(|m| m.try_into().ok()).ok_or(bad)?;
        let mut pos = 17usize;
        let mut field = |b: &[u8]| -> Result<String, FormatError> {
            let len = usize::from(*b.get(pos).ok_or(FormatError::Envelope)?);
            let start = pos.checked_add(1).ok_or(FormatError::Envelope)?;
            let end = start.checked_add(len).ok_or(FormatError::Envelope)?;
            let s = b.get(start..end).ok_or(FormatError::Envelope)?;
            pos = end;
            String::from_utf8(s.to_vec()).map_err(|_| FormatError::Envelope)
        };
        let header = field(b)?;
        let value = field(b)?;
        let padding_zero = b.get(pos..).is_some_and(|p| p.iter().all(|&x| x == 0));
        let has_md5 = flags & 1 != 0;
        let has_sum = flags & 2 != 0;
        if !padding_zero
            || (!has_md5 && md5 != [0; 16])
            || (has_sum == header.is_empty())
            || (!has_sum && !value.is_empty())
            || (has_sum && !header.starts_with("x-amz-checksum-"))
        {
            return Err(bad);
        }
        self.md5 = has_md5.then_some(md5);
        self.checksum = has_sum.then_some(StoredChecksum { header, value });
        Ok(())
    }

    /// Checks the envelope under the (unwrapped) data key; for version 2 also decrypts
    /// the sealed digests into `md5` and `checksum`.
    pub fn open(&mut self, dek: &DataKey) -> Result<(), FormatError> {
        let body_len = if self.version == 1 { 0 } else { SECRETS_LEN };
        if self.tag.len() != NONCE_LEN + body_len + TAG_LEN {
            return Err(FormatError::Envelope);
        }
        let (nonce, rest) = self.tag.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(body_len);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| FormatError::Envelope)?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| FormatError::Envelope)?;
        let mut body = body.to_vec();
        if self.version != 1 {
            // The secrets are not known before this: authenticate without them.
            self.md5 = None;
            self.checksum = None;
        }
        FrameAead::new(self.suite, dek).open(&nonce, &self.aad(), &mut body, &tag)?;
        if self.version != 1 {
            self.read_secrets(&body)?;
        }
        Ok(())
    }

    /// [`Envelope::open`] without keeping what it decrypts.
    pub fn verify(&self, dek: &DataKey) -> Result<(), FormatError> {
        self.clone().open(dek)
    }

    /// The header value: version 2 `v=2;s=1;t=s;k=<id>;w=<b64>[;l=<len>];e=<b64>`;
    /// version 1 `v=1;s=1;t=s;k=<id>;w=<b64>[;l=<len>][;m=<hex>][;c=<name>:<b64>];a=<b64>`.
    pub fn encode(&self) -> String {
        let mut s = format!(
            "v={};s={};t={};k={};w={}",
            self.version,
            self.suite.id(),
            match self.layout {
                Layout::Single => "s",
                Layout::Part | Layout::Final | Layout::End | Layout::Closing | Layout::Table => {
                    "m"
                }
            },
            self.key_id,
            B64.encode(self.wrapped_dek)
        );
        if let Some(l) = self.plain_len {
            s.push_str(&format!(";l={l}"));
        }
        if self.version != 1 {
            s.push_str(&format!(";e={}", B64.encode(&self.tag)));
            return s;
        }
        if let Some(m) = &self.md5 {
            s.push_str(&format!(";m={}", hex::encode(m)));
        }
        if let Some(c) = &self.checksum {
            s.push_str(&format!(";c={}:{}", c.header, c.value));
        }
        s.push_str(&format!(";a={}", B64.encode(&self.tag)));
        s
    }

    /// Parses a header value. Unknown versions, suites, layouts and fields are rejected
    /// (fail closed: an object we cannot fully interpret is never served).
    pub fn decode(v: &str) -> Result<Envelope, FormatError> {
        let mut version = None;
        let mut suite = None;
        let mut layout = None;
        let mut key_id = None;
        let mut wrapped = None;
        let mut plain_len = None;
        let mut md5 = None;
        let mut checksum = None;
        let mut tag = None;
        let mut sealed = false;
        for field in v.trim().split(';') {
            let (k, val) = field.split_once('=').ok_or(FormatError::Envelope)?;
            let dup = match k {
                "v" => version
                    .replace(val.parse::<u8>().map_err(|_| FormatError::Envelope)?)
                    .is_some(),
                "s" => suite
                    .replace(
                        val.parse::<u8>()
                            .ok()
                            .and_then(Suite::from_id)
                            .ok_or(FormatError::Envelope)?,
                    )
                    .is_some(),
                "t" => layout
                    .replace(match val {
                        "s" => Layout::Single,
                        "m" => Layout::Part,
                        _ => return Err(FormatError::Envelope),
                    })
                    .is_some(),
                "k" => {
                    if !valid_key_id(val) {
                        return Err(FormatError::Envelope);
                    }
                    key_id.replace(val.to_string()).is_some()
                }
                "w" => {
                    let b: [u8; WRAPPED_DEK_LEN] = B64
                        .decode(val)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .ok_or(FormatError::Envelope)?;
                    wrapped.replace(b).is_some()
                }
                "l" => plain_len
                    .replace(val.parse::<u64>().map_err(|_| FormatError::Envelope)?)
                    .is_some(),
                "m" => {
                    let b: [u8; 16] = hex::decode(val)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .ok_or(FormatError::Envelope)?;
                    md5.replace(b).is_some()
                }
                "c" => {
                    let (h, cv) = val.split_once(':').ok_or(FormatError::Envelope)?;
                    if !h.starts_with("x-amz-checksum-") || h.len() > 64 || cv.len() > 128 {
                        return Err(FormatError::Envelope);
                    }
                    checksum
                        .replace(StoredChecksum {
                            header: h.to_string(),
                            value: cv.to_string(),
                        })
                        .is_some()
                }
                "a" | "e" => {
                    let want = if k == "a" {
                        NONCE_LEN + TAG_LEN
                    } else {
                        NONCE_LEN + SECRETS_LEN + TAG_LEN
                    };
                    let b = B64
                        .decode(val)
                        .ok()
                        .filter(|b| b.len() == want)
                        .ok_or(FormatError::Envelope)?;
                    sealed = k == "e";
                    tag.replace(b).is_some()
                }
                _ => return Err(FormatError::Envelope),
            };
            if dup {
                return Err(FormatError::Envelope);
            }
        }
        // Version 1 carries its digests in clear and an `a` tag; version 2 only the
        // sealed `e` block.
        let version = version.ok_or(FormatError::Envelope)?;
        let ok = match version {
            1 => !sealed,
            ENVELOPE_VERSION => sealed && md5.is_none() && checksum.is_none(),
            _ => false,
        };
        if !ok {
            return Err(FormatError::Envelope);
        }
        let layout = layout.ok_or(FormatError::Envelope)?;
        if (layout == Layout::Single) != plain_len.is_some() {
            return Err(FormatError::Envelope);
        }
        Ok(Envelope {
            suite: suite.ok_or(FormatError::Envelope)?,
            layout,
            key_id: key_id.ok_or(FormatError::Envelope)?,
            wrapped_dek: wrapped.ok_or(FormatError::Envelope)?,
            plain_len,
            md5,
            checksum,
            version,
            tag: tag.ok_or(FormatError::Envelope)?,
        })
    }
}

/// Plaintext size of a stored object from its stored size and ETag, as listings need it:
/// `"...-N"` ETags are multipart objects of N parts, others single objects.
/// `None` when the size cannot be a ciphertext size (then it is not an s3crypt object).
pub fn plain_size_from_listing(cipher_len: u64, etag: &str) -> Option<u64> {
    let e = etag.trim_matches('"');
    match e.rsplit_once('-') {
        Some((_, n)) => {
            let parts: u64 = n.parse().ok()?;
            cipher_len.checked_sub(parts.checked_mul(PART_OVERHEAD)?)
        }
        None => Geometry::single_from_cipher(cipher_len).map(|g| g.plain_len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dek() -> DataKey {
        DataKey::from_bytes([0x11; 32])
    }

    fn encrypt(geo: Geometry, pt: &[u8], chunk: usize) -> Vec<u8> {
        encrypt_with(Suite::Aes256Gcm, geo, pt, chunk)
    }

    fn encrypt_with(suite: Suite, geo: Geometry, pt: &[u8], chunk: usize) -> Vec<u8> {
        let mut e = FrameEncryptor::new(suite, &dek(), geo);
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
            assert_eq!(Geometry::single(p).cipher_len(), c, "p={p}");
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
            assert_eq!(g.cipher_len(), p + PART_OVERHEAD);
            assert_eq!(Geometry::part_from_cipher(3, g.cipher_len()).unwrap(), g);
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
            assert_eq!(ct.len() as u64, g.cipher_len());
            assert_eq!(decrypt_whole(g, &ct, 1000).unwrap(), pt);
            let gp = Geometry::part(7, n as u64);
            let ct = encrypt(gp, &pt, 777);
            assert_eq!(ct.len() as u64, gp.cipher_len());
            assert_eq!(parse_part_header(&ct), Some(gp));
            assert_eq!(decrypt_whole(gp, &ct, 5000).unwrap(), pt);
        }
    }

    #[test]
    fn final_frame_withheld_until_finish() {
        let g = Geometry::single(10);
        let mut e = FrameEncryptor::new(Suite::Aes256Gcm, &dek(), g);
        let mut out = Vec::new();
        e.push(&[1; 10], &mut out).unwrap();
        assert!(out.is_empty());
        e.finish(&mut out).unwrap();
        assert_eq!(out.len(), 38);
    }

    #[test]
    fn length_violations() {
        let g = Geometry::single(10);
        let mut e = FrameEncryptor::new(Suite::Aes256Gcm, &dek(), g);
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
        let mut e = FrameEncryptor::new(Suite::Aes256Gcm, &DataKey::from_bytes([0x22; 32]), g);
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
        let part =
            |n: u32, len: usize| encrypt(Geometry::part(n, len as u64), &vec![n as u8; len], 77);
        let (p1, p2) = (part(1, 1000), part(2, 700));
        let end = seal_end(Suite::Aes256Gcm, &dek(), 3, &[1000, 700]).unwrap();
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
        let wrong = seal_end(Suite::Aes256Gcm, &dek(), 3, &[1000, 701]).unwrap();
        assert!(run(&[&p1[..], &p2, &wrong].concat(), 3).0.is_err());
        // Runs: equal lengths share one; too many runs, no table.
        let t = end_table(&[8, 8, 8, 3], END_SEALED_LEN);
        assert_eq!(&t[..9], &[1, 0, 0, 0, 4, 0, 0, 0, 2]);
        assert_eq!(parse_end_table(&t, 4), Ok(Some(vec![8, 8, 8, 3])));
        assert!(parse_end_table(&t, 3).is_err());
        let many: Vec<u64> = (1..=END_MAX_RUNS as u64 + 1).collect();
        assert_eq!(
            parse_end_table(&end_table(&many, END_SEALED_LEN), many.len() as u64),
            Ok(None)
        );
        let few: Vec<u64> = (1..=END_MAX_RUNS as u64).collect();
        assert_eq!(
            parse_end_table(&end_table(&few, END_SEALED_LEN), few.len() as u64),
            Ok(Some(few))
        );
        let mut junk = t.clone();
        junk[100] = 1;
        assert!(parse_end_table(&junk, 4).is_err());
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
        let parts: Vec<(u32, Vec<u8>)> =
            vec![(1, vec![1u8; 70_000]), (2, vec![2u8; 3]), (5, vec![])];
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
        let p1 = Geometry::part(1, 70_000).cipher_len() as usize;
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
        env.seal(&d).unwrap();
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
        plain.seal(&d).unwrap();
        assert_eq!(plain.encode().len(), s.len());
        // A v2 envelope cannot carry digests in clear, nor a v1 tag; v1 not a v2 block.
        for bad in [
            "",
            "v=2;s=1;t=s;k=a;w=AA;l=1;a=AA",
            &s.replacen(";e=", ";m=abababababababababababababababab;e=", 1),
            &s.replacen("v=2", "v=1", 1),
            &s.replacen("v=2", "v=3", 1),
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
        env.seal(&d).unwrap();
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
            assert_eq!(ct.len() as u64, g.cipher_len());
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
            assert_eq!(ct.len() as u64, gp.cipher_len());
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
        env.seal(&d).unwrap();
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
        let (header, stored) = vectors_of_version(2);
        // The suite-2 example printed in docs/FORMAT.md ("Test vectors").
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md"))
                .unwrap();
        assert!(doc.contains(&format!("\nenvelope  {header}\n")), "{header}");
        let line = doc.lines().find(|l| l.starts_with("stored    ")).unwrap();
        assert_eq!(line["stored".len()..].replace(' ', ""), stored);
    }

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
        if version >= 2 {
            // The last part of a version 2 object, and the empty end marker (FORMAT.md).
            cases.push((
                "final-3-of-1000",
                Geometry::part_in(Layout::Final, 3, 1000),
                (0..1000u64).map(|i| (i % 7) as u8).collect(),
            ));
            cases.push((
                "end-4-after-3-parts",
                Geometry::end(4),
                end_table(&[5 << 20, 5 << 20, 6 << 20], END_SEALED_LEN),
            ));
            // A closing part: 512 frames, then its table frame (nonce: frame 512's).
            cases.push((
                "closing-3-of-1000",
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
            let mut e = FrameEncryptor::new(suite, &dek, *geo);
            e.fixed_nonce = Some(nonce_base);
            let mut ct = Vec::new();
            e.push(pt, &mut ct).unwrap();
            e.finish(&mut ct).unwrap();
            assert_eq!(decrypt_whole_with(suite, &dek, *geo, &ct), *pt);
            if geo.layout == Layout::Closing {
                let mut t = FrameEncryptor::new(suite, &dek, Geometry::closing_table(geo.part));
                let mut n = nonce_base;
                let tail = u64::from_be_bytes(n[4..].try_into().unwrap()) + CLOSING_FRAMES;
                n[4..].copy_from_slice(&tail.to_be_bytes());
                t.fixed_nonce = Some(n);
                let table = end_table(&[5 << 20, 5 << 20, 1000], CLOSING_SEALED_LEN);
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
                if version >= 2 {
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
            prop_assert_eq!(Geometry::single_from_cipher(g.cipher_len()), Some(g));
            prop_assert_eq!(plain_size_from_listing(g.cipher_len(), "\"0123\""), Some(p));
        }

        #[test]
        fn prop_frames_partition(p in 0u64..(1u64 << 34), part in 1u32..=10000) {
            for g in [Geometry::single(p), Geometry::part(part, p)] {
                let mut off = 0;
                for i in [0, 1, g.frames / 2, g.frames.saturating_sub(1)] {
                    if i >= g.frames { continue; }
                    prop_assert!(g.frame_plain_len(i) <= g.frame_len);
                    prop_assert_eq!(g.frame_cipher_start(i), g.header_len() + g.frame_plain_start(i) + i * FRAME_OVERHEAD);
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
}
