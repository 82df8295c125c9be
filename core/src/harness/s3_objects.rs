//! Objects at the fake S3: PutObject (digests checked, metadata stored), CopyObject
//! (COPY/REPLACE metadata, source conditions), GetObject/HeadObject (Range, partNumber,
//! If-Match/If-None-Match, `response-*` overrides), ListBuckets; and ranges as S3 reads
//! them.

use super::drive::Http;
use super::s3::{
    check_customer_key, etag_matches, md5_etag, xml_ok, FakeS3, Req, StoredObject, CONTENT_HEADERS,
    SSE_STORED,
};
use super::s3_xml::{http_date, xml_escape};

impl FakeS3 {
    pub(super) fn put_object(&mut self, r: &Req<'_>, bucket: &str, key: &str, now: i64) -> Http {
        if let Err(e) = self.write_conditions(r, bucket, key) {
            return e;
        }
        let echo = match r.check_digests() {
            Ok(e) => e,
            Err(e) => return e,
        };
        let meta = match r.meta() {
            Ok(m) => m,
            Err(e) => return e,
        };
        let o = StoredObject {
            etag: md5_etag(&r.body),
            data: r.body.to_vec(),
            meta,
            last_modified: now,
            parts: Vec::new(),
        };
        let mut resp = Http::with_status(200);
        resp.headers.set("etag", o.etag.clone());
        for (k, v) in echo {
            resp.headers.set(&k, v);
        }
        for (k, v) in o
            .meta
            .iter()
            .filter(|(k, _)| SSE_STORED.contains(&k.as_str()))
        {
            resp.headers.set(k, v.clone());
        }
        self.buckets
            .get_mut(bucket)
            .expect("bucket")
            .insert(key.to_string(), o);
        resp
    }

    /// `x-amz-copy-source` as S3 reads it: the (bucket, key) of an existing object.
    pub(super) fn copy_source(&self, r: &Req<'_>) -> Result<(String, String), Http> {
        let v = r.headers.get("x-amz-copy-source").unwrap_or("");
        let path = v.split('?').next().unwrap_or("");
        let path = path.strip_prefix('/').unwrap_or(path);
        let (b, k) = path.split_once('/').ok_or_else(|| {
            r.err(
                400,
                "InvalidArgument",
                "Copy Source must mention the source bucket and key",
            )
        })?;
        let dec = |s: &str| {
            crate::s3::uri::decode(s).map_err(|_| r.err(400, "InvalidArgument", "bad copy source"))
        };
        let (b, k) = (dec(b)?, dec(k)?);
        if !self.buckets.get(&b).is_some_and(|m| m.contains_key(&k)) {
            return Err(r.err(404, "NoSuchKey", "The specified key does not exist."));
        }
        Ok((b, k))
    }

    /// `If-None-Match: *` and `If-Match` of a write (PutObject, CopyObject,
    /// CompleteMultipartUpload, DeleteObject) as S3 evaluates them against the stored
    /// object, when [`FakeS3::conditional_writes`] is on (a backend such as Ceph RGW 16
    /// ignores them: off).
    pub(super) fn write_conditions(
        &self,
        r: &Req<'_>,
        bucket: &str,
        key: &str,
    ) -> Result<(), Http> {
        if !self.conditional_writes {
            return Ok(());
        }
        let current = self.buckets.get(bucket).and_then(|b| b.get(key));
        let failed = |st: u16, code: &'static str, msg: &str| Err(r.err(st, code, msg));
        if let Some(v) = r.headers.get("if-none-match") {
            if v.trim() != "*" {
                return failed(
                    501,
                    "NotImplemented",
                    "A header you provided implies functionality that is not implemented",
                );
            }
            if current.is_some() {
                return failed(
                    412,
                    "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold",
                );
            }
        }
        if let Some(v) = r.headers.get("if-match") {
            match current {
                None => return failed(404, "NoSuchKey", "The specified key does not exist."),
                Some(o) if !etag_matches(v, &o.etag) => {
                    return failed(
                        412,
                        "PreconditionFailed",
                        "At least one of the pre-conditions you specified did not hold",
                    )
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// `x-amz-copy-source-if-match` / `-if-none-match` against the source's ETag.
    pub(super) fn copy_conditions(r: &Req<'_>, etag: &str) -> Result<(), Http> {
        let failed = r
            .headers
            .get("x-amz-copy-source-if-match")
            .is_some_and(|m| !etag_matches(m, etag))
            || r.headers
                .get("x-amz-copy-source-if-none-match")
                .is_some_and(|m| etag_matches(m, etag));
        if failed {
            return Err(r.err(
                412,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            ));
        }
        Ok(())
    }

    pub(super) fn copy_object(&mut self, r: &Req<'_>, bucket: &str, key: &str, now: i64) -> Http {
        let (sb, sk) = match self.copy_source(r) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let src = self.buckets[&sb][&sk].clone();
        if let Err(e) = check_customer_key(r, &src.meta, "x-amz-copy-source-server-side-encryption")
        {
            return e;
        }
        if let Err(e) = Self::copy_conditions(r, &src.etag) {
            return e;
        }
        if let Err(e) = self.write_conditions(r, bucket, key) {
            return e;
        }
        let replace = r
            .headers
            .get("x-amz-metadata-directive")
            .is_some_and(|d| d.eq_ignore_ascii_case("REPLACE"));
        if !replace && sb == bucket && sk == key {
            return r.err(400, "InvalidRequest", "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.");
        }
        let meta = if replace {
            match r.meta() {
                Ok(m) => m,
                Err(e) => return e,
            }
        } else {
            // The destination's encryption is the request's, not the source's.
            let mut m: Vec<(String, String)> = src
                .meta
                .iter()
                .filter(|(k, _)| !SSE_STORED.contains(&k.as_str()))
                .cloned()
                .collect();
            m.extend(r.headers.iter().filter_map(|(k, v)| {
                let k = k.to_ascii_lowercase();
                SSE_STORED.contains(&k.as_str()).then(|| (k, v.clone()))
            }));
            m
        };
        let etag = if src.parts.is_empty() {
            src.etag.clone()
        } else {
            md5_etag(&src.data)
        };
        let o = StoredObject {
            data: src.data,
            meta,
            etag: etag.clone(),
            last_modified: now,
            parts: Vec::new(),
        };
        self.buckets
            .get_mut(bucket)
            .expect("bucket")
            .insert(key.to_string(), o);
        xml_ok(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyObjectResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LastModified>{}</LastModified><ETag>{}</ETag></CopyObjectResult>",
            super::s3_xml::iso8601(now),
            xml_escape(&etag)
        ))
    }

    pub(super) fn get_object(&mut self, r: &Req<'_>, bucket: &str, key: &str) -> Http {
        let Some(o) = self.buckets[bucket].get(key) else {
            return r.err(404, "NoSuchKey", "The specified key does not exist.");
        };
        if let Err(e) = check_customer_key(r, &o.meta, "x-amz-server-side-encryption") {
            return e;
        }
        let h = r.headers;
        if h.get("if-match").is_some_and(|m| !etag_matches(m, &o.etag)) {
            return r.err(
                412,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            );
        }
        if h.get("if-none-match")
            .is_some_and(|m| etag_matches(m, &o.etag))
        {
            let mut resp = Http::with_status(304);
            resp.headers.set("etag", o.etag.clone());
            return resp;
        }
        let len = o.data.len() as u64;
        let mut window: Option<(u64, u64)> = None;
        let mut parts_count = None;
        if let Some(n) = r.q("partNumber") {
            let n: usize = n.parse().unwrap_or(0);
            let spans = o.part_spans();
            match (o.parts.is_empty(), n) {
                (true, 1) => {}
                (false, n) if (1..=spans.len()).contains(&n) => {
                    let (at, l) = spans[n - 1];
                    window = Some((at as u64, (at + l) as u64 - 1));
                    parts_count = Some(spans.len());
                }
                _ => {
                    return r.err(
                        416,
                        "InvalidPartNumber",
                        "The requested partnumber is not satisfiable",
                    )
                }
            }
        } else if let Some(spec) = h.get("range").and_then(parse_range) {
            match resolve(spec, len) {
                Some(w) => window = Some(w),
                None => {
                    let mut e = r.err(
                        416,
                        "InvalidRange",
                        "The requested range is not satisfiable",
                    );
                    e.headers.set("content-range", format!("bytes */{len}"));
                    return e;
                }
            }
        }
        let mut resp = Http::with_status(if window.is_some() { 206 } else { 200 });
        let (a, b) = window.unwrap_or((0, len.saturating_sub(1)));
        let body = if len == 0 {
            Vec::new()
        } else {
            o.data[a as usize..=b as usize].to_vec()
        };
        resp.headers.set("content-length", body.len().to_string());
        if window.is_some() {
            resp.headers
                .set("content-range", format!("bytes {a}-{b}/{len}"));
        }
        if let Some(n) = parts_count {
            resp.headers.set("x-amz-mp-parts-count", n.to_string());
        }
        resp.headers.set("etag", o.etag.clone());
        resp.headers
            .set("last-modified", http_date(o.last_modified));
        resp.headers.set("accept-ranges", "bytes");
        if o.meta("content-type").is_none() {
            resp.headers.set("content-type", "binary/octet-stream");
        }
        for (k, v) in &o.meta {
            resp.headers.0.push((k.clone(), v.clone()));
        }
        for (k, v) in &r.query {
            if let Some(name) = k.strip_prefix("response-") {
                if CONTENT_HEADERS.contains(&name) {
                    resp.headers.set(name, v.clone());
                }
            }
        }
        resp.body = body;
        resp
    }

    pub(super) fn list_buckets(&self) -> Http {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListAllMyBucketsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Buckets>");
        for b in self.buckets.keys() {
            out.push_str(&format!("<Bucket><Name>{}</Name></Bucket>", xml_escape(b)));
        }
        out.push_str("</Buckets></ListAllMyBucketsResult>");
        xml_ok(out)
    }
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n`: (first, last) or (None, suffix length); anything
/// else S3 ignores.
pub fn parse_range(v: &str) -> Option<(Option<u64>, Option<u64>)> {
    let s = v.trim().strip_prefix("bytes=")?;
    if s.contains(',') {
        return None;
    }
    let (a, b) = s.split_once('-')?;
    let num = |t: &str| -> Option<Option<u64>> {
        let t = t.trim();
        if t.is_empty() {
            Some(None)
        } else {
            t.parse().ok().map(Some)
        }
    };
    let (a, b) = (num(a)?, num(b)?);
    match (a, b) {
        (None, None) => None,
        (Some(a), Some(b)) if a > b => None,
        _ => Some((a, b)),
    }
}

/// The (first, last) bytes of a parsed range in an object of `len` bytes; `None`: 416.
pub fn resolve(spec: (Option<u64>, Option<u64>), len: u64) -> Option<(u64, u64)> {
    if len == 0 {
        return None;
    }
    match spec {
        (Some(a), b) if a < len => Some((a, b.unwrap_or(len - 1).min(len - 1))),
        (None, Some(n)) if n > 0 => Some((len.saturating_sub(n), len - 1)),
        _ => None,
    }
}
