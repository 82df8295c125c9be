//! Reads of the Python predecessor's objects (configuration `predecessor_read`): an object
//! without an s3crypt envelope is looked up as the predecessor stored it (its manifest
//! first, then its `isec` metadata), and served verified segment by segment with the
//! sizes and ETags the predecessor's clients saw. Nothing is ever written in that format.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use super::cx::Cx;
use super::CallOut;
use crate::config::Predecessor;
use crate::crypto::DataKey;
use crate::format::FormatError;
use crate::headers::Headers;
use crate::predecessor::{
    manifest_key, single_segments, unwrap_b64, Manifest, Segment, SegmentsDecryptor,
    MAX_MANIFEST_BODY, SEGMENT_OVERHEAD,
};
use crate::s3::error::S3Error;
use crate::s3::{self, S3Request};

/// How one predecessor object is read: planned from its headers (and manifest) before the
/// read goes upstream, pinned to that version.
pub(crate) struct PredPlan {
    dek: DataKey,
    segments: Vec<Segment>,
    pub multipart: bool,
    /// The backend ETag of the version planned for, and its stored size.
    pub etag: String,
    pub stored: u64,
    pub plain_len: u64,
    /// Single layout: the plaintext MD5 its `client-etag` claims (checked on whole reads).
    client_md5: Option<[u8; 16]>,
    /// Multipart: the manifest's parts (number, plaintext size), in order.
    parts: Vec<(u64, u64)>,
    /// A range: the segments read and the plaintext window of them.
    pub window: Option<PredWindow>,
    max_segment: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PredWindow {
    first_seg: usize,
    last_seg: usize,
    pub stored_first: u64,
    pub stored_last: u64,
    skip: u64,
    /// The plaintext range (inclusive).
    pub first: u64,
    pub last: u64,
}

/// The call-out that reads the manifest of the object a request names.
pub(crate) fn manifest_callout(cx: &Cx, req: &S3Request) -> CallOut {
    let bucket = req.bucket.as_deref().unwrap_or("");
    let key = manifest_key(req.key.as_deref().unwrap_or(""));
    let path = format!(
        "/{}/{}",
        s3::uri_encode(bucket, true),
        s3::uri_encode(&key, false)
    );
    // At most what a manifest can be: a larger object there is refused from its
    // Content-Range, never held.
    let range = format!("bytes=0-{}", MAX_MANIFEST_BODY.saturating_sub(1));
    cx.backend_callout(cx.request_at("GET", path, Some(range)))
}

fn unreadable() -> S3Error {
    S3Error::internal(
        "s3crypt: the predecessor's object could not be read (its manifest or key did not verify)",
    )
}

/// Plans the read of an object whose headers (`obj`, a HEAD or a probe's answer; its
/// stored size `stored`) carry no envelope, given what the manifest read answered.
/// `Ok(None)`: not the predecessor's (no manifest, no `isec`): a plaintext object.
pub(crate) fn plan(
    p: &Predecessor,
    obj: &Headers,
    stored: u64,
    manifest: Option<(&Headers, &[u8])>,
) -> Result<Option<PredPlan>, S3Error> {
    let (mh, body) = manifest.ok_or_else(|| {
        S3Error::service_unavailable(
            "s3crypt: the object's manifest could not be read; please retry",
        )
    })?;
    let etag = obj.get("etag").unwrap_or("").to_string();
    let bad = |_: FormatError| unreadable();
    let mut plan = match mh.get(":status") {
        Some(st @ ("200" | "206")) => {
            // A 206 must be the whole manifest: its total within the range asked for.
            let whole = st == "200"
                || mh
                    .get("content-range")
                    .and_then(|c| c.rsplit_once('/'))
                    .and_then(|(_, t)| t.trim().parse::<usize>().ok())
                    .is_some_and(|t| t == body.len());
            if body.len() > MAX_MANIFEST_BODY || !whole {
                return Err(unreadable());
            }
            let m = Manifest::decode(body).map_err(bad)?;
            let dek = unwrap_b64(&p.kek, &m.wrapped_dek).map_err(bad)?;
            if m.stored_len() != Some(stored) {
                return Err(unreadable());
            }
            PredPlan {
                dek,
                plain_len: m.plain_len,
                segments: m.segments,
                multipart: true,
                etag,
                stored,
                client_md5: None,
                parts: m.parts,
                window: None,
                max_segment: p.max_segment,
            }
        }
        Some("404") => {
            let Some(w) = obj.get(&p.meta_header) else {
                return Ok(None);
            };
            let dek = unwrap_b64(&p.kek, w).map_err(bad)?;
            let segments = single_segments(stored).map_err(bad)?;
            let plain_len = stored.saturating_sub(SEGMENT_OVERHEAD);
            let claimed = obj
                .get("x-amz-meta-plaintext-size")
                .map(|s| s.trim().parse::<u64>().map_err(|_| unreadable()))
                .transpose()?;
            if claimed.is_some_and(|c| c != plain_len) {
                return Err(unreadable());
            }
            let client_md5 = obj
                .get("x-amz-meta-client-etag")
                .map(|s| {
                    hex::decode(s.trim().trim_matches('"'))
                        .ok()
                        .and_then(|b| <[u8; 16]>::try_from(b).ok())
                        .ok_or_else(unreadable)
                })
                .transpose()?;
            PredPlan {
                dek,
                plain_len,
                segments,
                multipart: false,
                etag,
                stored,
                client_md5,
                parts: Vec::new(),
                window: None,
                max_segment: p.max_segment,
            }
        }
        // An empty manifest object (its range not satisfiable) is no manifest at all.
        Some("416") => return Err(unreadable()),
        _ => {
            return Err(S3Error::service_unavailable(
                "s3crypt: the object's manifest could not be read; please retry",
            ))
        }
    };
    if plan
        .segments
        .iter()
        .any(|s| s.cipher_len > plan.max_segment)
    {
        return Err(S3Error::not_implemented(
            "s3crypt: the predecessor's object has a segment larger than predecessor_read.max_segment_bytes; read it with the s3crypt tool",
        ));
    }
    plan.parts.shrink_to_fit();
    Ok(Some(plan))
}

impl PredPlan {
    /// The ETag the predecessor's clients saw: the plaintext MD5 of a single object; for a
    /// multipart object the backend's on GET, the MD5 of its decimal size on HEAD.
    pub fn shown_etag(&self, head: bool) -> String {
        match (&self.client_md5, self.multipart, head) {
            (Some(m), false, _) => format!("\"{}\"", hex::encode(m)),
            (_, true, true) => {
                let d = <md5::Md5 as md5::Digest>::digest(self.plain_len.to_string().as_bytes());
                format!("\"{}\"", hex::encode(d))
            }
            _ => self.etag.clone(),
        }
    }

    /// Part `n`'s plaintext range (offset, length): a manifest part, or part 1 of a
    /// single object.
    pub fn part_range(&self, n: u32) -> Option<(u64, u64)> {
        if !self.multipart {
            return (n == 1).then_some((0, self.plain_len));
        }
        let mut off = 0u64;
        for (i, &(_, ps)) in self.parts.iter().enumerate() {
            if i.checked_add(1) == usize::try_from(n).ok() {
                return Some((off, ps));
            }
            off = off.checked_add(ps)?;
        }
        None
    }

    pub fn part_count(&self) -> usize {
        self.parts.len().max(1)
    }

    /// Reads only the segments that hold plaintext `first..=last`.
    pub fn set_window(&mut self, first: u64, last: u64) -> Option<()> {
        let (mut plain, mut stored) = (0u64, 0u64);
        let mut found: Option<(usize, u64, u64)> = None;
        for (i, s) in self.segments.iter().enumerate() {
            let end = plain.checked_add(s.plain_len)?;
            if found.is_none() && first < end {
                found = Some((i, plain, stored));
            }
            if let Some((a, p0, s0)) = found {
                if last < end {
                    let stored_last = stored.checked_add(s.cipher_len)?.checked_sub(1)?;
                    self.window = Some(PredWindow {
                        first_seg: a,
                        last_seg: i,
                        stored_first: s0,
                        stored_last,
                        skip: first.checked_sub(p0)?,
                        first,
                        last,
                    });
                    return Some(());
                }
            }
            plain = end;
            stored = stored.checked_add(s.cipher_len)?;
        }
        None
    }

    /// The decryptor of what the planned read receives.
    pub fn decryptor(&self) -> Option<SegmentsDecryptor> {
        let dek = self.dek.duplicate();
        match self.window {
            None => {
                let d = SegmentsDecryptor::new(&dek, self.segments.clone(), self.max_segment);
                Some(match self.client_md5 {
                    Some(m) => d.expect_md5(m),
                    None => d,
                })
            }
            Some(w) => {
                let segs = self.segments.get(w.first_seg..=w.last_seg)?.to_vec();
                let take = w.last.checked_sub(w.first)?.checked_add(1)?;
                Some(SegmentsDecryptor::new(&dek, segs, self.max_segment).window(w.skip, take))
            }
        }
    }
}

/// The predecessor's own metadata never goes to clients.
pub(crate) fn strip_metadata(p: &Predecessor, out: &mut Headers) {
    out.remove(&p.meta_header);
    out.remove("x-amz-meta-client-etag");
    out.remove("x-amz-meta-plaintext-size");
}
