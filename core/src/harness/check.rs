//! The invariants the harness holds the filter to.
//!
//! (a) Upstream: every body sent as object data (PutObject, UploadPart, and the parts the
//!     filter writes itself) is a stream of the object format (docs/FORMAT.md) that
//!     verifies under the object's data key: a single stream of the envelope's length, or
//!     a part (header, frames; an end part; a closing part and its table frame). A body
//!     cut short (a refused upload) is a prefix that lacks at least its final frame, so the
//!     backend never holds a complete object. No plaintext marker ([`marked`]) appears in
//!     any header or body that leaves the filter.
//! (b) Downstream: what a read releases is a prefix of the plaintext the client stored at
//!     that range; a complete success is exactly it.

use crate::crypto::{self, DataKey};
use crate::format::{
    parse_part_header, part_is_final, Envelope, FrameDecryptor, Geometry, Layout,
    CLOSING_SEALED_LEN, ENVELOPE_HEADER, FRAME_OVERHEAD, PART_HEADER_LEN, PART_OVERHEAD,
};
use crate::headers::Headers;

use super::drive::{ClientResponse, Sent, SentKind};
use super::s3::FakeS3;
use super::Harness;

const MARK_HEAD: &[u8; 4] = b"PTMK";
const MARK_TAIL: &[u8; 4] = b"KMTP";
/// Plaintext bytes between markers.
pub const MARK_EVERY: usize = 512;

/// The ETag S3 gives a single object: its quoted MD5.
pub fn md5_hex(d: &[u8]) -> String {
    use md5::{Digest as _, Md5};
    format!("\"{}\"", hex::encode(Md5::digest(d)))
}

/// The ETag S3 gives a multipart object of these parts: the quoted MD5 of their MD5s and
/// `-` their count (what the filter shows for the plaintext parts).
pub fn multipart_md5_etag(parts: &[&[u8]]) -> String {
    use md5::{Digest as _, Md5};
    let mut h = Md5::new();
    for p in parts {
        h.update(Md5::digest(p));
    }
    format!("\"{}-{}\"", hex::encode(h.finalize()), parts.len())
}

/// High-entropy plaintext (SHA-256 blocks of `seed`) with a 16-byte marker every
/// [`MARK_EVERY`] bytes: `PTMK ‖ u32 seed ‖ u32 offset ‖ KMTP`, unique per object and
/// position. Random ciphertext holds one by chance with probability 2^-64 per position,
/// so any marker upstream is leaked plaintext.
pub fn marked(n: usize, seed: u32) -> Vec<u8> {
    let mut v = super::pattern(n, u64::from(seed) | 1 << 40);
    let mut at = 0;
    while at + 16 <= n {
        v[at..at + 4].copy_from_slice(MARK_HEAD);
        v[at + 4..at + 8].copy_from_slice(&seed.to_be_bytes());
        v[at + 8..at + 12].copy_from_slice(&(at as u32).to_be_bytes());
        v[at + 12..at + 16].copy_from_slice(MARK_TAIL);
        at += MARK_EVERY;
    }
    v
}

/// Offset of the first plaintext marker in `hay`.
pub fn find_marker(hay: &[u8]) -> Option<usize> {
    hay.windows(16)
        .position(|w| w[..4] == MARK_HEAD[..] && w[12..] == MARK_TAIL[..])
}

fn headers_marker(h: &Headers) -> Option<String> {
    h.iter()
        .find(|(k, v)| find_marker(k.as_bytes()).is_some() || find_marker(v.as_bytes()).is_some())
        .map(|(k, _)| k.clone())
}

/// What kind of object data an upstream request carries.
enum Data {
    Single,
    Part { upload_id: String, number: u32 },
    None,
}

fn classify(h: &Harness, s: &Sent) -> Data {
    let to_backend = match &s.kind {
        SentKind::Upstream => true,
        SentKind::CallOut(c) => *c == h.proxies[s.proxy].cfg.plugin.upstream_cluster,
    };
    if !to_backend || s.method() != "PUT" || s.headers.contains("x-amz-copy-source") {
        return Data::None;
    }
    let (path, query) = s.path().split_once('?').unwrap_or((s.path(), ""));
    // Only object paths (`/bucket/key`) carry object data.
    if path
        .trim_start_matches('/')
        .split_once('/')
        .is_none_or(|(_, k)| k.is_empty())
    {
        return Data::None;
    }
    let q = crate::s3::uri::query_pairs(query).unwrap_or_default();
    let get = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if q.iter().all(|(k, _)| k == "x-id") {
        return Data::Single;
    }
    match (
        get("uploadId"),
        get("partNumber").and_then(|n| n.parse().ok()),
    ) {
        (Some(upload_id), Some(number)) if q.len() <= 3 => Data::Part { upload_id, number },
        _ => Data::None,
    }
}

pub fn open(h: &Harness, ev: &str) -> Result<(Envelope, DataKey), String> {
    let mut env = Envelope::decode(ev).map_err(|e| format!("unreadable envelope {e:?}"))?;
    let kek = h
        .proxies
        .iter()
        .find_map(|p| p.cfg.kek(&env.key_id).copied())
        .ok_or_else(|| format!("envelope under unknown key {}", env.key_id))?;
    let dek =
        crypto::unwrap_dek(&kek, &env.wrapped_dek).map_err(|_| "wrapped key does not unwrap")?;
    env.open(&dek).map_err(|_| "envelope tag does not verify")?;
    Ok((env, dek))
}

/// A stream's stored length as docs/FORMAT.md gives it (computed here, not by the
/// format code): `P + 28 · frames` for a single object; one part overhead (28,688) more
/// than its plaintext for a part in any layout, the end part exactly one overhead.
pub fn stored_len(geo: &Geometry) -> u64 {
    match geo.layout {
        Layout::Single => geo.plain_len + FRAME_OVERHEAD * geo.frames,
        Layout::End => PART_OVERHEAD,
        Layout::Table => CLOSING_SEALED_LEN + FRAME_OVERHEAD,
        Layout::Trailer => 156,
        Layout::Part | Layout::Final | Layout::Closing => geo.plain_len + PART_OVERHEAD,
    }
}

/// Decrypts `body` as the stream `geo` (a prefix if `!complete`): its plaintext.
fn verify_stream(
    env: &Envelope,
    dek: &DataKey,
    geo: Geometry,
    body: &[u8],
    complete: bool,
) -> Result<Vec<u8>, String> {
    let want = stored_len(&geo) as usize;
    if complete && body.len() != want {
        return Err(format!(
            "stream of {} bytes, its geometry says {want}",
            body.len()
        ));
    }
    if !complete && body.len() >= want && want > 0 {
        return Err("a refused upload sent its whole stream (the backend could store it)".into());
    }
    let mut d = FrameDecryptor::whole(env.suite, dek, geo);
    let mut plain = Vec::new();
    d.push(body, &mut plain)
        .map_err(|e| format!("frame does not verify: {e:?}"))?;
    if complete {
        d.finish()
            .map_err(|e| format!("stream incomplete: {e:?}"))?;
    }
    Ok(plain)
}

/// Invariant (a) for one request the filter sent: `Ok(Some(plaintext))` for a complete
/// body of object data (what it decrypts to), `Ok(None)` for anything else that passed.
pub fn check_sent(h: &Harness, s: &Sent) -> Result<Option<Vec<u8>>, String> {
    let what = format!("{:?} {} {}", s.kind, s.method(), s.path());
    if let Some(at) = find_marker(&s.body) {
        return Err(format!("{what}: plaintext marker at {at} of the body"));
    }
    if let Some(k) = headers_marker(&s.headers) {
        return Err(format!("{what}: plaintext marker in header {k}"));
    }
    // The ciphertext, out of its upstream framing (chunk signatures verified).
    let (body, cl) = h
        .world
        .s3
        .unframe(&s.headers, &s.body, s.complete)
        .map_err(|e| format!("{what}: {e}"))?;
    let s = &Sent { body, ..s.clone() };
    let r = match classify(h, s) {
        Data::None => return Ok(None),
        Data::Single => check_single(h, s, cl),
        Data::Part { upload_id, number } => check_part(h, &h.world.s3, s, &upload_id, number, cl),
    };
    r.map(Some).map_err(|e| format!("{what}: {e}"))
}

fn check_single(h: &Harness, s: &Sent, cl: Option<usize>) -> Result<Vec<u8>, String> {
    let ev = s
        .headers
        .get(ENVELOPE_HEADER)
        .ok_or("object data without an envelope")?;
    let (env, dek) = open(h, ev)?;
    if env.layout != Layout::Single {
        return Err(format!("a single PUT under a {:?} envelope", env.layout));
    }
    let geo = Geometry::single(env.plain_len.ok_or("no length in the envelope")?);
    let want = single_len(&env, &geo);
    if cl != Some(want as usize) {
        return Err(format!("content-length {cl:?}, the stream is {want}"));
    }
    verify_single(&env, &dek, geo, &s.body, s.complete)
}

/// A single object's stored length as docs/FORMAT.md gives it: the frames, and for a
/// version 3 object with any plaintext the 156-byte trailer.
fn single_len(env: &Envelope, geo: &Geometry) -> u64 {
    let trailer = if env.version >= 3 && geo.plain_len > 0 {
        156
    } else {
        0
    };
    stored_len(geo) + trailer
}

/// A single object's stored bytes: its frames and, for version 3, a trailer that
/// verifies and holds the MD5 of the plaintext.
fn verify_single(
    env: &Envelope,
    dek: &DataKey,
    geo: Geometry,
    body: &[u8],
    complete: bool,
) -> Result<Vec<u8>, String> {
    let frames = stored_len(&geo) as usize;
    let want = single_len(env, &geo) as usize;
    if want == frames {
        return verify_stream(env, dek, geo, body, complete);
    }
    if complete && body.len() != want {
        return Err(format!(
            "stream of {} bytes, it should be {want}",
            body.len()
        ));
    }
    if !complete && body.len() >= frames {
        return Err("a refused upload sent its whole stream (all its frames)".into());
    }
    let plain = verify_stream(env, dek, geo, &body[..frames.min(body.len())], complete)?;
    if complete {
        let t = crate::format::open_trailer(env.suite, dek, geo.plain_len, &body[frames..])
            .map_err(|e| format!("the trailer does not verify: {e:?}"))?;
        let md5: [u8; 16] = <md5::Md5 as md5::Digest>::digest(&plain).into();
        if t.md5 != md5 {
            return Err("the trailer's MD5 is not that of the plaintext".into());
        }
    }
    Ok(plain)
}

fn check_part(
    h: &Harness,
    s3: &FakeS3,
    s: &Sent,
    id: &str,
    number: u32,
    cl: Option<usize>,
) -> Result<Vec<u8>, String> {
    if s.body.len() < PART_HEADER_LEN as usize {
        return if s.complete {
            Err("a part without a header".into())
        } else {
            Ok(Vec::new())
        };
    }
    let geo = parse_part_header(&s.body[..16]).ok_or("no part header")?;
    if geo.part != number {
        return Err(format!("part {} sent as part {number}", geo.part));
    }
    if cl != Some(stored_len(&geo) as usize) {
        return Err(format!(
            "content-length {cl:?}, the part is {}",
            stored_len(&geo)
        ));
    }
    let ev = s3
        .upload_envelopes
        .get(id)
        .ok_or("a part of an upload the backend never created")?;
    let (env, dek) = open(h, ev)?;
    if env.layout != Layout::Part {
        return Err(format!("a part under a {:?} envelope", env.layout));
    }
    let client = s.kind == SentKind::Upstream;
    let v2 = env.version >= 2;
    let expected = if v2 && part_is_final(number, geo.plain_len) {
        Layout::Final
    } else {
        Layout::Part
    };
    match geo.layout {
        Layout::Part | Layout::Final if geo.layout != expected => {
            return Err(format!(
                "a part of {} bytes in layout {:?}",
                geo.plain_len, geo.layout
            ))
        }
        Layout::End | Layout::Closing if client => {
            return Err("the client's part is an end or closing part".into())
        }
        _ => {}
    }
    let plain = verify_stream(&env, &dek, geo, &s.body, s.complete)?;
    if geo.layout == Layout::Closing && s.complete {
        let t = (CLOSING_SEALED_LEN + FRAME_OVERHEAD) as usize;
        let table = &s.body[s.body.len() - t..];
        verify_stream(&env, &dek, Geometry::closing_table(number), table, true)
            .map_err(|e| format!("closing table: {e}"))?;
    }
    Ok(if geo.layout == Layout::End {
        Vec::new()
    } else {
        plain
    })
}

/// Invariant (a) for everything sent since log position `from`.
pub fn check_upstream(h: &Harness, from: usize) -> Result<(), String> {
    for s in h.sent_since(from) {
        check_sent(h, s)?;
    }
    Ok(())
}

/// Invariant (b) for a read of `truth[first..=last]` (`want`), the object's true
/// plaintext: released bytes are a prefix of it; a complete 2xx is all of it; an error
/// body holds no plaintext.
pub fn check_read(r: &ClientResponse, truth: &[u8], want: (usize, usize)) -> Result<(), String> {
    if let Some(at) = find_marker(&r.body).filter(|_| !(200..300).contains(&r.status)) {
        return Err(format!("plaintext at {at} of a {} answer", r.status));
    }
    if !(200..300).contains(&r.status) {
        return Ok(());
    }
    let (a, b) = want;
    let expect = if truth.is_empty() {
        &[][..]
    } else {
        &truth[a..=b.min(truth.len() - 1)]
    };
    if r.body.len() > expect.len() || r.body[..] != expect[..r.body.len()] {
        let at = r
            .body
            .iter()
            .zip(expect)
            .position(|(x, y)| x != y)
            .unwrap_or(expect.len());
        return Err(format!(
            "released {} bytes that are not the stored plaintext (first difference at {at}, {} expected)",
            r.body.len(),
            expect.len()
        ));
    }
    if r.complete() && r.body.len() != expect.len() {
        return Err(format!(
            "a complete answer of {} bytes, the stored plaintext is {}",
            r.body.len(),
            expect.len()
        ));
    }
    Ok(())
}

/// The plaintext of a stored object, decrypted here from what the backend holds (its
/// envelope, then the single stream or every part in order); an error if anything fails.
pub fn decrypt_stored(h: &Harness, key: &str) -> Result<Vec<u8>, String> {
    use crate::format::PartsDecryptor;
    let o = h.world.s3.object(key).ok_or("no such object")?;
    let ev = o.meta(ENVELOPE_HEADER).ok_or("no envelope")?;
    let (env, dek) = open(h, ev)?;
    if env.layout == Layout::Single {
        let geo = Geometry::single(env.plain_len.ok_or("no length")?);
        return verify_single(&env, &dek, geo, &o.data, true);
    }
    let parts: u64 = bare_etag(&o.etag)
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .ok_or("a multipart envelope on an object without a -N ETag")?;
    let mut d = PartsDecryptor::new(env.suite, &dek, parts, env.version >= 2);
    let mut plain = Vec::new();
    d.push(&o.data, &mut plain).map_err(|e| format!("{e:?}"))?;
    d.finish().map_err(|e| format!("{e:?}"))?;
    Ok(plain)
}

fn bare_etag(e: &str) -> &str {
    e.trim_matches('"')
}

/// The magic of each stored part of a multipart object (`s3cP`, `s3cF`, `s3cE`, `s3cC`).
pub fn part_magics(h: &Harness, key: &str) -> Vec<String> {
    let o = h.world.s3.object(key).expect("object");
    o.part_spans()
        .iter()
        .map(|&(at, _)| String::from_utf8_lossy(&o.data[at..at + 4]).into_owned())
        .collect()
}
