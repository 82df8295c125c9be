//! Constant-time AES-256-GCM for WebAssembly SIMD128 (wasm has no AES or carry-less
//! multiply instructions, and RustCrypto's portable AES reaches only ~25 MB/s in V8).
//!
//! * [`aes`]: bitsliced AES-256 on eight `v128` bit planes, 8 blocks per pass; CTR mode
//!   builds the 8 counter blocks directly in registers.
//! * [`ghash`]: GHASH with 64-bit integer multiplies ("holes"), Karatsuba and 8-block
//!   aggregation over precomputed `H^1..H^8`. It runs on the scalar integer units, the
//!   AES on the vector units, and the two are interleaved per 128-byte chunk.
//! * [`simd`]: the vector type: real `v128` on `wasm32` + `simd128`, a `u128` emulation
//!   elsewhere, so the same code is tested natively and in wasm (`bench/crypto_test_wasm.sh`).
//!
//! No secret-dependent branches or memory indices anywhere. The file is self-contained
//! (no `crate::` paths) so `cryptobench` can include it for benchmarks and wasm tests.

pub mod aes;
pub mod ghash;
pub mod simd;
#[cfg(test)]
pub(crate) mod tests;

use aes::Aes256;
use ghash::{Acc, Block, Ghash, GhashKey, AGG};
use simd::V;

/// Bytes per AES pass and per aggregated GHASH step.
const CHUNK: usize = 16 * AGG;

/// Longest plaintext GCM allows with a 32-bit block counter: `2^36 - 32` bytes.
const MAX_LEN: u64 = (1 << 36) - 32;
// The last data block uses counter `blocks + 1`: it must not wrap.
const _: () = assert!(MAX_LEN.div_ceil(16) < u32::MAX as u64);

/// Failure of [`Aes256Gcm::open`] (or a message longer than GCM allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error;

/// AES-256-GCM with 96-bit nonces and 128-bit tags.
pub struct Aes256Gcm {
    aes: Aes256,
    ghash: GhashKey,
}

impl Aes256Gcm {
    pub fn new(key: &[u8; 32]) -> Self {
        let aes = Aes256::new(key);
        let mut h = [[0u8; 16]; 8];
        aes.encrypt8(&mut h);
        let ghash = GhashKey::new(&h[0]);
        h[0] = [0; 16];
        core::hint::black_box(&h);
        Aes256Gcm { aes, ghash }
    }

    /// Encrypts `buf` in place; returns the tag.
    pub fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16], Error> {
        self.crypt(nonce, aad, buf, true)
    }

    /// Checks the tag and decrypts `buf` in place. On failure `buf` is zeroed.
    pub fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), Error> {
        let t = self.crypt(nonce, aad, buf, false)?;
        let diff = t.iter().zip(tag.iter()).fold(0u8, |d, (a, b)| d | (a ^ b));
        // Constant-time: one data-independent comparison of the OR of all differences.
        if core::hint::black_box(diff) == 0 {
            Ok(())
        } else {
            buf.iter_mut().for_each(|b| *b = 0);
            Err(Error)
        }
    }

    /// CTR over `buf` and GHASH over the ciphertext (after encrypting, before decrypting);
    /// returns the expected tag.
    fn crypt(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        encrypt: bool,
    ) -> Result<[u8; 16], Error> {
        if buf.len() as u64 > MAX_LEN || aad.len() as u64 > u64::MAX / 8 {
            return Err(Error);
        }
        let mut nb = [0u8; 16];
        nb[..12].copy_from_slice(nonce);
        let nonce_block = V::load(&nb);

        let mut gh = Ghash::new(&self.ghash);
        gh.update_padded(aad);

        // Full 128-byte chunks: one AES pass each, with the GHASH of 8 ciphertext blocks
        // interleaved into its rounds: the previous chunk's when encrypting (this one's
        // ciphertext does not exist yet), this chunk's when decrypting.
        let mut ctr = 2u32;
        let len = buf.len();
        let (chunks, tail) = buf.as_chunks_mut::<CHUNK>();
        let mut pending: Option<[Block; AGG]> = None;
        for chunk in chunks.iter_mut() {
            let (blocks, _) = chunk.as_chunks_mut::<16>();
            let g = if encrypt {
                pending.take()
            } else {
                Some(core::array::from_fn(|i| Block::from_bytes(&blocks[i])))
            };
            let mut acc = Acc::default();
            let ks = self.aes.ctr8_with(nonce_block, counters(ctr), |r| {
                if let Some(g) = &g {
                    if let Some(b) = g.get(r) {
                        gh.group_step(&mut acc, r, b);
                    }
                }
            });
            if g.is_some() {
                gh.end_group(&acc);
            }
            ctr = ctr.wrapping_add(AGG as u32);
            let mut out = [V::zero(); AGG];
            for ((b, k), o) in blocks.iter_mut().zip(ks.iter()).zip(out.iter_mut()) {
                *o = V::load(b).xor(*k);
                o.store(b);
            }
            if encrypt {
                pending = Some(out.map(Block::from_v));
            }
        }
        if let Some(g) = pending {
            gh.absorb(&g);
        }

        // Last partial chunk, with the tag mask E(J0) in a free slot of the same AES pass.
        let nblocks = tail.len().div_ceil(16);
        let mut cs = counters(ctr);
        let (ks, mask) = if let Some(slot) = cs.get_mut(nblocks) {
            *slot = 1;
            let ks = self.aes.ctr8(nonce_block, cs);
            (ks, ks.get(nblocks).copied().unwrap_or(V::zero()))
        } else {
            let ks = self.aes.ctr8(nonce_block, cs);
            (ks, self.aes.ctr8(nonce_block, counters(1))[0])
        };
        let mut ksb = [0u8; CHUNK];
        for (d, k) in ksb.as_chunks_mut::<16>().0.iter_mut().zip(ks.iter()) {
            k.store(d);
        }
        if !encrypt {
            gh.update_padded(tail);
        }
        for (b, k) in tail.iter_mut().zip(ksb.iter()) {
            *b ^= k;
        }
        if encrypt {
            gh.update_padded(tail);
        }

        let lens = ((aad.len() as u128 * 8) << 64) | (len as u128 * 8);
        gh.absorb(&[Block::from_u128(lens)]);
        let mut tag = gh.state().to_be_bytes();
        for (t, m) in tag.iter_mut().zip(mask.to_bytes().iter()) {
            *t ^= m;
        }
        Ok(tag)
    }
}

impl Drop for Aes256Gcm {
    fn drop(&mut self) {
        self.aes.wipe();
        self.ghash.wipe();
    }
}

#[inline(always)]
fn counters(first: u32) -> [u32; 8] {
    core::array::from_fn(|k| first.wrapping_add(k as u32))
}
