//! PutObject, and the encrypting upload body that UploadPart shares: the body is checked
//! (signature, chunk signatures, hashes, checksums, length) while it is encrypted, and the
//! final frame is withheld until every check passed, so that on any error the backend sees
//! a short body and stores nothing.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::cx::Cx;
use super::etags::{self, Known};
use super::request::{checksum_request, strip_checksum_headers, strip_integrity_headers};
use super::response::RespBody;
use super::upstream::UpstreamBody;
use super::vm::CopyReservation;
use super::{staging, Counter, ResponseStep};
use crate::auth::checksum::{ChecksumAlgorithm, Checksummer};
use crate::auth::chunked::ChunkedDecoder;
use crate::auth::sigv4::{PayloadMode, VerifiedRequest};
use crate::crypto::{DataKey, Suite};
use crate::format::{
    single_stored_len, Envelope, FrameEncryptor, Geometry, Layout, StoredChecksum, Trailer,
    ENVELOPE_HEADER, MAX_SINGLE, SINGLE_ENVELOPE_VERSION,
};
use crate::headers::Headers;
use crate::s3::error::S3Error;

/// PutObject: the body is encrypted as one single-layout stream under a fresh data key.
pub(crate) struct Put {
    upload: Box<Upload>,
    body: RespBody,
    /// The object's wrapped data key and stored length (for the ETag cache).
    wrapped: [u8; crate::crypto::WRAPPED_DEK_LEN],
    stored: u64,
}

impl Put {
    pub fn start(
        cx: &Cx,
        h: &Headers,
        up: Headers,
        v: &VerifiedRequest,
        eos: bool,
    ) -> Result<(Put, Headers), S3Error> {
        let (upload, up) = start_upload(cx, h, up, v, eos, None)?;
        let envelope = up.get(ENVELOPE_HEADER).map(Envelope::decode);
        let Some(Ok(env)) = envelope else {
            return Err(S3Error::internal("s3crypt: no envelope"));
        };
        // What the backend stores: the ciphertext (with signed chunks upstream, the
        // decoded length; Content-Length is then the framed one).
        let stored = up
            .get("x-amz-decoded-content-length")
            .or_else(|| up.get("content-length"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok((
            Put {
                upload,
                body: RespBody::Pass,
                wrapped: env.wrapped_dek,
                stored,
            },
            up,
        ))
    }

    pub fn request_body(
        &mut self,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), S3Error> {
        self.upload.feed(chunk, end, out)
    }

    /// The client gets the ETag and checksums of its plaintext.
    pub fn response_headers(&mut self, cx: &Cx, h: &Headers, eos: bool) -> ResponseStep {
        let mut out = h.clone();
        let u = &self.upload;
        if let (Some("200"), Some(md5)) = (h.get(":status"), u.result_md5) {
            // Listings and reads of this version find its ETag without reading it.
            let (bucket, key) = etags::request_object(cx);
            let known = Known {
                version: SINGLE_ENVELOPE_VERSION,
                plain_len: u.enc.geometry().plain_len,
                md5: Some(md5),
                checksum: u.trailer_checksum(),
                wrapped: self.wrapped,
                parts: None,
            };
            let backend_etag = h.get("etag").unwrap_or("");
            etags::remember(cx, &bucket, &key, backend_etag, self.stored, &known);
            // For servers whose listings carry no ETags (s3s-fs): by key and size.
            etags::remember(cx, &bucket, &key, "", self.stored, &known);
            etags::note_latest(cx, Some((backend_etag, self.stored, false)));
            out.set("etag", format!("\"{}\"", hex::encode(md5)));
            strip_checksum_headers(&mut out);
            for (k, v) in &u.result_checksums {
                out.set(k, v.clone());
            }
            cx.count(Counter::ObjectsEncrypted, 1);
            cx.count(Counter::BytesEncrypted, u.enc.geometry().plain_len);
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
    ) -> Result<(), super::BodyError> {
        self.body.push(cx, chunk, end, out).map(drop)
    }
}

/// Starts encrypting an upload body: a single object (`part` none: a fresh data key and
/// envelope, set on `up`) or one part of a multipart upload. Returns the body's state and
/// the signed upstream headers.
pub(crate) fn start_upload(
    cx: &Cx,
    h: &Headers,
    mut up: Headers,
    v: &VerifiedRequest,
    eos: bool,
    part: Option<PartKey>,
) -> Result<(Box<Upload>, Headers), S3Error> {
    let chunked = matches!(
        v.payload,
        PayloadMode::StreamingSigned
            | PayloadMode::StreamingSignedTrailer
            | PayloadMode::StreamingUnsignedTrailer
    );
    let plain_len: u64 = if chunked {
        h.get("x-amz-decoded-content-length")
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(S3Error::missing_content_length)?
    } else {
        match h.get("content-length") {
            Some(s) => s
                .trim()
                .parse()
                .map_err(|_| S3Error::invalid_argument("invalid Content-Length"))?,
            None if eos => 0,
            None => return Err(S3Error::missing_content_length()),
        }
    };
    if plain_len > MAX_SINGLE {
        return Err(S3Error::entity_too_large());
    }
    let expected_md5 = match h.get("content-md5") {
        Some(m) => Some(
            B64.decode(m.trim())
                .ok()
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .ok_or_else(S3Error::invalid_digest)?,
        ),
        None => None,
    };
    let checksum = checksum_request(h)?;
    let decoder = if chunked {
        Some(ChunkedDecoder::new(
            &v.payload,
            v.chunk_ctx.clone(),
            h.get("x-amz-trailer"),
            plain_len,
        )?)
    } else {
        None
    };
    let sha256 = match &v.payload {
        PayloadMode::Sha256(x) => Some((Sha256::new(), x.to_ascii_lowercase())),
        _ => None,
    };

    strip_integrity_headers(&mut up);
    let mut stage = None;
    let single = part.is_none();
    let (suite, dek, geo) = match part {
        Some(PartKey {
            number,
            suite,
            dek,
            v2,
        }) => {
            if eos || plain_len == 0 {
                // A part always has a header and frames; Envoy cannot add a body to
                // a request that has none.
                return Err(S3Error::invalid_request(
                    "s3crypt: empty parts are not supported",
                ));
            }
            let geo = part_geometry(v2, number, plain_len);
            stage = staging::stage_for(cx, v2, &geo);
            (suite, dek, geo)
        }
        None => {
            let (dek, mut env) = cx.new_envelope(Layout::Single, Some(plain_len))?;
            // Version 3: the plaintext MD5 goes in a sealed trailer after the frames.
            env.version = SINGLE_ENVELOPE_VERSION;
            env.md5 = expected_md5;
            if let Some((_, algo, Some(value))) = &checksum {
                env.checksum = Some(crate::format::StoredChecksum {
                    header: algo.header_name().to_string(),
                    value: value.clone(),
                });
            }
            env.seal(&dek, &*cx.ports.rng)
                .map_err(|_| S3Error::internal("s3crypt: no randomness"))?;
            up.set(ENVELOPE_HEADER, env.encode());
            (env.suite, dek, Geometry::single(plain_len))
        }
    };
    // (The plaintext length is at most 5 GiB.)
    let cipher_len = if single {
        single_stored_len(SINGLE_ENVELOPE_VERSION, plain_len)
    } else {
        geo.cipher_len()
    }
    .ok_or_else(S3Error::entity_too_large)?;
    let framing = super::upstream::sign_streamed(cx, &mut up, cipher_len)?;

    let mut upload = Box::new(Upload {
        decoder,
        sha256,
        md5: Md5::new(),
        expected_md5,
        checksum,
        enc: FrameEncryptor::new(suite, &dek, geo, &cx.ports.rng),
        plain: Vec::new(),
        cipher: Vec::new(),
        framing,
        result_md5: None,
        result_checksums: Vec::new(),
        stage,
        trailer: single,
    });
    if eos {
        // No body at all: everything is checked now, and nothing is sent (an empty
        // object has no frames).
        let mut out = Vec::new();
        upload.feed(&[], true, &mut out)?;
        if !out.is_empty() {
            return Err(S3Error::internal("s3crypt: empty body produced data"));
        }
    }
    Ok((upload, up))
}

/// The checks and the encryption applied to an upload body.
pub(crate) struct Upload {
    pub(crate) decoder: Option<ChunkedDecoder>,
    pub(crate) sha256: Option<(Sha256, String)>,
    pub(crate) md5: Md5,
    pub(crate) expected_md5: Option<[u8; 16]>,
    /// Checksum announced in a header (verified) or asked for by algorithm (computed).
    pub(crate) checksum: Option<(Checksummer, ChecksumAlgorithm, Option<String>)>,
    pub(crate) enc: FrameEncryptor,
    pub(crate) plain: Vec<u8>,
    /// The ciphertext of the current body chunk, before its upstream framing.
    pub(crate) cipher: Vec<u8>,
    /// How the ciphertext goes upstream (signed chunks, or as it is).
    pub(crate) framing: UpstreamBody,
    /// Filled in when the body is complete.
    pub(crate) result_md5: Option<[u8; 16]>,
    pub(crate) result_checksums: Vec<(String, String)>,
    /// A short last part: the ciphertext sent upstream, kept for Complete (stage.rs),
    /// with its share of the memory budget.
    pub(crate) stage: Option<(Vec<u8>, CopyReservation)>,
    /// A single object: a sealed trailer (MD5, checksum) follows the final frame.
    pub(crate) trailer: bool,
}

impl Upload {
    /// A body chunk: its ciphertext goes to `out` in the upstream framing (and as it is
    /// to the staged copy, if kept).
    pub fn feed(&mut self, chunk: &[u8], end: bool, out: &mut Vec<u8>) -> Result<(), S3Error> {
        let mut cipher = std::mem::take(&mut self.cipher);
        cipher.clear();
        self.push(chunk, end, &mut cipher)?;
        if let Some((kept, _)) = self.stage.as_mut() {
            kept.extend_from_slice(&cipher);
        }
        self.framing.push(&cipher, end, out)?;
        self.cipher = cipher;
        Ok(())
    }

    fn push(&mut self, chunk: &[u8], end: bool, out: &mut Vec<u8>) -> Result<(), S3Error> {
        let plain: &[u8] = match self.decoder.as_mut() {
            Some(d) => {
                self.plain.clear();
                d.push(chunk, &mut self.plain)?;
                &self.plain
            }
            None => chunk,
        };
        if let Some((h, _)) = self.sha256.as_mut() {
            h.update(plain);
        }
        self.md5.update(plain);
        if let Some((c, _, _)) = self.checksum.as_mut() {
            c.update(plain);
        }
        self.enc
            .push(plain, out)
            .map_err(|_| S3Error::incomplete_body())?;
        if !end {
            return Ok(());
        }
        // The whole body is here: check everything before the final frame goes out.
        let trailers = match self.decoder.as_mut() {
            Some(d) => d.finish()?,
            None => Vec::new(),
        };
        if self.enc.consumed() != self.enc.geometry().plain_len {
            return Err(S3Error::incomplete_body());
        }
        if let Some((h, expected)) = self.sha256.take() {
            if hex::encode(h.finalize()) != *expected {
                return Err(S3Error::sha256_mismatch());
            }
        }
        let md5: [u8; 16] = std::mem::take(&mut self.md5).finalize().into();
        if let Some(e) = self.expected_md5 {
            if !bool::from(subtle::ConstantTimeEq::ct_eq(&e[..], &md5[..])) {
                return Err(S3Error::bad_digest());
            }
        }
        if let Some((c, algo, expected)) = self.checksum.take() {
            let got = c.finalize_base64();
            if let Some(e) = expected {
                if e != got {
                    return Err(S3Error::bad_digest());
                }
            }
            self.result_checksums
                .push((algo.header_name().to_string(), got));
        }
        for (k, v) in trailers {
            let k = k.to_ascii_lowercase();
            if k.starts_with("x-amz-checksum-")
                && !self.result_checksums.iter().any(|(n, _)| *n == k)
            {
                self.result_checksums.push((k, v));
            }
        }
        self.result_md5 = Some(md5);
        self.enc
            .finish(out)
            .map_err(|_| S3Error::incomplete_body())?;
        if self.trailer && self.enc.geometry().plain_len > 0 {
            let t = Trailer {
                md5,
                checksum: self.trailer_checksum(),
            };
            self.enc
                .seal_trailer(&t, out)
                .map_err(|_| S3Error::internal("s3crypt: no randomness"))?;
        }
        Ok(())
    }

    /// The full-object checksum of the plaintext the trailer keeps: the one the client
    /// announced (header or aws-chunked trailer), or computed because it asked for one.
    pub(crate) fn trailer_checksum(&self) -> Option<StoredChecksum> {
        self.result_checksums
            .iter()
            .find(|(k, v)| k.len() <= 64 && v.len() <= 128)
            .map(|(k, v)| StoredChecksum {
                header: k.clone(),
                value: v.clone(),
            })
    }
}

/// The part count of a multipart ETag (`"<hex>-N"`).
/// What encrypting one part of an upload needs: its number and the upload's suite, data
/// key and envelope version.
pub(crate) struct PartKey {
    pub(crate) number: u32,
    pub(crate) suite: Suite,
    pub(crate) dek: DataKey,
    pub(crate) v2: bool,
}

/// The geometry a part is written in: layout `final` for the parts of version 2 uploads
/// that can only be last (FORMAT.md), `part` otherwise.
pub(crate) fn part_geometry(v2: bool, number: u32, plain_len: u64) -> Geometry {
    let layout = if v2 && crate::format::part_is_final(number, plain_len) {
        Layout::Final
    } else {
        Layout::Part
    };
    Geometry::part_in(layout, number, plain_len)
}
