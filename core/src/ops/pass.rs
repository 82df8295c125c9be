//! Operations that carry no object data: listings (whose stored sizes become plaintext
//! sizes), ListParts (part sizes likewise), and the pass-through operations of the table
//! (bucket operations, deletes, ListBuckets, ListMultipartUploads, object subresources),
//! whose document bodies go upstream unchanged once checked.

use super::cx::Cx;
use super::listing::{token_key, Listing};
use super::request::{drop_empty_param_delimiter, pass_body, remove_query_param, PassBody};
use super::response::RespBody;
use super::{BodyError, CallOut, CallOutStep, RequestStep, ResponseResume, ResponseStep};
use crate::auth::sigv4::VerifiedRequest;
use crate::headers::Headers;
use crate::s3::error::S3Error;
use crate::s3::{xml, S3Request};

pub(crate) struct Pass {
    doc: PassBody,
    body: RespBody,
    rewrite: Option<Rewrite>,
    /// A listing held while listed objects are looked up.
    listing: Option<Box<Listing>>,
}

/// How a listing's XML is rewritten.
#[derive(Clone, Copy)]
pub(crate) enum Rewrite {
    /// ListObjects (v1, v2, versions): stored sizes become plaintext sizes.
    ListingSizes,
    /// ListParts: stored part sizes become plaintext sizes.
    PartSizes,
}

impl Pass {
    /// A pass-through operation, or a listing rewritten as `rewrite` says.
    pub fn start(
        cx: &Cx,
        mut up: Headers,
        v: &VerifiedRequest,
        req: &S3Request,
        eos: bool,
        rewrite: Option<Rewrite>,
    ) -> Result<(Pass, RequestStep), S3Error> {
        if let Some(r) = rewrite {
            up.remove("accept-encoding");
            if let Rewrite::ListingSizes = r {
                // An empty delimiter means no delimiter; some S3 servers mis-handle it.
                if let Some(p) = up.get(":path").map(drop_empty_param_delimiter) {
                    up.set(":path", p);
                }
                // A page the filter cut continues after its last key.
                let after = req.query_param("continuation-token").and_then(token_key);
                if let (Some(k), Some(p)) = (after, up.get(":path").map(str::to_string)) {
                    let p = remove_query_param(&p, "continuation-token");
                    let p = remove_query_param(&p, "start-after");
                    let sep = if p.contains('?') { '&' } else { '?' };
                    up.set(
                        ":path",
                        format!("{p}{sep}start-after={}", crate::s3::uri_encode(&k, true)),
                    );
                }
            }
        }
        let (doc, up) = pass_body(cx, up, v, req, eos)?;
        let body = match rewrite {
            Some(_) => RespBody::Xml(Vec::new()),
            None => RespBody::Pass,
        };
        let listing = None;
        Ok((
            Pass {
                doc,
                body,
                rewrite,
                listing,
            },
            RequestStep::Forward(up),
        ))
    }

    pub fn request_body(
        &mut self,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), S3Error> {
        self.doc.push(chunk, end, out)
    }

    /// Whether the request carries a document the filter checks before it goes upstream.
    pub fn checks_document(&self) -> bool {
        matches!(self.doc, PassBody::Doc(_))
    }

    pub fn response_headers(&mut self, cx: &Cx, h: &Headers, eos: bool) -> ResponseStep {
        self.body.no_object_headers(cx, h, eos)
    }

    pub fn response_body(
        &mut self,
        cx: &Cx,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<CallOut>, BodyError> {
        let Some(text) = self.body.push(cx, chunk, end, out)? else {
            return Ok(None);
        };
        let rewritten = match self.rewrite {
            Some(Rewrite::PartSizes) => xml::rewrite_sizes(&text, &mut |size, _| {
                size.checked_sub(crate::format::PART_OVERHEAD)
            })
            .map_err(|_| BodyError::Reset("s3crypt: unparseable part list".into()))?,
            Some(Rewrite::ListingSizes) => {
                let (listing, call) = Listing::start(cx, text)?;
                if let Some(c) = call {
                    // Held (nothing written) until the lookups answered.
                    self.listing = Some(Box::new(listing));
                    return Ok(Some(c));
                }
                listing.body(cx)?
            }
            None => text,
        };
        out.extend_from_slice(rewritten.as_bytes());
        Ok(None)
    }

    /// A lookup of a listed object answered: the next one, or the rewritten listing.
    pub fn callout(&mut self, cx: &Cx, resp: Option<(&Headers, &[u8])>) -> CallOutStep {
        let Some(listing) = self.listing.as_mut() else {
            return super::unexpected_callout(cx);
        };
        if let Some(c) = listing.answered(cx, resp) {
            return CallOutStep::Response(ResponseResume::Lookup(c));
        }
        match listing.body(cx) {
            Ok(b) => {
                self.listing = None;
                CallOutStep::Response(ResponseResume::Body(b.into_bytes()))
            }
            Err(BodyError::Reset(m)) => CallOutStep::Response(ResponseResume::Reset(m)),
            Err(BodyError::Reply(r)) => CallOutStep::Response(ResponseResume::Reset(
                String::from_utf8_lossy(&r.body).into_owned(),
            )),
        }
    }
}
