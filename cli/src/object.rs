//! What a stored object is (s3crypt single or multipart, the predecessor's single or
//! multipart, or plaintext) and its verified plaintext, streamed with the filter's rules:
//! only verified bytes are released, and the last byte not before everything verified.

use std::io::{Read, Write};

use md5::{Digest, Md5};
use s3crypt_core::crypto::DataKey;
use s3crypt_core::format::{
    has_trailer, open_trailer, single_from_stored, Decrypt, Envelope, FormatError, FrameDecryptor,
    Layout, PartsDecryptor, ENVELOPE_HEADER, TRAILER_LEN,
};
use s3crypt_core::headers::Headers;
use s3crypt_core::predecessor::{self, Manifest, Segment, SegmentsDecryptor};

use crate::keys::Keys;
use crate::{Fail, FailKind};

/// Largest predecessor segment the tool holds in memory (a client part of 5 GiB split into
/// 20 backend parts is 256 MiB).
pub const MAX_PREDECESSOR_SEGMENT: u64 = 320 << 20;

/// What is stored: the object's headers (lowercase names: `etag`, `content-length`,
/// `x-amz-meta-*`, …), its stored length and, if there is one, the predecessor's manifest.
pub struct Stored {
    pub headers: Headers,
    pub len: u64,
    pub manifest: Option<Vec<u8>>,
}

/// How an object is to be read.
pub enum Kind {
    S3crypt {
        env: Envelope,
        dek: DataKey,
        /// The part count of a multipart object (from its `-N` ETag).
        parts: Option<u64>,
    },
    Predecessor {
        dek: DataKey,
        segments: Vec<Segment>,
        manifest: Option<Manifest>,
        /// What the single layout's clear metadata claims (checked, not trusted).
        claimed_md5: Option<String>,
        claimed_size: Option<u64>,
    },
    Plain,
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::S3crypt { parts: None, .. } => "s3crypt single",
            Kind::S3crypt { .. } => "s3crypt multipart",
            Kind::Predecessor { manifest: None, .. } => "s3proxy-python single",
            Kind::Predecessor { .. } => "s3proxy-python multipart",
            Kind::Plain => "plaintext (no envelope)",
        }
    }

    /// Plaintext length, as the format says it must be.
    pub fn plain_len(&self, stored: u64) -> Result<u64, Fail> {
        match self {
            Kind::S3crypt {
                env, parts: None, ..
            } => single_from_stored(env.version, stored)
                .filter(|g| Some(g.plain_len) == env.plain_len)
                .map(|g| g.plain_len)
                .ok_or_else(|| {
                    Fail::new(
                        FailKind::Length,
                        "the stored size does not match the envelope",
                    )
                }),
            Kind::S3crypt { parts: Some(n), .. } => n
                .checked_mul(s3crypt_core::format::PART_OVERHEAD)
                .and_then(|o| stored.checked_sub(o))
                .ok_or_else(|| {
                    Fail::new(
                        FailKind::Length,
                        "the stored size is too small for its part count",
                    )
                }),
            Kind::Predecessor { segments, .. } => Ok(segments.iter().map(|s| s.plain_len).sum()),
            Kind::Plain => Ok(stored),
        }
    }
}

fn meta<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.get(&format!("x-amz-meta-{name}"))
}

/// The part count of a `"…-N"` ETag.
pub fn parts_in_etag(etag: &str) -> Option<u64> {
    etag.trim_matches('"')
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .filter(|n| (1..=10_000).contains(n))
}

fn format_fail(e: FormatError, what: &str) -> Fail {
    match e {
        FormatError::Integrity => Fail::new(
            FailKind::Integrity,
            format!("{what}: authentication failed"),
        ),
        FormatError::Length => Fail::new(FailKind::Length, format!("{what}: wrong length")),
        FormatError::Envelope => Fail::new(FailKind::Envelope, format!("{what}: malformed")),
        FormatError::Unwrap => Fail::new(
            FailKind::Unwrap,
            format!("{what}: the data key does not unwrap (wrong key?)"),
        ),
        FormatError::Random => Fail::new(FailKind::Io, "no randomness"),
    }
}

/// Opens an s3crypt envelope: the key it names, the data key, the envelope's tag.
pub fn open_envelope(v: &str, keys: &Keys) -> Result<(Envelope, DataKey), Fail> {
    let mut env = Envelope::decode(v).map_err(|e| format_fail(e, "the envelope"))?;
    let kek = keys.kek(&env.key_id).ok_or_else(|| {
        Fail::new(
            FailKind::UnknownKey,
            format!(
                "encrypted under key id {:?}, which is not in the configured keys",
                env.key_id
            ),
        )
    })?;
    let dek = s3crypt_core::crypto::unwrap_dek(kek, &env.wrapped_dek).map_err(|_| {
        Fail::new(
            FailKind::Unwrap,
            format!("the data key does not unwrap with key id {:?}", env.key_id),
        )
    })?;
    env.open(&dek).map_err(|e| format_fail(e, "the envelope"))?;
    Ok((env, dek))
}

/// Classifies a stored object. Precedence: s3crypt's envelope; then (with a predecessor
/// key) the predecessor's manifest, then its `isec` field; else plaintext.
pub fn classify(st: &Stored, keys: &Keys) -> Result<Kind, Fail> {
    if let Some(v) = st.headers.get(ENVELOPE_HEADER) {
        let (env, dek) = open_envelope(v, keys)?;
        let parts = match env.layout {
            Layout::Single => None,
            _ => {
                let etag = st.headers.get("etag").unwrap_or("");
                Some(parts_in_etag(etag).ok_or_else(|| {
                    Fail::new(
                        FailKind::Envelope,
                        "a multipart envelope on an object whose ETag has no part count",
                    )
                })?)
            }
        };
        return Ok(Kind::S3crypt { env, dek, parts });
    }
    let Some(pk) = keys.predecessor() else {
        return Ok(Kind::Plain);
    };
    if let Some(body) = &st.manifest {
        let m = Manifest::decode(body).map_err(|e| format_fail(e, "the predecessor's manifest"))?;
        let dek = predecessor::unwrap_b64(pk, &m.wrapped_dek)
            .map_err(|e| format_fail(e, "the predecessor's manifest key"))?;
        if m.stored_len() != Some(st.len) {
            return Err(Fail::new(
                FailKind::Length,
                "the stored size is not what the predecessor's manifest lists",
            ));
        }
        return Ok(Kind::Predecessor {
            dek,
            segments: m.segments.clone(),
            manifest: Some(m),
            claimed_md5: None,
            claimed_size: None,
        });
    }
    if let Some(w) = meta(&st.headers, keys.predecessor_meta()) {
        let dek = predecessor::unwrap_b64(pk, w)
            .map_err(|e| format_fail(e, "the predecessor's wrapped key"))?;
        let segments =
            predecessor::single_segments(st.len).map_err(|e| format_fail(e, "the object"))?;
        return Ok(Kind::Predecessor {
            dek,
            segments,
            manifest: None,
            // As the filter reads them: quotes around the MD5 allowed, a size that does not
            // parse is a failure.
            claimed_md5: meta(&st.headers, "client-etag")
                .map(|m| m.trim().trim_matches('"').to_string()),
            claimed_size: match meta(&st.headers, "plaintext-size") {
                None => None,
                Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
                    Fail::new(
                        FailKind::Integrity,
                        "the predecessor's plaintext-size is not a number",
                    )
                })?),
            },
        });
    }
    Ok(Kind::Plain)
}

/// What a verified read found.
pub struct Verified {
    pub plain_len: u64,
    pub md5: [u8; 16],
}

/// A single s3crypt object: its frames, then (version 3) its sealed trailer, whose MD5 must
/// be the MD5 of the plaintext; version 2 envelopes seal the MD5 themselves, when known.
struct Single {
    frames: FrameDecryptor,
    frames_left: u64,
    trailer: Option<Vec<u8>>,
    suite: s3crypt_core::crypto::Suite,
    dek: DataKey,
    plain_len: u64,
    sealed_md5: Option<[u8; 16]>,
}

impl Single {
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        let n = usize::try_from(self.frames_left).map_or(data.len(), |l| l.min(data.len()));
        let (frames, rest) = data.split_at(n);
        self.frames.push(frames, out)?;
        self.frames_left -= n as u64;
        if !rest.is_empty() {
            let t = self.trailer.as_mut().ok_or(FormatError::Length)?;
            if t.len() + rest.len() > TRAILER_LEN as usize {
                return Err(FormatError::Length);
            }
            t.extend_from_slice(rest);
        }
        Ok(())
    }

    /// Everything verified; the MD5 the object seals, if any.
    fn finish(&self) -> Result<Option<[u8; 16]>, FormatError> {
        self.frames.finish()?;
        match &self.trailer {
            Some(t) => Ok(Some(
                open_trailer(self.suite, &self.dek, self.plain_len, t)?.md5,
            )),
            None => Ok(self.sealed_md5),
        }
    }
}

enum Reader {
    Single(Box<Single>),
    Other(Box<dyn Decrypt>),
    Plain,
}

/// Streams the stored bytes from `src` through verification into `sink` (at most `held`
/// bytes behind: the last plaintext byte goes out only once everything verified).
pub fn read_into(
    kind: &Kind,
    stored_len: u64,
    src: &mut dyn std::io::Read,
    sink: &mut dyn Write,
) -> Result<Verified, Fail> {
    let plain_len = kind.plain_len(stored_len)?;
    let mut r = match kind {
        Kind::S3crypt {
            env,
            dek,
            parts: None,
        } => {
            let geo = single_from_stored(env.version, stored_len)
                .ok_or_else(|| Fail::new(FailKind::Length, "stored size"))?;
            let frames_left = geo
                .frames_len()
                .ok_or_else(|| Fail::new(FailKind::Length, "stored size"))?;
            Reader::Single(Box::new(Single {
                frames: FrameDecryptor::whole(env.suite, dek, geo),
                frames_left,
                trailer: has_trailer(env.version, geo.plain_len).then(Vec::new),
                suite: env.suite,
                dek: dek.duplicate(),
                plain_len: geo.plain_len,
                sealed_md5: env.md5,
            }))
        }
        Kind::S3crypt {
            env,
            dek,
            parts: Some(n),
        } => Reader::Other(Box::new(PartsDecryptor::new(
            env.suite,
            dek,
            *n,
            env.version >= 2,
        ))),
        Kind::Predecessor { dek, segments, .. } => {
            if SegmentsDecryptor::largest(segments) > MAX_PREDECESSOR_SEGMENT {
                return Err(Fail::new(
                    FailKind::Length,
                    "a predecessor segment larger than the tool holds in memory",
                ));
            }
            Reader::Other(Box::new(SegmentsDecryptor::new(
                dek,
                segments.clone(),
                MAX_PREDECESSOR_SEGMENT,
            )))
        }
        Kind::Plain => Reader::Plain,
    };
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut out = Vec::with_capacity(512 * 1024);
    let mut held: Option<u8> = None;
    let mut got: u64 = 0;
    let mut released: u64 = 0;
    loop {
        let n = src
            .read(&mut buf)
            .map_err(|e| Fail::new(FailKind::Backend, format!("reading the object: {e}")))?;
        if n == 0 {
            break;
        }
        got += n as u64;
        if got > stored_len {
            return Err(Fail::new(
                FailKind::Length,
                "more bytes than the stored size",
            ));
        }
        let chunk = &buf[..n];
        out.clear();
        let r2 = match &mut r {
            Reader::Single(s) => s.push(chunk, &mut out),
            Reader::Other(d) => d.push(chunk, &mut out),
            Reader::Plain => {
                out.extend_from_slice(chunk);
                Ok(())
            }
        };
        r2.map_err(|e| format_fail(e, "the object"))?;
        if out.is_empty() {
            continue;
        }
        md5.update(&out);
        // Release everything verified but the last byte.
        if let Some(b) = held.take() {
            sink.write_all(&[b]).map_err(Fail::io)?;
        }
        if let Some((last, rest)) = out.split_last() {
            sink.write_all(rest).map_err(Fail::io)?;
            released += rest.len() as u64 + 1;
            held = Some(*last);
        }
    }
    if got != stored_len {
        return Err(Fail::new(
            FailKind::Length,
            format!("{got} bytes read of {stored_len} stored"),
        ));
    }
    let sealed = match &r {
        Reader::Single(s) => s.finish().map_err(|e| format_fail(e, "the object"))?,
        Reader::Other(d) => {
            d.finish().map_err(|e| format_fail(e, "the object"))?;
            None
        }
        Reader::Plain => None,
    };
    let md5: [u8; 16] = md5.finalize().into();
    if released != plain_len {
        return Err(Fail::new(
            FailKind::Length,
            "the plaintext is not the length the format says",
        ));
    }
    if sealed.is_some_and(|m| m != md5) {
        return Err(Fail::new(
            FailKind::Integrity,
            "the plaintext's MD5 is not the one sealed with it",
        ));
    }
    if let Kind::Predecessor {
        claimed_md5,
        claimed_size,
        ..
    } = kind
    {
        if claimed_size.is_some_and(|s| s != plain_len)
            || claimed_md5
                .as_ref()
                .is_some_and(|m| !m.eq_ignore_ascii_case(&hex::encode(md5)))
        {
            return Err(Fail::new(
                FailKind::Integrity,
                "the plaintext does not match the predecessor's plaintext-size / client-etag",
            ));
        }
    }
    if let Some(b) = held {
        sink.write_all(&[b]).map_err(Fail::io)?;
    }
    sink.flush().map_err(Fail::io)?;
    Ok(Verified { plain_len, md5 })
}

/// Headers of a raw stored object from a JSON file as `aws s3api head-object` prints it
/// (`ContentLength`, `ETag`, `Metadata`), or from `{"headers": {name: value}}`.
pub fn headers_from_json(text: &str) -> Result<Headers, Fail> {
    let bad = |m: &str| Fail::usage(format!("metadata file: {m}"));
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let mut pairs = Vec::new();
    if let Some(h) = v.get("headers").and_then(|h| h.as_object()) {
        for (k, val) in h {
            pairs.push((
                k.to_ascii_lowercase(),
                val.as_str()
                    .ok_or_else(|| bad("header values must be strings"))?
                    .to_string(),
            ));
        }
    }
    if let Some(m) = v.get("Metadata").and_then(|m| m.as_object()) {
        for (k, val) in m {
            let s = val
                .as_str()
                .ok_or_else(|| bad("Metadata values must be strings"))?;
            pairs.push((
                format!("x-amz-meta-{}", k.to_ascii_lowercase()),
                s.to_string(),
            ));
        }
    }
    if let Some(e) = v.get("ETag").and_then(|e| e.as_str()) {
        pairs.push(("etag".into(), e.to_string()));
    }
    if let Some(n) = v.get("ContentLength").and_then(|n| n.as_u64()) {
        pairs.push(("content-length".into(), n.to_string()));
    }
    Ok(Headers::from_pairs(pairs))
}

/// Reads at most `max` bytes.
pub fn read_all(mut r: impl std::io::Read, max: u64) -> Result<Vec<u8>, Fail> {
    let mut v = Vec::new();
    (&mut r)
        .take(max + 1)
        .read_to_end(&mut v)
        .map_err(Fail::io)?;
    if v.len() as u64 > max {
        return Err(Fail::usage("input too large".into()));
    }
    Ok(v)
}
