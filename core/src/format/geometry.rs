//! Where every byte of a stream is: the geometry of a stream (layout, part, lengths,
//! frames), the associated data of each frame, the part header.

use super::*;

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
            Layout::End | Layout::Table | Layout::Trailer => 0,
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
            Layout::Single | Layout::Table | Layout::Trailer => 0,
            Layout::Part | Layout::Final | Layout::End | Layout::Closing => PART_HEADER_LEN,
        }
    }

    /// Stored length of the stream (a closing part's table frame included); `None` if it
    /// does not fit in a u64 (no stored stream has such a geometry).
    pub fn cipher_len(&self) -> Option<u64> {
        self.header_len()
            .checked_add(self.frames_len()?)?
            .checked_add(self.trailer_len())
    }

    /// Stored length of the frames (plaintext and per-frame overhead); `None` if it does
    /// not fit in a u64.
    pub fn frames_len(&self) -> Option<u64> {
        self.plain_len
            .checked_add(self.frames.checked_mul(FRAME_OVERHEAD)?)
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
        (g.cipher_len() == Some(cipher_len)).then_some(g)
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
        // frame_plain_start(i) ≤ plain_len (it is capped there): nothing to saturate.
        self.plain_len
            .saturating_sub(self.frame_plain_start(i))
            .min(self.frame_len)
    }

    /// Offset in the stored stream at which frame `i` starts (`None`: past any u64).
    pub fn frame_cipher_start(&self, i: u64) -> Option<u64> {
        self.header_len()
            .checked_add(self.frame_plain_start(i))?
            .checked_add(i.checked_mul(FRAME_OVERHEAD)?)
    }

    /// Offset in the stored stream just after frame `i` (`None`: past any u64).
    pub fn frame_cipher_end(&self, i: u64) -> Option<u64> {
        self.frame_cipher_start(i)?
            .checked_add(self.frame_plain_len(i))?
            .checked_add(FRAME_OVERHEAD)
    }

    /// Index of the frame holding plaintext offset `off` (`off < plain_len`).
    pub fn frame_of(&self, off: u64) -> u64 {
        // Every constructor makes frame_len at least 1, so the division is defined.
        off.checked_div(self.frame_len).unwrap_or(0)
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
    a[22] = u8::from(index.checked_add(1) == Some(geo.frames));
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
