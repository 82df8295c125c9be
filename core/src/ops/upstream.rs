//! How the object data the filter sends upstream is covered by its signature, so that
//! the backend verifies every byte it stores (configuration `upstream_payload`):
//! streamed bodies (PutObject, UploadPart) in signed aws-chunked framing, whole bodies
//! of call-outs (end parts, closing parts, UploadPartCopy parts) with their SHA-256 signed.

use crate::auth::checksum::{ChecksumAlgorithm, Checksummer};
use crate::auth::chunked::{ChunkedEncoder, UPSTREAM_CHUNK};
use crate::auth::sigv4::{self, sha256_hex};
use crate::config::UpstreamPayload;
use crate::headers::Headers;
use crate::s3::error::S3Error;

use super::cx::Cx;

/// The checksum the configured mode adds (over the ciphertext), if any.
fn checksum_of(mode: UpstreamPayload) -> Option<ChecksumAlgorithm> {
    match mode {
        UpstreamPayload::SignedChunksCrc32c => Some(ChecksumAlgorithm::Crc32c),
        UpstreamPayload::SignedChunks | UpstreamPayload::Unsigned => None,
    }
}

/// The encoding of a streamed upstream body.
pub(crate) enum UpstreamBody {
    /// The ciphertext as it is (unsigned, or no body at all).
    Plain,
    /// Signed aws-chunked framing; holds at most four chunks ([`UPSTREAM_CHUNK`], 64 KiB).
    Chunked(Box<ChunkedEncoder>),
}

impl UpstreamBody {
    /// Ciphertext bytes; what goes upstream is appended to `out`.
    pub fn push(&mut self, data: &[u8], end: bool, out: &mut Vec<u8>) -> Result<(), S3Error> {
        match self {
            UpstreamBody::Plain => {
                out.extend_from_slice(data);
                Ok(())
            }
            UpstreamBody::Chunked(e) => e.push(data, end, out),
        }
    }
}

/// Sets the length headers of an upstream request whose body is `len` bytes of
/// ciphertext streamed later, signs it in the configured mode and returns the body's
/// encoder. An empty body stays empty (Envoy cannot add a body to a request without
/// one): the empty payload's hash is signed.
pub(crate) fn sign_streamed(cx: &Cx, up: &mut Headers, len: u64) -> Result<UpstreamBody, S3Error> {
    let mode = cx.cfg.plugin.upstream_payload;
    if mode == UpstreamPayload::Unsigned {
        up.set("content-length", len.to_string());
        cx.sign(up, sigv4::UNSIGNED_PAYLOAD);
        return Ok(UpstreamBody::Plain);
    }
    let checksum = checksum_of(mode);
    if len == 0 {
        up.set("content-length", "0");
        if let Some(a) = checksum {
            up.set(a.header_name(), Checksummer::new(a).finalize_base64());
        }
        cx.sign(up, sigv4::EMPTY_SHA256);
        return Ok(UpstreamBody::Plain);
    }
    let framed = ChunkedEncoder::framed_len(len, UPSTREAM_CHUNK, checksum)
        .ok_or_else(S3Error::entity_too_large)?;
    up.set("content-length", framed.to_string());
    up.set("x-amz-decoded-content-length", len.to_string());
    // No `Content-Encoding: aws-chunked`: the payload hash names the framing (AWS S3,
    // RGW and MinIO decode by it; AWS SDKs for .NET omit the header too), and RGW 16 would
    // store the token as the object's Content-Encoding. The client's own stays as it is.
    let payload = match checksum {
        Some(a) => {
            up.set("x-amz-trailer", a.header_name());
            sigv4::STREAMING_SIGNED_TRAILER
        }
        None => sigv4::STREAMING_SIGNED,
    };
    let ctx = cx.sign_seed(up, payload);
    Ok(UpstreamBody::Chunked(Box::new(ChunkedEncoder::new(
        ctx,
        UPSTREAM_CHUNK,
        checksum,
        len,
    ))))
}

/// Sets the length of an upstream request whose whole body (ciphertext) is known and
/// signs it in the configured mode: the body's SHA-256 (and, with a checksum, the
/// checksum header) signed, so the backend verifies it without any framing.
pub(crate) fn sign_whole(cx: &Cx, up: &mut Headers, body: &[u8]) {
    up.set("content-length", body.len().to_string());
    let mode = cx.cfg.plugin.upstream_payload;
    if mode == UpstreamPayload::Unsigned {
        cx.sign(up, sigv4::UNSIGNED_PAYLOAD);
        return;
    }
    if let Some(a) = checksum_of(mode) {
        let mut c = Checksummer::new(a);
        c.update(body);
        up.set(a.header_name(), c.finalize_base64());
    }
    cx.sign(up, &sha256_hex(body));
}
