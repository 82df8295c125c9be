//! SHA-256 of four messages of equal length at once, one message per 32-bit lane of a
//! 128-bit vector (FIPS 180-4, computed four times in parallel).
//!
//! The filter signs the data it sends upstream in aws-chunked framing, one SHA-256 per
//! chunk, and the chunks of a body are independent messages: hashing four at a time uses
//! the four lanes of wasm SIMD128 where a scalar SHA-256 uses one 32-bit register per
//! word. On `wasm32` with `+simd128` each lane operation is one SIMD128 instruction
//! (rotations are a shift pair and an or; `Ch` and `Maj` are one `v128.bitselect` each);
//! everywhere else the same algorithm runs on `[u32; 4]`, so that native tests exercise
//! it too (`bench/crypto_test_wasm.sh` runs the tests in V8). SHA-256 has no
//! data-dependent branches or memory accesses, and neither has this code.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use core::arch::wasm32::*;

/// Four 32-bit lanes.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[derive(Clone, Copy)]
struct L(v128);

/// Four 32-bit lanes, emulated.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[derive(Clone, Copy)]
struct L([u32; 4]);

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl L {
    #[inline(always)]
    fn new(w: [u32; 4]) -> L {
        L(u32x4(w[0], w[1], w[2], w[3]))
    }
    #[inline(always)]
    fn splat(k: u32) -> L {
        L(u32x4_splat(k))
    }
    #[inline(always)]
    fn add(self, o: L) -> L {
        L(i32x4_add(self.0, o.0))
    }
    #[inline(always)]
    fn xor(self, o: L) -> L {
        L(v128_xor(self.0, o.0))
    }
    #[inline(always)]
    fn shr(self, n: u32) -> L {
        L(u32x4_shr(self.0, n))
    }
    #[inline(always)]
    fn rotr(self, n: u32) -> L {
        L(v128_or(u32x4_shr(self.0, n), i32x4_shl(self.0, 32 - n)))
    }
    /// Bits of `a` where `self` has 1s, of `b` where it has 0s.
    #[inline(always)]
    fn select(self, a: L, b: L) -> L {
        L(v128_bitselect(a.0, b.0, self.0))
    }
    #[inline(always)]
    fn lanes(self) -> [u32; 4] {
        [
            u32x4_extract_lane::<0>(self.0),
            u32x4_extract_lane::<1>(self.0),
            u32x4_extract_lane::<2>(self.0),
            u32x4_extract_lane::<3>(self.0),
        ]
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
impl L {
    #[inline(always)]
    fn new(w: [u32; 4]) -> L {
        L(w)
    }
    #[inline(always)]
    fn splat(k: u32) -> L {
        L([k; 4])
    }
    #[inline(always)]
    fn map2(self, o: L, f: impl Fn(u32, u32) -> u32) -> L {
        L([
            f(self.0[0], o.0[0]),
            f(self.0[1], o.0[1]),
            f(self.0[2], o.0[2]),
            f(self.0[3], o.0[3]),
        ])
    }
    #[inline(always)]
    fn add(self, o: L) -> L {
        self.map2(o, u32::wrapping_add)
    }
    #[inline(always)]
    fn xor(self, o: L) -> L {
        self.map2(o, |a, b| a ^ b)
    }
    #[inline(always)]
    fn shr(self, n: u32) -> L {
        L(self.0.map(|x| x >> n))
    }
    #[inline(always)]
    fn rotr(self, n: u32) -> L {
        L(self.0.map(|x| x.rotate_right(n)))
    }
    #[inline(always)]
    fn select(self, a: L, b: L) -> L {
        let s = self.map2(a, |m, x| m & x);
        let t = self.map2(b, |m, x| !m & x);
        s.xor(t)
    }
    #[inline(always)]
    fn lanes(self) -> [u32; 4] {
        self.0
    }
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// One 64-byte block of each lane's message into the lanes' states.
#[inline(always)]
fn compress(state: &mut [L; 8], blocks: [&[u8; 64]; 4]) {
    let word = |t: usize| {
        let w =
            |b: &[u8; 64]| u32::from_be_bytes([b[4 * t], b[4 * t + 1], b[4 * t + 2], b[4 * t + 3]]);
        L::new([w(blocks[0]), w(blocks[1]), w(blocks[2]), w(blocks[3])])
    };
    let mut w: [L; 16] = core::array::from_fn(word);
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for (t, k) in K.iter().enumerate() {
        let wt = if t < 16 {
            w[t]
        } else {
            let w2 = w[(t - 2) % 16];
            let w15 = w[(t - 15) % 16];
            let s1 = w2.rotr(17).xor(w2.rotr(19)).xor(w2.shr(10));
            let s0 = w15.rotr(7).xor(w15.rotr(18)).xor(w15.shr(3));
            let n = s1.add(w[(t - 7) % 16]).add(s0).add(w[t % 16]);
            w[t % 16] = n;
            n
        };
        let big_s1 = e.rotr(6).xor(e.rotr(11)).xor(e.rotr(25));
        let ch = e.select(f, g);
        let t1 = h.add(big_s1).add(ch).add(L::splat(*k)).add(wt);
        let big_s0 = a.rotr(2).xor(a.rotr(13)).xor(a.rotr(22));
        // Maj(a, b, c): `a` where b and c differ, else their common bit.
        let maj = b.xor(c).select(a, b);
        let t2 = big_s0.add(maj);
        h = g;
        g = f;
        f = e;
        e = d.add(t1);
        d = c;
        c = b;
        b = a;
        a = t1.add(t2);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.add(v);
    }
}

/// The SHA-256 digests of four messages of the same length; `None` if the lengths differ.
pub fn sha256x4(msgs: [&[u8]; 4]) -> Option<[[u8; 32]; 4]> {
    let len = msgs[0].len();
    if msgs.iter().any(|m| m.len() != len) {
        return None;
    }
    let mut state = H0.map(L::splat);
    let full = len / 64;
    let mut blocks_of = msgs.map(|m| m.chunks_exact(64));
    for _ in 0..full {
        let b = blocks_of.each_mut().map(|it| {
            it.next()
                .and_then(|c| c.try_into().ok())
                .unwrap_or(&[0u8; 64])
        });
        compress(&mut state, b);
    }
    // The tail, 0x80, zeros and the bit length: one or two blocks, the same layout in
    // every lane (the lengths are equal).
    let rest = len % 64;
    let blocks = if rest < 56 { 1 } else { 2 };
    let bits = (len as u64).wrapping_mul(8).to_be_bytes();
    let pad = |m: &[u8]| {
        let mut p = [[0u8; 64]; 2];
        let flat = p.as_flattened_mut();
        flat[..rest].copy_from_slice(&m[64 * full..]);
        flat[rest] = 0x80;
        flat[64 * blocks - 8..64 * blocks].copy_from_slice(&bits);
        p
    };
    let padded = [pad(msgs[0]), pad(msgs[1]), pad(msgs[2]), pad(msgs[3])];
    let [p0, p1, p2, p3] = &padded;
    for (((b0, b1), b2), b3) in p0.iter().zip(p1).zip(p2).zip(p3).take(blocks) {
        compress(&mut state, [b0, b1, b2, b3]);
    }
    let mut out = [[0u8; 32]; 4];
    for (i, s) in state.iter().enumerate() {
        for (lane, v) in s.lanes().into_iter().enumerate() {
            out[lane][4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn reference(m: &[u8]) -> [u8; 32] {
        Sha256::digest(m).into()
    }

    /// FIPS 180-4 / NIST CSRC examples (one- and two-block messages) and the empty one.
    #[test]
    fn nist_vectors() {
        let cases: [(&[u8], &str); 3] = [
            (
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
            (
                b"",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
        ];
        for (m, want) in cases {
            let got = sha256x4([m, m, m, m]).unwrap();
            for d in got {
                assert_eq!(hex::encode(d), want);
            }
        }
        // One million 'a' (FIPS 180-2 appendix B.3) in one lane, others different.
        let a = vec![b'a'; 1_000_000];
        let b = vec![b'b'; 1_000_000];
        let got = sha256x4([&a, &b, &a, &b]).unwrap();
        assert_eq!(
            hex::encode(got[0]),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
        assert_eq!(got[1], reference(&b));
        assert_eq!(got[2], got[0]);
    }

    /// Every length around the block and padding boundaries, distinct data per lane,
    /// against RustCrypto `sha2`.
    #[test]
    fn differential_lengths() {
        let data: Vec<u8> = (0..4 * 300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..300 {
            let m: [&[u8]; 4] = core::array::from_fn(|l| &data[300 * l..300 * l + len]);
            let got = sha256x4(m).unwrap();
            for l in 0..4 {
                assert_eq!(got[l], reference(m[l]), "len {len} lane {l}");
            }
        }
    }

    #[test]
    fn unequal_lengths_are_refused() {
        assert!(sha256x4([b"a", b"a", b"a", b"ab"]).is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn differential_random(len in 0usize..20_000, seed in proptest::prelude::any::<u64>()) {
            let mut s = seed | 1;
            let msgs: Vec<Vec<u8>> = (0..4)
                .map(|_| (0..len).map(|_| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s as u8 }).collect())
                .collect();
            let got = sha256x4([&msgs[0], &msgs[1], &msgs[2], &msgs[3]]).unwrap();
            for l in 0..4 {
                proptest::prop_assert_eq!(got[l], reference(&msgs[l]));
            }
        }
    }
}
