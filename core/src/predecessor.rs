//! Reading (never writing) objects stored by the Python predecessor, s3proxy-python
//! 2026.2.x, as `../shared/PREDECESSOR-FORMAT.md` describes them and docs/FORMAT.md
//! ("Objects of the predecessor") restates:
//!
//! * KEK = SHA-256 of the configured key string; the data key is wrapped with RFC 5649
//!   (40 bytes, as s3crypt's own).
//! * A segment is `nonce (12) ‖ AES-256-GCM ciphertext ‖ tag (16)` with no associated data.
//! * Layout `single`: the body is one segment, the wrapped key is in `x-amz-meta-isec`.
//! * Layout `multipart`: the object is its backend parts in order, each one segment; the
//!   segment sizes and the wrapped key are in the manifest `.s3proxy-internal/{key}.meta`
//!   (base64 of gzip of JSON).
//!
//! What this format protects is less than s3crypt's: every segment is authenticated, but
//! nothing binds a segment to its position, its object or the manifest (the manifest
//! itself is not authenticated). The readers here check everything that can be checked
//! (each tag, each segment's size against the manifest, the total size, that the manifest
//! names exactly the bytes stored) and serve nothing unverified; migrating such objects to
//! s3crypt's format (`s3crypt import-s3proxy --reencrypt`) is what closes the rest.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::io::Read as _;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::crypto::{
    unwrap_dek, DataKey, FrameAead, Suite, KEY_LEN, NONCE_LEN, TAG_LEN, WRAPPED_DEK_LEN,
};
use crate::format::{Decrypt, FormatError};

/// Where the predecessor keeps its manifests and upload records in every bucket.
pub const INTERNAL_PREFIX: &str = ".s3proxy-internal/";
/// The predecessor's default name of the metadata field holding the wrapped key
/// (`x-amz-meta-isec`).
pub const DEFAULT_META: &str = "isec";
/// Bytes a segment adds to its plaintext.
pub const SEGMENT_OVERHEAD: u64 = (NONCE_LEN + TAG_LEN) as u64;
/// Largest decompressed manifest the predecessor wrote (and this reader accepts).
pub const MAX_MANIFEST_JSON: u64 = 10 * 1024 * 1024;
/// Largest manifest body (base64 of gzip) this reader accepts: gzip of at most
/// [`MAX_MANIFEST_JSON`] bytes of JSON is far smaller.
pub const MAX_MANIFEST_BODY: usize = 16 * 1024 * 1024;
/// Most segments an object of the predecessor can have (10,000 client parts of up to 20
/// backend parts each).
pub const MAX_SEGMENTS: usize = 200_000;

/// The key-encryption key of a predecessor key string (`S3PROXY_ENCRYPT_KEY`).
pub fn kek_from_key_string(key: &str) -> [u8; KEY_LEN] {
    Sha256::digest(key.as_bytes()).into()
}

/// The manifest object of `key`.
pub fn manifest_key(key: &str) -> String {
    format!("{INTERNAL_PREFIX}{key}.meta")
}

/// Whether a key is one of the predecessor's internal objects (hidden from listings and
/// never served while read compatibility is on).
pub fn is_internal(key: &str) -> bool {
    key.starts_with(INTERNAL_PREFIX)
}

/// Unwraps a wrapped key as the predecessor stores it (standard padded base64 of 40 bytes).
pub fn unwrap_b64(kek: &[u8; KEY_LEN], b64: &str) -> Result<DataKey, FormatError> {
    let w = B64.decode(b64.trim()).map_err(|_| FormatError::Envelope)?;
    if w.len() != WRAPPED_DEK_LEN {
        return Err(FormatError::Envelope);
    }
    Ok(unwrap_dek(kek, &w)?)
}

/// One segment of an object: its plaintext and stored sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub plain_len: u64,
    pub cipher_len: u64,
}

/// A parsed and checked manifest: the wrapped key and the object's segments in the
/// order they are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub wrapped_dek: String,
    pub plain_len: u64,
    pub segments: Vec<Segment>,
    /// Parts as the manifest lists them (client parts, or backend parts of a streaming
    /// PUT): part number and plaintext size, for `inspect`.
    pub parts: Vec<(u64, u64)>,
}

#[derive(Deserialize)]
struct RawManifest {
    v: u64,
    pc: u64,
    ts: u64,
    dek: String,
    parts: Vec<RawPart>,
}

#[derive(Deserialize)]
struct RawPart {
    pn: u64,
    ps: u64,
    cs: u64,
    #[serde(default)]
    ip: Vec<RawInner>,
}

#[derive(Deserialize)]
struct RawInner {
    ipn: u64,
    ps: u64,
    cs: u64,
}

fn segment(plain_len: u64, cipher_len: u64) -> Result<Segment, FormatError> {
    if plain_len.checked_add(SEGMENT_OVERHEAD) != Some(cipher_len) {
        return Err(FormatError::Envelope);
    }
    Ok(Segment {
        plain_len,
        cipher_len,
    })
}

impl Manifest {
    /// Parses a manifest body: ASCII base64 of gzip of JSON, decompressed to at most
    /// [`MAX_MANIFEST_JSON`] bytes. Parts are ordered by `pn`, a part's backend parts by
    /// `ipn`; numbers must not repeat; every size must add up.
    pub fn decode(body: &[u8]) -> Result<Manifest, FormatError> {
        let bad = FormatError::Envelope;
        if body.len() > MAX_MANIFEST_BODY {
            return Err(bad);
        }
        let text = std::str::from_utf8(body).map_err(|_| bad)?;
        let gz = B64.decode(text.trim()).map_err(|_| bad)?;
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .take(MAX_MANIFEST_JSON.saturating_add(1))
            .read_to_end(&mut json)
            .map_err(|_| bad)?;
        if json.len() as u64 > MAX_MANIFEST_JSON {
            return Err(bad);
        }
        let raw: RawManifest = serde_json::from_slice(&json).map_err(|_| bad)?;
        if raw.v != 1 || raw.pc != raw.parts.len() as u64 || raw.parts.is_empty() {
            return Err(bad);
        }
        let mut parts = raw.parts;
        parts.sort_by_key(|p| p.pn);
        if parts
            .windows(2)
            .any(|w| w.first().map(|p| p.pn) == w.get(1).map(|p| p.pn))
        {
            return Err(bad);
        }
        let mut segments = Vec::new();
        let mut total = 0u64;
        let mut listed = Vec::with_capacity(parts.len());
        for mut p in parts {
            listed.push((p.pn, p.ps));
            if p.ip.is_empty() {
                segments.push(segment(p.ps, p.cs)?);
            } else {
                p.ip.sort_by_key(|i| i.ipn);
                if p.ip
                    .windows(2)
                    .any(|w| w.first().map(|i| i.ipn) == w.get(1).map(|i| i.ipn))
                {
                    return Err(bad);
                }
                let (mut ps, mut cs) = (0u64, 0u64);
                for i in &p.ip {
                    segments.push(segment(i.ps, i.cs)?);
                    ps = ps.checked_add(i.ps).ok_or(bad)?;
                    cs = cs.checked_add(i.cs).ok_or(bad)?;
                }
                if ps != p.ps || cs != p.cs {
                    return Err(bad);
                }
            }
            if segments.len() > MAX_SEGMENTS {
                return Err(bad);
            }
            total = total.checked_add(p.ps).ok_or(bad)?;
        }
        if total != raw.ts {
            return Err(bad);
        }
        Ok(Manifest {
            wrapped_dek: raw.dek,
            plain_len: raw.ts,
            segments,
            parts: listed,
        })
    }

    /// The stored size of the object the manifest describes.
    pub fn stored_len(&self) -> Option<u64> {
        self.segments
            .iter()
            .try_fold(0u64, |a, s| a.checked_add(s.cipher_len))
    }
}

/// The segments of a single-layout object of `stored` bytes (one segment).
pub fn single_segments(stored: u64) -> Result<Vec<Segment>, FormatError> {
    let plain = stored
        .checked_sub(SEGMENT_OVERHEAD)
        .ok_or(FormatError::Length)?;
    Ok(vec![segment(plain, stored)?])
}

/// Decrypts a predecessor object, segment after segment: each segment is held whole
/// until its tag verified (memory: the largest segment, at most `max_segment` stored
/// bytes, else the read fails before anything of that segment is held).
pub struct SegmentsDecryptor {
    aead: FrameAead,
    segments: Vec<Segment>,
    next: usize,
    buf: Vec<u8>,
    max_segment: u64,
    /// Plaintext to drop before releasing, then to release (a range's window).
    skip: u64,
    take: u64,
    /// The MD5 the whole plaintext must have (checked before the last segment goes out).
    md5: Option<(md5::Md5, [u8; 16])>,
}

impl SegmentsDecryptor {
    pub fn new(dek: &DataKey, segments: Vec<Segment>, max_segment: u64) -> SegmentsDecryptor {
        SegmentsDecryptor {
            aead: FrameAead::new(Suite::Aes256Gcm, dek),
            segments,
            next: 0,
            buf: Vec::new(),
            max_segment,
            skip: 0,
            take: u64::MAX,
            md5: None,
        }
    }

    /// Releases only `take` plaintext bytes after the first `skip` (a range read of the
    /// segments that hold it).
    pub fn window(mut self, skip: u64, take: u64) -> Self {
        self.skip = skip;
        self.take = take;
        self
    }

    /// The whole plaintext must have this MD5 (the single layout's `client-etag`): the last
    /// segment is released only if it does.
    pub fn expect_md5(mut self, md5: [u8; 16]) -> Self {
        self.md5 = Some((<md5::Md5 as md5::Digest>::new(), md5));
        self
    }

    /// The largest segment's stored size.
    pub fn largest(segments: &[Segment]) -> u64 {
        segments.iter().map(|s| s.cipher_len).max().unwrap_or(0)
    }

    fn open(&mut self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        // Decrypted in place: the segment is held once.
        let mut seg = std::mem::take(&mut self.buf);
        let len = seg.len();
        if len < SEGMENT_OVERHEAD as usize {
            return Err(FormatError::Length);
        }
        let (head, rest) = seg
            .split_at_mut_checked(NONCE_LEN)
            .ok_or(FormatError::Length)?;
        let (body, tag) = rest
            .split_at_mut_checked(len.saturating_sub(SEGMENT_OVERHEAD as usize))
            .ok_or(FormatError::Length)?;
        let nonce: [u8; NONCE_LEN] = (&*head).try_into().map_err(|_| FormatError::Length)?;
        let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| FormatError::Length)?;
        self.aead.open(&nonce, &[], body, &tag)?;
        let body: &[u8] = body;
        self.next = self.next.checked_add(1).ok_or(FormatError::Length)?;
        if let Some((m, _)) = self.md5.as_mut() {
            md5::Digest::update(m, body);
        }
        if self.next == self.segments.len() {
            if let Some((m, want)) = self.md5.take() {
                if <[u8; 16]>::from(md5::Digest::finalize(m)) != want {
                    return Err(FormatError::Integrity);
                }
            }
        }
        let s = crate::format::take_up_to(&mut self.skip, body.len());
        let rest = body.get(s..).unwrap_or(&[]);
        let n = crate::format::take_up_to(&mut self.take, rest.len());
        out.extend_from_slice(rest.get(..n).unwrap_or(&[]));
        Ok(())
    }
}

impl Decrypt for SegmentsDecryptor {
    fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        while !data.is_empty() {
            let seg = *self.segments.get(self.next).ok_or(FormatError::Length)?;
            if seg.cipher_len > self.max_segment {
                return Err(FormatError::Length);
            }
            let want = seg.cipher_len.saturating_sub(self.buf.len() as u64);
            let n = usize::try_from(want).map_or(data.len(), |w| w.min(data.len()));
            let (now, rest) = data.split_at_checked(n).ok_or(FormatError::Length)?;
            self.buf.extend_from_slice(now);
            data = rest;
            if self.buf.len() as u64 == seg.cipher_len {
                self.open(out)?;
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), FormatError> {
        if self.next == self.segments.len() && self.buf.is_empty() {
            Ok(())
        } else {
            Err(FormatError::Length)
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::crypto::{new_dek, wrap_dek, SeededRandom};
    use std::io::Write as _;

    fn manifest(json: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(json.as_bytes()).unwrap();
        B64.encode(e.finish().unwrap()).into_bytes()
    }

    fn seal(dek: &DataKey, nonce: [u8; 12], plain: &[u8]) -> Vec<u8> {
        let mut b = plain.to_vec();
        let tag = FrameAead::new(Suite::Aes256Gcm, dek)
            .seal(&nonce, &[], &mut b)
            .unwrap();
        [&nonce[..], &b, &tag].concat()
    }

    #[test]
    fn kek_is_sha256_of_the_key_string() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hex::encode(kek_from_key_string("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn manifest_orders_parts_and_checks_sizes() {
        let m = Manifest::decode(&manifest(
            r#"{"v":1,"pc":2,"ts":15,"dek":"x","parts":[
              {"pn":2,"ps":5,"cs":33,"etag":"e","md5":"m","ip":[]},
              {"pn":1,"ps":10,"cs":66,"ip":[{"ipn":2,"ps":6,"cs":34},{"ipn":1,"ps":4,"cs":32}]}]}"#,
        ))
        .unwrap();
        let s: Vec<u64> = m.segments.iter().map(|s| s.plain_len).collect();
        assert_eq!(s, [4, 6, 5]);
        assert_eq!(m.stored_len(), Some(15 + 3 * 28));
        for bad in [
            // total does not add up
            r#"{"v":1,"pc":1,"ts":6,"dek":"x","parts":[{"pn":1,"ps":5,"cs":33}]}"#,
            // a segment whose stored size is not its plaintext + 28
            r#"{"v":1,"pc":1,"ts":5,"dek":"x","parts":[{"pn":1,"ps":5,"cs":34}]}"#,
            // part count
            r#"{"v":1,"pc":2,"ts":5,"dek":"x","parts":[{"pn":1,"ps":5,"cs":33}]}"#,
            // repeated part number
            r#"{"v":1,"pc":2,"ts":10,"dek":"x","parts":[{"pn":1,"ps":5,"cs":33},{"pn":1,"ps":5,"cs":33}]}"#,
            // inner parts that do not add up to their part
            r#"{"v":1,"pc":1,"ts":5,"dek":"x","parts":[{"pn":1,"ps":5,"cs":33,"ip":[{"ipn":1,"ps":4,"cs":32}]}]}"#,
            // unknown version, sizes that overflow
            r#"{"v":2,"pc":1,"ts":5,"dek":"x","parts":[{"pn":1,"ps":5,"cs":33}]}"#,
            r#"{"v":1,"pc":1,"ts":5,"dek":"x","parts":[{"pn":1,"ps":18446744073709551615,"cs":27}]}"#,
        ] {
            assert_eq!(
                Manifest::decode(&manifest(bad)),
                Err(FormatError::Envelope),
                "{bad}"
            );
        }
        assert!(Manifest::decode(b"not base64!").is_err());
        assert!(Manifest::decode(B64.encode(b"not gzip").as_bytes()).is_err());
    }

    #[test]
    fn manifest_over_ten_mib_decompressed_is_refused() {
        let pad = " ".repeat(MAX_MANIFEST_JSON as usize);
        let body = manifest(&format!(
            r#"{{"v":1,"pc":1,"ts":5,"dek":"x","parts":[{{"pn":1,"ps":5,"cs":33}}]}}{pad}"#
        ));
        assert!(body.len() < 1 << 20, "gzip of spaces is small");
        assert_eq!(Manifest::decode(&body), Err(FormatError::Envelope));
    }

    #[test]
    fn segments_decrypt_only_when_every_tag_verifies() {
        let rng = SeededRandom::new(7);
        let kek = kek_from_key_string("predecessor key");
        let dek = new_dek(&rng).unwrap();
        let wrapped = B64.encode(wrap_dek(&kek, &dek).unwrap());
        assert_eq!(wrapped.len(), 56);
        let dek = unwrap_b64(&kek, &wrapped).unwrap();
        let a = seal(&dek, [1; 12], b"hello ");
        let b = seal(&dek, [2; 12], b"world");
        let stored = [a.clone(), b.clone()].concat();
        let segs = vec![segment(6, 34).unwrap(), segment(5, 33).unwrap()];
        for step in [1, 7, 34, 1000] {
            let mut d = SegmentsDecryptor::new(&dek, segs.clone(), 1 << 20);
            let mut out = Vec::new();
            for c in stored.chunks(step) {
                d.push(c, &mut out).unwrap();
            }
            d.finish().unwrap();
            assert_eq!(out, b"hello world");
        }
        // A flipped byte in the second segment: only the first one is released.
        let mut bad = stored.clone();
        *bad.last_mut().unwrap() ^= 1;
        let mut d = SegmentsDecryptor::new(&dek, segs.clone(), 1 << 20);
        let mut out = Vec::new();
        assert_eq!(d.push(&bad, &mut out), Err(FormatError::Integrity));
        assert_eq!(out, b"hello ");
        // Missing bytes, extra bytes, a segment too large to hold, the wrong key.
        let mut d = SegmentsDecryptor::new(&dek, segs.clone(), 1 << 20);
        d.push(&stored[..60], &mut Vec::new()).unwrap();
        assert_eq!(d.finish(), Err(FormatError::Length));
        let mut d = SegmentsDecryptor::new(&dek, segs.clone(), 1 << 20);
        let more = [stored.clone(), vec![0]].concat();
        assert_eq!(d.push(&more, &mut Vec::new()), Err(FormatError::Length));
        let mut d = SegmentsDecryptor::new(&dek, segs.clone(), 33);
        assert_eq!(d.push(&stored, &mut Vec::new()), Err(FormatError::Length));
        // A window releases only its bytes; an MD5 that does not match holds the last
        // segment back.
        let mut out = Vec::new();
        let mut d = SegmentsDecryptor::new(&dek, segs.clone(), 1 << 20).window(3, 5);
        d.push(&stored, &mut out).unwrap();
        d.finish().unwrap();
        assert_eq!(out, b"lo wo");
        let good: [u8; 16] =
            md5::Digest::finalize(<md5::Md5 as md5::Digest>::new_with_prefix(b"hello world"))
                .into();
        let mut out = Vec::new();
        let mut d = SegmentsDecryptor::new(&dek, segs.clone(), 1 << 20).expect_md5(good);
        d.push(&stored, &mut out).unwrap();
        assert_eq!(out, b"hello world");
        let mut out = Vec::new();
        let mut d = SegmentsDecryptor::new(&dek, segs.clone(), 1 << 20).expect_md5([0; 16]);
        assert_eq!(d.push(&stored, &mut out), Err(FormatError::Integrity));
        assert_eq!(out, b"hello ");
        let other = kek_from_key_string("another key");
        assert_eq!(
            unwrap_b64(&other, &wrapped).err(),
            Some(FormatError::Unwrap)
        );
        assert_eq!(single_segments(27), Err(FormatError::Length));
        assert_eq!(single_segments(28).unwrap()[0].plain_len, 0);
    }
}
