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
//!
//! Sizes, offsets and frame indexes here come from stored bytes and backend responses:
//! no arithmetic may wrap or panic and no index may be out of bounds.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

mod envelope;
mod geometry;
pub mod part_table;
mod stream;
mod table;
mod trailer;

pub use envelope::*;
pub use geometry::*;
pub use stream::*;
pub use table::*;
pub use trailer::*;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::crypto::{CryptoError, DataKey, FrameAead, Suite, NONCE_LEN, TAG_LEN, WRAPPED_DEK_LEN};

/// Format version written by this code.
pub const VERSION: u8 = 1;
/// Version of the envelopes written now: 2 seals the plaintext digests (MD5, checksum)
/// inside the envelope's AEAD. Version 1 envelopes (digests in clear) stay readable.
pub const ENVELOPE_VERSION: u8 = 2;
/// Version of the envelopes of single objects written now: 3 is version 2 plus a sealed
/// trailer after the last frame holding the plaintext MD5 (and a trailing checksum).
/// Multipart objects keep version 2; version 2 single objects stay readable.
pub const SINGLE_ENVELOPE_VERSION: u8 = 3;
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
pub const CLOSING_MAX_RUNS: usize = (CLOSING_SEALED_LEN as usize - 25) / 12;
/// Bytes sealed in the end part's one frame: what keeps the end part exactly one part
/// overhead long (so listing sizes stay `C − N · PART_OVERHEAD`).
pub const END_SEALED_LEN: u64 = PART_OVERHEAD - PART_HEADER_LEN - FRAME_OVERHEAD;
/// Runs of equal part lengths the end part's table can hold.
pub const END_MAX_RUNS: usize = (END_SEALED_LEN as usize - 25) / 12;
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
    /// The sealed trailer after the last frame of a version 3 single object (only in
    /// associated data).
    Trailer,
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
            Layout::Trailer => 6,
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

/// Counts off up to `*left` of `avail` bytes: returns how many (`min(*left, avail)`) and
/// takes them from `*left`.
pub(crate) fn take_up_to(left: &mut u64, avail: usize) -> usize {
    let n = usize::try_from(*left).map_or(avail, |l| l.min(avail));
    // n ≤ *left: nothing to saturate.
    *left = left.saturating_sub(n as u64);
    n
}

/// Plaintext size of a stored object from its stored size and ETag, as listings need it:
/// `"...-N"` ETags are multipart objects of N parts, others single objects with a
/// version 2 envelope (the size alone cannot tell a version 3 single object, whose
/// trailer adds [`TRAILER_LEN`]: listings learn those from the ETag cache or the object).
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
mod tests;
