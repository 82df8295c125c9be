//! The aws-chunked decoder on arbitrary bodies in arbitrary splits.
//!
//! Input: `mode` (payload: unsigned-trailer, signed, signed-trailer), `trailer` (0: none,
//! else the declared checksum trailer), `u32le` decoded length, `u64le` split seed, body.
//!
//! - the result (payload, trailers or error) is the same whole and cut at any points;
//! - the payload of an accepted body (or, if it is refused, the body's own bytes) encoded
//!   again in other chunks, signed by `ChunkSigner` (the AWS specification), is accepted
//!   and decodes to the same payload and trailers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use s3crypt_core::auth::checksum::{ChecksumAlgorithm, Checksummer};
use s3crypt_core::auth::chunked::ChunkedDecoder;
use s3crypt_core::auth::sigv4::{ChunkSigningContext, PayloadMode, STREAMING_SIGNED_TRAILER};
use s3crypt_core::s3::error::S3Error;
use s3crypt_fuzz::*;
use std::sync::OnceLock;

type Decoded = Result<(Vec<u8>, Vec<(String, String)>), S3Error>;

struct Setup {
    mode: PayloadMode,
    hash: &'static str,
    trailer: Option<&'static str>,
}

impl Setup {
    fn decode(&self, decoded_len: u64, parts: &[&[u8]]) -> Option<Decoded> {
        let ctx = context(self.hash);
        let mut d = ChunkedDecoder::new(&self.mode, ctx, self.trailer, decoded_len).ok()?;
        let mut out = Vec::new();
        for p in parts {
            if let Err(e) = d.push(p, &mut out) {
                return Some(Err(e));
            }
        }
        Some(d.finish().map(|t| (out, t)))
    }
}

/// The signing contexts of the three payload modes, computed once.
fn context(hash: &str) -> Option<ChunkSigningContext> {
    static CTX: OnceLock<Vec<Option<ChunkSigningContext>>> = OnceLock::new();
    let all = CTX.get_or_init(|| CHUNKED_PAYLOADS.iter().map(|h| chunk_context(h)).collect());
    let i = CHUNKED_PAYLOADS.iter().position(|h| *h == hash)?;
    all[i].clone()
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let m = usize::from(inp.u8()) % CHUNKED_PAYLOADS.len();
    let t = usize::from(inp.u8()) % (TRAILERS.len() + 1);
    let decoded_len = u64::from(inp.u32());
    let seed = inp.u64();
    let body = inp.rest();
    let hash = CHUNKED_PAYLOADS[m];
    let setup = Setup {
        mode: match m {
            0 => PayloadMode::StreamingUnsignedTrailer,
            1 => PayloadMode::StreamingSigned,
            _ => PayloadMode::StreamingSignedTrailer,
        },
        hash,
        trailer: t.checked_sub(1).map(|i| TRAILERS[i]),
    };

    // One push, and the same body in pieces: the same answer.
    let Some(whole) = setup.decode(decoded_len, &[body]) else {
        return; // a trailer declared for a payload mode without trailers
    };
    let split = setup.decode(decoded_len, &pieces(body, seed)).unwrap();
    assert_eq!(whole, split, "the result depends on how the body is cut");

    // Encode again, in other chunks, and decode: the same payload and trailers.
    let (payload, trailers) = match whole {
        Ok((p, t)) => (p, t),
        Err(_) => {
            let trailers = setup.trailer.map(|name| {
                let algo = ChecksumAlgorithm::from_header_name(name).unwrap();
                let mut c = Checksummer::new(algo);
                c.update(body);
                (name.to_string(), c.finalize_base64())
            });
            (body.to_vec(), trailers.into_iter().collect())
        }
    };
    let mut signer = (m != 0).then(|| ChunkSigner::for_put(hash));
    let mut rng = Rng(seed ^ 0x5eed);
    let encoded = encode_chunked(
        &payload,
        &mut || rng.len(),
        signer.as_mut(),
        &trailers,
        hash == STREAMING_SIGNED_TRAILER,
    );
    let again = setup
        .decode(
            payload.len() as u64,
            &pieces(&encoded, seed.rotate_left(17)),
        )
        .unwrap();
    assert_eq!(
        again,
        Ok((payload, trailers)),
        "re-encoded body: {:?}",
        String::from_utf8_lossy(&encoded)
    );
});
