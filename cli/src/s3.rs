//! A small blocking S3 client for the backend (path-style requests signed with SigV4 by
//! the core's signer): what the tool needs and nothing more.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use md5::{Digest, Md5};
use s3crypt_core::auth::sigv4;
use s3crypt_core::headers::Headers;
use s3crypt_core::s3::uri;
use s3crypt_core::s3::xml;

use crate::Fail;

/// The backend: endpoint, region and credentials.
#[derive(Clone)]
pub struct Backend {
    agent: ureq::Agent,
    /// `http://host:port` or `https://host[:port]`, no trailing slash.
    base: String,
    authority: String,
    region: String,
    access_key: String,
    secret_key: String,
}

/// A backend response: status, headers (lowercase names) and the body still to read.
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    body: Box<dyn Read + Send>,
}

impl Response {
    pub fn text(self) -> Result<String, Fail> {
        let mut s = String::new();
        self.body
            .take(64 << 20)
            .read_to_string(&mut s)
            .map_err(|e| Fail::backend(format!("reading a response: {e}")))?;
        Ok(s)
    }
    pub fn bytes(self, max: u64) -> Result<Vec<u8>, Fail> {
        let mut v = Vec::new();
        self.body
            .take(max.saturating_add(1))
            .read_to_end(&mut v)
            .map_err(|e| Fail::backend(format!("reading a response: {e}")))?;
        if v.len() as u64 > max {
            return Err(Fail::backend("response larger than expected".into()));
        }
        Ok(v)
    }
    pub fn into_reader(self) -> Box<dyn Read + Send> {
        self.body
    }
}

/// What a listing page holds.
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub etag: String,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `/bucket/key` with the key's bytes encoded as SigV4 canonical paths want them.
pub fn object_path(bucket: &str, key: &str) -> String {
    format!("/{}/{}", uri::encode(bucket, true), uri::encode(key, false))
}

impl Backend {
    pub fn new(
        endpoint: &str,
        region: &str,
        access_key: &str,
        secret_key: &str,
    ) -> Result<Backend, Fail> {
        let e = endpoint.trim_end_matches('/');
        let (scheme, rest) = e
            .split_once("://")
            .filter(|(s, _)| *s == "http" || *s == "https")
            .ok_or_else(|| Fail::usage(format!("endpoint {e:?} is not http(s)://host[:port]")))?;
        if rest.is_empty() || rest.contains('/') {
            return Err(Fail::usage(format!(
                "endpoint {e:?} must be http(s)://host[:port]"
            )));
        }
        // The Host header the HTTP client sends (no default port).
        let authority = match (scheme, rest.rsplit_once(':')) {
            ("http", Some((h, "80"))) | ("https", Some((h, "443"))) => h.to_string(),
            _ => rest.to_string(),
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(300))
            .timeout_write(Duration::from_secs(300))
            .redirects(0)
            .build();
        Ok(Backend {
            agent,
            base: format!("{scheme}://{authority}"),
            authority,
            region: region.to_string(),
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
        })
    }

    /// Sends a signed request. `path` is already encoded; `query` pairs are encoded here.
    /// `body`: `None` (empty), or a body of known length with its SHA-256 (or
    /// `UNSIGNED-PAYLOAD` over a stream).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        mut headers: Headers,
        body: Body,
    ) -> Result<Response, Fail> {
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let q = uri::encode_query(&pairs);
        let raw = if q.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{q}")
        };
        headers.set(":authority", self.authority.clone());
        let (hash, len) = match &body {
            Body::Empty => (sigv4::EMPTY_SHA256.to_string(), 0),
            Body::Bytes(b) => (sigv4::sha256_hex(b), b.len() as u64),
            Body::Stream(_, n) => (sigv4::UNSIGNED_PAYLOAD.to_string(), *n),
        };
        if !matches!(body, Body::Empty) || method == "PUT" || method == "POST" {
            headers.set("content-length", len.to_string());
        }
        sigv4::sign(
            method,
            &raw,
            &mut headers,
            &self.access_key,
            &self.secret_key,
            &self.region,
            now(),
            &hash,
        );
        let mut req = self.agent.request(method, &format!("{}{}", self.base, raw));
        for (k, v) in headers.iter() {
            if !k.starts_with(':') {
                req = req.set(k, v);
            }
        }
        let r = match body {
            Body::Empty => req.call(),
            Body::Bytes(b) => req.send_bytes(&b),
            Body::Stream(r, _) => req.send(r),
        };
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(Fail::backend(format!("{method} {raw}: {e}"))),
        };
        let status = resp.status();
        let mut pairs = Vec::new();
        for name in resp.headers_names() {
            for v in resp.all(&name) {
                pairs.push((name.to_ascii_lowercase(), v.to_string()));
            }
        }
        let h = Headers::from_pairs(pairs);
        Ok(Response {
            status,
            headers: h,
            body: Box::new(resp.into_reader()),
        })
    }

    /// A request that must answer 2xx; otherwise its S3 error code and message.
    pub fn ok(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: Headers,
        body: Body,
    ) -> Result<Response, Fail> {
        let r = self.send(method, path, query, headers, body)?;
        if (200..300).contains(&r.status) {
            return Ok(r);
        }
        Err(Fail::status(method, path, r))
    }

    pub fn head(&self, bucket: &str, key: &str) -> Result<Response, Fail> {
        self.ok(
            "HEAD",
            &object_path(bucket, key),
            &[],
            Headers::new(),
            Body::Empty,
        )
    }

    /// GET of the whole object or of `first..=last`.
    pub fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Response, Fail> {
        let mut h = Headers::new();
        if let Some((a, b)) = range {
            h.set("range", format!("bytes={a}-{b}"));
        }
        self.ok("GET", &object_path(bucket, key), &[], h, Body::Empty)
    }

    /// GET that answers `None` for a missing key.
    pub fn get_if_exists(
        &self,
        bucket: &str,
        key: &str,
        max: u64,
    ) -> Result<Option<Vec<u8>>, Fail> {
        let path = object_path(bucket, key);
        let r = self.send("GET", &path, &[], Headers::new(), Body::Empty)?;
        match r.status {
            200 => Ok(Some(r.bytes(max)?)),
            404 => Ok(None),
            _ => Err(Fail::status("GET", &path, r)),
        }
    }

    pub fn delete(&self, bucket: &str, key: &str) -> Result<(), Fail> {
        self.ok(
            "DELETE",
            &object_path(bucket, key),
            &[],
            Headers::new(),
            Body::Empty,
        )?;
        Ok(())
    }

    /// Every object under `prefix` (ListObjectsV2, page after page).
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        each: &mut dyn FnMut(Listed),
    ) -> Result<(), Fail> {
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![("list-type", "2"), ("prefix", prefix), ("max-keys", "1000")];
            if let Some(t) = &token {
                q.push(("continuation-token", t.as_str()));
            }
            let text = self
                .ok(
                    "GET",
                    &format!("/{}", uri::encode(bucket, true)),
                    &q,
                    Headers::new(),
                    Body::Empty,
                )?
                .text()?;
            let entries = xml::listing_entries(&text)
                .map_err(|_| Fail::backend("the backend's listing is malformed".into()))?;
            for e in entries {
                if e.kind == xml::EntryKind::Contents {
                    each(Listed {
                        key: e.key,
                        size: e.size.unwrap_or(0),
                        etag: e.etag,
                    });
                }
            }
            let truncated = xml::element_text(&text, "IsTruncated").as_deref() == Some("true");
            token = xml::element_text(&text, "NextContinuationToken");
            if !truncated || token.is_none() {
                return Ok(());
            }
        }
    }

    /// The object's tags (an empty answer, which RGW gives for some objects, is none).
    pub fn tags(&self, bucket: &str, key: &str) -> Result<Vec<(String, String)>, Fail> {
        let text = self
            .ok(
                "GET",
                &object_path(bucket, key),
                &[("tagging", "")],
                Headers::new(),
                Body::Empty,
            )?
            .text()?;
        Ok(parse_tags(&text))
    }

    /// Sets the object's tags (PutObjectTagging).
    pub fn put_tags(&self, bucket: &str, key: &str, tags: &[(String, String)]) -> Result<(), Fail> {
        let mut doc = String::from("<Tagging><TagSet>");
        for (k, v) in tags {
            doc.push_str(&format!(
                "<Tag><Key>{}</Key><Value>{}</Value></Tag>",
                xml_escape(k),
                xml_escape(v)
            ));
        }
        doc.push_str("</TagSet></Tagging>");
        let mut h = Headers::new();
        h.set("content-type", "application/xml");
        h.set("content-md5", B64.encode(Md5::digest(doc.as_bytes())));
        self.ok(
            "PUT",
            &object_path(bucket, key),
            &[("tagging", "")],
            h,
            Body::Bytes(doc.into_bytes()),
        )?;
        Ok(())
    }

    /// Makes the object's tags `want` again after a rewrite (some backends, Ceph RGW among
    /// them, drop tags on a copy with a metadata REPLACE whatever the tagging directive,
    /// and on CreateMultipartUpload), and checks them.
    pub fn ensure_tags(
        &self,
        bucket: &str,
        key: &str,
        want: &[(String, String)],
    ) -> Result<(), Fail> {
        let mut want = want.to_vec();
        want.sort();
        let mut now = self.tags(bucket, key)?;
        now.sort();
        if now == want {
            return Ok(());
        }
        self.put_tags(bucket, key, &want)?;
        let mut now = self.tags(bucket, key)?;
        now.sort();
        if now != want {
            return Err(Fail::backend(
                "the object's tags could not be restored after the rewrite".into(),
            ));
        }
        Ok(())
    }
}

/// `(key, value)` of each `<Tag>` of a GetObjectTagging answer.
fn parse_tags(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<Tag>") {
        let after = rest.get(start + "<Tag>".len()..).unwrap_or_default();
        let Some(end) = after.find("</Tag>") else {
            break;
        };
        let inner = after.get(..end).unwrap_or_default();
        out.push((
            xml::element_text(inner, "Key").unwrap_or_default(),
            xml::element_text(inner, "Value").unwrap_or_default(),
        ));
        rest = after.get(end + "</Tag>".len()..).unwrap_or_default();
    }
    out
}

/// Tags as `x-amz-tagging` wants them (`k=v&…`, URL-encoded).
pub fn tagging_header(tags: &[(String, String)]) -> String {
    uri::encode_query(tags)
}

pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A request body.
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// A stream of exactly this many bytes, sent with an unsigned payload.
    Stream(Box<dyn Read>, u64),
}
