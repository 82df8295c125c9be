//! What every operation of one request shares: the configuration, the ports, the VM's
//! shared state and the parsed request, with the helpers that only need those (signing,
//! backend and webdis requests, envelopes, upload records, errors). No operation's state
//! lives here.

use std::rc::Rc;

use super::{CallOut, CallOutStep, Counter, Ports, Reply, RequestStep, VmState};
use crate::auth::sigv4;
use crate::config::Config;
use crate::crypto::{self, DataKey};
use crate::format::{Envelope, Layout};
use crate::headers::Headers;
use crate::s3::error::S3Error;
use crate::s3::{self, S3Request};
use crate::state::{self, StateError, UploadState, WebdisRequest};

/// The request context handed to every operation's events.
pub(crate) struct Cx {
    pub cfg: Rc<Config>,
    pub ports: Ports,
    /// What this VM's requests share.
    pub vm: Rc<VmState>,
    pub request_id: String,
    /// The request path without its query, for error bodies.
    pub resource: String,
    /// A HEAD request: its responses have no body.
    pub head: bool,
    /// The parsed request (set once its signature verified).
    pub req: Option<S3Request>,
    /// The access key of the client whose signature verified: its backend identity
    /// signs every request made for it (upstream and call-outs).
    pub client: Option<String>,
    /// The client's signed SSE-C headers, for the filter's own requests (see [`SseFor`]).
    pub sse: SseHeaders,
}

/// SSE-C request headers (customer-provided keys: secrets, never logged) of the client's
/// request: the backend refuses any read or write of an SSE-C object without them, so
/// the filter's own requests for that object carry them too.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SseHeaders {
    /// `x-amz-server-side-encryption-customer-*`: the key of the object the request names.
    pub object: Vec<(String, String)>,
    /// `x-amz-copy-source-server-side-encryption-customer-*`, under the names of the
    /// object headers: the key of a copy's source, for reads of the source.
    pub copy_source: Vec<(String, String)>,
}

/// SSE-C header names of an object's key.
pub(crate) const SSE_C_HEADERS: &[&str] = &[
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-customer-key",
    "x-amz-server-side-encryption-customer-key-md5",
];

/// The prefix of a copy source's SSE-C headers (followed by `-customer-...`).
pub(crate) const COPY_SOURCE_SSE_PREFIX: &str = "x-amz-copy-source-server-side-encryption";

impl SseHeaders {
    /// From the verified view of the request.
    pub fn of(h: &Headers) -> SseHeaders {
        let mut s = SseHeaders::default();
        for name in SSE_C_HEADERS {
            if let Some(v) = h.get(name) {
                s.object.push((name.to_string(), v.to_string()));
            }
            let src = name.replacen("x-amz-server-side-encryption", COPY_SOURCE_SSE_PREFIX, 1);
            if let Some(v) = h.get(&src) {
                s.copy_source.push((name.to_string(), v.to_string()));
            }
        }
        s
    }
}

/// Which SSE-C key a request of the filter's own needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SseFor {
    /// None (listings, aborts, upload state).
    None,
    /// The object the client's request names (reads of it, parts written to it).
    Object,
    /// The source of a copy (reads of it).
    CopySource,
}

impl Cx {
    pub fn now(&self) -> i64 {
        self.ports.clock.now()
    }

    pub fn note(&self, msg: &str) {
        self.ports.stats.note(msg);
    }

    pub fn count(&self, c: Counter, n: u64) {
        self.ports.stats.add(c, n);
    }

    pub fn reply(&self, e: &S3Error) -> Reply {
        Reply::error(e, &self.resource, &self.request_id)
    }

    /// Answers the request with `e` (counted as rejected).
    pub fn reject(&self, e: &S3Error) -> RequestStep {
        self.count(Counter::RejectedRequests, 1);
        RequestStep::Reply(self.reply(e))
    }

    /// What a call-out made from the request headers leads to: the next step, or the
    /// error answered (counted as rejected).
    pub fn request_step(&self, r: Result<RequestStep, S3Error>) -> CallOutStep {
        CallOutStep::Request(r.unwrap_or_else(|e| self.reject(&e)))
    }

    /// An integrity failure (counted).
    pub fn integrity(&self) -> S3Error {
        self.count(Counter::IntegrityFailures, 1);
        S3Error::integrity()
    }

    /// Signs `up` for the backend as the requesting client's backend identity (its own,
    /// or the shared one). Before a client verified there is none: the request is signed
    /// with an empty key, which no backend accepts.
    pub fn sign(&self, up: &mut Headers, payload_hash: &str) {
        self.sign_seed(up, payload_hash);
    }

    /// The backend access key the filter acts as for this request's client (its own
    /// backend user, or the shared one).
    pub fn backend_key_id(&self) -> &str {
        self.client
            .as_deref()
            .and_then(|c| self.cfg.backend_identity(Some(c)))
            .map_or("", |(ak, _)| ak)
    }

    /// Signs like [`Cx::sign`]; returns what the body's chunk signatures chain from.
    pub fn sign_seed(&self, up: &mut Headers, payload_hash: &str) -> sigv4::ChunkSigningContext {
        let method = up.get(":method").unwrap_or("GET").to_string();
        let path = up.get(":path").unwrap_or("/").to_string();
        let (ak, sk) = self
            .client
            .as_deref()
            .and_then(|c| self.cfg.backend_identity(Some(c)))
            .unwrap_or(("", ""));
        sigv4::sign_seed(
            &method,
            &path,
            up,
            ak,
            sk,
            &self.cfg.plugin.region,
            self.now(),
            payload_hash,
        )
    }

    /// A signed body-less request to the backend.
    pub fn request_at(&self, method: &str, path: String, range: Option<String>) -> Headers {
        self.sse_request_at(method, path, range, SseFor::None)
    }

    /// A signed body-less request to the backend carrying the client's SSE-C key `which`.
    pub fn sse_request_at(
        &self,
        method: &str,
        path: String,
        range: Option<String>,
        which: SseFor,
    ) -> Headers {
        let mut h = Headers::new();
        h.set(":method", method);
        h.set(":path", path);
        h.set(":authority", self.cfg.plugin.upstream_authority.clone());
        h.set(":scheme", "http");
        if let Some(r) = range {
            h.set("range", r);
        }
        self.add_sse(&mut h, which);
        self.sign(&mut h, sigv4::EMPTY_SHA256);
        h
    }

    /// Adds the client's SSE-C headers `which` to a request of the filter's own.
    pub fn add_sse(&self, h: &mut Headers, which: SseFor) {
        let set = match which {
            SseFor::None => return,
            SseFor::Object => &self.sse.object,
            SseFor::CopySource => &self.sse.copy_source,
        };
        for (k, v) in set {
            h.set(k, v.clone());
        }
    }

    pub fn backend_callout(&self, h: Headers) -> CallOut {
        CallOut {
            cluster: self.cfg.plugin.upstream_cluster.clone(),
            headers: h.0,
            body: None,
            timeout_ms: 10_000,
        }
    }

    pub fn webdis(&self, r: WebdisRequest) -> CallOut {
        CallOut {
            cluster: self.cfg.plugin.redis_cluster.clone(),
            headers: r.headers.0,
            body: r.body,
            timeout_ms: self.cfg.plugin.redis_timeout_ms,
        }
    }

    /// A 200 answer with an XML body made by the filter.
    pub fn xml_reply(&self, xml: String) -> RequestStep {
        RequestStep::Reply(Reply {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/xml".into()),
                ("x-amz-request-id".into(), self.request_id.clone()),
            ],
            body: xml.into_bytes(),
        })
    }

    /// The request, which every operation has once its headers were verified.
    pub fn request(&self) -> Result<&S3Request, S3Error> {
        self.req
            .as_ref()
            .ok_or_else(|| S3Error::internal("s3crypt: no request"))
    }

    /// Upstream path of the client's object (same version).
    pub fn object_path(&self) -> String {
        self.req.as_ref().map(object_path).unwrap_or_default()
    }

    /// The object an upload state record is bound to.
    pub fn object_tag(&self) -> String {
        self.req.as_ref().map(object_tag).unwrap_or_default()
    }

    /// A fresh data key wrapped under the active KEK, in an unsealed envelope of the
    /// configured suite.
    pub fn new_envelope(
        &self,
        layout: Layout,
        plain_len: Option<u64>,
    ) -> Result<(DataKey, Envelope), S3Error> {
        let dek = crypto::new_dek(&*self.ports.rng)
            .map_err(|_| S3Error::internal("s3crypt: no randomness"))?;
        let kek = self
            .cfg
            .active_kek()
            .ok_or_else(|| S3Error::internal("s3crypt: no active key"))?;
        let wrapped = crypto::wrap_dek(kek, &dek)
            .map_err(|_| S3Error::internal("s3crypt: key wrap failed"))?;
        Ok((
            dek,
            Envelope::new(
                self.cfg.suite,
                layout,
                &self.cfg.active_key_id,
                wrapped,
                plain_len,
            ),
        ))
    }

    /// Parses the envelope, unwraps the data key and verifies the envelope tag.
    pub fn open_envelope(&self, v: &str) -> Result<(Envelope, DataKey), S3Error> {
        let mut env = Envelope::decode(v).map_err(|_| {
            self.count(Counter::IntegrityFailures, 1);
            S3Error::internal("s3crypt: the object's encryption envelope is unreadable")
        })?;
        let kek = self.cfg.kek(&env.key_id).ok_or_else(|| {
            S3Error::access_denied(format!(
                "s3crypt: the object is encrypted under key id {:?}, which is not configured",
                env.key_id
            ))
        })?;
        let dek = crypto::unwrap_dek(kek, &env.wrapped_dek).map_err(|_| {
            self.count(Counter::IntegrityFailures, 1);
            S3Error::internal(format!("s3crypt: the data key could not be unwrapped with key id {:?} (wrong key material?)", env.key_id))
        })?;
        env.open(&dek).map_err(|_| self.integrity())?;
        Ok((env, dek))
    }

    /// An upload's stored record, checked: authenticated for this UploadId, for this
    /// object, not expired and not from the future. A refusal is logged and (but for a
    /// record of another object, which a client can ask for by mistake) counted.
    pub fn state_of(
        &self,
        upload_id: &str,
        raw: &[u8],
        object: &str,
    ) -> Result<UploadState, StateError> {
        let kek = |id: &str| self.cfg.kek(id).copied();
        let accept_v1 = self.cfg.plugin.accept_unauthenticated_upload_state;
        let p = &self.cfg.plugin;
        let r = UploadState::open(raw, upload_id, &kek, accept_v1).and_then(|st| {
            st.check(object, self.now(), p.upload_ttl_secs, p.max_clock_skew_secs)
                .map(|()| st)
        });
        if let Err(e) = r {
            if e != StateError::WrongObject {
                self.count(Counter::IntegrityFailures, 1);
            }
            self.note(&format!(
                "s3crypt: the state record of upload {upload_id:?} was refused: {e:?}"
            ));
        }
        r
    }

    /// The multipart envelope of an upload's (checked) record, opened.
    pub fn upload_envelope(&self, st: &UploadState) -> Result<(Envelope, DataKey), S3Error> {
        let (env, dek) = self.open_envelope(&st.envelope)?;
        if env.layout != Layout::Part {
            return Err(S3Error::internal(
                "s3crypt: upload state is not a multipart envelope",
            ));
        }
        Ok((env, dek))
    }
}

/// Upstream path of the object a request names (with its versionId).
pub(crate) fn object_path(req: &S3Request) -> String {
    let mut path = format!(
        "/{}/{}",
        s3::uri_encode(req.bucket.as_deref().unwrap_or(""), true),
        s3::uri_encode(req.key.as_deref().unwrap_or(""), false)
    );
    if let Some(v) = req.query_param("versionId") {
        path.push_str(&format!("?versionId={}", s3::uri_encode(v, true)));
    }
    path
}

/// The object tag an upload record of this request's object carries.
pub(crate) fn object_tag(req: &S3Request) -> String {
    state::object_tag(
        req.bucket.as_deref().unwrap_or(""),
        req.key.as_deref().unwrap_or(""),
    )
}

pub(crate) fn redis_unavailable() -> S3Error {
    S3Error::service_unavailable(
        "s3crypt: the multipart upload state store is unavailable; please retry",
    )
}

pub(crate) fn no_such_upload() -> S3Error {
    S3Error::new(404, "NoSuchUpload", "The specified multipart upload does not exist. The upload ID might be invalid, or the multipart upload might have been aborted or completed.")
}

pub(crate) fn no_such_key() -> S3Error {
    S3Error::new(404, "NoSuchKey", "The specified key does not exist.")
}

pub(crate) fn precondition_failed() -> S3Error {
    S3Error::new(
        412,
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
    )
}

/// A conditional write met a concurrent one (S3: retry).
pub(crate) fn conditional_conflict() -> S3Error {
    S3Error::new(
        409,
        "ConditionalRequestConflict",
        "A conflicting conditional operation is currently in progress against this resource. Please try again.",
    )
}

/// The backend refused the UploadPart of an UploadPartCopy.
pub(crate) fn part_put_failed(status: Option<u16>, body: &str) -> S3Error {
    match (
        status,
        crate::s3::xml::element_text(body, "Code").as_deref(),
    ) {
        (_, Some("NoSuchUpload")) | (Some(404), _) => no_such_upload(),
        (Some(403), _) => S3Error::access_denied("Access Denied"),
        _ => S3Error::service_unavailable("s3crypt: the part could not be stored; please retry"),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.000Z`
pub(crate) fn iso8601(unix: i64) -> String {
    let d = sigv4::amz_date(unix); // YYYYMMDDTHHMMSSZ
    let g = |a: usize, b: usize| d.get(a..b).unwrap_or("00");
    format!(
        "{}-{}-{}T{}:{}:{}.000Z",
        g(0, 4),
        g(4, 6),
        g(6, 8),
        g(9, 11),
        g(11, 13),
        g(13, 15)
    )
}
