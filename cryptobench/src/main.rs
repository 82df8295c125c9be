//! Throughput of the frame AEADs s3crypt can use, in MB/s (10^6 bytes per second):
//! RustCrypto `aes-gcm` (the portable fixsliced AES on wasm32), the fast bitsliced
//! AES-256-GCM of `core/src/crypto/fastgcm` (compiled from the same source file), and
//! RustCrypto `chacha20poly1305`. Each measurement seals (or opens) frames in place with a
//! 31-byte AAD like the filter does; the median of `--runs` runs is reported.
//!
//! Build and run natively: `cargo run --release -p cryptobench -- [--runs 7] [--mb 64]`;
//! in V8: `cargo build --release -p cryptobench --target wasm32-wasip1` then
//! `node bench/wasi_run.mjs target/wasm32-wasip1/release/cryptobench.wasm -- ...`
//! (or `bench/crypto_bench.py`, which does both and prints a table).
//!
//! Output: one JSON object per line: `{"impl", "op", "frame", "runs", "median", "min", "max",
//! "cpu_median", "cpu_min", "cpu_max"}` — MB/s by wall-clock time and by process CPU time
//! (the latter is stable on a shared machine), and `best_frame`: the median over runs of the
//! fastest single frame of a run (the code's speed when nothing else disturbs it).

// The same file the filter uses; `cargo test -p cryptobench` also runs its tests (this is
// how they run inside wasm, without the proxy-wasm glue of the filter crate).
#[allow(dead_code)]
#[path = "../../core/src/crypto/fastgcm/mod.rs"]
mod fastgcm;

// The 4-lane SHA-256 of upstream chunk signatures: its tests run in V8 this way too.
#[allow(dead_code)]
#[path = "../../core/src/crypto/sha256x4.rs"]
mod sha256x4;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use s3crypt_core::auth::checksum::ChecksumAlgorithm;
use std::time::Instant;

const AAD: [u8; 31] = [7u8; 31];

trait Frame {
    fn seal(&self, nonce: &[u8; 12], buf: &mut [u8]) -> [u8; 16];
    /// Diagnostics and digests have no open: it does what seal does.
    fn open(&self, nonce: &[u8; 12], buf: &mut [u8], _tag: &[u8; 16]) -> bool {
        self.seal(nonce, buf);
        true
    }
}

/// A RustCrypto AEAD (AES-256-GCM or ChaCha20-Poly1305: 96-bit nonce, 128-bit tag).
struct Rust<A>(A);
impl<A> Frame for Rust<A>
where
    A: AeadInPlace<NonceSize = aes_gcm::aead::consts::U12, TagSize = aes_gcm::aead::consts::U16>,
{
    fn seal(&self, nonce: &[u8; 12], buf: &mut [u8]) -> [u8; 16] {
        self.0
            .encrypt_in_place_detached(nonce.into(), &AAD, buf)
            .map(Into::into)
            .unwrap_or_default()
    }
    fn open(&self, nonce: &[u8; 12], buf: &mut [u8], tag: &[u8; 16]) -> bool {
        self.0
            .decrypt_in_place_detached(nonce.into(), &AAD, buf, tag.into())
            .is_ok()
    }
}

/// The filter's own frame AEAD (`s3crypt_core::crypto::FrameAead`, AES-256-GCM): fastgcm
/// in wasm, ring natively (as the native module builds the core).
struct Filter(s3crypt_core::crypto::FrameAead);
impl Frame for Filter {
    fn seal(&self, nonce: &[u8; 12], buf: &mut [u8]) -> [u8; 16] {
        self.0.seal(nonce, &AAD, buf).unwrap_or_default()
    }
    fn open(&self, nonce: &[u8; 12], buf: &mut [u8], tag: &[u8; 16]) -> bool {
        self.0.open(nonce, &AAD, buf, tag).is_ok()
    }
}

struct Fast(fastgcm::Aes256Gcm);
impl Frame for Fast {
    fn seal(&self, nonce: &[u8; 12], buf: &mut [u8]) -> [u8; 16] {
        self.0.seal(nonce, &AAD, buf).unwrap_or_default()
    }
    fn open(&self, nonce: &[u8; 12], buf: &mut [u8], tag: &[u8; 16]) -> bool {
        self.0.open(nonce, &AAD, buf, tag).is_ok()
    }
}

/// Components of the fast one alone: CTR keystream only / GHASH only (diagnostics).
struct FastCtr(fastgcm::aes::Aes256);
impl Frame for FastCtr {
    fn seal(&self, nonce: &[u8; 12], buf: &mut [u8]) -> [u8; 16] {
        let mut nb = [0u8; 16];
        nb[..12].copy_from_slice(nonce);
        let nb = fastgcm::simd::V::load(&nb);
        let mut acc = fastgcm::simd::V::zero();
        for i in 0..buf.len() / 128 {
            let ks = self
                .0
                .ctr8(nb, core::array::from_fn(|k| (8 * i + k) as u32));
            acc = acc.xor(ks[0]).xor(ks[7]);
        }
        acc.to_bytes()
    }
}
struct FastGhash(fastgcm::ghash::GhashKey);
impl Frame for FastGhash {
    fn seal(&self, _: &[u8; 12], buf: &mut [u8]) -> [u8; 16] {
        let mut g = fastgcm::ghash::Ghash::new(&self.0);
        g.update_padded(buf);
        g.state().to_be_bytes()
    }
}

/// A digest the filter computes over object data, timed like a seal (`--digests`).
struct Digest(s3crypt_core::auth::checksum::ChecksumAlgorithm);
impl Frame for Digest {
    fn seal(&self, _: &[u8; 12], buf: &mut [u8]) -> [u8; 16] {
        let mut c = s3crypt_core::auth::checksum::Checksummer::new(self.0);
        c.update(buf);
        let mut out = [0u8; 16];
        let v = c.finalize_base64();
        let n = v.len().min(16);
        out[..n].copy_from_slice(&v.as_bytes()[..n]);
        out
    }
}
/// Four 16 KiB chunks hashed together (per `frame` bytes: four quarter-frames).
struct Sha256x4;
impl Frame for Sha256x4 {
    fn seal(&self, _: &[u8; 12], buf: &mut [u8]) -> [u8; 16] {
        let q = buf.len() / 4;
        let h = sha256x4::sha256x4([
            &buf[..q],
            &buf[q..2 * q],
            &buf[2 * q..3 * q],
            &buf[3 * q..4 * q],
        ])
        .unwrap_or_default();
        let mut out = [0u8; 16];
        out.copy_from_slice(&h[3][..16]);
        out
    }
}
struct Md5Digest;
impl Frame for Md5Digest {
    fn seal(&self, _: &[u8; 12], buf: &mut [u8]) -> [u8; 16] {
        use md5::Digest as _;
        md5::Md5::digest(buf).into()
    }
}

/// Process CPU time in seconds (immune to the time slices other processes take on a
/// shared machine; V8's compiler threads are idle once the code has tiered up).
#[cfg(target_arch = "wasm32")]
fn cpu_time() -> f64 {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    extern "C" {
        fn clock_time_get(id: u32, precision: u64, out: *mut u64) -> u16;
    }
    let mut t = 0u64;
    // SAFETY: WASI call writing one u64 to a valid pointer; 2 = CLOCK_PROCESS_CPUTIME_ID.
    unsafe { clock_time_get(2, 1, &mut t) };
    t as f64 * 1e-9
}

#[cfg(not(target_arch = "wasm32"))]
fn cpu_time() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// MB/s of one run: seal (or seal then timed open) `total` bytes in frames of `frame` bytes.
fn run(f: &dyn Frame, frame: usize, total: usize, open: bool) -> (f64, f64, f64) {
    let mut buf = vec![0x42u8; frame];
    let frames = total.div_ceil(frame).max(1);
    let mut nonce = [0u8; 12];
    let mut tags = Vec::with_capacity(frames);
    let mut cts = Vec::new();
    if open {
        for i in 0..frames {
            nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let mut b = buf.clone();
            tags.push(f.seal(&nonce, &mut b));
            cts.push(b);
        }
    }
    let t = Instant::now();
    let c = cpu_time();
    let mut ok = true;
    let mut best = f64::MAX;
    for i in 0..frames {
        let t0 = Instant::now();
        nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
        if open {
            let b = &mut cts[i];
            ok &= f.open(&nonce, b, &tags[i]);
        } else {
            let tag = f.seal(&nonce, &mut buf);
            buf[0] ^= tag[0];
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_time() - c;
    assert!(ok, "open failed");
    std::hint::black_box(&buf);
    let mb = (frames * frame) as f64 / 1e6;
    (mb / secs, mb / cpu, frame as f64 / 1e6 / best)
}

/// (median, min, max)
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    let min = v.iter().cloned().fold(f64::MAX, f64::min);
    let max = v.iter().cloned().fold(0.0, f64::max);
    (median(&mut v), min, max)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str, def: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(def)
    };
    let runs = get("--runs", 7);
    let mb = get("--mb", 32);
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let key = [0x11u8; 32];
    let impls: Vec<(&str, Box<dyn Frame>)> = vec![
        (
            "rustcrypto-aes256gcm",
            Box::new(Rust(aes_gcm::Aes256Gcm::new((&key).into()))),
        ),
        (
            "fast-aes256gcm",
            Box::new(Fast(fastgcm::Aes256Gcm::new(&key))),
        ),
        (
            "rustcrypto-chacha20poly1305",
            Box::new(Rust(chacha20poly1305::ChaCha20Poly1305::new((&key).into()))),
        ),
        (
            "fast-ctr-only",
            Box::new(FastCtr(fastgcm::aes::Aes256::new(&key))),
        ),
        (
            "fast-ghash-only",
            Box::new(FastGhash(fastgcm::ghash::GhashKey::new(&[0x33; 16]))),
        ),
        ("md5", Box::new(Md5Digest)),
        ("sha256", Box::new(Digest(ChecksumAlgorithm::Sha256))),
        ("crc32", Box::new(Digest(ChecksumAlgorithm::Crc32))),
        ("crc32c", Box::new(Digest(ChecksumAlgorithm::Crc32c))),
        ("crc64nvme", Box::new(Digest(ChecksumAlgorithm::Crc64Nvme))),
        ("sha1", Box::new(Digest(ChecksumAlgorithm::Sha1))),
        ("sha256x4", Box::new(Sha256x4)),
        (
            "filter-frame-aes256gcm",
            Box::new(Filter(s3crypt_core::crypto::FrameAead::new(
                s3crypt_core::crypto::Suite::Aes256Gcm,
                &s3crypt_core::crypto::DataKey::from_bytes(key),
            ))),
        ),
    ];
    let arch = if cfg!(target_arch = "wasm32") {
        "wasm32"
    } else {
        std::env::consts::ARCH
    };
    let simd = cfg!(target_feature = "simd128");
    let mut cases: Vec<(usize, &str, usize, bool)> = Vec::new();
    for i in 0..3 {
        cases.push((i, "seal", 65536, false));
        cases.push((i, "open", 65536, true));
    }
    for frame in [16384, 262144] {
        cases.push((1, "seal", frame, false));
    }
    // Natively: the frame AEAD the native module runs (ring); in wasm it is fast-aes256gcm.
    if !cfg!(target_arch = "wasm32") {
        cases.push((12, "seal", 65536, false));
        cases.push((12, "open", 65536, true));
    }
    if args.iter().any(|a| a == "--digests") {
        for i in 5..12 {
            cases.push((i, "digest", 65536, false));
        }
    }
    if args.iter().any(|a| a == "--parts") {
        cases.push((3, "seal", 65536, false));
        cases.push((4, "seal", 65536, false));
    }
    for (i, op, frame, open) in cases {
        let (name, f) = &impls[i];
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        // Slow implementations get less data per run so a run stays around a second.
        let total = if name.starts_with("rustcrypto-aes") {
            mb.div_ceil(4)
        } else {
            mb
        } << 20;
        run(f.as_ref(), frame, total / 2, open); // warm-up (V8 tiers up from Liftoff to TurboFan)
        let v: Vec<(f64, f64, f64)> = (0..runs)
            .map(|_| run(f.as_ref(), frame, total, open))
            .collect();
        let (med, min, max) = stats(v.iter().map(|x| x.0).collect());
        let (cmed, cmin, cmax) = stats(v.iter().map(|x| x.1).collect());
        let (bmed, _, _) = stats(v.iter().map(|x| x.2).collect());
        println!(
            "{{\"impl\":\"{name}\",\"op\":\"{op}\",\"frame\":{frame},\"arch\":\"{arch}\",\"simd128\":{simd},\"runs\":{runs},\"median\":{med:.1},\"min\":{min:.1},\"max\":{max:.1},\"cpu_median\":{cmed:.1},\"cpu_min\":{cmin:.1},\"cpu_max\":{cmax:.1},\"best_frame\":{bmed:.1}}}"
        );
    }
}
