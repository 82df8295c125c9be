//! The plaintext ETags (and sizes) of objects, which the backend does not know: the
//! per-process cache that maps an object as a listing shows it (bucket, key, backend
//! ETag, stored size) to what the filter learnt of it (envelope version, plaintext
//! length, MD5 or multipart MD5, checksum, wrapped data key), and the read that fills it:
//! a version 3 single object's sealed trailer (its last [`TRAILER_LEN`] bytes), or a
//! version 2 multipart object's end part or closing table frame (its last
//! [`PART_OVERHEAD`] bytes), where the multipart MD5 of its plaintext parts is sealed.
//!
//! The cache lives in Envoy shared data (in-process memory, never Redis), where digests
//! may be kept in clear. It is direct-mapped: an entry lives in the slot its identity
//! hashes to, so it holds at most `etag_cache_slots` entries whatever is listed or read.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use sha2::{Digest as _, Sha256};

use super::cx::{Cx, SseFor};
use super::get::parse_content_range;
use super::CallOut;
use crate::crypto::{DataKey, WRAPPED_DEK_LEN};
use crate::format::part_table::Walk;
use crate::format::{
    open_trailer, single_stored_len, Envelope, Layout, StoredChecksum, Trailer, EMPTY_MD5,
    PART_OVERHEAD, TRAILER_LEN,
};
use crate::headers::Headers;
use crate::s3::error::S3Error;

/// What the filter knows of one object version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Known {
    /// Envelope version (0: an object without an envelope, served as stored).
    pub version: u8,
    pub plain_len: u64,
    /// Single objects: the plaintext MD5, when known (version 3 always; version 2 only
    /// if the client sent Content-MD5). Multipart objects: the MD5 of the plaintext
    /// parts' MD5s, if the object sealed it.
    pub md5: Option<[u8; 16]>,
    /// A multipart object: the part count its ETag shows (the client's parts when `md5`
    /// is known, else the backend's count).
    pub parts: Option<u64>,
    pub checksum: Option<StoredChecksum>,
    /// The object's wrapped data key (zeros for an object without an envelope): a read
    /// only takes an entry whose key is the one in the envelope it got.
    pub wrapped: [u8; WRAPPED_DEK_LEN],
}

impl Known {
    /// What an opened single-object envelope (and its trailer, if read) says.
    pub fn of(env: &Envelope, trailer: Option<&Trailer>) -> Known {
        let plain_len = env.plain_len.unwrap_or(0);
        let md5 = trailer
            .map(|t| t.md5)
            .or(env.md5)
            .or_else(|| (plain_len == 0 && env.version >= 3).then_some(EMPTY_MD5));
        Known {
            version: env.version,
            plain_len,
            md5,
            checksum: env
                .checksum
                .clone()
                .or_else(|| trailer.and_then(|t| t.checksum.clone())),
            wrapped: env.wrapped_dek,
            parts: None,
        }
    }

    /// What a multipart envelope and the stored size and backend ETag of its object say,
    /// with the multipart MD5 and client part count its end read found (`sealed`).
    /// `None` if the size and ETag are not those of a multipart object.
    pub fn multipart(
        env: &Envelope,
        stored: u64,
        backend_etag: &str,
        sealed: Option<([u8; 16], u64)>,
    ) -> Option<Known> {
        let n = super::table::parts_in_etag(backend_etag)?;
        let plain_len = crate::format::plain_size_from_listing(stored, backend_etag)?;
        Some(Known {
            version: env.version,
            plain_len,
            md5: sealed.map(|s| s.0),
            parts: Some(sealed.map_or(n, |s| s.1)),
            checksum: None,
            wrapped: env.wrapped_dek,
        })
    }

    /// The ETag clients see: the plaintext MD5 (multipart: `MD5-count`), else the
    /// backend's.
    pub fn etag(&self, backend_etag: &str) -> String {
        match (self.md5, self.parts) {
            (Some(m), Some(n)) => format!("\"{}-{n}\"", hex::encode(m)),
            (Some(m), None) => format!("\"{}\"", hex::encode(m)),
            (None, _) => backend_etag.to_string(),
        }
    }

    /// Whether this describes the object an envelope belongs to.
    pub fn matches(&self, env: &Envelope) -> bool {
        let shape = match env.layout {
            Layout::Single => self.parts.is_none() && env.plain_len == Some(self.plain_len),
            _ => self.parts.is_some(),
        };
        self.version == env.version && shape && self.wrapped == env.wrapped_dek
    }

    fn encode(&self) -> String {
        let mut s = format!(
            "v={};p={};w={}",
            self.version,
            self.plain_len,
            hex::encode(self.wrapped)
        );
        if let Some(m) = self.md5 {
            s.push_str(&format!(";m={}", hex::encode(m)));
        }
        if let Some(c) = &self.checksum {
            s.push_str(&format!(";c={}:{}", c.header, c.value));
        }
        if let Some(n) = self.parts {
            s.push_str(&format!(";n={n}"));
        }
        s
    }

    fn decode(s: &str) -> Option<Known> {
        let mut k = Known {
            version: 0,
            plain_len: 0,
            md5: None,
            checksum: None,
            wrapped: [0; WRAPPED_DEK_LEN],
            parts: None,
        };
        let mut fields = s.split(';');
        k.version = fields.next()?.strip_prefix("v=")?.parse().ok()?;
        k.plain_len = fields.next()?.strip_prefix("p=")?.parse().ok()?;
        k.wrapped = hex::decode(fields.next()?.strip_prefix("w=")?)
            .ok()?
            .try_into()
            .ok()?;
        for f in fields {
            if let Some(m) = f.strip_prefix("m=") {
                k.md5 = Some(hex::decode(m).ok()?.try_into().ok()?);
            } else if let Some(c) = f.strip_prefix("c=") {
                let (h, v) = c.split_once(':')?;
                k.checksum = Some(StoredChecksum {
                    header: h.to_string(),
                    value: v.to_string(),
                });
            } else if let Some(n) = f.strip_prefix("n=") {
                k.parts = Some(n.parse().ok()?);
            } else {
                return None;
            }
        }
        Some(k)
    }
}

/// Identity of an object version as a listing shows it, hashed (fields length-prefixed,
/// so no two identities share a hash input).
fn identity(bucket: &str, key: &str, etag: &str, stored: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in [bucket, key, etag.trim_matches('"')] {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f.as_bytes());
    }
    h.update(stored.to_be_bytes());
    h.finalize().into()
}

fn slot(cx: &Cx, id: &[u8; 32]) -> Option<String> {
    let slots = u64::from(cx.cfg.plugin.etag_cache_slots);
    if slots == 0 {
        return None;
    }
    let n = u64::from_be_bytes(id.first_chunk().copied().unwrap_or([0; 8])).checked_rem(slots)?;
    Some(format!("s3crypt/et/{n}"))
}

/// What the cache knows of (bucket, key, backend ETag, stored size).
pub(crate) fn cached(cx: &Cx, bucket: &str, key: &str, etag: &str, stored: u64) -> Option<Known> {
    let id = identity(bucket, key, etag, stored);
    let v = cx.ports.store.get(&slot(cx, &id)?)?;
    let v = std::str::from_utf8(&v).ok()?;
    let (tag, rest) = v.split_once('\n')?;
    if tag != hex::encode(id) {
        return None;
    }
    Known::decode(rest)
}

/// Remembers what the filter learnt of an object version (replacing whatever the slot
/// held).
/// (`etag` empty: for servers whose listings show no ETags, keyed by size alone.)
pub(crate) fn remember(cx: &Cx, bucket: &str, key: &str, etag: &str, stored: u64, k: &Known) {
    let id = identity(bucket, key, etag, stored);
    if let Some(s) = slot(cx, &id) {
        cx.ports.store.set(
            &s,
            format!("{}\n{}", hex::encode(id), k.encode()).as_bytes(),
        );
    }
}

/// The slot and tag of the "latest version seen" hint of an object (bucket, key and the
/// `versionId` a read named, if any) as the backend user the request acts as sees it
/// (with per-client backend identities, tenants may hold objects of the same names).
fn latest_slot(cx: &Cx, bucket: &str, key: &str, version: &str) -> Option<(String, String)> {
    let mut h = Sha256::new();
    for f in ["latest", cx.backend_key_id(), bucket, key, version] {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f.as_bytes());
    }
    let id: [u8; 32] = h.finalize().into();
    let slots = u64::from(cx.cfg.plugin.etag_cache_slots);
    let n = u64::from_be_bytes(id.first_chunk().copied().unwrap_or([0; 8])).checked_rem(slots)?;
    Some((format!("s3crypt/eh/{n}"), hex::encode(id)))
}

/// What the process knows of the latest version of the request's object (backend ETag,
/// stored size, what the cache knows of it): a GET or HEAD that finds it goes upstream
/// at once; one that does not reads the object's last bytes (a version 3 single object's
/// trailer, a multipart object's end part) first.
pub(crate) fn latest_known(cx: &Cx) -> Option<(String, u64, Known)> {
    let (bucket, key) = request_object(cx);
    let (s, tag) = latest_slot(cx, &bucket, &key, &request_version(cx))?;
    let v = cx.ports.store.get(&s)?;
    let v = std::str::from_utf8(&v).ok()?;
    let mut f = v.splitn(4, '\n');
    if f.next()? != tag {
        return None;
    }
    let kind = f.next()?;
    let stored: u64 = f.next()?.parse().ok()?;
    let etag = f.next()?.to_string();
    let k = cached(cx, &bucket, &key, &etag, stored)?;
    let final_knowledge = match kind {
        // (A multipart entry is only cached once its end read was made, or for an
        // object that has none.)
        "m" => k.parts.is_some(),
        _ => {
            k.parts.is_none()
                && (k.md5.is_some() || k.version < crate::format::SINGLE_ENVELOPE_VERSION)
        }
    };
    final_knowledge.then_some((etag, stored, k))
}

/// Notes (backend ETag, stored size, multipart or not) as the latest version of the
/// request's object (`None`: forgets it, after a read found the object changed).
pub(crate) fn note_latest(cx: &Cx, version: Option<(&str, u64, bool)>) {
    let (bucket, key) = request_object(cx);
    let Some((s, tag)) = latest_slot(cx, &bucket, &key, &request_version(cx)) else {
        return;
    };
    let v = match version {
        Some((etag, stored, multipart)) => {
            let kind = if multipart { "m" } else { "s" };
            format!("{tag}\n{kind}\n{stored}\n{etag}")
        }
        None => String::new(),
    };
    cx.ports.store.set(&s, v.as_bytes());
}

fn request_version(cx: &Cx) -> String {
    cx.req
        .as_ref()
        .and_then(|r| r.query_param("versionId"))
        .unwrap_or("")
        .to_string()
}

/// The bucket and key of the request's object.
pub(crate) fn request_object(cx: &Cx) -> (String, String) {
    cx.req.as_ref().map_or_else(Default::default, |r| {
        (
            r.bucket.clone().unwrap_or_default(),
            r.key.clone().unwrap_or_default(),
        )
    })
}

/// Bucket and key named by a request's `x-amz-copy-source`.
pub(crate) fn copy_source_object(h: &Headers) -> (String, String) {
    h.get("x-amz-copy-source")
        .and_then(|v| crate::s3::parse_copy_source(v).ok())
        .map(|(b, k, _)| (b, k))
        .unwrap_or_default()
}

/// What the filter knows of the object whose HEAD answered `resp` without reading it:
/// what its envelope says (a sealed MD5, the MD5 of nothing, an object that keeps no
/// ETag of its own), or what the cache knows of that version.
pub(crate) fn known_of(cx: &Cx, resp: &Headers, bucket: &str, key: &str) -> Option<Known> {
    let (env, _) = cx
        .open_envelope(resp.get(crate::format::ENVELOPE_HEADER)?)
        .ok()?;
    let etag = resp.get("etag").unwrap_or("");
    let stored = resp.get("content-length")?.parse().ok()?;
    known_unread(cx, &env, bucket, key, etag, stored)
}

/// What the filter knows, without reading it, of the version (backend ETag `etag`,
/// `stored` bytes) of `bucket`/`key` whose envelope is `env`: what the envelope says, else
/// what the cache knows of that version.
pub(crate) fn known_unread(
    cx: &Cx,
    env: &Envelope,
    bucket: &str,
    key: &str,
    etag: &str,
    stored: u64,
) -> Option<Known> {
    without_tail(env, stored, etag)
        .or_else(|| cached(cx, bucket, key, etag, stored).filter(|k| k.matches(env)))
}

/// Stored bytes at the end of an object that say its ETag: a single object's trailer, a
/// multipart object's end part (or the part holding its closing table frame).
pub(crate) fn tail_len(multipart: bool) -> u64 {
    if multipart {
        PART_OVERHEAD
    } else {
        TRAILER_LEN
    }
}

/// Whether an object with this envelope keeps its ETag in its last bytes (a version 3
/// single object's trailer, a version 2 multipart object's end or closing part).
pub(crate) fn has_tail(env: &Envelope) -> bool {
    match env.layout {
        Layout::Single => crate::format::has_trailer(env.version, env.plain_len.unwrap_or(0)),
        _ => env.version >= 2,
    }
}

/// The read of the stored bytes that say an object version's ETag: its last
/// [`tail_len`] bytes, of the version `etag` names (with the client's SSE-C key `which`,
/// if it sent one).
pub(crate) fn trailer_read(
    cx: &Cx,
    path: String,
    etag: &str,
    stored: u64,
    multipart: bool,
    which: SseFor,
) -> CallOut {
    let first = stored.saturating_sub(tail_len(multipart));
    let last = stored.saturating_sub(1);
    let range = Some(format!("bytes={first}-{last}"));
    let mut h = cx.sse_request_at("GET", path, range, which);
    h.set("if-match", etag.to_string());
    cx.backend_callout(h)
}

/// The read [`trailer_read`] made answered: what the object version (`etag`, `stored`)
/// whose envelope `env` is says of itself. A single object's trailer must verify under
/// its data key; a multipart object whose last bytes are not a sealed table that
/// verifies keeps the backend's ETag. A version that changed meanwhile is a 503 (retry);
/// bytes that do not verify are an integrity failure.
pub(crate) fn trailer_answered(
    cx: &Cx,
    resp: Option<(&Headers, &[u8])>,
    env: &Envelope,
    dek: &DataKey,
    etag: &str,
    stored: u64,
) -> Result<Known, S3Error> {
    let changed =
        || S3Error::slow_down("s3crypt: the object changed while it was read; please retry");
    let Some((h, body)) = resp else {
        return Err(S3Error::service_unavailable(
            "s3crypt: the object could not be read; please retry",
        ));
    };
    match h.get(":status") {
        Some("206") => {}
        Some("412") | Some("404") => return Err(changed()),
        _ => {
            return Err(S3Error::service_unavailable(
                "s3crypt: the object could not be read; please retry",
            ))
        }
    }
    if h.get("etag").is_some_and(|e| e != etag) {
        return Err(changed());
    }
    let multipart = env.layout != Layout::Single;
    let want = (
        stored.saturating_sub(tail_len(multipart)),
        stored.saturating_sub(1),
        stored,
    );
    if h.get("content-range").and_then(parse_content_range) != Some(want) {
        return Err(cx.integrity());
    }
    if multipart {
        return multipart_tail(env, dek, etag, stored, body).ok_or_else(|| cx.integrity());
    }
    let plain_len = env.plain_len.ok_or_else(|| cx.integrity())?;
    if single_stored_len(env.version, plain_len) != Some(stored) {
        return Err(cx.integrity());
    }
    let t = open_trailer(env.suite, dek, plain_len, body).map_err(|_| cx.integrity())?;
    Ok(Known::of(env, Some(&t)))
}

/// What the last [`PART_OVERHEAD`] stored bytes (`tail`) of a multipart object version
/// (backend ETag `etag`, `stored` bytes, envelope `env` opened to `dek`) say: the multipart
/// MD5 its end or closing part seals, if they are that part of this object and it seals
/// one (else the backend's ETag is shown). `None`: the size and ETag are no multipart
/// object's.
pub(crate) fn multipart_tail(
    env: &Envelope,
    dek: &DataKey,
    etag: &str,
    stored: u64,
    tail: &[u8],
) -> Option<Known> {
    let parts = super::table::parts_in_etag(etag)?;
    let sealed = (env.version >= 2)
        .then(|| Walk::new(env.suite, dek, stored, parts, true).end_etag(tail))
        .flatten();
    Known::multipart(env, stored, etag, sealed)
}

/// What an object's envelope alone says, if that is all there is to know: a single
/// object without a trailer (or whose envelope seals its MD5), a multipart object
/// without an end part (version 1). `None`: its last bytes must be read.
pub(crate) fn without_tail(env: &Envelope, stored: u64, etag: &str) -> Option<Known> {
    if env.layout != Layout::Single {
        return (!has_tail(env))
            .then(|| Known::multipart(env, stored, etag, None))
            .flatten();
    }
    let known = Known::of(env, None);
    (known.md5.is_some() || !has_tail(env)).then_some(known)
}

/// For the backend's answer to a HEAD of the request's object: the read of its last
/// bytes, if they hold its ETag and the cache does not know it. A check against the
/// ETag clients see ([`visible_with`]) reads it first ([`trailer_learnt`]), so it
/// compares with the plaintext ETag even in a fresh process.
pub(crate) fn trailer_needed(cx: &Cx, head: &Headers, which: SseFor) -> Option<CallOut> {
    if head.get(":status") != Some("200") {
        return None;
    }
    let (env, _) = cx
        .open_envelope(head.get(crate::format::ENVELOPE_HEADER)?)
        .ok()?;
    let etag = head.get("etag")?;
    let stored: u64 = head.get("content-length")?.parse().ok()?;
    if without_tail(&env, stored, etag).is_some() || cached_for(cx, &env, head).is_some() {
        return None;
    }
    let multipart = env.layout != Layout::Single;
    if multipart && super::table::parts_in_etag(etag).is_none() {
        return None;
    }
    Some(trailer_read(
        cx,
        cx.object_path(),
        etag,
        stored,
        multipart,
        which,
    ))
}

/// The read [`trailer_needed`] asked for answered: what it says (also in the cache); a
/// version that changed since the HEAD is a 503, bytes that do not verify an integrity
/// failure.
pub(crate) fn trailer_learnt(
    cx: &Cx,
    head: &Headers,
    resp: Option<(&Headers, &[u8])>,
) -> Result<Known, S3Error> {
    let ev = head
        .get(crate::format::ENVELOPE_HEADER)
        .ok_or_else(|| cx.integrity())?;
    let (env, dek) = cx.open_envelope(ev)?;
    let etag = head.get("etag").unwrap_or("");
    let stored: u64 = head
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| cx.integrity())?;
    let known = trailer_answered(cx, resp, &env, &dek, etag, stored)?;
    let (bucket, key) = request_object(cx);
    remember(cx, &bucket, &key, etag, stored, &known);
    Ok(known)
}

/// The ETag clients see for an object from the backend's answer to a HEAD (its
/// envelope opened): the plaintext MD5 sealed in the envelope, or the one its last bytes
/// gave (`learnt`, if it describes that envelope) or the cache knows; else the backend's
/// ETag. (A cold cache gives the backend's ETag, which no client holds: a condition on it
/// fails, never passes wrongly.)
pub(crate) fn visible_with(
    cx: &Cx,
    env: &Envelope,
    resp: &Headers,
    learnt: Option<&Known>,
) -> String {
    let backend = resp.get("etag").unwrap_or("");
    let stored = resp.get("content-length").and_then(|v| v.parse().ok());
    if let Some(k) = stored.and_then(|n| without_tail(env, n, backend)) {
        return k.etag(backend);
    }
    learnt
        .filter(|k| k.matches(env))
        .cloned()
        .or_else(|| cached_for(cx, env, resp))
        .map_or_else(|| backend.to_string(), |k| k.etag(backend))
}

/// What the cache knows of the object version whose HEAD answered `resp` (its envelope
/// `env`).
pub(crate) fn cached_for(cx: &Cx, env: &Envelope, resp: &Headers) -> Option<Known> {
    let stored: u64 = resp.get("content-length")?.parse().ok()?;
    let (bucket, key) = request_object(cx);
    cached(cx, &bucket, &key, resp.get("etag").unwrap_or(""), stored).filter(|k| k.matches(env))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_round_trips() {
        let k = Known {
            version: 3,
            plain_len: 12,
            md5: Some([7; 16]),
            checksum: Some(StoredChecksum {
                header: "x-amz-checksum-crc32".into(),
                value: "AAAAAA==".into(),
            }),
            wrapped: [9; WRAPPED_DEK_LEN],
            parts: None,
        };
        assert_eq!(Known::decode(&k.encode()), Some(k.clone()));
        let multipart = Known {
            parts: Some(3),
            ..k.clone()
        };
        assert_eq!(Known::decode(&multipart.encode()), Some(multipart.clone()));
        assert_eq!(
            multipart.etag("\"x-4\""),
            format!("\"{}-3\"", "07".repeat(16))
        );
        let bare = Known {
            md5: None,
            checksum: None,
            ..k
        };
        assert_eq!(Known::decode(&bare.encode()), Some(bare));
        assert_eq!(Known::decode("v=3;p=1"), None);
    }

    #[test]
    fn identities_are_injective_in_their_fields() {
        assert_ne!(identity("a", "b\nc", "e", 1), identity("a\nb", "c", "e", 1));
        assert_ne!(identity("a", "b", "\"e\"", 1), identity("a", "b", "e", 2));
        assert_eq!(identity("a", "b", "\"e\"", 1), identity("a", "b", "e", 1));
    }
}
