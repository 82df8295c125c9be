//! AWS Signature Version 4 for S3: verification of client requests (Authorization header
//! and presigned query strings) and signing of upstream requests.
//!
//! Canonicalisation follows S3's rules: the path is percent-decoded and re-encoded once
//! (no normalisation, no double encoding), query parameters are decoded, re-encoded and
//! sorted, header values are trimmed with inner runs of spaces collapsed.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::headers::Headers;
use crate::s3::error::S3Error;
use crate::s3::uri;

type HmacSha256 = Hmac<Sha256>;

/// Hex SHA-256 of the empty string.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
pub const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Longest validity of a presigned URL (7 days).
const MAX_PRESIGN_EXPIRES: i64 = 604_800;

/// How the request body is covered by the signature (`x-amz-content-sha256`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadMode {
    /// Lowercase hex SHA-256 of the body.
    Sha256(String),
    Unsigned,
    StreamingSigned,
    StreamingSignedTrailer,
    StreamingUnsignedTrailer,
}

impl PayloadMode {
    fn parse(v: &str) -> Option<PayloadMode> {
        let v = v.trim();
        Some(match v {
            UNSIGNED_PAYLOAD => PayloadMode::Unsigned,
            STREAMING_SIGNED => PayloadMode::StreamingSigned,
            STREAMING_SIGNED_TRAILER => PayloadMode::StreamingSignedTrailer,
            STREAMING_UNSIGNED_TRAILER => PayloadMode::StreamingUnsignedTrailer,
            h if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                PayloadMode::Sha256(h.to_ascii_lowercase())
            }
            _ => return None,
        })
    }
}

/// What chunk and trailer signatures are chained from.
#[derive(Clone)]
pub struct ChunkSigningContext {
    pub(crate) key: [u8; 32],
    pub(crate) amz_date: String,
    pub(crate) scope: String,
    pub(crate) seed_signature: String,
}

impl std::fmt::Debug for ChunkSigningContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkSigningContext")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl ChunkSigningContext {
    /// Signature of the next chunk (or trailer) given the previous signature.
    pub(crate) fn sign_string(&self, kind: &str, previous: &str, rest: &[&str]) -> String {
        let mut sts = format!("{kind}\n{}\n{}\n{previous}", self.amz_date, self.scope);
        for r in rest {
            sts.push('\n');
            sts.push_str(r);
        }
        hex::encode(hmac(&self.key, sts.as_bytes()))
    }
}

/// A client request whose signature verified.
#[derive(Debug, Clone)]
pub struct VerifiedRequest {
    pub access_key: String,
    pub payload: PayloadMode,
    pub presigned: bool,
    /// Present for the signed streaming modes.
    pub chunk_ctx: Option<ChunkSigningContext>,
    /// The names the signature covers (lower case; `host` among them).
    pub signed_headers: Vec<String>,
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            m.update(msg);
            m.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The SigV4 signing key for a date (YYYYMMDD) and region.
pub fn signing_key(secret: &str, date: &str, region: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, b"s3");
    hmac(&k, b"aws4_request")
}

fn split_path_query(raw: &str) -> (&str, &str) {
    match raw.split_once('?') {
        Some((p, q)) => (p, q),
        None => (raw, ""),
    }
}

fn canonical_uri(path: &str) -> Result<String, S3Error> {
    let p = if path.is_empty() { "/" } else { path };
    Ok(uri::encode_bytes(&uri::decode_bytes(p)?, false))
}

fn canonical_query(q: &str, skip_signature: bool) -> Result<String, S3Error> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for s in q.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = s.split_once('=').unwrap_or((s, ""));
        let kd = uri::decode_bytes(k)?;
        if skip_signature && kd == b"X-Amz-Signature" {
            continue;
        }
        pairs.push((
            uri::encode_bytes(&kd, true),
            uri::encode_bytes(&uri::decode_bytes(v)?, true),
        ));
    }
    pairs.sort();
    Ok(pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&"))
}

fn collapse(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn header_value(h: &Headers, name: &str) -> String {
    if name == "host" {
        return h
            .get("host")
            .or_else(|| h.get(":authority"))
            .map(collapse)
            .unwrap_or_default();
    }
    h.get_all(name).map(collapse).collect::<Vec<_>>().join(",")
}

fn canonical_request(
    method: &str,
    raw: &str,
    h: &Headers,
    signed: &[String],
    payload_hash: &str,
    presigned: bool,
) -> Result<String, S3Error> {
    let (path, query) = split_path_query(raw);
    let mut c = String::with_capacity(512);
    c.push_str(method);
    c.push('\n');
    c.push_str(&canonical_uri(path)?);
    c.push('\n');
    c.push_str(&canonical_query(query, presigned)?);
    c.push('\n');
    for name in signed {
        c.push_str(name);
        c.push(':');
        c.push_str(&header_value(h, name));
        c.push('\n');
    }
    c.push('\n');
    c.push_str(&signed.join(";"));
    c.push('\n');
    c.push_str(payload_hash);
    Ok(c)
}

fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    )
}

/// "YYYYMMDDTHHMMSSZ" for a Unix time.
pub fn amz_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Unix time of "YYYYMMDDTHHMMSSZ".
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(4..6)?,
        num(6..8)?,
        num(9..11)?,
        num(11..13)?,
        num(13..15)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

// Howard Hinnant's civil calendar algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

struct Credential {
    access_key: String,
    date: String,
    region: String,
}

fn parse_credential(v: &str) -> Option<Credential> {
    // AK/DATE/REGION/s3/aws4_request (the access key itself contains no '/').
    let mut it = v.rsplitn(5, '/');
    let term = it.next()?;
    let service = it.next()?;
    let region = it.next()?;
    let date = it.next()?;
    let access_key = it.next()?;
    if term != "aws4_request" || service != "s3" || date.len() != 8 || access_key.is_empty() {
        return None;
    }
    Some(Credential {
        access_key: access_key.to_string(),
        date: date.to_string(),
        region: region.to_string(),
    })
}

fn malformed_header(msg: &str) -> S3Error {
    S3Error::new(
        400,
        "AuthorizationHeaderMalformed",
        format!("The authorization header is malformed; {msg}"),
    )
}

fn malformed_query(msg: &str) -> S3Error {
    S3Error::new(400, "AuthorizationQueryParametersError", msg.to_string())
}

/// Verifies a client request. `raw_path_and_query` is `:path` as received.
pub fn verify(
    method: &str,
    raw_path_and_query: &str,
    headers: &Headers,
    secret_for: &dyn Fn(&str) -> Option<String>,
    now_unix: i64,
) -> Result<VerifiedRequest, S3Error> {
    verify_with_skew(
        method,
        raw_path_and_query,
        headers,
        secret_for,
        now_unix,
        15 * 60,
    )
}

/// [`verify`] with a configurable clock skew (seconds).
pub fn verify_with_skew(
    method: &str,
    raw: &str,
    headers: &Headers,
    secret_for: &dyn Fn(&str) -> Option<String>,
    now: i64,
    max_skew: i64,
) -> Result<VerifiedRequest, S3Error> {
    let (_, query) = split_path_query(raw);
    let q = uri::query_pairs(query)?;
    // A repeated parameter (two signatures, two expiries, two part numbers) could be read
    // one way here and another way by the backend.
    uri::check_unique(&q)?;
    let qget = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());

    if let Some(auth) = headers.get("authorization") {
        let auth = auth.trim();
        let Some(rest) = auth.strip_prefix(ALGORITHM) else {
            // Signature Version 2 (`AWS AKID:signature`) or anything else.
            return Err(unsupported_mechanism());
        };
        let (mut cred, mut signed, mut sig) = (None, None, None);
        for part in rest.split(',') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("Credential=") {
                cred = Some(v);
            } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
                signed = Some(v);
            } else if let Some(v) = part.strip_prefix("Signature=") {
                sig = Some(v);
            }
        }
        let cred = cred
            .and_then(parse_credential)
            .ok_or_else(|| malformed_header("invalid Credential"))?;
        let signed: Vec<String> = signed
            .ok_or_else(|| malformed_header("missing SignedHeaders"))?
            .split(';')
            .map(str::to_ascii_lowercase)
            .collect();
        let sig = sig.ok_or_else(|| malformed_header("missing Signature"))?;
        let amz_date = headers
            .get("x-amz-date")
            .ok_or_else(|| {
                S3Error::access_denied(
                    "AWS authentication requires a valid Date or x-amz-date header",
                )
            })?
            .trim()
            .to_string();
        let t = parse_amz_date(&amz_date).ok_or_else(|| {
            S3Error::access_denied("AWS authentication requires a valid Date or x-amz-date header")
        })?;
        if amz_date.get(..8) != Some(cred.date.as_str()) {
            return Err(malformed_header(
                "the credential date does not match x-amz-date",
            ));
        }
        if (t - now).abs() > max_skew {
            return Err(S3Error::new(
                403,
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
            ));
        }
        if !signed.iter().any(|s| s == "host") {
            return Err(malformed_header("the host header must be signed"));
        }
        check_all_amz_signed(headers, &signed)?;
        let secret = secret_for(&cred.access_key).ok_or_else(S3Error::invalid_access_key)?;
        let ph = headers
            .get("x-amz-content-sha256")
            .ok_or_else(|| {
                S3Error::invalid_request(
                    "Missing required header for this request: x-amz-content-sha256",
                )
            })?
            .trim()
            .to_string();
        let payload = PayloadMode::parse(&ph)
            .ok_or_else(|| S3Error::invalid_argument("x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* value or a SHA-256 hex digest"))?;
        let req = SignedRequest {
            method,
            raw,
            headers,
            signed: &signed,
            payload_hash: &ph,
            presigned: false,
        };
        return check_signature(&req, cred, &secret, amz_date, sig, payload);
    }

    if let Some(alg) = qget("X-Amz-Algorithm") {
        if alg != ALGORITHM {
            return Err(malformed_query(
                "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
            ));
        }
        let cred = qget("X-Amz-Credential")
            .and_then(parse_credential)
            .ok_or_else(|| malformed_query("invalid X-Amz-Credential"))?;
        let amz_date = qget("X-Amz-Date")
            .ok_or_else(|| malformed_query("missing X-Amz-Date"))?
            .to_string();
        let t = parse_amz_date(&amz_date).ok_or_else(|| malformed_query("invalid X-Amz-Date"))?;
        if amz_date.get(..8) != Some(cred.date.as_str()) {
            return Err(malformed_query(
                "the credential date does not match X-Amz-Date",
            ));
        }
        let expires: i64 = qget("X-Amz-Expires")
            .and_then(|e| e.parse().ok())
            .filter(|e| *e >= 1)
            .ok_or_else(|| malformed_query("X-Amz-Expires must be a positive integer"))?;
        if expires > MAX_PRESIGN_EXPIRES {
            return Err(malformed_query(
                "X-Amz-Expires must be less than a week (in seconds) that is 604800",
            ));
        }
        if t - now > max_skew {
            return Err(S3Error::access_denied("Request is not valid yet"));
        }
        if now > t + expires {
            return Err(S3Error::access_denied("Request has expired"));
        }
        let signed: Vec<String> = qget("X-Amz-SignedHeaders")
            .ok_or_else(|| malformed_query("missing X-Amz-SignedHeaders"))?
            .split(';')
            .map(str::to_ascii_lowercase)
            .collect();
        if !signed.iter().any(|s| s == "host") {
            return Err(malformed_query("X-Amz-SignedHeaders must contain host"));
        }
        check_all_amz_signed(headers, &signed)?;
        let sig =
            qget("X-Amz-Signature").ok_or_else(|| malformed_query("missing X-Amz-Signature"))?;
        let secret = secret_for(&cred.access_key).ok_or_else(S3Error::invalid_access_key)?;
        let (ph, payload) = match headers.get("x-amz-content-sha256") {
            Some(v) => {
                let p = PayloadMode::parse(v)
                    .ok_or_else(|| S3Error::invalid_argument("invalid x-amz-content-sha256"))?;
                (v.trim().to_string(), p)
            }
            _ => (UNSIGNED_PAYLOAD.to_string(), PayloadMode::Unsigned),
        };
        let req = SignedRequest {
            method,
            raw,
            headers,
            signed: &signed,
            payload_hash: &ph,
            presigned: true,
        };
        return check_signature(&req, cred, &secret, amz_date, sig, payload);
    }
    if qget("AWSAccessKeyId").is_some() || qget("Signature").is_some() {
        // A Signature Version 2 presigned URL (`AWSAccessKeyId`, `Signature`, `Expires`).
        return Err(unsupported_mechanism());
    }
    Err(S3Error::access_denied("Access Denied"))
}

/// What S3 answers (where only Signature Version 4 is accepted) for Signature Version 2,
/// in the Authorization header or in a presigned URL.
fn unsupported_mechanism() -> S3Error {
    S3Error::invalid_request(
        "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
    )
}

/// AWS's rule: every `x-amz-*` header present must be among the signed headers (403
/// AccessDenied, naming them), so that nothing the filter or the backend acts on can be
/// added to a captured or presigned request.
fn check_all_amz_signed(headers: &Headers, signed: &[String]) -> Result<(), S3Error> {
    let mut unsigned: Vec<String> = headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .filter(|k| k.starts_with("x-amz-") && !signed.contains(k))
        .collect();
    if unsigned.is_empty() {
        return Ok(());
    }
    unsigned.sort();
    unsigned.dedup();
    Err(S3Error::access_denied(format!(
        "There were headers present in the request which were not signed: {}",
        unsigned.join(", ")
    )))
}

/// The parts of a request that its signature covers.
struct SignedRequest<'a> {
    method: &'a str,
    raw: &'a str,
    headers: &'a Headers,
    signed: &'a [String],
    payload_hash: &'a str,
    presigned: bool,
}

/// Recomputes the signature and compares it in constant time.
fn check_signature(
    r: &SignedRequest<'_>,
    cred: Credential,
    secret: &str,
    amz_date: String,
    sig: &str,
    payload: PayloadMode,
) -> Result<VerifiedRequest, S3Error> {
    let scope = format!("{}/{}/s3/aws4_request", cred.date, cred.region);
    let canonical = canonical_request(
        r.method,
        r.raw,
        r.headers,
        r.signed,
        r.payload_hash,
        r.presigned,
    )?;
    let key = signing_key(secret, &cred.date, &cred.region);
    let expected = hex::encode(hmac(
        &key,
        string_to_sign(&amz_date, &scope, &canonical).as_bytes(),
    ));
    if !bool::from(expected.as_bytes().ct_eq(sig.trim().as_bytes())) {
        return Err(S3Error::signature_mismatch());
    }
    let chunk_ctx = matches!(
        payload,
        PayloadMode::StreamingSigned | PayloadMode::StreamingSignedTrailer
    )
    .then(|| ChunkSigningContext {
        key,
        amz_date,
        scope,
        seed_signature: expected,
    });
    Ok(VerifiedRequest {
        access_key: cred.access_key,
        payload,
        presigned: r.presigned,
        chunk_ctx,
        signed_headers: r.signed.to_vec(),
    })
}

const PRESIGN_PARAMS: &[&str] = &[
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// The path with the presign parameters removed (the rest kept byte for byte).
pub fn strip_presign_params(raw: &str) -> String {
    let (path, query) = split_path_query(raw);
    if query.is_empty() {
        return raw.to_string();
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|s| {
            let k = s.split_once('=').map(|(k, _)| k).unwrap_or(s);
            let k = uri::decode(k).unwrap_or_default();
            !s.is_empty() && !PRESIGN_PARAMS.contains(&k.as_str())
        })
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Signs an upstream request in place: sets x-amz-date, x-amz-content-sha256 and
/// authorization; signs host (`:authority`), every x-amz-* header, content-md5 and
/// content-type.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    raw: &str,
    headers: &mut Headers,
    access_key: &str,
    secret_key: &str,
    region: &str,
    now_unix: i64,
    payload_hash: &str,
) {
    sign_seed(
        method,
        raw,
        headers,
        access_key,
        secret_key,
        region,
        now_unix,
        payload_hash,
    );
}

/// Signs an upstream request like [`sign`] and returns what its chunk and trailer
/// signatures chain from (the seed signature is the request's).
#[allow(clippy::too_many_arguments)]
pub fn sign_seed(
    method: &str,
    raw: &str,
    headers: &mut Headers,
    access_key: &str,
    secret_key: &str,
    region: &str,
    now_unix: i64,
    payload_hash: &str,
) -> ChunkSigningContext {
    headers.remove("authorization");
    let date_time = amz_date(now_unix);
    headers.set("x-amz-date", date_time.clone());
    headers.set("x-amz-content-sha256", payload_hash);
    let mut signed: Vec<String> = headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .filter(|k| k.starts_with("x-amz-") || k == "content-md5" || k == "content-type")
        .collect();
    signed.push("host".to_string());
    signed.sort();
    signed.dedup();
    let date = date_time.get(..8).unwrap_or("").to_string();
    let scope = format!("{date}/{region}/s3/aws4_request");
    // Upstream paths are built by the filter's own encoder and always decode; were one
    // not to, the empty canonical request gives a signature the backend refuses.
    let canonical =
        canonical_request(method, raw, headers, &signed, payload_hash, false).unwrap_or_default();
    let key = signing_key(secret_key, &date, region);
    let sig = hex::encode(hmac(
        &key,
        string_to_sign(&date_time, &scope, &canonical).as_bytes(),
    ));
    headers.set(
        "authorization",
        format!(
            "{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={}, Signature={sig}",
            signed.join(";")
        ),
    );
    ChunkSigningContext {
        key,
        amz_date: date_time,
        scope,
        seed_signature: sig,
    }
}

#[cfg(test)]
mod tests;
