//! What the fuzz targets share: their input formats (so that `seeds.rs` can write inputs
//! the targets read), split points derived from the input, the fixed test credentials
//! and keys, and an aws-chunked encoder written from the AWS specification.

use hmac::{Hmac, Mac};
use s3crypt_core::auth::sigv4::{self, sha256_hex, ChunkSigningContext, EMPTY_SHA256};
use s3crypt_core::crypto::Suite;
use s3crypt_core::format::part_table::{PartTable, Walk};
use s3crypt_core::format::{Decrypt, FormatError};
use s3crypt_core::headers::Headers;
use sha2::Sha256;

#[cfg(test)]
mod seeds;

/// AWS's documentation credentials: the only access key the targets know.
pub const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub const REGION: &str = "us-east-1";
/// The targets' clock: 2013-05-24T00:00:10Z, ten seconds after the AWS examples were
/// signed (so their header and presigned examples verify).
pub const NOW: i64 = 1_369_353_610;

pub fn secret_for(ak: &str) -> Option<String> {
    (ak == ACCESS_KEY).then(|| SECRET_KEY.to_string())
}

/// The data key the committed ciphertext seeds are sealed under.
pub const SEED_KEY: [u8; 32] = [7; 32];
/// A key no seed is sealed under: under it no frame can verify.
pub const OTHER_KEY: [u8; 32] = [9; 32];
/// The key-encryption key the envelope seeds' data keys are wrapped under.
pub const KEK: [u8; 32] = [5; 32];

/// Reads fixed-size fields from the front of an input; missing bytes read as zero.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        let n = N.min(self.0.len());
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        b
    }
    pub fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// splitmix64: the source of split points, chunk sizes and byte positions, seeded from
/// the input so that every run of an input is the same.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A piece length: mostly tiny (0 included), sometimes up to a few KiB.
    pub fn len(&mut self) -> usize {
        let r = self.next();
        match r % 4 {
            0 | 1 => (r >> 8) as usize % 8,
            2 => (r >> 8) as usize % 100,
            _ => (r >> 8) as usize % 5000,
        }
    }
}

/// `data` cut into consecutive pieces (empty ones included) at points drawn from `seed`.
pub fn pieces(data: &[u8], seed: u64) -> Vec<&[u8]> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (a, b) = rest.split_at(rng.len().min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

/// A request as the `sigv4` and `classify` targets read it: text lines (invalid UTF-8
/// replaced), the method, then the raw `:path`, then `name:value` headers (the name
/// ends at the first `:` after its first character, so `:authority:h` is a header; the
/// value is kept as is, leading spaces included).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Headers,
}

impl Request {
    pub fn parse(text: &str) -> Request {
        let mut lines = text.split('\n');
        let method = lines.next().unwrap_or("").to_string();
        let path = lines.next().unwrap_or("").to_string();
        let pairs = lines
            .map(|l| {
                let at = l
                    .char_indices()
                    .skip(1)
                    .find(|&(_, c)| c == ':')
                    .map(|(i, _)| i);
                match at {
                    Some(i) => (l[..i].to_string(), l[i + 1..].to_string()),
                    None => (l.to_string(), String::new()),
                }
            })
            .collect();
        Request {
            method,
            path,
            headers: Headers::from_pairs(pairs),
        }
    }

    pub fn serialize(&self) -> String {
        let mut s = format!("{}\n{}", self.method, self.path);
        for (k, v) in self.headers.iter() {
            s.push_str(&format!("\n{k}:{v}"));
        }
        s
    }
}

/// The payload hashes `sign` is called with.
pub const PAYLOAD_HASHES: [&str; 5] = [
    sigv4::UNSIGNED_PAYLOAD,
    EMPTY_SHA256,
    sigv4::STREAMING_SIGNED,
    sigv4::STREAMING_SIGNED_TRAILER,
    sigv4::STREAMING_UNSIGNED_TRAILER,
];

/// The payload modes of an aws-chunked body.
pub const CHUNKED_PAYLOADS: [&str; 3] = [
    sigv4::STREAMING_UNSIGNED_TRAILER,
    sigv4::STREAMING_SIGNED,
    sigv4::STREAMING_SIGNED_TRAILER,
];

/// The checksum trailers a chunked body may declare (`x-amz-trailer`).
pub const TRAILERS: [&str; 5] = [
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
];

/// Signs `PUT /bucket/key` at [`NOW`] with `payload_hash` using the crate's `sign`;
/// returns the headers.
pub fn signed_put(payload_hash: &str) -> Headers {
    let mut h = Headers::from_pairs(vec![
        (":authority".into(), "bucket.s3.local".into()),
        ("x-amz-decoded-content-length".into(), "0".into()),
    ]);
    sigv4::sign(
        "PUT",
        "/key",
        &mut h,
        ACCESS_KEY,
        SECRET_KEY,
        REGION,
        NOW,
        payload_hash,
    );
    h
}

/// The chunk signing context of a signed streaming upload, from the crate's `verify`.
pub fn chunk_context(payload_hash: &str) -> Option<ChunkSigningContext> {
    let h = signed_put(payload_hash);
    sigv4::verify("PUT", "/key", &h, &secret_for, NOW)
        .ok()?
        .chunk_ctx
}

/// Chunk and trailer signatures as the AWS S3 API reference defines them ("Signature
/// Calculations for the Authorization Header: Transferring Payload in Multiple Chunks"
/// and its trailer variant), independently of the crate's decoder.
pub struct ChunkSigner {
    key: [u8; 32],
    amz_date: String,
    scope: String,
    previous: String,
}

impl ChunkSigner {
    /// The signer for the upload [`signed_put`] signs (seed: its request signature).
    pub fn for_put(payload_hash: &str) -> ChunkSigner {
        let h = signed_put(payload_hash);
        let auth = h.get("authorization").unwrap_or("");
        let seed = auth.rsplit("Signature=").next().unwrap_or("").to_string();
        let amz_date = sigv4::amz_date(NOW);
        let date = amz_date[..8].to_string();
        ChunkSigner {
            key: sigv4::signing_key(SECRET_KEY, &date, REGION),
            scope: format!("{date}/{REGION}/s3/aws4_request"),
            amz_date,
            previous: seed,
        }
    }

    fn sign(&mut self, kind: &str, last: &str, hash: &str) -> String {
        let mut sts = format!(
            "{kind}\n{}\n{}\n{}\n",
            self.amz_date, self.scope, self.previous
        );
        if !last.is_empty() {
            sts.push_str(last);
            sts.push('\n');
        }
        sts.push_str(hash);
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        m.update(sts.as_bytes());
        let sig = hex::encode(m.finalize().into_bytes());
        self.previous = sig.clone();
        sig
    }

    fn chunk(&mut self, data: &[u8]) -> String {
        self.sign("AWS4-HMAC-SHA256-PAYLOAD", EMPTY_SHA256, &sha256_hex(data))
    }

    fn trailer(&mut self, canonical: &str) -> String {
        self.sign(
            "AWS4-HMAC-SHA256-TRAILER",
            "",
            &sha256_hex(canonical.as_bytes()),
        )
    }
}

/// An aws-chunked body of `data` in chunks of the sizes `sizes` yields (at least one
/// byte each), signed if `signer` is given, with `trailers` after the final chunk (and
/// a trailer signature if `sign_trailers`).
pub fn encode_chunked(
    data: &[u8],
    sizes: &mut dyn FnMut() -> usize,
    mut signer: Option<&mut ChunkSigner>,
    trailers: &[(String, String)],
    sign_trailers: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        let n = sizes().clamp(1, rest.len().max(1)).min(rest.len());
        let (c, r) = rest.split_at(n);
        out.extend_from_slice(format!("{:x}", c.len()).as_bytes());
        if let Some(s) = signer.as_deref_mut() {
            out.extend_from_slice(format!(";chunk-signature={}", s.chunk(c)).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if c.is_empty() {
            break;
        }
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
        rest = r;
    }
    let mut canonical = String::new();
    for (k, v) in trailers {
        out.extend_from_slice(format!("{k}:{v}\r\n").as_bytes());
        canonical.push_str(&format!("{k}:{v}\n"));
    }
    if let (Some(s), true) = (signer, sign_trailers) {
        let sig = s.trailer(&canonical);
        out.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The header of a `chunked` input: payload mode, declared trailer, decoded length and
/// split seed, before the body.
pub fn chunked_input(mode: u8, trailer: u8, decoded_len: u32, seed: u64, body: &[u8]) -> Vec<u8> {
    let mut v = vec![mode, trailer];
    v.extend_from_slice(&decoded_len.to_le_bytes());
    v.extend_from_slice(&seed.to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// The suite a byte names.
pub fn suite(b: u8) -> Suite {
    if b & 1 == 0 {
        Suite::Aes256Gcm
    } else {
        Suite::ChaCha20Poly1305
    }
}

/// Output and final result of a decryptor fed `parts`.
pub fn run(d: &mut dyn Decrypt, parts: &[&[u8]]) -> (Vec<u8>, Result<(), FormatError>) {
    let mut out = Vec::new();
    for p in parts {
        if let Err(e) = d.push(p, &mut out) {
            return (out, Err(e));
        }
    }
    let r = d.finish();
    (out, r)
}

/// Drives a walk over the stored object `obj`; `None` if it asks for bytes past its end.
pub fn walk(w: &mut Walk, obj: &[u8]) -> Option<Result<PartTable, FormatError>> {
    loop {
        let (a, b) = w.next_read();
        let bytes = obj.get(usize::try_from(a).ok()?..=usize::try_from(b).ok()?)?;
        match w.push(bytes) {
            Ok(None) => {}
            Ok(Some(t)) => return Some(Ok(t)),
            Err(e) => return Some(Err(e)),
        }
    }
}
