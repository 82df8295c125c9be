//! The response side every operation shares: what happens to the backend's response body
//! ([`RespBody`]: passed, decrypted and verified, trimmed, buffered as XML, replaced), the
//! hold-back of the last promised byte, and the checks on responses that carry no object.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use super::cx::Cx;
use super::request::MAX_XML_BODY;
use super::{BodyError, Counter, ResponseStep};
use crate::format::{take_up_to, Decrypt, FormatError, ENVELOPE_HEADER};
use crate::headers::Headers;
use crate::s3::error::S3Error;
use crate::s3::Response;

/// What happens to the backend's response body.
pub(crate) enum RespBody {
    Pass,
    /// One stream, or a whole multipart object; the last promised byte is held back
    /// until everything verified. `released`: plaintext bytes released so far.
    Decrypt(Box<dyn Decrypt>, Holdback, u64),
    /// Drop `skip` bytes, release `take`, drop the rest (plaintext objects, ranges widened).
    Trim {
        skip: u64,
        take: u64,
    },
    /// Buffer the whole (small, XML) body; the operation rewrites it at the end.
    Xml(Vec<u8>),
    /// Send this body instead of the backend's.
    Replace(Option<Vec<u8>>),
}

impl RespBody {
    /// A decrypting body (of a response whose headers are not done yet).
    pub fn decrypt(d: Box<dyn Decrypt>) -> RespBody {
        RespBody::Decrypt(d, Holdback::default(), 0)
    }

    /// The last touches every response's headers get: the envelope never goes to the
    /// client, the hold-back learns the promised length, and a replacement body that no
    /// body callback will carry is announced as empty.
    pub fn headers_done(&mut self, out: &mut Headers, end_of_stream: bool) {
        out.remove(ENVELOPE_HEADER);
        if let RespBody::Decrypt(_, hold, _) = self {
            hold.announced = out
                .get("content-length")
                .and_then(|v| v.trim().parse().ok());
        }
        if end_of_stream {
            if let RespBody::Replace(Some(_)) = self {
                out.set("content-length", "0");
                *self = RespBody::Replace(None);
            }
        }
    }

    /// The response headers of an operation that returns no object data, as they go to
    /// the client (see [`no_object_response`]).
    pub fn no_object_headers(&mut self, cx: &Cx, h: &Headers, eos: bool) -> ResponseStep {
        let mut out = h.clone();
        no_object_response(cx, h, &mut out, self);
        self.headers_done(&mut out, eos);
        ResponseStep::Forward(out)
    }

    /// A response body chunk: what goes to the client is appended to `out`; a buffered XML
    /// body is returned whole at the end, for the operation to rewrite and send.
    pub fn push(
        &mut self,
        cx: &Cx,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<String>, BodyError> {
        match self {
            RespBody::Pass => out.extend_from_slice(chunk),
            RespBody::Trim { skip, take } => {
                let s = take_up_to(skip, chunk.len());
                let rest = chunk.get(s..).unwrap_or(&[]);
                let n = take_up_to(take, rest.len());
                out.extend_from_slice(rest.get(..n).unwrap_or(&[]));
                if end && *take > 0 {
                    return Err(BodyError::Reset(
                        "s3crypt: backend response ended early".into(),
                    ));
                }
            }
            RespBody::Decrypt(d, hold, released) => {
                let before = out.len();
                let r = d
                    .push(chunk, out)
                    .and_then(|_| if end { d.finish() } else { Ok(()) })
                    .and_then(|()| hold.apply(out, before, end));
                if let Err(e) = r {
                    out.truncate(before);
                    cx.count(Counter::IntegrityFailures, 1);
                    return Err(BodyError::Reset(format!(
                        "s3crypt: stored object failed verification ({e:?}); stream reset"
                    )));
                }
                // `out` only grew; a count of bytes that went through memory is far below
                // u64::MAX: nothing saturates.
                *released = released.saturating_add(out.len().saturating_sub(before) as u64);
                if end {
                    cx.count(Counter::ObjectsDecrypted, 1);
                    cx.count(Counter::BytesDecrypted, *released);
                }
            }
            RespBody::Xml(buf) => {
                buf.extend_from_slice(chunk);
                // A listing page (at most 1,000 entries) is well below this.
                if buf.len() > MAX_XML_BODY {
                    return Err(BodyError::Reset(
                        "s3crypt: listing response too large".into(),
                    ));
                }
                if end {
                    return Ok(Some(String::from_utf8_lossy(buf).into_owned()));
                }
            }
            RespBody::Replace(body) => {
                if let Some(b) = body.take() {
                    out.extend_from_slice(&b);
                }
            }
        }
        Ok(None)
    }
}

/// The response headers of an operation that returns no object data (everything but
/// GET/HEAD of an object): one that answered with an object anyway was routed elsewhere
/// by the backend (to GetObject), and nothing of it is released; a buffered XML body is
/// only rewritten for a 200 (its length changes).
pub(crate) fn no_object_response(cx: &Cx, h: &Headers, out: &mut Headers, body: &mut RespBody) {
    let status = h.get(":status").unwrap_or("");
    let no_data = cx
        .req
        .as_ref()
        .is_some_and(|r| r.spec.response == Response::NoObjectData);
    if no_data && h.contains(ENVELOPE_HEADER) {
        cx.count(Counter::RejectedRequests, 1);
        replace_response(
            cx,
            out,
            body,
            &S3Error::internal(
                "s3crypt: the backend answered this operation with object data; refused",
            ),
        );
    } else if let RespBody::Xml(..) = body {
        if status == "200" {
            out.remove("content-length");
        } else {
            *body = RespBody::Pass;
        }
    }
}

/// The response becomes the S3 error `e` (its body replaces the backend's).
pub(crate) fn replace_response(cx: &Cx, out: &mut Headers, body: &mut RespBody, e: &S3Error) {
    let r = cx.reply(e);
    *out = Headers::new();
    out.set(":status", r.status.to_string());
    for (k, v) in &r.headers {
        out.set(k, v.clone());
    }
    if cx.head {
        *body = RespBody::Replace(None);
    } else {
        out.set("content-length", r.body.len().to_string());
        *body = RespBody::Replace(Some(r.body));
    }
}

/// Holds back the last byte the response promised (its `Content-Length`) until the whole
/// stream verified, so that a stored object that is shorter than it claims (a truncated
/// last part, whose size the listing-style arithmetic cannot see) never looks complete to
/// the client: it gets at most the verified prefix, one byte short, then a reset. Also
/// refuses more plaintext than was promised.
#[derive(Debug, Default)]
pub(crate) struct Holdback {
    /// The promised length; `None` (unknown) holds nothing back.
    pub(crate) announced: Option<u64>,
    pub(crate) released: u64,
    pub(crate) held: Vec<u8>,
}

impl Holdback {
    /// `out[from..]` is new verified plaintext: releases what may go, keeps the rest.
    pub(crate) fn apply(
        &mut self,
        out: &mut Vec<u8>,
        from: usize,
        end: bool,
    ) -> Result<(), FormatError> {
        let Some(announced) = self.announced else {
            return Ok(());
        };
        // The hot path: far from the end, everything goes and nothing is copied.
        let fresh_len = out.len().saturating_sub(from) as u64;
        if !end && self.held.is_empty() && self.released.saturating_add(fresh_len) < announced {
            self.released = self.released.saturating_add(fresh_len);
            return Ok(());
        }
        let mut fresh = out.split_off(from);
        let mut all = std::mem::take(&mut self.held);
        all.append(&mut fresh);
        let total = self.released.saturating_add(all.len() as u64);
        if total > announced || (end && total != announced) {
            return Err(FormatError::Integrity);
        }
        let may = if end {
            all.len()
        } else {
            let limit = announced.saturating_sub(1).saturating_sub(self.released);
            all.len().min(usize::try_from(limit).unwrap_or(usize::MAX))
        };
        self.held = all.split_off(may);
        self.released = self.released.saturating_add(may as u64);
        out.extend_from_slice(&all);
        Ok(())
    }
}
