//! GetObjectAttributes (`GET /bucket/key?attributes`): answered by the filter from a HEAD
//! of the object (and, for the parts of a multipart object, its part table), never by
//! passing the backend's answer through: sizes are plaintext sizes, parts are the
//! client's parts (not the filter's end part), the checksum is the client's (sealed in the
//! envelope), and the ETag is the one HEAD shows. A backend that lacks the operation (or
//! answers it as a GetObject) makes no difference: `?attributes` never goes upstream.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use super::cx::{no_such_key, object_path, Cx};
use super::response::RespBody;
use super::table::{cached_table, parts_in_etag, Found, Lookup};
use super::{CallOutStep, Reply, RequestStep, ResponseStep};
use crate::format::part_table::PartTable;
use crate::format::StoredChecksum;
use crate::format::{Layout, ENVELOPE_HEADER, PART_OVERHEAD};
use crate::headers::Headers;
use crate::s3::error::{xml_escape, S3Error};
use crate::s3::S3Request;

/// Most parts one answer lists (S3's default and maximum).
const MAX_PARTS: u32 = 1000;

/// Response headers of the object's HEAD that GetObjectAttributes returns.
const KEPT_HEADERS: &[&str] = &[
    "last-modified",
    "x-amz-version-id",
    "x-amz-delete-marker",
    "x-amz-request-charged",
];

/// The attributes the client asked for (`x-amz-object-attributes`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub etag: bool,
    pub checksum: bool,
    pub parts: bool,
    pub storage_class: bool,
    pub size: bool,
}

impl Wanted {
    /// `x-amz-object-attributes`: a comma-separated list of attribute names (at least one).
    pub fn parse(v: Option<&str>) -> Result<Wanted, S3Error> {
        let mut w = Wanted::default();
        let v = v.map(str::trim).unwrap_or("");
        if v.is_empty() {
            return Err(S3Error::invalid_argument(
                "Empty value provided for input HTTP header x-amz-object-attributes.",
            ));
        }
        for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "ETag" => w.etag = true,
                "Checksum" => w.checksum = true,
                "ObjectParts" => w.parts = true,
                "StorageClass" => w.storage_class = true,
                "ObjectSize" => w.size = true,
                _ => {
                    return Err(S3Error::invalid_argument(
                        "Invalid attribute name specified.",
                    ))
                }
            }
        }
        Ok(w)
    }
}

pub(crate) struct Attributes {
    wanted: Wanted,
    max_parts: u32,
    marker: u32,
    state: AttrState,
}

enum AttrState {
    /// The object's HEAD is in flight.
    Head,
    /// The HEAD answered (kept); a version 3 object's trailer is being read.
    Trailer(Headers),
    /// A multipart object's part table is being looked up.
    Table(Box<Lookup>, Box<Facts>),
    /// Answered.
    Done,
}

/// What the HEAD said, in the client's terms.
struct Facts {
    etag: String,
    size: u64,
    checksum: Option<StoredChecksum>,
    storage_class: String,
    /// The `-N` of a multipart object's ETag (`None`: a single-part object).
    stored_parts: Option<u64>,
    /// Response headers kept from the HEAD.
    headers: Vec<(String, String)>,
}

impl Attributes {
    pub fn start(
        cx: &Cx,
        h: &Headers,
        req: &S3Request,
    ) -> Result<(Attributes, RequestStep), S3Error> {
        let wanted = Wanted::parse(h.get("x-amz-object-attributes"))?;
        // S3 ignores values it cannot use.
        let max_parts = h
            .get("x-amz-max-parts")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .map_or(MAX_PARTS, |n| n.min(MAX_PARTS));
        let marker = h
            .get("x-amz-part-number-marker")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(0);
        let head = cx.sse_request_at("HEAD", object_path(req), None, super::cx::SseFor::Object);
        let op = Attributes {
            wanted,
            max_parts,
            marker,
            state: AttrState::Head,
        };
        Ok((op, RequestStep::CallOut(cx.backend_callout(head))))
    }

    pub fn callout(&mut self, cx: &Cx, resp: Option<(&Headers, &[u8])>) -> CallOutStep {
        let r = match std::mem::replace(&mut self.state, AttrState::Done) {
            AttrState::Head => match resp
                .filter(|_| self.wanted.etag || self.wanted.checksum)
                .and_then(|(h, _)| {
                    super::etags::trailer_needed(cx, h, super::cx::SseFor::Object).map(|c| (h, c))
                }) {
                // A version 3 object's ETag is in its trailer (a multipart object's in
                // its end part): read first, if it is asked for.
                Some((h, call)) => {
                    self.state = AttrState::Trailer(h.clone());
                    Ok(RequestStep::CallOut(call))
                }
                None => self.after_head(cx, resp.map(|(h, _)| h), None),
            },
            AttrState::Trailer(head) => super::etags::trailer_learnt(cx, &head, resp)
                .and_then(|k| self.after_head(cx, Some(&head), Some(&k))),
            AttrState::Table(mut lookup, facts) => match lookup.answered(cx, resp) {
                Ok(Found::Table(t)) => self.answer(cx, &facts, Some(&t)),
                Ok(Found::Read(call)) => {
                    self.state = AttrState::Table(lookup, facts);
                    Ok(RequestStep::CallOut(call))
                }
                Err(e) => Err(e),
            },
            AttrState::Done => return super::unexpected_callout(cx),
        };
        cx.request_step(r)
    }

    /// The only response is the filter's own reply (Envoy runs a local reply through
    /// this filter too): the request never goes upstream, no state forwards it.
    pub fn response_headers(&mut self, h: &Headers, eos: bool) -> ResponseStep {
        let mut out = h.clone();
        RespBody::Pass.headers_done(&mut out, eos);
        ResponseStep::Forward(out)
    }

    /// `learnt`: what a read of the object's trailer found, if one was made.
    fn after_head(
        &mut self,
        cx: &Cx,
        resp: Option<&Headers>,
        learnt: Option<&super::etags::Known>,
    ) -> Result<RequestStep, S3Error> {
        let resp = resp.ok_or_else(|| {
            S3Error::service_unavailable("s3crypt: the object could not be read; please retry")
        })?;
        let status: u16 = resp
            .get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = resp
            .iter()
            .filter(|(k, _)| {
                let k = k.to_ascii_lowercase();
                KEPT_HEADERS.contains(&k.as_str()) || k.starts_with("x-amz-server-side-encryption")
            })
            .cloned()
            .collect();
        if status != 200 {
            return Ok(RequestStep::Reply(self.head_error(cx, status, headers)));
        }
        let stored: u64 = resp
            .get("content-length")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| cx.integrity())?;
        let backend_etag = resp.get("etag").unwrap_or("").to_string();
        let storage_class = resp
            .get("x-amz-storage-class")
            .unwrap_or("STANDARD")
            .to_string();
        let Some(ev) = resp.get(ENVELOPE_HEADER) else {
            // A plaintext object: only inside a configured passthrough scope, as reads.
            let (bucket, key) = cx.req.as_ref().map_or(("", ""), |r| {
                (
                    r.bucket.as_deref().unwrap_or(""),
                    r.key.as_deref().unwrap_or(""),
                )
            });
            if !cx.cfg.passthrough_allowed(bucket, key) {
                return Err(cx.integrity());
            }
            let facts = Facts {
                stored_parts: parts_in_etag(&backend_etag),
                etag: backend_etag,
                size: stored,
                checksum: None,
                storage_class,
                headers,
            };
            return self.answer(cx, &facts, None);
        };
        let (env, dek) = cx.open_envelope(ev)?;
        let etag = super::etags::visible_with(cx, &env, resp, learnt);
        if env.layout == Layout::Single {
            let geo = crate::format::single_from_stored(env.version, stored)
                .filter(|g| Some(g.plain_len) == env.plain_len)
                .ok_or_else(|| cx.integrity())?;
            let facts = Facts {
                etag,
                size: geo.plain_len,
                // (A version 3 object's is in its trailer, just read or in the cache.)
                checksum: env.checksum.clone().or_else(|| {
                    learnt
                        .filter(|k| k.matches(&env))
                        .cloned()
                        .or_else(|| super::etags::cached_for(cx, &env, resp))
                        .and_then(|k| k.checksum)
                }),
                storage_class,
                stored_parts: None,
                headers,
            };
            return self.answer(cx, &facts, None);
        }
        let parts = parts_in_etag(&backend_etag).ok_or_else(|| cx.integrity())?;
        let size = parts
            .checked_mul(PART_OVERHEAD)
            .and_then(|o| stored.checked_sub(o))
            .ok_or_else(|| cx.integrity())?;
        let facts = Facts {
            etag,
            size,
            // A multipart object's envelope seals no whole-object checksum of the client.
            checksum: None,
            storage_class,
            stored_parts: Some(parts),
            headers,
        };
        if !self.wanted.parts {
            return self.answer(cx, &facts, None);
        }
        let version = super::table::table_version(&backend_etag, stored, &env);
        let numbered = env.version >= 2;
        if let Some(t) = cached_table(cx, &version, stored, parts, numbered) {
            return self.answer(cx, &facts, Some(&t));
        }
        let (lookup, call) = Lookup::start(
            cx,
            &env,
            &dek,
            cx.object_path(),
            backend_etag,
            stored,
            parts,
            None,
            super::cx::SseFor::Object,
        );
        self.state = AttrState::Table(Box::new(lookup), Box::new(facts));
        Ok(RequestStep::CallOut(call))
    }

    /// The HEAD failed: the same answer S3 gives for the object (HEAD responses have no
    /// body, so the error is named from the status).
    fn head_error(&self, cx: &Cx, status: u16, headers: Vec<(String, String)>) -> Reply {
        let e = match status {
            404 => no_such_key(),
            403 => S3Error::access_denied("Access Denied"),
            405 => S3Error::new(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
            ),
            400 => S3Error::invalid_request(
                "s3crypt: the backend refused to read the object (400); check the encryption headers",
            ),
            _ => S3Error::service_unavailable("s3crypt: the object could not be read; please retry"),
        };
        let mut r = cx.reply(&e);
        r.headers.extend(headers.into_iter().filter(|(k, _)| {
            k.eq_ignore_ascii_case("x-amz-delete-marker")
                || k.eq_ignore_ascii_case("x-amz-version-id")
        }));
        r
    }

    /// The answer, built here from what the HEAD (and the part table) said.
    fn answer(
        &self,
        cx: &Cx,
        f: &Facts,
        table: Option<&PartTable>,
    ) -> Result<RequestStep, S3Error> {
        let w = self.wanted;
        let mut x = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<GetObjectAttributesResponse xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
        );
        if w.etag {
            // GetObjectAttributes shows the ETag without quotes.
            x.push_str(&format!(
                "<ETag>{}</ETag>",
                xml_escape(f.etag.trim_matches('"'))
            ));
        }
        if let (true, Some(c)) = (w.checksum, &f.checksum) {
            if let Some(name) = checksum_element(&c.header) {
                x.push_str(&format!(
                    "<Checksum><{name}>{}</{name}><ChecksumType>FULL_OBJECT</ChecksumType></Checksum>",
                    xml_escape(&c.value)
                ));
            }
        }
        if w.parts {
            if let Some(stored_parts) = f.stored_parts {
                x.push_str(&self.parts_xml(cx, stored_parts, table)?);
            }
        }
        if w.storage_class {
            x.push_str(&format!(
                "<StorageClass>{}</StorageClass>",
                xml_escape(&f.storage_class)
            ));
        }
        let size = match table {
            Some(t) if t.plain_len() != f.size => return Err(cx.integrity()),
            _ => f.size,
        };
        if w.size {
            x.push_str(&format!("<ObjectSize>{size}</ObjectSize>"));
        }
        x.push_str("</GetObjectAttributesResponse>");
        let mut headers = vec![
            ("content-type".to_string(), "application/xml".to_string()),
            ("x-amz-request-id".to_string(), cx.request_id.clone()),
        ];
        headers.extend(f.headers.iter().cloned());
        Ok(RequestStep::Reply(Reply {
            status: 200,
            headers,
            body: x.into_bytes(),
        }))
    }

    /// `<ObjectParts>`: the client's parts (a plaintext object: only their count).
    fn parts_xml(
        &self,
        cx: &Cx,
        stored_parts: u64,
        table: Option<&PartTable>,
    ) -> Result<String, S3Error> {
        let Some(t) = table else {
            return Ok(format!(
                "<ObjectParts><PartsCount>{stored_parts}</PartsCount></ObjectParts>"
            ));
        };
        let total = t.visible_count();
        let mut parts: Vec<(u32, u64)> = Vec::new();
        for n in (1u32..).take(total) {
            let (_, len) = t.part_range(n).ok_or_else(|| cx.integrity())?;
            parts.push((n, len));
        }
        let after: Vec<&(u32, u64)> = parts.iter().filter(|(n, _)| *n > self.marker).collect();
        let shown: Vec<&&(u32, u64)> = after.iter().take(self.max_parts as usize).collect();
        let truncated = after.len() > shown.len();
        let mut x = format!("<ObjectParts><PartsCount>{total}</PartsCount>");
        x.push_str(&format!(
            "<PartNumberMarker>{}</PartNumberMarker>",
            self.marker
        ));
        if let Some(last) = shown.last() {
            x.push_str(&format!(
                "<NextPartNumberMarker>{}</NextPartNumberMarker>",
                last.0
            ));
        }
        x.push_str(&format!("<MaxParts>{}</MaxParts>", self.max_parts));
        x.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
        for (n, len) in shown {
            x.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><Size>{len}</Size></Part>"
            ));
        }
        x.push_str("</ObjectParts>");
        Ok(x)
    }
}

/// The element of a checksum header (`x-amz-checksum-crc32` → `ChecksumCRC32`).
fn checksum_element(header: &str) -> Option<String> {
    let algo = header.to_ascii_lowercase();
    let algo = algo.strip_prefix("x-amz-checksum-")?;
    matches!(algo, "crc32" | "crc32c" | "crc64nvme" | "sha1" | "sha256")
        .then(|| format!("Checksum{}", algo.to_ascii_uppercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names() {
        let w = Wanted::parse(Some("ETag, ObjectSize,ObjectParts")).unwrap();
        assert!(w.etag && w.size && w.parts && !w.checksum && !w.storage_class);
        for bad in [None, Some(""), Some(" "), Some("ETag,Size"), Some("etag")] {
            assert_eq!(
                Wanted::parse(bad).unwrap_err().code,
                "InvalidArgument",
                "{bad:?}"
            );
        }
        assert_eq!(
            checksum_element("x-amz-checksum-crc64nvme").as_deref(),
            Some("ChecksumCRC64NVME")
        );
        assert_eq!(checksum_element("x-amz-checksum-md5"), None);
    }
}
