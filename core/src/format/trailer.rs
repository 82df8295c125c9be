//! The sealed trailer of a version 3 single object: one frame after the last frame of the
//! stream, sealing what is only known once the whole body went through (the plaintext MD5,
//! which is the object's ETag, and a checksum the client sent as an aws-chunked trailer).

use super::*;

/// Bytes sealed in a trailer (the secrets-block encoding of the envelope).
pub const TRAILER_SEALED_LEN: usize = SECRETS_LEN;
/// Stored length of a trailer: nonce ‖ sealed block ‖ tag.
pub const TRAILER_LEN: u64 = (NONCE_LEN + TRAILER_SEALED_LEN + TAG_LEN) as u64;

/// What a trailer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    /// MD5 of the whole plaintext.
    pub md5: [u8; 16],
    /// A full-object checksum of the plaintext the client sent (header or trailer).
    pub checksum: Option<StoredChecksum>,
}

/// MD5 of the empty string: the ETag of an empty object (which has no frames and no
/// trailer).
pub const EMPTY_MD5: [u8; 16] = [
    0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e,
];

/// Whether a single object with an envelope of version `version` ends with a trailer.
pub fn has_trailer(version: u8, plain_len: u64) -> bool {
    version >= SINGLE_ENVELOPE_VERSION && plain_len > 0
}

/// Stored length of a single object of `plain_len` bytes with an envelope of `version`:
/// `P + 28 · ceil(P / F)`, plus [`TRAILER_LEN`] for a non-empty version 3 object.
pub fn single_stored_len(version: u8, plain_len: u64) -> Option<u64> {
    let c = Geometry::single(plain_len).cipher_len()?;
    if has_trailer(version, plain_len) {
        c.checked_add(TRAILER_LEN)
    } else {
        Some(c)
    }
}

/// The frames' geometry of a single object stored in `stored` bytes with an envelope of
/// `version`, if that is a valid stored length.
pub fn single_from_stored(version: u8, stored: u64) -> Option<Geometry> {
    if version < SINGLE_ENVELOPE_VERSION || stored == 0 {
        return Geometry::single_from_cipher(stored);
    }
    Geometry::single_from_cipher(stored.checked_sub(TRAILER_LEN)?).filter(|g| g.plain_len > 0)
}

/// Associated data of the trailer of a single stream of `plain_len` bytes: that of frame
/// `frames` (just after the last one) with layout 6, final flag 1 and the stream's length.
fn trailer_aad(suite: Suite, plain_len: u64) -> [u8; 31] {
    let frames = Geometry::single(plain_len).frames;
    let geo = Geometry {
        layout: Layout::Trailer,
        part: 0,
        plain_len,
        frame_len: SINGLE_FRAME,
        frames: frames.saturating_add(1),
    };
    frame_aad(suite, &geo, frames)
}

/// Seals the trailer of a single stream of `plain_len` bytes.
pub fn seal_trailer(
    aead: &FrameAead,
    suite: Suite,
    plain_len: u64,
    t: &Trailer,
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, FormatError> {
    let mut body = encode_secrets(Some(t.md5), t.checksum.as_ref())?.to_vec();
    let tag = aead.seal(&nonce, &trailer_aad(suite, plain_len), &mut body)?;
    Ok([&nonce[..], &body, &tag[..]].concat())
}

/// Opens the trailer (the last [`TRAILER_LEN`] stored bytes) of a single stream of
/// `plain_len` bytes under its data key: fails unless it verifies and holds an MD5.
pub fn open_trailer(
    suite: Suite,
    dek: &DataKey,
    plain_len: u64,
    stored: &[u8],
) -> Result<Trailer, FormatError> {
    if stored.len() as u64 != TRAILER_LEN {
        return Err(FormatError::Integrity);
    }
    let (nonce, rest) = stored
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(FormatError::Integrity)?;
    let (body, tag) = rest
        .split_last_chunk::<TAG_LEN>()
        .ok_or(FormatError::Integrity)?;
    let mut body = body.to_vec();
    FrameAead::new(suite, dek).open(nonce, &trailer_aad(suite, plain_len), &mut body, tag)?;
    match decode_secrets(&body).map_err(|_| FormatError::Integrity)? {
        (Some(md5), checksum) => Ok(Trailer { md5, checksum }),
        (None, _) => Err(FormatError::Integrity),
    }
}

/// A whole read of a version 3 single object: the frames through `inner`, then the
/// trailer, which must verify and (if `md5` is given) hold that MD5, or the read fails
/// (its last promised byte is held back until then).
pub struct TrailerCheck<D: Decrypt> {
    inner: D,
    suite: Suite,
    dek: DataKey,
    plain_len: u64,
    md5: Option<[u8; 16]>,
    /// Input bytes still to skip before the trailer, then the trailer's bytes.
    before: u64,
    trailer: Vec<u8>,
}

impl<D: Decrypt> TrailerCheck<D> {
    /// `trailer_at`: offset of the trailer in the bytes that will be pushed.
    pub fn new(
        inner: D,
        suite: Suite,
        dek: &DataKey,
        plain_len: u64,
        md5: Option<[u8; 16]>,
        trailer_at: u64,
    ) -> Self {
        TrailerCheck {
            inner,
            suite,
            dek: DataKey::from_bytes(dek.0),
            plain_len,
            md5,
            before: trailer_at,
            trailer: Vec::with_capacity(TRAILER_LEN as usize),
        }
    }
}

impl<D: Decrypt> Decrypt for TrailerCheck<D> {
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        self.inner.push(data, out)?;
        let skip = take_up_to(&mut self.before, data.len());
        let rest = data.get(skip..).unwrap_or(&[]);
        let room = (TRAILER_LEN as usize).saturating_sub(self.trailer.len());
        if rest.len() > room {
            return Err(FormatError::Length); // bytes after the trailer
        }
        self.trailer.extend_from_slice(rest);
        Ok(())
    }

    fn finish(&self) -> Result<(), FormatError> {
        self.inner.finish()?;
        let t = open_trailer(self.suite, &self.dek, self.plain_len, &self.trailer)?;
        match self.md5 {
            Some(m) if m != t.md5 => Err(FormatError::Integrity),
            _ => Ok(()),
        }
    }
}
