//! Operations that carry no object data: listings (whose stored sizes become plaintext
//! sizes), ListParts (part sizes likewise), and the pass-through operations of the table
//! (bucket operations, deletes, ListBuckets, ListMultipartUploads, object subresources),
//! whose document bodies go upstream unchanged once checked.

use super::cx::Cx;
use super::request::{drop_empty_param_delimiter, pass_body, PassBody};
use super::response::RespBody;
use super::{BodyError, RequestStep, ResponseStep};
use crate::auth::sigv4::VerifiedRequest;
use crate::headers::Headers;
use crate::s3::error::S3Error;
use crate::s3::{xml, S3Request};

pub(crate) struct Pass {
    doc: PassBody,
    body: RespBody,
    rewrite: Option<Rewrite>,
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
            }
        }
        let (doc, up) = pass_body(cx, up, v, req, eos)?;
        let body = match rewrite {
            Some(_) => RespBody::Xml(Vec::new()),
            None => RespBody::Pass,
        };
        Ok((Pass { doc, body, rewrite }, RequestStep::Forward(up)))
    }

    pub fn request_body(
        &mut self,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), S3Error> {
        self.doc.push(chunk, end, out)
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
    ) -> Result<(), BodyError> {
        let Some(text) = self.body.push(cx, chunk, end, out)? else {
            return Ok(());
        };
        let rewritten = match self.rewrite {
            Some(Rewrite::PartSizes) => xml::rewrite_sizes(&text, &mut |size, _| {
                size.checked_sub(crate::format::PART_OVERHEAD)
            })
            .map_err(|_| BodyError::Reset("s3crypt: unparseable part list".into()))?,
            Some(Rewrite::ListingSizes) => xml::rewrite_sizes(&text, &mut |size, etag| {
                crate::format::plain_size_from_listing(size, etag)
            })
            .map_err(|_| BodyError::Reset("s3crypt: unparseable listing".into()))?,
            None => text,
        };
        out.extend_from_slice(rewritten.as_bytes());
        Ok(())
    }
}
