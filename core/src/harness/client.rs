//! What a client sends: requests signed as real clients sign them, with this module's own
//! SigV4 (independent of `auth::sigv4`, which verifies them): the Authorization header or
//! a presigned URL, a payload hash or `UNSIGNED-PAYLOAD`, and aws-chunked bodies with
//! chunk signatures and trailers as the AWS SDKs and CLI stream uploads.

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

use crate::auth::checksum::{ChecksumAlgorithm, Checksummer};
use crate::headers::Headers;

use super::{CLIENT_KEY, CLIENT_SECRET};

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What `x-amz-content-sha256` says about the body (not used for aws-chunked bodies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The SHA-256 of bodies up to 1 MiB, `UNSIGNED-PAYLOAD` above (as SDKs sign large
    /// uploads over TLS; it also spares the harness hashing megabytes).
    Auto,
    /// The SHA-256 of the body, as SDKs sign over plain HTTP.
    Sha256,
    /// `UNSIGNED-PAYLOAD`.
    Unsigned,
    /// This value as it is (a wrong hash, say).
    Literal(String),
}

/// How the request is authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    Header,
    /// A presigned URL valid this many seconds; only `host` and the headers given with
    /// [`Request::header`] are signed.
    Presigned {
        expires: i64,
    },
    /// Not signed at all.
    Anonymous,
}

/// aws-chunked streaming uploads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunked {
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: every chunk signed (minio-go, older SDKs).
    Signed,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: signed chunks, a signed checksum trailer.
    SignedTrailer(ChecksumAlgorithm),
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER` with a checksum trailer: what the AWS CLI v2
    /// and current SDKs send.
    UnsignedTrailer(ChecksumAlgorithm),
}

/// A client request before signing.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// `:path` as sent: path (percent-encoded) and query.
    pub path: String,
    /// Headers the client signs (names in any case).
    pub signed: Vec<(String, String)>,
    /// Headers added after signing (a proxy in between, an attacker, Envoy's own).
    pub unsigned: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub payload: Payload,
    pub auth: Auth,
    /// Stream the body aws-chunked, in chunks of this many bytes.
    pub chunked: Option<(Chunked, usize)>,
    /// Corrupt the signature of this chunk (0-based; the final empty chunk counts).
    pub bad_chunk: Option<usize>,
    /// Send this trailer checksum value instead of the right one.
    pub trailer_value: Option<String>,
    /// Seconds the client's clock is ahead of the proxy's.
    pub skew: i64,
    pub access_key: String,
    pub secret: String,
    /// Sign `content-length` (SDKs do); otherwise it is sent unsigned.
    pub sign_content_length: bool,
    /// The client goes away after sending this many body bytes (the stream is reset).
    pub cut_after: Option<usize>,
    /// Sign `host` (every SDK does; S3 requires it).
    pub sign_host: bool,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            signed: Vec::new(),
            unsigned: Vec::new(),
            body: Vec::new(),
            payload: Payload::Auto,
            auth: Auth::Header,
            chunked: None,
            bad_chunk: None,
            trailer_value: None,
            skew: 0,
            access_key: CLIENT_KEY.to_string(),
            secret: CLIENT_SECRET.to_string(),
            sign_content_length: true,
            cut_after: None,
            sign_host: true,
        }
    }
    pub fn get(path: &str) -> Request {
        Request::new("GET", path)
    }
    pub fn put(path: &str, body: &[u8]) -> Request {
        Request::new("PUT", path).body(body)
    }
    pub fn post(path: &str, body: &[u8]) -> Request {
        Request::new("POST", path).body(body)
    }
    /// A signed header.
    pub fn header(mut self, k: &str, v: &str) -> Request {
        self.signed.push((k.to_ascii_lowercase(), v.to_string()));
        self
    }
    /// A header added after signing.
    pub fn unsigned(mut self, k: &str, v: &str) -> Request {
        self.unsigned.push((k.to_ascii_lowercase(), v.to_string()));
        self
    }
    pub fn body(mut self, b: &[u8]) -> Request {
        self.body = b.to_vec();
        self
    }
    pub fn payload(mut self, p: Payload) -> Request {
        self.payload = p;
        self
    }
    pub fn presigned(mut self, expires: i64) -> Request {
        self.auth = Auth::Presigned { expires };
        self
    }
    pub fn anonymous(mut self) -> Request {
        self.auth = Auth::Anonymous;
        self
    }
    pub fn chunked(mut self, mode: Chunked, chunk: usize) -> Request {
        self.chunked = Some((mode, chunk.max(1)));
        self
    }
    pub fn skew(mut self, secs: i64) -> Request {
        self.skew = secs;
        self
    }
    /// The client disconnects after `n` bytes of its body.
    pub fn cut_after(mut self, n: usize) -> Request {
        self.cut_after = Some(n);
        self
    }
    pub fn creds(mut self, ak: &str, sk: &str) -> Request {
        self.access_key = ak.to_string();
        self.secret = sk.to_string();
        self
    }

    /// The request as Envoy hands it to the filter: pseudo-headers, the client's headers
    /// with its signature, Envoy's `x-forwarded-proto`; and the body as sent.
    pub fn prepare(&self, authority: &str, region: &str, now: i64) -> (Headers, Vec<u8>) {
        let t = now + self.skew;
        let amz_date = crate::auth::sigv4::amz_date(t);
        let date = amz_date[..8].to_string();
        let scope = format!("{date}/{region}/s3/aws4_request");
        let key = signing_key(&self.secret, &date, region);
        let mut signed: Vec<(String, String)> = self.signed.clone();
        // `host` is signed as the authority, unless the test gives a Host header itself.
        let own_host = signed.iter().any(|(k, _)| k == "host");
        if !own_host && self.sign_host {
            signed.push(("host".into(), authority.into()));
        }
        let mut body = self.body.clone();
        let mut chunk_plan = None;
        let payload_hash = match (&self.chunked, &self.payload) {
            (Some((mode, size)), _) => {
                let (hash, extra) = chunked_headers(*mode, self.body.len());
                signed.extend(extra);
                // Chunk signatures are all 64 hex digits: the encoded length is known
                // before the seed signature is.
                let len = encode_chunked(self, *mode, *size, &ChainCtx::dummy()).len();
                signed.push(("content-length".into(), len.to_string()));
                chunk_plan = Some((*mode, *size));
                hash.to_string()
            }
            (None, Payload::Auto) if self.body.len() > 1 << 20 => "UNSIGNED-PAYLOAD".into(),
            (None, Payload::Sha256 | Payload::Auto) => hex::encode(Sha256::digest(&self.body)),
            (None, Payload::Unsigned) => "UNSIGNED-PAYLOAD".into(),
            (None, Payload::Literal(s)) => s.clone(),
        };
        let mut unsigned = self.unsigned.clone();
        let has_len = signed.iter().any(|(k, _)| k == "content-length");
        if !has_len && (!self.body.is_empty() || matches!(self.method.as_str(), "PUT" | "POST")) {
            let cl = ("content-length".to_string(), self.body.len().to_string());
            if self.sign_content_length && self.auth == Auth::Header {
                signed.push(cl);
            } else {
                unsigned.push(cl);
            }
        }
        let mut path = self.path.clone();
        let mut h = Headers::new();
        match self.auth {
            Auth::Header => {
                signed.push(("x-amz-date".into(), amz_date.clone()));
                signed.push(("x-amz-content-sha256".into(), payload_hash.clone()));
                let (sig, names) = signature(
                    &self.method,
                    &path,
                    &signed,
                    &payload_hash,
                    &key,
                    &amz_date,
                    &scope,
                );
                let auth = format!(
                    "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={names}, Signature={sig}",
                    self.access_key
                );
                if let Some((mode, size)) = chunk_plan {
                    let ctx = ChainCtx {
                        key,
                        amz_date: amz_date.clone(),
                        scope: scope.clone(),
                        seed: sig,
                    };
                    body = encode_chunked(self, mode, size, &ctx);
                }
                unsigned.push(("authorization".into(), auth));
            }
            Auth::Presigned { expires } => {
                let mut names: Vec<&str> = signed.iter().map(|(k, _)| k.as_str()).collect();
                names.sort();
                names.dedup();
                let params = format!(
                    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={amz_date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders={}",
                    encode(&format!("{}/{scope}", self.access_key), true),
                    encode(&names.join(";"), true),
                );
                path = if path.contains('?') {
                    format!("{path}&{params}")
                } else {
                    format!("{path}?{params}")
                };
                let (sig, _) = signature(
                    &self.method,
                    &path,
                    &signed,
                    "UNSIGNED-PAYLOAD",
                    &key,
                    &amz_date,
                    &scope,
                );
                path.push_str(&format!("&X-Amz-Signature={sig}"));
            }
            Auth::Anonymous => {}
        }
        h.set(":method", self.method.clone());
        h.set(":path", path);
        h.set(":authority", authority);
        h.set(":scheme", "http");
        for (k, v) in signed.iter().filter(|(k, _)| own_host || k != "host") {
            h.0.push((k.clone(), v.clone()));
        }
        for (k, v) in unsigned {
            h.0.push((k, v));
        }
        h.0.push(("x-forwarded-proto".into(), "http".into()));
        (h, body)
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

fn signing_key(secret: &str, date: &str, region: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, b"s3");
    hmac(&k, b"aws4_request")
}

/// Percent-encoding as SigV4 wants it: all but unreserved (and `/` unless `slash`).
pub fn encode(s: &str, slash: bool) -> String {
    encode_bytes(s.as_bytes(), slash)
}

fn encode_bytes(b: &[u8], slash: bool) -> String {
    let mut out = String::new();
    for &c in b {
        if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) || (!slash && c == b'/') {
            out.push(char::from(c));
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Lenient percent-decoding (a bad escape stays as it is: the filter is the one to refuse it).
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The signature of a request and its signed-header list.
fn signature(
    method: &str,
    path_query: &str,
    headers: &[(String, String)],
    payload_hash: &str,
    key: &[u8; 32],
    amz_date: &str,
    scope: &str,
) -> (String, String) {
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|s| !s.is_empty())
        .filter(|s| !s.starts_with("X-Amz-Signature="))
        .map(|s| {
            let (k, v) = s.split_once('=').unwrap_or((s, ""));
            (
                encode_bytes(&decode(k), true),
                encode_bytes(&decode(v), true),
            )
        })
        .collect();
    pairs.sort();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut names: Vec<String> = headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    let mut canon_headers = String::new();
    for n in &names {
        let vals: Vec<String> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canon_headers.push_str(&format!("{n}:{}\n", vals.join(",")));
    }
    let signed = names.join(";");
    let canonical = format!(
        "{method}\n{}\n{query}\n{canon_headers}\n{signed}\n{payload_hash}",
        encode_bytes(&decode(if path.is_empty() { "/" } else { path }), false)
    );
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    (hex::encode(hmac(key, sts.as_bytes())), signed)
}

/// What chunk signatures are chained from.
struct ChainCtx {
    key: [u8; 32],
    amz_date: String,
    scope: String,
    seed: String,
}

impl ChainCtx {
    fn dummy() -> ChainCtx {
        ChainCtx {
            key: [0; 32],
            amz_date: String::new(),
            scope: String::new(),
            seed: "0".repeat(64),
        }
    }
    fn sign(&self, kind: &str, prev: &str, rest: &[&str]) -> String {
        let mut sts = format!("{kind}\n{}\n{}\n{prev}", self.amz_date, self.scope);
        for r in rest {
            sts.push('\n');
            sts.push_str(r);
        }
        hex::encode(hmac(&self.key, sts.as_bytes()))
    }
}

/// The payload-hash value and the signed headers of an aws-chunked upload.
fn chunked_headers(mode: Chunked, decoded: usize) -> (&'static str, Vec<(String, String)>) {
    let mut h = vec![
        ("content-encoding".to_string(), "aws-chunked".to_string()),
        (
            "x-amz-decoded-content-length".to_string(),
            decoded.to_string(),
        ),
    ];
    let hash = match mode {
        Chunked::Signed => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        Chunked::SignedTrailer(a) => {
            h.push(("x-amz-trailer".into(), a.header_name().into()));
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
        }
        Chunked::UnsignedTrailer(a) => {
            h.push(("x-amz-trailer".into(), a.header_name().into()));
            let name = a.header_name().trim_start_matches("x-amz-checksum-");
            h.push((
                "x-amz-sdk-checksum-algorithm".into(),
                name.to_ascii_uppercase(),
            ));
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
        }
    };
    (hash, h)
}

/// The checksum of `data` as S3 sends it.
pub fn checksum(algo: ChecksumAlgorithm, data: &[u8]) -> String {
    let mut c = Checksummer::new(algo);
    c.update(data);
    c.finalize_base64()
}

/// The aws-chunked encoding of the request body.
fn encode_chunked(r: &Request, mode: Chunked, size: usize, ctx: &ChainCtx) -> Vec<u8> {
    let signed = !matches!(mode, Chunked::UnsignedTrailer(_));
    let mut out = Vec::new();
    let mut prev = ctx.seed.clone();
    let pieces: Vec<&[u8]> = r
        .body
        .chunks(size)
        .chain(std::iter::once(&[][..]))
        .collect();
    for (i, piece) in pieces.iter().enumerate() {
        if signed {
            let mut sig = ctx.sign(
                "AWS4-HMAC-SHA256-PAYLOAD",
                &prev,
                &[EMPTY_SHA256, &hex::encode(Sha256::digest(piece))],
            );
            prev = sig.clone();
            if r.bad_chunk == Some(i) {
                sig = format!(
                    "{}{}",
                    if sig.starts_with('0') { '1' } else { '0' },
                    &sig[1..]
                );
            }
            out.extend_from_slice(
                format!("{:x};chunk-signature={sig}\r\n", piece.len()).as_bytes(),
            );
        } else {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        }
        out.extend_from_slice(piece);
        if !piece.is_empty() {
            out.extend_from_slice(b"\r\n");
        }
    }
    match mode {
        Chunked::Signed => out.extend_from_slice(b"\r\n"),
        Chunked::SignedTrailer(a) | Chunked::UnsignedTrailer(a) => {
            let value = r
                .trailer_value
                .clone()
                .unwrap_or_else(|| checksum(a, &r.body));
            let line = format!("{}:{value}", a.header_name());
            out.extend_from_slice(format!("{line}\r\n").as_bytes());
            if signed {
                let canon = format!("{line}\n");
                let sig = ctx.sign(
                    "AWS4-HMAC-SHA256-TRAILER",
                    &prev,
                    &[&hex::encode(Sha256::digest(canon.as_bytes()))],
                );
                out.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}
