//! Multipart uploads of the fake S3: CreateMultipartUpload, UploadPart, UploadPartCopy
//! (`x-amz-copy-source`, `-range`, `-if-*`), ListParts (paged), CompleteMultipartUpload
//! (parts numbered 1..N without gaps as s3s-fs wants them, each listed ETag that of the
//! stored part, every part but the last at least 5 MiB; the ETag is the MD5 of the parts'
//! MD5s and `-N`), AbortMultipartUpload, ListMultipartUploads.

use md5::{Digest as _, Md5};

use super::drive::Http;
use super::s3::{
    bare, check_customer_key, md5_etag, xml_ok, FakeS3, Req, StoredObject, StoredPart, Upload,
};
use super::s3_xml::{iso8601, xml_escape};

const NS: &str = "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"";

impl FakeS3 {
    fn no_such_upload(r: &Req<'_>) -> Http {
        r.err(404, "NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.")
    }

    /// The upload named by `uploadId`, if it is for this object.
    fn upload_of(&self, r: &Req<'_>, bucket: &str, key: &str) -> Result<String, Http> {
        let id = r.q("uploadId").unwrap_or("").to_string();
        match self.uploads.get(&id) {
            Some(u) if u.bucket == bucket && u.key == key => Ok(id),
            _ => Err(Self::no_such_upload(r)),
        }
    }

    fn part_number(r: &Req<'_>) -> Result<u32, Http> {
        r.q("partNumber")
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                r.err(
                    400,
                    "InvalidArgument",
                    "Part number must be an integer between 1 and 10000, inclusive",
                )
            })
    }

    pub(super) fn create_upload(&mut self, r: &Req<'_>, bucket: &str, key: &str, now: i64) -> Http {
        let meta = match r.meta() {
            Ok(m) => m,
            Err(e) => return e,
        };
        self.next_upload += 1;
        let id = format!(
            "mpu.{}+{:x}",
            self.next_upload,
            self.next_upload * 0x9e37_79b9
        );
        if let Some(env) = meta
            .iter()
            .find(|(k, _)| k == crate::format::ENVELOPE_HEADER)
        {
            self.upload_envelopes.insert(id.clone(), env.1.clone());
        }
        self.uploads.insert(
            id.clone(),
            Upload {
                bucket: bucket.to_string(),
                key: key.to_string(),
                meta,
                parts: Default::default(),
                initiated: now,
            },
        );
        xml_ok(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult {NS}><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId></InitiateMultipartUploadResult>",
            xml_escape(bucket),
            xml_escape(key),
            xml_escape(&id)
        ))
    }

    fn store_part(&mut self, id: &str, n: u32, data: Vec<u8>, now: i64) -> String {
        let etag = if self.opaque_part_etags {
            // Unique per write (each request is counted), but no digest of the data.
            md5_etag(format!("opaque {} {id} {n}", self.requests).as_bytes())
        } else {
            md5_etag(&data)
        };
        let part = StoredPart {
            data,
            etag: etag.clone(),
            last_modified: now,
        };
        self.uploads
            .get_mut(id)
            .expect("upload")
            .parts
            .insert(n, part);
        etag
    }

    pub(super) fn upload_part(&mut self, r: &Req<'_>, bucket: &str, key: &str, now: i64) -> Http {
        let id = match self.upload_of(r, bucket, key) {
            Ok(id) => id,
            Err(e) => return e,
        };
        let n = match Self::part_number(r) {
            Ok(n) => n,
            Err(e) => return e,
        };
        if let Err(e) =
            check_customer_key(r, &self.uploads[&id].meta, "x-amz-server-side-encryption")
        {
            return e;
        }
        let echo = match r.check_digests() {
            Ok(e) => e,
            Err(e) => return e,
        };
        let etag = self.store_part(&id, n, r.body.to_vec(), now);
        let mut resp = Http::with_status(200);
        resp.headers.set("etag", etag);
        for (k, v) in echo {
            resp.headers.set(&k, v);
        }
        resp
    }

    pub(super) fn upload_part_copy(
        &mut self,
        r: &Req<'_>,
        bucket: &str,
        key: &str,
        now: i64,
    ) -> Http {
        let id = match self.upload_of(r, bucket, key) {
            Ok(id) => id,
            Err(e) => return e,
        };
        let n = match Self::part_number(r) {
            Ok(n) => n,
            Err(e) => return e,
        };
        let (sb, sk) = match self.copy_source(r) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let src = &self.buckets[&sb][&sk];
        if let Err(e) =
            check_customer_key(r, &self.uploads[&id].meta, "x-amz-server-side-encryption").and_then(
                |()| check_customer_key(r, &src.meta, "x-amz-copy-source-server-side-encryption"),
            )
        {
            return e;
        }
        if let Err(e) = Self::copy_conditions(r, &src.etag) {
            return e;
        }
        let len = src.data.len() as u64;
        let (a, b) = match r.headers.get("x-amz-copy-source-range") {
            None if len == 0 => (0, 0),
            None => (0, len - 1),
            Some(v) => {
                let span = v
                    .trim()
                    .strip_prefix("bytes=")
                    .and_then(|s| s.split_once('-'))
                    .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
                match span {
                    Some((a, b)) if a <= b && b < len => (a, b),
                    _ => {
                        return r.err(
                            400,
                            "InvalidArgument",
                            &format!(
                                "Range specified is not valid for source object of size: {len}"
                            ),
                        )
                    }
                }
            }
        };
        let data = if len == 0 {
            Vec::new()
        } else {
            src.data[a as usize..=b as usize].to_vec()
        };
        let etag = self.store_part(&id, n, data, now);
        xml_ok(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyPartResult {NS}><LastModified>{}</LastModified><ETag>{}</ETag></CopyPartResult>",
            iso8601(now),
            xml_escape(&etag)
        ))
    }

    pub(super) fn list_parts(&mut self, r: &Req<'_>, bucket: &str, key: &str) -> Http {
        let id = match self.upload_of(r, bucket, key) {
            Ok(id) => id,
            Err(e) => return e,
        };
        let marker: u32 = r
            .q("part-number-marker")
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let max: usize = r
            .q("max-parts")
            .and_then(|m| m.parse().ok())
            .unwrap_or(1000)
            .clamp(1, self.max_page.clamp(1, 1000));
        let u = &self.uploads[&id];
        let after: Vec<(&u32, &StoredPart)> = u.parts.range(marker + 1..).collect();
        let page = &after[..after.len().min(max)];
        let truncated = after.len() > page.len();
        let next = page.last().map_or(marker, |(n, _)| **n);
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListPartsResult {NS}><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId><PartNumberMarker>{marker}</PartNumberMarker><NextPartNumberMarker>{next}</NextPartNumberMarker><MaxParts>{max}</MaxParts><IsTruncated>{truncated}</IsTruncated>",
            xml_escape(bucket),
            xml_escape(key),
            xml_escape(&id)
        );
        for (n, p) in page {
            out.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size></Part>",
                iso8601(p.last_modified),
                xml_escape(&p.etag),
                p.data.len()
            ));
        }
        out.push_str("</ListPartsResult>");
        xml_ok(out)
    }

    pub(super) fn complete(&mut self, r: &Req<'_>, bucket: &str, key: &str, now: i64) -> Http {
        let id = match self.upload_of(r, bucket, key) {
            Ok(id) => id,
            Err(e) => return e,
        };
        if let Err(e) = self.write_conditions(r, bucket, key) {
            return e;
        }
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let mut listed: Vec<(u32, String)> = Vec::new();
        let mut pos = 0;
        while let Some(i) = text[pos..].find("<Part>") {
            let start = pos + i;
            let Some(end) = text[start..].find("</Part>").map(|e| start + e) else {
                return r.err(400, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema.");
            };
            let one = &text[start..end];
            let n =
                crate::s3::xml::element_text(one, "PartNumber").and_then(|n| n.trim().parse().ok());
            let e = crate::s3::xml::element_text(one, "ETag");
            match (n, e) {
                (Some(n), Some(e)) => listed.push((n, e)),
                _ => return r.err(400, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema."),
            }
            pos = end;
        }
        if listed.is_empty() {
            return r.err(400, "InvalidPart", "You must specify at least one part");
        }
        for (i, (n, _)) in listed.iter().enumerate() {
            if *n as usize != i + 1 {
                // s3s-fs: parts must be numbered 1, 2, 3, ... (no gaps, in order).
                return r.err(400, "InvalidRequest", "invalid part order");
            }
        }
        let u = &self.uploads[&id];
        let mut data = Vec::new();
        let mut md5s = Vec::new();
        let mut sizes = Vec::new();
        for (i, (n, e)) in listed.iter().enumerate() {
            let Some(p) = u.parts.get(n) else {
                return r.err(
                    400,
                    "InvalidPart",
                    "One or more of the specified parts could not be found.",
                );
            };
            if bare(&p.etag) != bare(e) {
                return r.err(400, "InvalidPart", "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.");
            }
            if i + 1 < listed.len() && (p.data.len() as u64) < self.min_part_size {
                return r.err(
                    400,
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed object size.",
                );
            }
            // The part's MD5 as recorded when it was stored (its ETag).
            md5s.extend_from_slice(&hex::decode(bare(&p.etag)).unwrap_or_default());
            sizes.push(p.data.len() as u64);
            data.extend_from_slice(&p.data);
        }
        let etag = format!("\"{}-{}\"", hex::encode(Md5::digest(&md5s)), listed.len());
        let u = self.uploads.remove(&id).expect("upload");
        let o = StoredObject {
            data,
            meta: u.meta,
            etag: etag.clone(),
            last_modified: now,
            parts: sizes,
        };
        self.buckets
            .get_mut(bucket)
            .expect("bucket")
            .insert(key.to_string(), o);
        xml_ok(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult {NS}><Location>http://{}/{}/{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>",
            "s3.backend",
            xml_escape(bucket),
            xml_escape(key),
            xml_escape(bucket),
            xml_escape(key),
            xml_escape(&etag)
        ))
    }

    pub(super) fn abort(&mut self, r: &Req<'_>, bucket: &str, key: &str) -> Http {
        match self.upload_of(r, bucket, key) {
            Ok(id) => {
                self.uploads.remove(&id);
                Http::with_status(204)
            }
            Err(e) => e,
        }
    }

    pub(super) fn list_uploads(&self, bucket: &str) -> Http {
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListMultipartUploadsResult {NS}><Bucket>{}</Bucket><IsTruncated>false</IsTruncated>",
            xml_escape(bucket)
        );
        for (id, u) in self.uploads.iter().filter(|(_, u)| u.bucket == bucket) {
            out.push_str(&format!(
                "<Upload><Key>{}</Key><UploadId>{}</UploadId><Initiated>{}</Initiated></Upload>",
                xml_escape(&u.key),
                xml_escape(id),
                iso8601(u.initiated)
            ));
        }
        out.push_str("</ListMultipartUploadsResult>");
        xml_ok(out)
    }

    // The provider's view of uploads in progress.

    /// The stored part `n` of upload `id`.
    pub fn part_mut(&mut self, id: &str, n: u32) -> Option<&mut StoredPart> {
        self.uploads.get_mut(id)?.parts.get_mut(&n)
    }

    /// The upload ids in progress.
    pub fn upload_ids(&self) -> Vec<String> {
        self.uploads.keys().cloned().collect()
    }
}
