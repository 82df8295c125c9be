//! Constant-time GHASH with 64-bit integer multiplications (the "multiplication with
//! holes" technique known from BearSSL's `ctmul64`, written from its description).
//!
//! Field elements are kept as the block read as a big-endian `u128` ("reflected" order:
//! the coefficient of `x^i` is bit `127 - i`). A 64x64 carry-less product is computed
//! with integer multiplications of operands whose set bits are 4 apart, so carries land
//! in the holes and are masked away; the low 64 bits come directly, the high 64 bits
//! from the bit-reversed operands. 128x128 uses Karatsuba (3 such products), and up to
//! 8 blocks share one reduction (aggregation with precomputed `H^1..H^8`). All pieces of
//! the powers of `H` are precomputed. Integer multiplication is constant-time on the
//! targets we care about (x86-64 and AArch64 `mul`, which V8 uses for `i64.mul`).

use super::simd::V;

/// Blocks per aggregated GHASH step.
pub const AGG: usize = 8;

const M0: u64 = 0x1111_1111_1111_1111;
const M1: u64 = 0x2222_2222_2222_2222;
const M2: u64 = 0x4444_4444_4444_4444;
const M3: u64 = 0x8888_8888_8888_8888;

/// One 64-bit operand split into its four interleaved bit classes.
type Pieces = [u64; 4];

#[inline(always)]
fn pieces(y: u64) -> Pieces {
    [y & M0, y & M1, y & M2, y & M3]
}

/// Accumulates, unmasked, the partial sums of the low 64 bits of the carry-less product
/// `x * y`: after masking (see [`fold`]) class `k` holds the bits `i + j ≡ k (mod 4)`.
/// Each integer product has at most 16 terms per bit position, and 16 only at positions
/// 60..63 whose carry leaves the 64-bit word, so no carry reaches the next kept bit.
#[inline(always)]
fn bmul_acc(acc: &mut [u64; 4], x: u64, y: &Pieces) {
    let x0 = x & M0;
    let x1 = x & M1;
    let x2 = x & M2;
    let x3 = x & M3;
    // Volatile loads of the precomputed pieces: LLVM's SLP vectorizer would otherwise pair
    // these multiplies into `i64x2.mul`, which V8 emulates with ~8 SSE instructions and
    // which would also take the vector units away from the interleaved AES.
    // SAFETY: reads of valid, aligned `u64`s.
    let y: [u64; 4] = core::array::from_fn(|i| unsafe { core::ptr::read_volatile(&y[i]) });
    let m = u64::wrapping_mul;
    acc[0] ^= m(x0, y[0]) ^ m(x1, y[3]) ^ m(x2, y[2]) ^ m(x3, y[1]);
    acc[1] ^= m(x0, y[1]) ^ m(x1, y[0]) ^ m(x2, y[3]) ^ m(x3, y[2]);
    acc[2] ^= m(x0, y[2]) ^ m(x1, y[1]) ^ m(x2, y[0]) ^ m(x3, y[3]);
    acc[3] ^= m(x0, y[3]) ^ m(x1, y[2]) ^ m(x2, y[1]) ^ m(x3, y[0]);
}

#[inline(always)]
fn fold(acc: &[u64; 4]) -> u64 {
    (acc[0] & M0) | (acc[1] & M1) | (acc[2] & M2) | (acc[3] & M3)
}

/// Precomputed pieces of one power of H = (h1 ‖ h0):
/// `h0, h1, h0^h1` and their bit reversals.
#[derive(Clone, Copy, Default)]
pub struct HPow {
    p: [Pieces; 6],
}

impl HPow {
    fn new(h: u128) -> HPow {
        let h0 = h as u64;
        let h1 = (h >> 64) as u64;
        let (r0, r1) = (h0.reverse_bits(), h1.reverse_bits());
        HPow {
            p: [
                pieces(h0),
                pieces(h1),
                pieces(h0 ^ h1),
                pieces(r0),
                pieces(r1),
                pieces(r0 ^ r1),
            ],
        }
    }
}

/// One operand block prepared for multiplication: its two 64-bit halves and their bit
/// reversals (`hi`, `lo` of the big-endian reading; `rhi`, `rlo` = reversed).
#[derive(Clone, Copy)]
pub struct Block {
    pub hi: u64,
    pub lo: u64,
    pub rhi: u64,
    pub rlo: u64,
}

impl Block {
    #[inline(always)]
    pub fn from_bytes(b: &[u8; 16]) -> Block {
        Block::from_v(V::load(b))
    }
    /// From a block in a vector (memory byte order), with the byte and bit reversals done
    /// by vector shuffles rather than scalar shift sequences (wasm has no `bswap`).
    #[inline(always)]
    pub fn from_v(v: V) -> Block {
        let be = v.reverse();
        let r = v.brev8();
        Block {
            hi: be.lane1(),
            lo: be.lane0(),
            rhi: r.lane0(),
            rlo: r.lane1(),
        }
    }
    /// `self ^ y`, `y` a big-endian-read block value.
    #[inline(always)]
    pub fn xor_u128(&self, y: u128) -> Block {
        let (hi, lo) = ((y >> 64) as u64, y as u64);
        let r = V::from_lanes(lo, hi).reverse().brev8();
        Block {
            hi: self.hi ^ hi,
            lo: self.lo ^ lo,
            rhi: self.rhi ^ r.lane0(),
            rlo: self.rlo ^ r.lane1(),
        }
    }
    #[inline(always)]
    pub fn from_u128(x: u128) -> Block {
        let hi = (x >> 64) as u64;
        let lo = x as u64;
        Block {
            hi,
            lo,
            rhi: hi.reverse_bits(),
            rlo: lo.reverse_bits(),
        }
    }
}

/// Accumulator of a sum of products `Σ X_i · H^{e_i}` before reduction.
#[derive(Default)]
pub struct Acc {
    z: [[u64; 4]; 6],
}

impl Acc {
    /// `self += x * h` (unreduced).
    #[inline(always)]
    pub fn mul_add(&mut self, x: &Block, h: &HPow) {
        bmul_acc(&mut self.z[0], x.lo, &h.p[0]);
        bmul_acc(&mut self.z[1], x.hi, &h.p[1]);
        bmul_acc(&mut self.z[2], x.lo ^ x.hi, &h.p[2]);
        bmul_acc(&mut self.z[3], x.rlo, &h.p[3]);
        bmul_acc(&mut self.z[4], x.rhi, &h.p[4]);
        bmul_acc(&mut self.z[5], x.rlo ^ x.rhi, &h.p[5]);
    }

    /// The reduced sum, as a big-endian-read block value.
    #[inline(always)]
    pub fn reduce(&self) -> u128 {
        // 128-bit products of the three Karatsuba terms: low halves direct, high halves
        // from the reversed operands (rev(rev(x)·rev(y) mod 2^64) >> 1 = (x·y) >> 64).
        let p0 = (fold(&self.z[3]).reverse_bits() >> 1) as u128;
        let p1 = (fold(&self.z[4]).reverse_bits() >> 1) as u128;
        let p2 = (fold(&self.z[5]).reverse_bits() >> 1) as u128;
        let p0 = p0 << 64 | fold(&self.z[0]) as u128;
        let p1 = p1 << 64 | fold(&self.z[1]) as u128;
        let p2 = p2 << 64 | fold(&self.z[2]) as u128;
        let mid = p2 ^ p0 ^ p1;
        // 255-bit product (hi ‖ lo), shifted left by one to align the reflected order:
        // bit 255 - i of (hi ‖ lo) is the coefficient of x^i.
        let lo = p0 ^ (mid << 64);
        let hi = p1 ^ (mid >> 64);
        let hi = hi << 1 | lo >> 127;
        let lo = lo << 1;
        // Reduce modulo x^128 + x^7 + x^2 + x + 1: x^(128+j) = x^j + x^(j+1) + x^(j+2) + x^(j+7);
        // the terms pushed past x^127 by the shifts are folded back first.
        let l = lo ^ (lo << 127) ^ (lo << 126) ^ (lo << 121);
        hi ^ l ^ (l >> 1) ^ (l >> 2) ^ (l >> 7)
    }
}

/// GHASH key: powers `H^1..H^AGG` (index `i` holds `H^(i+1)`).
pub struct GhashKey {
    pow: [HPow; AGG],
}

/// `a · b` in GF(2^128) (both big-endian-read blocks).
pub fn gf_mul(a: u128, b: u128) -> u128 {
    let mut acc = Acc::default();
    acc.mul_add(&Block::from_u128(a), &HPow::new(b));
    acc.reduce()
}

impl GhashKey {
    pub fn new(h: &[u8; 16]) -> GhashKey {
        let h = u128::from_be_bytes(*h);
        let mut pow = [HPow::default(); AGG];
        let mut x = h;
        for p in pow.iter_mut() {
            *p = HPow::new(x);
            x = gf_mul(x, h);
        }
        GhashKey { pow }
    }

    /// `H^n` for `1 <= n <= AGG`.
    #[inline(always)]
    pub fn pow(&self, n: usize) -> &HPow {
        &self.pow[n - 1]
    }

    /// Overwrites the key material.
    pub fn wipe(&mut self) {
        for p in self.pow.iter_mut() {
            // SAFETY: `p` is a valid, aligned, exclusive reference.
            unsafe { core::ptr::write_volatile(p, HPow::default()) };
        }
    }
}

/// A running GHASH.
pub struct Ghash<'a> {
    key: &'a GhashKey,
    y: u128,
}

impl<'a> Ghash<'a> {
    pub fn new(key: &'a GhashKey) -> Self {
        Ghash { key, y: 0 }
    }

    /// Absorbs up to [`AGG`] prepared blocks with one reduction:
    /// `Y = (Y ^ B_1)·H^n ^ B_2·H^(n-1) ^ ... ^ B_n·H`.
    #[inline(always)]
    pub fn absorb(&mut self, blocks: &[Block]) {
        let n = blocks.len();
        if n == 0 {
            return;
        }
        let mut acc = Acc::default();
        for (i, b) in blocks.iter().enumerate() {
            let b = if i == 0 { b.xor_u128(self.y) } else { *b };
            acc.mul_add(&b, self.key.pow(n - i));
        }
        self.y = acc.reduce();
    }

    /// Step `i` (`0..AGG`) of absorbing a full group of [`AGG`] blocks into `acc`; the group
    /// ends with [`Self::end_group`]. Same result as [`Self::absorb`], but the caller can
    /// spread the steps (e.g. into the AES rounds).
    #[inline(always)]
    pub fn group_step(&self, acc: &mut Acc, i: usize, b: &Block) {
        let b = if i == 0 { b.xor_u128(self.y) } else { *b };
        acc.mul_add(&b, &self.key.pow[AGG - 1 - i]);
    }

    #[inline(always)]
    pub fn end_group(&mut self, acc: &Acc) {
        self.y = acc.reduce();
    }

    /// Absorbs `data`, zero-padding its last partial block.
    pub fn update_padded(&mut self, data: &[u8]) {
        let (blocks, rest) = data.as_chunks::<16>();
        for group in blocks.chunks(AGG) {
            let mut b = [Block::from_u128(0); AGG];
            for (d, s) in b.iter_mut().zip(group) {
                *d = Block::from_bytes(s);
            }
            self.absorb(&b[..group.len()]);
        }
        if !rest.is_empty() {
            let mut last = [0u8; 16];
            last[..rest.len()].copy_from_slice(rest);
            self.absorb(&[Block::from_bytes(&last)]);
        }
    }

    pub fn state(&self) -> u128 {
        self.y
    }
}
