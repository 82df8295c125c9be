//! ListParts: the parts as S3 would list them for the plaintext: stored sizes become
//! plaintext sizes, and each part's ETag the MD5 of its plaintext (from the upload's part
//! entries, `state::parts`: read, like the record, before the request goes upstream).
//! An upload whose record is not there (expired, another object's, forged) is no upload.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use super::complete::etag_hex;
use super::cx::{redis_unavailable, Cx};
use super::multipart::{find_record, record_answered, Record};
use super::pass::{Pass, Rewrite};
use super::{BodyError, CallOutStep, RequestStep, ResponseStep};
use crate::auth::sigv4::VerifiedRequest;
use crate::config::StateStore;
use crate::headers::Headers;
use crate::s3::error::S3Error;
use crate::s3::{xml, S3Request};
use crate::state::parts::{self, PartEtag};
use crate::state::UploadState;

pub(crate) struct ListParts {
    upload_id: String,
    object: String,
    /// The listing as before: the request checked and signed, sizes rewritten.
    sizes: Pass,
    /// The opened entries of the upload's parts, by number.
    etags: BTreeMap<u32, PartEtag>,
    /// The backend answered 200 (a part list, not an error).
    ok: bool,
    /// What the size rewrite released so far (all of it at the end).
    held: Vec<u8>,
    state: ListState,
}

enum ListState {
    /// Redis mode, the record not cached here: the signed request waits for it.
    Record(Headers),
    /// Redis mode: the signed request waits for the upload's part entries.
    Entries(Headers, UploadState),
    Sent,
}

impl ListParts {
    pub fn start(
        cx: &Cx,
        up: Headers,
        v: &VerifiedRequest,
        req: &S3Request,
        eos: bool,
    ) -> Result<(ListParts, RequestStep), S3Error> {
        let (sizes, step) = Pass::start(cx, up, v, req, eos, Some(Rewrite::PartSizes))?;
        let RequestStep::Forward(up) = step else {
            return Err(S3Error::internal("s3crypt: unexpected step"));
        };
        let mut op = ListParts {
            upload_id: req.query_param("uploadId").unwrap_or("").to_string(),
            object: cx.object_tag(),
            sizes,
            etags: BTreeMap::new(),
            ok: false,
            held: Vec::new(),
            state: ListState::Sent,
        };
        let step = match find_record(cx, &op.upload_id, &op.object)? {
            Record::Here(st) => op.with_record(cx, up, st)?,
            Record::Ask(call) => {
                op.state = ListState::Record(up);
                RequestStep::CallOut(call)
            }
        };
        Ok((op, step))
    }

    /// With the upload's checked record: its part entries, from shared data or Redis.
    fn with_record(
        &mut self,
        cx: &Cx,
        up: Headers,
        st: UploadState,
    ) -> Result<RequestStep, S3Error> {
        match cx.cfg.plugin.state_store {
            StateStore::SharedData => {
                let entries = cx
                    .ports
                    .store
                    .get(&parts::shared_key(&self.upload_id))
                    .map(|v| parts::shared_entries(&v))
                    .unwrap_or_default();
                self.open_entries(cx, &st, &entries)?;
                Ok(RequestStep::Forward(up))
            }
            StateStore::Redis => {
                let get = parts::hgetall(&cx.cfg, &parts::redis_key(&self.upload_id));
                self.state = ListState::Entries(up, st);
                Ok(RequestStep::CallOut(cx.webdis(get)))
            }
        }
    }

    /// Opens the entries under the upload's data key (one that does not open is left
    /// out: its part is listed with the backend's ETag).
    fn open_entries(
        &mut self,
        cx: &Cx,
        st: &UploadState,
        entries: &BTreeMap<u32, String>,
    ) -> Result<(), S3Error> {
        let (env, dek) = cx.upload_envelope(st)?;
        let key = parts::EtagKey::new(env.suite, &dek);
        for (&n, v) in entries {
            if let Some(e) = key.open(&self.upload_id, n, v) {
                self.etags.insert(n, e);
            }
        }
        Ok(())
    }

    pub fn request_body(
        &mut self,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), S3Error> {
        self.sizes.request_body(chunk, end, out)
    }

    pub fn callout(&mut self, cx: &Cx, resp: Option<(&Headers, &[u8])>) -> CallOutStep {
        let (status, body) = super::answer(resp);
        let r = match std::mem::replace(&mut self.state, ListState::Sent) {
            ListState::Record(up) => record_answered(cx, &self.upload_id, &self.object, resp)
                .and_then(|st| self.with_record(cx, up, st)),
            ListState::Entries(up, st) => match parts::parse_hgetall(status, body) {
                Ok(entries) => self
                    .open_entries(cx, &st, &entries)
                    .map(|()| RequestStep::Forward(up)),
                Err(_) => Err(redis_unavailable()),
            },
            ListState::Sent => return super::unexpected_callout(cx),
        };
        cx.request_step(r)
    }

    pub fn response_headers(&mut self, cx: &Cx, h: &Headers, eos: bool) -> ResponseStep {
        self.ok = h.get(":status") == Some("200");
        self.sizes.response_headers(cx, h, eos)
    }

    /// The part list with plaintext sizes (buffered whole: it comes out at the end), then
    /// plaintext ETags; any other answer (an error document) as it is.
    pub fn response_body(
        &mut self,
        cx: &Cx,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), BodyError> {
        // (A part-size rewrite makes no listing lookups: no call-out comes back.)
        if !self.ok {
            return self.sizes.response_body(cx, chunk, end, out).map(|_| ());
        }
        self.sizes.response_body(cx, chunk, end, &mut self.held)?;
        if !end {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.held);
        let rewritten = plaintext_etags(&text, &self.etags)
            .ok_or_else(|| BodyError::Reset("s3crypt: unparseable part list".into()))?;
        out.extend_from_slice(rewritten.as_bytes());
        Ok(())
    }
}

/// A ListParts answer with the ETag of each `<Part>` whose backend ETag is that of its
/// entry replaced by the plaintext's (`"<hex MD5>"`). A part without a matching entry
/// (the filter's own closing part after a Complete that failed; a part being uploaded
/// again) keeps the backend's ETag, which says nothing about the plaintext. A part the
/// backend lists without an ETag (s3s-fs does) gets its entry's.
pub(crate) fn plaintext_etags(xml: &str, etags: &BTreeMap<u32, PartEtag>) -> Option<String> {
    let mut out = String::with_capacity(xml.len());
    let mut pos = 0;
    while let Some(i) = xml.get(pos..)?.find("<Part>") {
        let start = pos.checked_add(i)?;
        let end = start.checked_add(xml.get(start..)?.find("</Part>")?)?;
        out.push_str(xml.get(pos..start)?);
        let one = xml.get(start..end)?;
        let entry = xml::element_text(one, "PartNumber")
            .and_then(|n| n.trim().parse::<u32>().ok())
            .and_then(|n| etags.get(&n));
        let listed = xml::element_text(one, "ETag");
        match (entry, listed) {
            (Some(e), Some(l)) if etag_hex(&l) == etag_hex(&e.backend) => {
                let plain = format!("\"{}\"", hex::encode(e.md5));
                out.push_str(&xml::replace_element_text(one, "ETag", &plain)?);
            }
            // A backend that lists no ETags (s3s-fs): the newest upload's.
            (Some(e), None) if one.contains("</PartNumber>") => {
                let plain = format!("<ETag>&quot;{}&quot;</ETag>", hex::encode(e.md5));
                out.push_str(&one.replacen("</PartNumber>", &format!("</PartNumber>{plain}"), 1));
            }
            _ => out.push_str(one),
        }
        pos = end;
    }
    out.push_str(xml.get(pos..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_etags_become_the_plaintext_ones_only_for_their_backend_etag() {
        let e = |backend: &str, b: u8| PartEtag {
            backend: backend.into(),
            md5: [b; 16],
        };
        let etags = BTreeMap::from([
            (1, e("\"aa\"", 1)),
            (2, e("\"bb\"", 2)),
            (3, e("\"cc\"", 3)),
        ]);
        let xml = "<ListPartsResult><Part><PartNumber>1</PartNumber><ETag>&quot;AA&quot;</ETag><Size>5</Size></Part>\
            <Part><PartNumber>2</PartNumber><ETag>\"zz\"</ETag><Size>6</Size></Part>\
            <Part><PartNumber>3</PartNumber><Size>7</Size></Part>\
            <Part><PartNumber>4</PartNumber><ETag>\"dd\"</ETag><Size>8</Size></Part></ListPartsResult>";
        let out = plaintext_etags(xml, &etags).unwrap();
        let listed = xml::element_texts(&out, "ETag");
        assert_eq!(
            listed,
            [
                format!("\"{}\"", hex::encode([1u8; 16])),
                // Not the entry's backend ETag: the backend's, as listed.
                "\"zz\"".to_string(),
                // Listed without an ETag: the entry's.
                format!("\"{}\"", hex::encode([3u8; 16])),
                // No entry.
                "\"dd\"".to_string(),
            ]
        );
        assert_eq!(xml::element_texts(&out, "Size"), ["5", "6", "7", "8"]);
        assert_eq!(plaintext_etags("<a/>", &etags).as_deref(), Some("<a/>"));
        assert_eq!(plaintext_etags("<Part><PartNumber>1", &etags), None);
    }
}
