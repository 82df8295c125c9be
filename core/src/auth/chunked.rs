//! Decoder for `Content-Encoding: aws-chunked` request bodies, streaming: payload bytes are
//! released as they arrive (chunks can be megabytes), each chunk signature is checked when
//! its chunk ends, and the trailers (checksum, trailer signature) when the body ends.
//! Releasing bytes before their chunk is verified is safe here because the caller never
//! completes the upstream body before `finish` succeeded.
//!
//! ```text
//! hex-size[;chunk-signature=sig]\r\n <data> \r\n ... 0[;chunk-signature=sig]\r\n
//! [trailer-name:value\r\n ...][x-amz-trailer-signature:sig\r\n]\r\n
//! ```

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::checksum::{ChecksumAlgorithm, Checksummer};
use crate::auth::sigv4::{sha256_hex, ChunkSigningContext, PayloadMode, EMPTY_SHA256};
use crate::s3::error::S3Error;

/// Longest chunk header or trailer line accepted.
const MAX_LINE: usize = 4096;

enum State {
    Header,
    Data { remaining: u64 },
    DataEnd,
    Trailers,
    Done,
}

pub struct ChunkedDecoder {
    state: State,
    line: Vec<u8>,
    /// Signing context and previous signature, for the signed modes.
    signing: Option<(ChunkSigningContext, String)>,
    /// Signature announced for the current chunk, and the hash of its data.
    chunk_sig: Option<String>,
    chunk_hash: Sha256,
    trailer_mode: bool,
    trailer_signed: bool,
    declared: Option<(ChecksumAlgorithm, Checksummer)>,
    decoded_len: u64,
    total: u64,
    trailers: Vec<(String, String)>,
    error: Option<S3Error>,
}

fn malformed(msg: &str) -> S3Error {
    S3Error::new(
        400,
        "IncompleteBody",
        format!("The aws-chunked body is malformed: {msg}"),
    )
}

impl ChunkedDecoder {
    pub fn new(
        mode: &PayloadMode,
        ctx: Option<ChunkSigningContext>,
        declared_trailer: Option<&str>,
        decoded_len: u64,
    ) -> Result<Self, S3Error> {
        let (signed, trailer_mode) = match mode {
            PayloadMode::StreamingSigned => (true, false),
            PayloadMode::StreamingSignedTrailer => (true, true),
            PayloadMode::StreamingUnsignedTrailer => (false, true),
            _ => return Err(S3Error::invalid_request("not an aws-chunked payload")),
        };
        let signing = match (signed, ctx) {
            (true, Some(c)) => {
                let seed = c.seed_signature.clone();
                Some((c, seed))
            }
            (true, None) => return Err(S3Error::internal("missing chunk signing context")),
            (false, _) => None,
        };
        let declared = match declared_trailer.map(str::trim).filter(|s| !s.is_empty()) {
            Some(name) if trailer_mode => {
                let algo = ChecksumAlgorithm::from_header_name(name).ok_or_else(|| {
                    S3Error::invalid_request(format!("unsupported x-amz-trailer {name:?}"))
                })?;
                Some((algo, Checksummer::new(algo)))
            }
            Some(_) => {
                return Err(S3Error::invalid_request(
                    "x-amz-trailer requires a *-TRAILER payload",
                ))
            }
            None => None,
        };
        Ok(ChunkedDecoder {
            state: State::Header,
            line: Vec::new(),
            signing,
            chunk_sig: None,
            chunk_hash: Sha256::new(),
            trailer_mode,
            trailer_signed: signed && trailer_mode,
            declared,
            decoded_len,
            total: 0,
            trailers: Vec::new(),
            error: None,
        })
    }

    /// Feeds body bytes; decoded payload bytes are appended to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), S3Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let r = self.push_inner(input, out);
        if let Err(e) = &r {
            self.error = Some(e.clone());
        }
        r
    }

    fn push_inner(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), S3Error> {
        while !input.is_empty() {
            match self.state {
                State::Header | State::Trailers | State::DataEnd => {
                    let Some(line) = self.take_line(&mut input)? else {
                        return Ok(());
                    };
                    self.on_line(&line)?;
                }
                State::Data { remaining } => {
                    let n = remaining.min(input.len() as u64) as usize;
                    let (data, rest) = input.split_at(n);
                    self.total += n as u64;
                    if self.total > self.decoded_len {
                        return Err(S3Error::incomplete_body());
                    }
                    if self.signing.is_some() {
                        self.chunk_hash.update(data);
                    }
                    if let Some((_, c)) = self.declared.as_mut() {
                        c.update(data);
                    }
                    out.extend_from_slice(data);
                    input = rest;
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data { remaining: left }
                    };
                }
                State::Done => return Err(malformed("data after the end of the body")),
            }
        }
        Ok(())
    }

    /// Collects one line (without its CRLF); `None` if the line is not complete yet.
    fn take_line(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, S3Error> {
        match input.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let (head, rest) = input.split_at(i + 1);
                self.line.extend_from_slice(head);
                *input = rest;
                if self.line.len() > MAX_LINE {
                    return Err(malformed("line too long"));
                }
                let mut l = std::mem::take(&mut self.line);
                l.pop();
                if l.last() == Some(&b'\r') {
                    l.pop();
                }
                Ok(Some(l))
            }
            None => {
                self.line.extend_from_slice(input);
                *input = &[];
                if self.line.len() > MAX_LINE {
                    return Err(malformed("line too long"));
                }
                Ok(None)
            }
        }
    }

    fn on_line(&mut self, line: &[u8]) -> Result<(), S3Error> {
        let text = std::str::from_utf8(line).map_err(|_| malformed("non-UTF-8 line"))?;
        match self.state {
            State::DataEnd => {
                if !text.is_empty() {
                    return Err(malformed("chunk data longer than its size"));
                }
                self.verify_chunk()?;
                self.state = State::Header;
            }
            State::Header => {
                let mut parts = text.split(';');
                let size_hex = parts.next().unwrap_or("").trim();
                let size =
                    u64::from_str_radix(size_hex, 16).map_err(|_| malformed("bad chunk size"))?;
                let mut sig = None;
                for ext in parts {
                    if let Some(v) = ext.trim().strip_prefix("chunk-signature=") {
                        sig = Some(v.to_string());
                    }
                }
                if self.signing.is_some() && sig.is_none() {
                    return Err(S3Error::signature_mismatch());
                }
                self.chunk_sig = sig;
                self.chunk_hash = Sha256::new();
                if size == 0 {
                    self.verify_chunk()?;
                    self.state = State::Trailers;
                } else {
                    self.state = State::Data { remaining: size };
                }
            }
            State::Trailers => {
                if text.is_empty() {
                    self.state = State::Done;
                } else {
                    if !self.trailer_mode {
                        return Err(malformed("trailers without a trailer payload"));
                    }
                    let (k, v) = text
                        .split_once(':')
                        .ok_or_else(|| malformed("bad trailer line"))?;
                    if self.trailers.len() >= 16 {
                        return Err(malformed("too many trailers"));
                    }
                    self.trailers
                        .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            State::Data { .. } | State::Done => return Err(malformed("unexpected line")),
        }
        Ok(())
    }

    /// Checks the signature of the chunk that just ended.
    fn verify_chunk(&mut self) -> Result<(), S3Error> {
        let Some((ctx, prev)) = self.signing.as_mut() else {
            return Ok(());
        };
        let hash = hex::encode(std::mem::take(&mut self.chunk_hash).finalize());
        let expected = ctx.sign_string("AWS4-HMAC-SHA256-PAYLOAD", prev, &[EMPTY_SHA256, &hash]);
        let got = self.chunk_sig.take().unwrap_or_default();
        if !bool::from(expected.as_bytes().ct_eq(got.as_bytes())) {
            return Err(S3Error::signature_mismatch());
        }
        *prev = expected;
        Ok(())
    }

    /// Completes the body: everything arrived, signatures and the trailer checksum match.
    /// Returns the trailers.
    pub fn finish(&mut self) -> Result<Vec<(String, String)>, S3Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if !matches!(self.state, State::Done) || self.total != self.decoded_len {
            return Err(S3Error::incomplete_body());
        }
        if self.trailer_signed {
            let (ctx, prev) = self
                .signing
                .as_ref()
                .ok_or_else(|| S3Error::internal("no signing context"))?;
            let sig = self
                .trailers
                .iter()
                .find(|(k, _)| k == "x-amz-trailer-signature")
                .map(|(_, v)| v.clone())
                .ok_or_else(S3Error::signature_mismatch)?;
            let canon: String = self
                .trailers
                .iter()
                .filter(|(k, _)| k != "x-amz-trailer-signature")
                .map(|(k, v)| format!("{k}:{v}\n"))
                .collect();
            let expected = ctx.sign_string(
                "AWS4-HMAC-SHA256-TRAILER",
                prev,
                &[&sha256_hex(canon.as_bytes())],
            );
            if !bool::from(expected.as_bytes().ct_eq(sig.as_bytes())) {
                return Err(S3Error::signature_mismatch());
            }
        }
        if let Some((algo, c)) = self.declared.take() {
            let got = self
                .trailers
                .iter()
                .find(|(k, _)| k == algo.header_name())
                .map(|(_, v)| v.clone())
                .ok_or_else(|| S3Error::new(400, "MalformedTrailerError", "The request contained trailing data that was not well-formed or did not conform to our published schema."))?;
            if c.finalize_base64() != got {
                return Err(S3Error::bad_digest());
            }
        }
        Ok(self
            .trailers
            .iter()
            .filter(|(k, _)| k != "x-amz-trailer-signature")
            .cloned()
            .collect())
    }
}

/// Size of the chunks the filter frames its upstream bodies in (the last one may be
/// shorter): the framing of a body is then a pure function of its length. S3 wants at
/// least 8 KiB per chunk but the last; 16 KiB chunks are hashed four at a time
/// ([`GROUP`]), so the encoder still holds at most 64 KiB.
pub const UPSTREAM_CHUNK: usize = 16 * 1024;

/// Chunks whose SHA-256s are computed together (the lanes of
/// [`crate::crypto::sha256x4`]).
const GROUP: usize = 4;

/// The SHA-256s of four chunks of equal length: four lanes of one SIMD128 computation
/// in wasm, the `sha2` crate one by one elsewhere (natively it uses the CPU's SHA
/// instructions).
fn hash4(c: [&[u8]; GROUP]) -> [[u8; 32]; GROUP] {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if let Some(h) = crate::crypto::sha256x4::sha256x4(c) {
        return h;
    }
    c.map(|m| Sha256::digest(m).into())
}

/// `;chunk-signature=` and a hex SHA-256.
const SIG_EXT: u64 = 17 + 64;

/// Encoder of an aws-chunked `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]` body: every
/// chunk carries its signature, chained from the request's seed signature, and (trailer
/// mode) the body ends with a checksum trailer and the trailer signature. A chunk's
/// header precedes its data and holds its signature, so the encoder holds data until
/// its chunk is complete: at most [`GROUP`] chunks (`4 × chunk` bytes), hashed together.
pub struct ChunkedEncoder {
    ctx: ChunkSigningContext,
    prev: String,
    chunk: usize,
    buf: Vec<u8>,
    trailer: Option<(ChecksumAlgorithm, Checksummer)>,
    declared: u64,
    total: u64,
    done: bool,
}

impl ChunkedEncoder {
    /// An encoder of a body of exactly `declared` bytes in chunks of `chunk` bytes
    /// (at least 1), with a trailing checksum of algorithm `trailer`.
    pub fn new(
        ctx: ChunkSigningContext,
        chunk: usize,
        trailer: Option<ChecksumAlgorithm>,
        declared: u64,
    ) -> ChunkedEncoder {
        ChunkedEncoder {
            prev: ctx.seed_signature.clone(),
            ctx,
            chunk: chunk.max(1),
            buf: Vec::new(),
            trailer: trailer.map(|a| (a, Checksummer::new(a))),
            declared,
            total: 0,
            done: false,
        }
    }

    /// Length of the encoded body of `decoded` payload bytes (the Content-Length),
    /// `None` on overflow.
    pub fn framed_len(
        decoded: u64,
        chunk: usize,
        trailer: Option<ChecksumAlgorithm>,
    ) -> Option<u64> {
        let chunk = u64::try_from(chunk.max(1)).ok()?;
        let full = decoded.checked_div(chunk)?;
        let rest = decoded.checked_rem(chunk)?;
        // hex size, signature extension, CRLF, data, CRLF
        let per = |n: u64| -> Option<u64> {
            let hex = u64::try_from(format!("{n:x}").len()).ok()?;
            hex.checked_add(SIG_EXT)?.checked_add(4)?.checked_add(n)
        };
        let mut len = per(chunk)?.checked_mul(full)?;
        if rest > 0 {
            len = len.checked_add(per(rest)?)?;
        }
        // `0;chunk-signature=…\r\n`
        len = len.checked_add(1 + SIG_EXT + 2)?;
        if let Some(a) = trailer {
            let name = u64::try_from(a.header_name().len()).ok()?;
            let value = u64::try_from(Checksummer::new(a).finalize_base64().len()).ok()?;
            // `name:value\r\n` `x-amz-trailer-signature:sig\r\n`
            len = len
                .checked_add(name)?
                .checked_add(1)?
                .checked_add(value)?
                .checked_add(2)?
                .checked_add(24 + 64 + 2)?;
        }
        // the closing CRLF
        len.checked_add(2)
    }

    /// Payload bytes; the encoded body goes to `out`. At `end` the rest of the body
    /// (the last chunks, the trailer) follows, if exactly the declared length came.
    pub fn push(&mut self, mut data: &[u8], end: bool, out: &mut Vec<u8>) -> Result<(), S3Error> {
        if self.done {
            return Err(S3Error::internal(
                "s3crypt: data after the end of an upstream body",
            ));
        }
        self.total = self
            .total
            .checked_add(data.len() as u64)
            .filter(|t| *t <= self.declared)
            .ok_or_else(|| S3Error::internal("s3crypt: upstream body longer than declared"))?;
        if let Some((_, c)) = self.trailer.as_mut() {
            c.update(data);
        }
        let group = self.chunk.saturating_mul(GROUP);
        while !data.is_empty() {
            if self.buf.is_empty() && data.len() >= group {
                // Whole chunks straight from the input.
                let (g, rest) = data.split_at(group);
                self.emit_group(g, out);
                data = rest;
                continue;
            }
            let room = group.saturating_sub(self.buf.len());
            let (c, rest) = data.split_at(room.min(data.len()));
            self.buf.extend_from_slice(c);
            data = rest;
            if self.buf.len() >= group {
                let b = std::mem::take(&mut self.buf);
                self.emit_group(&b, out);
                self.buf = b;
                self.buf.clear();
            }
        }
        if !end {
            return Ok(());
        }
        if self.total != self.declared {
            return Err(S3Error::internal(
                "s3crypt: upstream body shorter than declared",
            ));
        }
        let b = std::mem::take(&mut self.buf);
        for c in b.chunks(self.chunk) {
            self.emit(c, out);
        }
        self.emit(&[], out);
        if let Some((a, c)) = self.trailer.take() {
            let line = format!("{}:{}", a.header_name(), c.finalize_base64());
            let sig = self.ctx.sign_string(
                "AWS4-HMAC-SHA256-TRAILER",
                &self.prev,
                &[&sha256_hex(format!("{line}\n").as_bytes())],
            );
            out.extend_from_slice(
                format!("{line}\r\nx-amz-trailer-signature:{sig}\r\n").as_bytes(),
            );
        }
        out.extend_from_slice(b"\r\n");
        self.done = true;
        Ok(())
    }

    /// [`GROUP`] whole chunks (`g` is exactly that long), hashed together.
    fn emit_group(&mut self, g: &[u8], out: &mut Vec<u8>) {
        let mut it = g.chunks(self.chunk);
        let c: [&[u8]; GROUP] = core::array::from_fn(|_| it.next().unwrap_or_default());
        for (c, h) in c.into_iter().zip(hash4(c)) {
            self.emit_hashed(c, &hex::encode(h), out);
        }
    }

    /// One chunk (the empty one ends the data), signed in the chain.
    fn emit(&mut self, c: &[u8], out: &mut Vec<u8>) {
        self.emit_hashed(c, &sha256_hex(c), out);
    }

    /// One chunk whose SHA-256 (hex) is `hash`.
    fn emit_hashed(&mut self, c: &[u8], hash: &str, out: &mut Vec<u8>) {
        let sig = self.ctx.sign_string(
            "AWS4-HMAC-SHA256-PAYLOAD",
            &self.prev,
            &[EMPTY_SHA256, hash],
        );
        out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", c.len()).as_bytes());
        if !c.is_empty() {
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        self.prev = sig;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::sigv4::{parse_amz_date, verify};
    use crate::headers::Headers;
    use proptest::prelude::*;

    const AK: &str = "AKIAIOSFODNN7EXAMPLE";
    const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    /// AWS S3 API reference, "Signature Calculations for the Authorization Header:
    /// Transferring Payload in Multiple Chunks": 66,560 bytes of 'a' in chunks of 65,536
    /// and 1,024 bytes, seed signature 4f232c43...
    fn aws_example() -> (ChunkSigningContext, Vec<u8>) {
        let h = Headers::from_pairs(
            [
                ("host", "s3.amazonaws.com"),
                ("x-amz-date", "20130524T000000Z"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"),
                ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
                ("content-encoding", "aws-chunked"),
                ("x-amz-decoded-content-length", "66560"),
                ("content-length", "66824"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let secret = |ak: &str| (ak == AK).then(|| SK.to_string());
        let v = verify(
            "PUT",
            "/examplebucket/chunkObject.txt",
            &h,
            &secret,
            parse_amz_date("20130524T000000Z").unwrap(),
        )
        .unwrap();
        let ctx = v.chunk_ctx.unwrap();
        let mut body = Vec::new();
        body.extend_from_slice(b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n");
        body.extend_from_slice(&[b'a'; 65536]);
        body.extend_from_slice(b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n");
        body.extend_from_slice(&[b'a'; 1024]);
        body.extend_from_slice(b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n");
        assert_eq!(body.len(), 66824);
        (ctx, body)
    }

    fn run(d: &mut ChunkedDecoder, body: &[u8], step: usize) -> Result<Vec<u8>, S3Error> {
        let mut out = Vec::new();
        for c in body.chunks(step.max(1)) {
            d.push(c, &mut out)?;
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn aws_chunked_example_verifies() {
        let (ctx, body) = aws_example();
        for step in [1, 7, 4096, 70000] {
            let mut d = ChunkedDecoder::new(
                &PayloadMode::StreamingSigned,
                Some(ctx.clone()),
                None,
                66560,
            )
            .unwrap();
            assert_eq!(run(&mut d, &body, step).unwrap(), vec![b'a'; 66560]);
        }
    }

    #[test]
    fn aws_chunked_example_tampered() {
        let (ctx, body) = aws_example();
        let mut t = body.clone();
        t[200] = b'b';
        let mut d = ChunkedDecoder::new(
            &PayloadMode::StreamingSigned,
            Some(ctx.clone()),
            None,
            66560,
        )
        .unwrap();
        assert_eq!(
            run(&mut d, &t, 1000).unwrap_err().code,
            "SignatureDoesNotMatch"
        );
        // Missing final chunk.
        let cut = &body[..body.len() - 90];
        let mut d = ChunkedDecoder::new(
            &PayloadMode::StreamingSigned,
            Some(ctx.clone()),
            None,
            66560,
        )
        .unwrap();
        assert_eq!(run(&mut d, cut, 1000).unwrap_err().code, "IncompleteBody");
        // Wrong declared length.
        let mut d =
            ChunkedDecoder::new(&PayloadMode::StreamingSigned, Some(ctx), None, 66561).unwrap();
        assert_eq!(run(&mut d, &body, 1000).unwrap_err().code, "IncompleteBody");
    }

    fn unsigned_trailer_body(data: &[u8], chunk: usize, trailer: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for c in data.chunks(chunk) {
            b.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            b.extend_from_slice(c);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(format!("0\r\nx-amz-checksum-crc32:{trailer}\r\n\r\n").as_bytes());
        b
    }

    fn crc32(data: &[u8]) -> String {
        let mut c = Checksummer::new(ChecksumAlgorithm::Crc32);
        c.update(data);
        c.finalize_base64()
    }

    #[test]
    fn unsigned_trailer_checksum() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let body = unsigned_trailer_body(&data, 8192, &crc32(&data));
        let mut d = ChunkedDecoder::new(
            &PayloadMode::StreamingUnsignedTrailer,
            None,
            Some("x-amz-checksum-crc32"),
            data.len() as u64,
        )
        .unwrap();
        let out = run(&mut d, &body, 999).unwrap();
        assert_eq!(out, data);
        let body = unsigned_trailer_body(&data, 8192, "AAAAAA==");
        let mut d = ChunkedDecoder::new(
            &PayloadMode::StreamingUnsignedTrailer,
            None,
            Some("x-amz-checksum-crc32"),
            data.len() as u64,
        )
        .unwrap();
        assert_eq!(run(&mut d, &body, 999).unwrap_err().code, "BadDigest");
    }

    /// Signed chunks with a signed trailer, built with the same chaining rules as the
    /// AWS example above (checked by `aws_chunked_example_verifies`).
    #[test]
    fn signed_trailer() {
        let (ctx, _) = aws_example();
        let data = vec![7u8; 5000];
        let mut prev = ctx.seed_signature.clone();
        let mut body = Vec::new();
        for c in [&data[..3000], &data[3000..], &[][..]] {
            let sig = ctx.sign_string(
                "AWS4-HMAC-SHA256-PAYLOAD",
                &prev,
                &[EMPTY_SHA256, &sha256_hex(c)],
            );
            body.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", c.len()).as_bytes());
            body.extend_from_slice(c);
            if !c.is_empty() {
                body.extend_from_slice(b"\r\n");
            }
            prev = sig;
        }
        let trailer = format!("x-amz-checksum-crc32:{}\n", crc32(&data));
        let tsig = ctx.sign_string(
            "AWS4-HMAC-SHA256-TRAILER",
            &prev,
            &[&sha256_hex(trailer.as_bytes())],
        );
        body.extend_from_slice(
            format!(
                "x-amz-checksum-crc32:{}\r\nx-amz-trailer-signature:{tsig}\r\n\r\n",
                crc32(&data)
            )
            .as_bytes(),
        );
        let mut d = ChunkedDecoder::new(
            &PayloadMode::StreamingSignedTrailer,
            Some(ctx.clone()),
            Some("x-amz-checksum-crc32"),
            5000,
        )
        .unwrap();
        assert_eq!(run(&mut d, &body, 100).unwrap(), data);
        let bad = String::from_utf8(body.clone())
            .unwrap()
            .replace(&tsig, &"0".repeat(64));
        let mut d = ChunkedDecoder::new(
            &PayloadMode::StreamingSignedTrailer,
            Some(ctx),
            Some("x-amz-checksum-crc32"),
            5000,
        )
        .unwrap();
        assert_eq!(
            run(&mut d, bad.as_bytes(), 100).unwrap_err().code,
            "SignatureDoesNotMatch"
        );
    }

    /// The encoder reproduces the AWS example byte for byte (seed, chunk signatures,
    /// framing), however the payload is cut.
    #[test]
    fn encoder_reproduces_aws_example() {
        let (ctx, body) = aws_example();
        assert_eq!(
            ChunkedEncoder::framed_len(66560, 65536, None),
            Some(body.len() as u64)
        );
        let data = vec![b'a'; 66560];
        for step in [1, 1000, 65536, 66560] {
            let mut e = ChunkedEncoder::new(ctx.clone(), 65536, None, 66560);
            let mut out = Vec::new();
            let mut parts = data.chunks(step).peekable();
            while let Some(p) = parts.next() {
                e.push(p, parts.peek().is_none(), &mut out).unwrap();
            }
            assert_eq!(out, body, "step {step}");
        }
    }

    /// The AWS example with a trailer ("Signature calculation: transferring payload in
    /// multiple chunks with a trailer", `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`):
    /// seed 106e2a8a…, chunk signatures b474d886…, 1c1344b1…, 2ca2aba2…, trailer
    /// `x-amz-checksum-crc32c:sOO8/Q==` signed d81f82fc…: the encoder gives exactly these,
    /// and the decoder accepts what it encoded.
    #[test]
    fn encoder_reproduces_aws_trailer_example() {
        let h = Headers::from_pairs(
            [
                ("host", "s3.amazonaws.com"),
                ("x-amz-date", "20130524T000000Z"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer,Signature=106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"),
                ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
                ("content-encoding", "aws-chunked"),
                ("x-amz-decoded-content-length", "66560"),
                ("x-amz-trailer", "x-amz-checksum-crc32c"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let secret = |ak: &str| (ak == AK).then(|| SK.to_string());
        let v = verify(
            "PUT",
            "/examplebucket/chunkObject.txt",
            &h,
            &secret,
            parse_amz_date("20130524T000000Z").unwrap(),
        )
        .unwrap();
        let ctx = v.chunk_ctx.unwrap();
        let mut e = ChunkedEncoder::new(ctx.clone(), 65536, Some(ChecksumAlgorithm::Crc32c), 66560);
        let mut out = Vec::new();
        e.push(&[b'a'; 66560], true, &mut out).unwrap();
        let text = String::from_utf8_lossy(&out);
        for sig in [
            "10000;chunk-signature=b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2\r\n",
            "\r\n400;chunk-signature=1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7\r\n",
        ] {
            assert!(text.contains(sig), "{sig}");
        }
        assert!(text.ends_with(
            "\r\n0;chunk-signature=2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992\r\n\
             x-amz-checksum-crc32c:sOO8/Q==\r\n\
             x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n\r\n"
        ));
        assert_eq!(
            ChunkedEncoder::framed_len(66560, 65536, Some(ChecksumAlgorithm::Crc32c)),
            Some(out.len() as u64)
        );
        let mut d = ChunkedDecoder::new(
            &PayloadMode::StreamingSignedTrailer,
            Some(ctx),
            Some("x-amz-checksum-crc32c"),
            66560,
        )
        .unwrap();
        assert_eq!(run(&mut d, &out, 999).unwrap(), vec![b'a'; 66560]);
    }

    #[test]
    fn encoder_refuses_wrong_lengths() {
        let (ctx, _) = aws_example();
        let mut e = ChunkedEncoder::new(ctx.clone(), 1024, None, 10);
        let mut out = Vec::new();
        assert!(e.push(&[0; 11], false, &mut out).is_err());
        let mut e = ChunkedEncoder::new(ctx.clone(), 1024, None, 10);
        assert!(e.push(&[0; 9], true, &mut out).is_err());
        let mut e = ChunkedEncoder::new(ctx, 1024, None, 10);
        e.push(&[0; 10], true, &mut Vec::new()).unwrap();
        assert!(e.push(&[], true, &mut out).is_err());
    }

    proptest! {
        /// Differential: what the encoder frames, the decoder (the verifier of client
        /// bodies) accepts with the same payload and trailer, at the announced length;
        /// any one byte changed is refused.
        #[test]
        fn encoder_decoder_agree(
            len in 0usize..12_000,
            chunk in 1usize..5000,
            step in 1usize..4000,
            trailer in proptest::option::of(prop_oneof![
                Just(ChecksumAlgorithm::Crc32c),
                Just(ChecksumAlgorithm::Crc32),
                Just(ChecksumAlgorithm::Sha256),
                Just(ChecksumAlgorithm::Crc64Nvme),
            ]),
            flip in any::<prop::sample::Index>(),
        ) {
            let (ctx, _) = aws_example();
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut e = ChunkedEncoder::new(ctx.clone(), chunk, trailer, len as u64);
            let mut body = Vec::new();
            let mut parts = data.chunks(step).peekable();
            if data.is_empty() {
                e.push(&[], true, &mut body).unwrap();
            }
            while let Some(p) = parts.next() {
                e.push(p, parts.peek().is_none(), &mut body).unwrap();
            }
            prop_assert_eq!(Some(body.len() as u64), ChunkedEncoder::framed_len(len as u64, chunk, trailer));
            let (mode, name) = match trailer {
                Some(a) => (PayloadMode::StreamingSignedTrailer, Some(a.header_name())),
                None => (PayloadMode::StreamingSigned, None),
            };
            let mut d = ChunkedDecoder::new(&mode, Some(ctx.clone()), name, len as u64).unwrap();
            let mut out = Vec::new();
            d.push(&body, &mut out).unwrap();
            let trailers = d.finish().unwrap();
            prop_assert_eq!(&out, &data);
            if let Some(a) = trailer {
                let mut c = Checksummer::new(a);
                c.update(&data);
                prop_assert_eq!(trailers.clone(), vec![(a.header_name().to_string(), c.finalize_base64())]);
            }
            let mut bad = body.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 0x20;
            let mut d = ChunkedDecoder::new(&mode, Some(ctx), name, len as u64).unwrap();
            let mut got = Vec::new();
            let r = d.push(&bad, &mut got).and_then(|()| d.finish());
            // Refused, or (a change of case or white space in the framing, which the
            // decoder reads the same) accepted with exactly the same payload and trailers.
            if let Ok(t) = r {
                prop_assert_eq!(&got, &data, "flipped byte {} of {} changed the payload", i, bad.len());
                prop_assert_eq!(Some(t), trailer.map(|a| {
                    let mut c = Checksummer::new(a);
                    c.update(&data);
                    vec![(a.header_name().to_string(), c.finalize_base64())]
                }).or(Some(vec![])));
            }
        }
    }

    proptest! {
        #[test]
        fn any_split_points(len in 0usize..20_000, chunk in 1usize..5000, step in 1usize..3000) {
            let data: Vec<u8> = (0..len).map(|i| (i % 256) as u8).collect();
            let body = unsigned_trailer_body(&data, chunk, &crc32(&data));
            let mut d = ChunkedDecoder::new(&PayloadMode::StreamingUnsignedTrailer, None, Some("x-amz-checksum-crc32"), len as u64).unwrap();
            prop_assert_eq!(run(&mut d, &body, step).unwrap(), data);
        }
    }
}
