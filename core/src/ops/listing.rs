//! Listings (ListObjects v1 and v2, ListObjectVersions): every listed object shows its
//! plaintext size and the ETag reads show. A multipart object's follow from the listing
//! (`C − N · 28,688`, its `-N` ETag); an empty object is empty under every version; a
//! single object's come from the ETag cache (`etags`), else from the object itself: a
//! ranged read of its last 156 bytes (envelope and trailer), at most `listing_lookups`
//! per response, one after the other while the response is held. A page with more
//! unknown objects than that (or whose lookup failed) is cut before the first one not
//! looked up and answered truncated, with a marker that continues after the last entry
//! it holds: every entry a client sees is exact, and following the pages lists every
//! object once. A page held for lookups is also cut before its first object entry whose
//! page (with the common prefixes it keeps) would pass [`HELD_PAGE_MAX`] bytes: a held
//! page goes to Envoy as one buffer, which must stay under Envoy's buffer limit. A page
//! that cannot show even its first object (too long with its prefixes, or its lookup
//! failed) holds only the common prefixes before that object, and continues after them.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;

use super::cx::Cx;
use super::etags::{self, Known};
use super::get::parse_content_range;
use super::{BodyError, CallOut, Counter};
use crate::format::{
    open_trailer, plain_size_from_listing, single_stored_len, Layout, ENVELOPE_HEADER,
    SINGLE_ENVELOPE_VERSION, TRAILER_LEN,
};
use crate::headers::Headers;
use crate::s3::error::xml_escape;
use crate::s3::xml::{self, EntryKind, ListEntry};
use crate::s3::{self, Operation};

/// Prefix of the continuation tokens the filter hands out for pages it cut (ListObjects
/// v2): the rest is the last key of the page, base64url. The next request continues with
/// `start-after` that key.
pub(crate) const TOKEN_PREFIX: &str = "s3crypt1.";

/// The largest listing text (bytes of the backend's page) the filter holds for lookups
/// and then releases at once; a longer page is cut (module docs). Below the 64 KiB
/// `per_connection_buffer_limit_bytes` of every shipped Envoy configuration (the chart
/// refuses less), with room for the few bytes the rewrite adds (marker, token).
pub(crate) const HELD_PAGE_MAX: usize = 48 * 1024;

/// What a listed object shows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    size: u64,
    etag: Option<String>,
}

/// A listing response being rewritten.
pub(crate) struct Listing {
    op: Operation,
    url_encoded: bool,
    bucket: String,
    text: String,
    entries: Vec<ListEntry>,
    shown: Vec<Option<Shown>>,
    /// Entries to look up (indexes), in order; `next` is the one in flight.
    pending: Vec<usize>,
    next: usize,
    /// The first entry the page does not return.
    cut: Option<usize>,
    /// Entries not shown: the predecessor's internal objects (`predecessor_read`).
    hidden: Vec<bool>,
}

/// The continuation token of a page cut after `key`.
pub(crate) fn token_for(key: &str) -> String {
    format!("{TOKEN_PREFIX}{}", B64URL.encode(key.as_bytes()))
}

/// The key a filter continuation token continues after.
pub(crate) fn token_key(token: &str) -> Option<String> {
    let b = B64URL.decode(token.strip_prefix(TOKEN_PREFIX)?).ok()?;
    String::from_utf8(b).ok()
}

impl Listing {
    /// The listing body arrived whole: what it needs looked up, or the rewritten body
    /// (`Ok(Err(body))`).
    pub fn start(cx: &Cx, text: String) -> Result<(Listing, Option<CallOut>), BodyError> {
        let req = cx.req.as_ref();
        let entries = xml::listing_entries(&text)
            .map_err(|_| BodyError::Reset("s3crypt: unparseable listing".into()))?;
        let mut l = Listing {
            op: req.map_or(Operation::ListObjectsV2, |r| r.op),
            url_encoded: req
                .and_then(|r| r.query_param("encoding-type"))
                .is_some_and(|e| e.eq_ignore_ascii_case("url")),
            bucket: req.and_then(|r| r.bucket.clone()).unwrap_or_default(),
            shown: vec![None; entries.len()],
            hidden: vec![false; entries.len()],
            entries,
            text,
            pending: Vec::new(),
            next: 0,
            cut: None,
        };
        let budget = cx.cfg.plugin.listing_lookups as usize;
        if cx.cfg.predecessor.is_some() {
            let hidden: Vec<bool> = l
                .entries
                .iter()
                .map(|e| crate::predecessor::is_internal(&l.raw_key(e)))
                .collect();
            l.hidden = hidden;
        }
        for (i, e) in l.entries.iter().enumerate() {
            if !matches!(e.kind, EntryKind::Contents | EntryKind::Version)
                || l.hidden.get(i).copied().unwrap_or(false)
            {
                continue;
            }
            let Some(size) = e.size else { continue };
            match quick(cx, &l.bucket, &l.raw_key(e), e, size) {
                Some(s) => {
                    if let Some(slot) = l.shown.get_mut(i) {
                        *slot = Some(s);
                    }
                }
                None if l.pending.len() < budget => l.pending.push(i),
                None => {
                    l.cut = Some(i);
                    break;
                }
            }
        }
        if !l.pending.is_empty() {
            l.bound_held_page();
        }
        let call = l.call(cx);
        Ok((l, call))
    }

    /// Held for lookups, the rewritten page goes to Envoy as one buffer when they
    /// answered: past its buffer limit Envoy resets the stream (and Envoy 1.40 then
    /// crashes on a watermark it never raised). The page ends before the first object
    /// entry whose page, with the common prefixes it keeps (those sorting before its last
    /// object), would pass HELD_PAGE_MAX bytes. If even its first object entry does, the
    /// page holds only the common prefixes before it, and nothing is looked up.
    fn bound_held_page(&mut self) {
        let len = |e: &ListEntry| e.span.1.saturating_sub(e.span.0);
        let mut prefixes: Vec<(String, usize)> = self
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Prefix)
            .map(|e| (self.raw_key(e), len(e)))
            .collect();
        prefixes.sort();
        // Bytes outside the entries (the page's own elements).
        let spans: usize = self.entries.iter().map(len).fold(0, usize::saturating_add);
        let mut bytes = self.text.len().saturating_sub(spans);
        let (mut p, mut first) = (0usize, true);
        let mut over = None;
        for (i, e) in self.entries.iter().enumerate() {
            if !matches!(e.kind, EntryKind::Contents | EntryKind::Version) {
                continue;
            }
            if self.cut.is_some_and(|c| i >= c) {
                break;
            }
            let key = self.raw_key(e);
            bytes = bytes.saturating_add(len(e));
            while let Some((_, n)) = prefixes.get(p).filter(|(k, _)| *k < key) {
                bytes = bytes.saturating_add(*n);
                p = p.saturating_add(1);
            }
            if bytes > HELD_PAGE_MAX {
                over = Some((i, first));
                break;
            }
            first = false;
        }
        match over {
            Some((i, false)) => {
                self.cut = Some(i);
                self.pending.retain(|&j| j < i);
            }
            // Even the first object's page is too long (the common prefixes before it):
            // a page of those prefixes alone, not held.
            Some((i, true)) => {
                self.cut = Some(i);
                self.pending.clear();
            }
            None => {}
        }
    }

    fn raw_key(&self, e: &ListEntry) -> String {
        if self.url_encoded {
            s3::uri_decode(&e.key).unwrap_or_else(|_| e.key.clone())
        } else {
            e.key.clone()
        }
    }

    /// The lookup of the next pending entry, if any.
    fn call(&self, cx: &Cx) -> Option<CallOut> {
        let &i = self.pending.get(self.next)?;
        let e = self.entries.get(i)?;
        let size = e.size?;
        let mut path = format!(
            "/{}/{}",
            s3::uri_encode(&self.bucket, true),
            s3::uri_encode(&self.raw_key(e), false)
        );
        if let (EntryKind::Version, Some(v)) = (e.kind, &e.version_id) {
            path.push_str(&format!("?versionId={}", s3::uri_encode(v, true)));
        }
        // A multipart object (its `-N` ETag) seals its ETag in its end part.
        let multipart = super::table::parts_in_etag(&e.etag).is_some();
        let first = size.saturating_sub(etags::tail_len(multipart));
        let last = size.saturating_sub(1);
        let mut h = cx.request_at("GET", path, Some(format!("bytes={first}-{last}")));
        if !e.etag.is_empty() {
            // (Some servers list no ETags: then any version of the key answers.)
            h.set("if-match", e.etag.clone());
        }
        cx.count(Counter::ListingLookups, 1);
        Some(cx.backend_callout(h))
    }

    /// A lookup answered: the next one, or `None` when the body is ready ([`Self::body`]).
    pub fn answered(&mut self, cx: &Cx, resp: Option<(&Headers, &[u8])>) -> Option<CallOut> {
        let i = *self.pending.get(self.next)?;
        self.next = self.next.saturating_add(1);
        let e = self.entries.get(i)?;
        let key = self.raw_key(e);
        match looked_up(cx, &self.bucket, &key, e, resp) {
            Some(s) => {
                if let Some(slot) = self.shown.get_mut(i) {
                    *slot = Some(s);
                }
                self.call(cx)
            }
            None => {
                // Not known: the page ends before this entry.
                self.cut = Some(self.cut.map_or(i, |c| c.min(i)));
                self.pending.truncate(self.next);
                None
            }
        }
    }

    /// The rewritten listing, or an error to reset with.
    pub fn body(&self, cx: &Cx) -> Result<String, BodyError> {
        let bad = || BodyError::Reset("s3crypt: unparseable listing".into());
        let cut = self.cut;
        let kept = |i: usize| cut.is_none_or(|c| i < c);
        // The last object entry the page returns (where the next page starts).
        let last = self
            .entries
            .iter()
            .enumerate()
            .filter(|&(i, e)| e.kind != EntryKind::Prefix && kept(i))
            .map(|(_, e)| e)
            .next_back();
        // No object entry kept: a page of the common prefixes sorting before the first
        // object it cannot show, continuing after the last of them.
        let prefix_page = match (cut, last) {
            (Some(c), None) => {
                let before = self.entries.get(c).map(|e| self.raw_key(e));
                let last_prefix = self
                    .entries
                    .iter()
                    .filter(|e| e.kind == EntryKind::Prefix)
                    .map(|e| self.raw_key(e))
                    .filter(|k| before.as_ref().is_some_and(|b| k < b))
                    .max();
                let Some(p) = last_prefix else {
                    cx.note("s3crypt: a listing's first object could not be looked up");
                    return Err(BodyError::Reset(
                        "s3crypt: a listed object could not be looked up".into(),
                    ));
                };
                Some((p, before.unwrap_or_default()))
            }
            _ => None,
        };
        let last_key = match &prefix_page {
            Some((_, before)) => Some(before.clone()),
            None => last.map(|e| self.raw_key(e)),
        };
        let mut out = String::with_capacity(self.text.len());
        let mut pos = 0usize;
        let (mut keys, mut prefixes) = (0u64, 0u64);
        for (i, e) in self.entries.iter().enumerate() {
            let keep = match (e.kind, &last_key, cut) {
                (_, _, None) => true,
                (EntryKind::Prefix, Some(k), Some(_)) => self.raw_key(e) < *k,
                (_, _, Some(c)) => i < c,
            } && !self.hidden.get(i).copied().unwrap_or(false);
            out.push_str(self.text.get(pos..e.span.0).ok_or_else(bad)?);
            pos = e.span.1;
            if !keep {
                continue;
            }
            match e.kind {
                EntryKind::Prefix => prefixes = prefixes.saturating_add(1),
                _ => keys = keys.saturating_add(1),
            }
            let shown = self.shown.get(i).cloned().flatten().or_else(|| {
                // Multipart objects and entries without a size: from the listing alone.
                let size = e.size?;
                Some(Shown {
                    size: plain_size_from_listing(size, &e.etag).unwrap_or(size),
                    etag: None,
                })
            });
            let mut edits: Vec<((usize, usize), String)> = Vec::new();
            if let Some(s) = shown {
                if let Some(span) = e.size_span {
                    edits.push((span, s.size.to_string()));
                }
                if let (Some(span), Some(etag)) = (e.etag_span, s.etag) {
                    edits.push((span, xml_escape(&etag)));
                }
            }
            edits.sort_by_key(|(span, _)| span.0);
            let mut at = e.span.0;
            for ((a, b), text) in edits {
                out.push_str(self.text.get(at..a).ok_or_else(bad)?);
                out.push_str(&text);
                at = b;
            }
            out.push_str(self.text.get(at..e.span.1).ok_or_else(bad)?);
        }
        out.push_str(self.text.get(pos..).ok_or_else(bad)?);
        if cut.is_none() {
            if self.hidden.iter().any(|&h| h) {
                if out.contains("<KeyCount>") {
                    let count = keys.saturating_add(prefixes).to_string();
                    out = xml::replace_element_text(&out, "KeyCount", &count).ok_or_else(bad)?;
                }
                // ListObjects v1 clients continue after the last key they see; a truncated
                // page whose last entries were hidden says where the backend's ended.
                let truncated = xml::element_text(&out, "IsTruncated").as_deref() == Some("true");
                if self.op == Operation::ListObjectsV1
                    && truncated
                    && xml::element_text(&out, "NextMarker").is_none()
                {
                    if let Some(e) = self.entries.last() {
                        out = xml::set_element_text(&out, "NextMarker", &e.key, "IsTruncated")
                            .ok_or_else(bad)?;
                    }
                }
            }
            return Ok(out);
        }
        // Where the next page starts: after the last object entry, or after every key
        // under the last common prefix (U+10FFFF sorts after any character that can
        // follow it; a key under it can only list as that prefix again).
        let (next_raw, next_version) = match (&prefix_page, last) {
            (Some((p, _)), _) => (format!("{p}\u{10FFFF}"), ""),
            (None, Some(l)) => (self.raw_key(l), l.version_id.as_deref().unwrap_or("")),
            (None, None) => return Ok(out),
        };
        let next_listed = if self.url_encoded {
            s3::uri_encode(&next_raw, false)
        } else {
            next_raw.clone()
        };
        // A page cut short: truncated, continuing after its last entry.
        let set = |x: String, name: &str, value: &str| {
            xml::set_element_text(&x, name, value, "IsTruncated").ok_or_else(bad)
        };
        out = xml::replace_element_text(&out, "IsTruncated", "true").ok_or_else(bad)?;
        out = match self.op {
            Operation::ListObjectsV1 => set(out, "NextMarker", &next_listed)?,
            Operation::ListObjectVersions => {
                let o = set(out, "NextKeyMarker", &next_listed)?;
                set(o, "NextVersionIdMarker", next_version)?
            }
            _ => {
                let o = set(out, "NextContinuationToken", &token_for(&next_raw))?;
                let count = keys.saturating_add(prefixes).to_string();
                if o.contains("<KeyCount>") {
                    set(o, "KeyCount", &count)?
                } else {
                    o
                }
            }
        };
        cx.count(Counter::ListingsCut, 1);
        Ok(out)
    }
}

/// What an entry shows without asking the backend, if that is known: empty objects, and
/// objects the cache knows.
fn quick(cx: &Cx, bucket: &str, key: &str, e: &ListEntry, size: u64) -> Option<Shown> {
    if size == 0 {
        // Empty under every envelope version; its ETag is the MD5 of nothing.
        return Some(Shown {
            size: 0,
            etag: None,
        });
    }
    let k = etags::cached(cx, bucket, key, &e.etag, size)?;
    Some(shown_of(&k, &e.etag))
}

fn shown_of(k: &Known, backend_etag: &str) -> Shown {
    Shown {
        size: k.plain_len,
        etag: Some(k.etag(backend_etag)),
    }
}

/// What a lookup of one entry found: `None` when it could not tell (the page is cut
/// there). An object that is gone or unreadable shows what the listing alone says.
fn looked_up(
    cx: &Cx,
    bucket: &str,
    key: &str,
    e: &ListEntry,
    resp: Option<(&Headers, &[u8])>,
) -> Option<Shown> {
    let size = e.size?;
    let listing_only = || {
        Some(Shown {
            size: plain_size_from_listing(size, &e.etag).unwrap_or(size),
            etag: None,
        })
    };
    let (h, body) = resp?;
    match h.get(":status") {
        Some("206") | Some("200") => {}
        // Deleted or replaced since the listing: as the listing says. Refused (an SSE-C
        // object, whose key only its readers have; no permission): the listing alone,
        // not cached, so the page goes on.
        Some("404") | Some("412") | Some("400") | Some("403") => return listing_only(),
        _ => return None,
    }
    if !e.etag.is_empty() && h.get("etag").is_some_and(|t| t != e.etag) {
        return listing_only();
    }
    let Some(ev) = h.get(ENVELOPE_HEADER) else {
        if let Some(p) = &cx.cfg.predecessor {
            let plain_scope = cx.cfg.passthrough_allowed(bucket, key);
            if let Some(k) = predecessor_shown(p, e, size, h, plain_scope) {
                etags::remember(cx, bucket, key, &e.etag, size, &k);
                return Some(shown_of(&k, &e.etag));
            }
        }
        // Not an s3crypt object: served as it is stored (where it is served at all).
        let k = Known {
            version: 0,
            plain_len: size,
            md5: None,
            checksum: None,
            wrapped: [0; crate::crypto::WRAPPED_DEK_LEN],
            parts: None,
        };
        etags::remember(cx, bucket, key, &e.etag, size, &k);
        return Some(shown_of(&k, &e.etag));
    };
    let Ok((env, dek)) = cx.open_envelope(ev) else {
        return listing_only();
    };
    if env.layout != Layout::Single {
        return multipart_looked_up(cx, bucket, key, e, size, h, body, &env, &dek);
    }
    let plain = env.plain_len.unwrap_or(0);
    if env.layout != Layout::Single || single_stored_len(env.version, plain) != Some(size) {
        cx.count(Counter::IntegrityFailures, 1);
        return listing_only();
    }
    let known = if env.version >= SINGLE_ENVELOPE_VERSION && env.md5.is_none() {
        // The last TRAILER_LEN stored bytes, as the range asked.
        let first = size.saturating_sub(TRAILER_LEN);
        let tail = match h.get("content-range").and_then(parse_content_range) {
            Some((a, b, t)) if (a, b, t) == (first, size.saturating_sub(1), size) => body,
            _ => {
                cx.count(Counter::IntegrityFailures, 1);
                return Some(shown_of(&Known::of(&env, None), &e.etag));
            }
        };
        match open_trailer(env.suite, &dek, plain, tail) {
            Ok(t) => Known::of(&env, Some(&t)),
            Err(_) => {
                // The size is the envelope's (authenticated); the ETag cannot be known.
                cx.count(Counter::IntegrityFailures, 1);
                return Some(shown_of(&Known::of(&env, None), &e.etag));
            }
        }
    } else {
        Known::of(&env, None)
    };
    etags::remember(cx, bucket, key, &e.etag, size, &known);
    Some(shown_of(&known, &e.etag))
}

/// What a listed object of the predecessor shows (`predecessor_read`): a backend
/// multipart object is one segment per backend part (`C − 28 · N`, the backend's ETag),
/// a single one carries its wrapped key (`C − 28`, its `client-etag`). `None`: neither.
/// (Sizes only: what the object holds is verified when it is read. Inside a passthrough
/// scope a multipart object without `isec` lists as the plaintext object it may be: only
/// its manifest could tell.)
fn predecessor_shown(
    p: &crate::config::Predecessor,
    e: &ListEntry,
    size: u64,
    h: &Headers,
    plain_scope: bool,
) -> Option<Known> {
    use crate::predecessor::SEGMENT_OVERHEAD;
    let blank = |plain_len: u64, md5: Option<[u8; 16]>| Known {
        version: 0,
        plain_len,
        md5,
        checksum: None,
        wrapped: [0; crate::crypto::WRAPPED_DEK_LEN],
        parts: None,
    };
    if let Some(n) = super::table::parts_in_etag(&e.etag) {
        if plain_scope && h.get(&p.meta_header).is_none() {
            return None;
        }
        return size
            .checked_sub(n.checked_mul(SEGMENT_OVERHEAD)?)
            .map(|plain| blank(plain, None));
    }
    h.get(&p.meta_header)?;
    let md5 = h
        .get("x-amz-meta-client-etag")
        .and_then(|m| hex::decode(m.trim()).ok())
        .and_then(|b| <[u8; 16]>::try_from(b).ok());
    Some(blank(size.checked_sub(SEGMENT_OVERHEAD)?, md5))
}

/// What a lookup of a multipart object found (the read of its last bytes, `h` and
/// `body`): the plaintext ETag sealed in its end or closing part, or the backend's where
/// it seals none (the object ends with a client's final part, or was completed before
/// ETags were sealed).
#[allow(clippy::too_many_arguments)]
fn multipart_looked_up(
    cx: &Cx,
    bucket: &str,
    key: &str,
    e: &ListEntry,
    size: u64,
    h: &Headers,
    body: &[u8],
    env: &crate::format::Envelope,
    dek: &crate::crypto::DataKey,
) -> Option<Shown> {
    let listing_only = Shown {
        size: plain_size_from_listing(size, &e.etag).unwrap_or(size),
        etag: None,
    };
    // The read's bytes, if they are the last PART_OVERHEAD the lookup asked for.
    let first = size.saturating_sub(etags::tail_len(true));
    let whole = (first, size.saturating_sub(1), size);
    let tail = match h.get("content-range").and_then(parse_content_range) {
        Some(r) if r == whole => body,
        _ => &[],
    };
    let Some(known) = etags::multipart_tail(env, dek, &e.etag, size, tail) else {
        // A multipart envelope on an object the listing shows as single, or shorter than
        // its part count allows: no object of ours (reads refuse it).
        cx.count(Counter::IntegrityFailures, 1);
        return Some(listing_only);
    };
    etags::remember(cx, bucket, key, &e.etag, size, &known);
    Some(shown_of(&known, &e.etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_tokens_round_trip_any_key() {
        for k in ["", "a", "dir/ü€ &?=", "x\u{1}y"] {
            let t = token_for(k);
            assert!(t.starts_with(TOKEN_PREFIX) && !t.contains(['&', '=', '/', '+']));
            assert_eq!(token_key(&t).as_deref(), Some(k));
        }
        // The backend's own tokens are not the filter's.
        assert_eq!(
            token_key("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="),
            None
        );
        assert_eq!(token_key("s3crypt1.!!"), None);
    }
}
