//! CORS: browser preflights (`OPTIONS`), which S3 answers without a signature by design,
//! and the `Origin` of ordinary requests, so that the backend's CORS configuration
//! applies and its `Access-Control-*` response headers come back.
//!
//! A preflight is rebuilt from an allow-list: the bucket and key of its path (the query
//! dropped: a preflight is about a resource, never an operation), `Origin`,
//! `Access-Control-Request-Method` and `Access-Control-Request-Headers`, nothing else
//! (no `x-amz-*`, no method override, no body). It is sent unsigned, as a browser sends
//! it, so the backend treats it as the anonymous preflight it is.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use super::cx::Cx;
use super::request::ENVOY_ROUTING_HEADER;
use super::response::{replace_response, RespBody};
use super::{BodyError, ResponseStep};
use crate::format::ENVELOPE_HEADER;
use crate::headers::Headers;
use crate::s3;
use crate::s3::error::S3Error;

/// The methods a preflight may ask about (those S3's CORS rules name).
const METHODS: &[&str] = &["GET", "PUT", "POST", "DELETE", "HEAD"];
/// Longest `Origin` and `Access-Control-Request-Headers` forwarded.
const MAX_ORIGIN: usize = 1024;
const MAX_REQUEST_HEADERS: usize = 4096;

pub(crate) struct Preflight {
    body: RespBody,
}

fn bad(msg: &str) -> S3Error {
    S3Error::invalid_request(format!("s3crypt: {msg}"))
}

/// The one value of `name` in the client's headers (`None`: absent); two are refused.
fn single<'a>(raw: &'a Headers, name: &str) -> Result<Option<&'a str>, S3Error> {
    let mut it = raw.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
    let first = it.next().map(|(_, v)| v.trim());
    if it.next().is_some() {
        return Err(S3Error::invalid_argument(format!(
            "s3crypt: header {name} appears more than once"
        )));
    }
    Ok(first)
}

/// A browser `Origin`: `null` or `scheme://host[:port]`, visible ASCII, no path.
pub(crate) fn valid_origin(o: &str) -> bool {
    let visible = !o.is_empty() && o.len() <= MAX_ORIGIN && o.bytes().all(|c| c.is_ascii_graphic());
    visible
        && (o == "null"
            || o.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
                    && !rest.is_empty()
                    && !rest.contains(['/', '?', '#', '@', ','])
            }))
}

/// The `Origin` of an ordinary request, if it has one worth forwarding (a browser's: one
/// well-formed value). It has no meaning to S3 beyond the CORS headers of the response.
pub(crate) fn request_origin(raw: &Headers) -> Option<String> {
    single(raw, "origin")
        .ok()
        .flatten()
        .filter(|o| valid_origin(o))
        .map(str::to_string)
}

impl Preflight {
    /// An `OPTIONS` request: a CORS preflight, rebuilt, or refused.
    pub fn start(cx: &Cx, raw: &Headers, eos: bool) -> Result<(Preflight, Headers), S3Error> {
        let declared = single(raw, "content-length")?.unwrap_or("0");
        if !eos || declared != "0" || raw.contains("transfer-encoding") {
            return Err(bad("a CORS preflight (OPTIONS) takes no request body"));
        }
        let origin = single(raw, "origin")?.ok_or_else(|| {
            S3Error::new(
                400,
                "BadRequest",
                "Insufficient information. Origin request header needed.",
            )
        })?;
        if !valid_origin(origin) {
            return Err(bad("the Origin of this preflight is not an origin"));
        }
        let method = single(raw, "access-control-request-method")?
            .ok_or_else(|| bad("a CORS preflight needs Access-Control-Request-Method"))?;
        if !METHODS.contains(&method) {
            return Err(bad("Access-Control-Request-Method names no S3 method"));
        }
        let headers = single(raw, "access-control-request-headers")?;
        if let Some(h) = headers {
            let ok = h.len() <= MAX_REQUEST_HEADERS
                && h.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_, ".contains(&c));
            if !ok {
                return Err(bad("Access-Control-Request-Headers is not a list of names"));
            }
        }
        // The resource only: the query is dropped (the answer depends on the bucket's
        // CORS rules, the origin, method and headers, never on an operation).
        let path = raw.get(":path").unwrap_or("/");
        let path = path.split('?').next().unwrap_or("/");
        // Parsed as the HEAD of that resource, with nothing of the client's headers but
        // its host (virtual-hosted buckets).
        let mut host = Headers::new();
        if let Some(a) = raw.get(":authority") {
            host.set(":authority", a);
        }
        let req = s3::parse_request("HEAD", path, &host, &cx.cfg.plugin.virtual_host_suffixes)?;
        if req.bucket.is_none() {
            return Err(bad("a CORS preflight names a bucket"));
        }
        let mut up = Headers::new();
        up.set(":method", "OPTIONS");
        up.set(":scheme", raw.get(":scheme").unwrap_or("http"));
        up.set(":path", req.upstream_path());
        up.set(":authority", cx.cfg.plugin.upstream_authority.clone());
        if let Some(p) = raw
            .get(ENVOY_ROUTING_HEADER)
            .filter(|p| *p == "http" || *p == "https")
        {
            up.set(ENVOY_ROUTING_HEADER, p.to_string());
        }
        up.set("origin", origin);
        up.set("access-control-request-method", method);
        if let Some(h) = headers {
            up.set("access-control-request-headers", h);
        }
        Ok((
            Preflight {
                body: RespBody::Pass,
            },
            up,
        ))
    }

    /// The backend's answer, its CORS headers with it; one that carries an object's
    /// envelope (a backend that served an object) is refused, nothing of it released.
    pub fn response_headers(&mut self, cx: &Cx, h: &Headers, eos: bool) -> ResponseStep {
        let mut out = h.clone();
        if h.contains(ENVELOPE_HEADER) {
            replace_response(
                cx,
                &mut out,
                &mut self.body,
                &S3Error::internal(
                    "s3crypt: the backend answered a preflight with object data; refused",
                ),
            );
        }
        self.body.headers_done(&mut out, eos);
        ResponseStep::Forward(out)
    }

    pub fn response_body(
        &mut self,
        cx: &Cx,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), BodyError> {
        self.body.push(cx, chunk, end, out).map(drop)
    }
}
