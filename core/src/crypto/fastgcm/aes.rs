//! Bitsliced AES-256 encryption of 8 blocks at once in eight 128-bit vectors
//! (Käsper–Schwabe layout, written from the published descriptions).
//!
//! Layout: after [`ortho`], vector `b` holds bit `b` of every state byte of all 8 blocks:
//! its byte `j` is AES state byte `j` (row `j % 4`, column `j / 4`) and bit `k` of that
//! byte belongs to block `k`. SubBytes is then a Boolean circuit on the 8 vectors (the
//! 113-gate Boyar–Peralta circuit), ShiftRows and the MixColumns rotations are constant
//! byte shuffles, AddRoundKey is 8 XORs. There are no table lookups and no branches on
//! secret data: the running time depends only on the number of blocks.

use super::simd::V;

/// Bitsliced state of 8 blocks: `s[b]` = bit plane `b` (bit 0 = least significant).
pub type State = [V; 8];

/// `t = ((a >> n) ^ b) & m; b ^= t; a ^= t << n` — swaps bits of `a` at the `m << n`
/// positions with the bits of `b` at the `m` positions.
#[inline(always)]
fn swapmove(s: &mut State, a: usize, b: usize, n: u32, m: V) {
    let t = s[a].shr64(n).xor(s[b]).and(m);
    s[b] ^= t;
    s[a] ^= t.shl64(n);
}

/// Transposes the 8x8 bit matrix formed, at each byte position, by the 8 vectors
/// (vector index <-> bit index). Turns 8 blocks into bit planes and back (an involution).
#[inline(always)]
pub fn ortho(s: &mut State) {
    let m1 = V::splat(0x55);
    let m2 = V::splat(0x33);
    let m4 = V::splat(0x0f);
    swapmove(s, 0, 1, 1, m1);
    swapmove(s, 2, 3, 1, m1);
    swapmove(s, 4, 5, 1, m1);
    swapmove(s, 6, 7, 1, m1);
    swapmove(s, 0, 2, 2, m2);
    swapmove(s, 1, 3, 2, m2);
    swapmove(s, 4, 6, 2, m2);
    swapmove(s, 5, 7, 2, m2);
    swapmove(s, 0, 4, 4, m4);
    swapmove(s, 1, 5, 4, m4);
    swapmove(s, 2, 6, 4, m4);
    swapmove(s, 3, 7, 4, m4);
}

/// SubBytes on all 128 bytes, **without** the affine constant: computes `S(x) ^ 0x63`.
/// (The four NOTs of the circuit's output are folded into the round keys, see
/// [`Aes256::new`].) Boyar–Peralta: 23-XOR top linear layer, 63-gate shared
/// non-linear middle (32 ANDs), 30-XOR bottom linear layer. `u0` is the most
/// significant bit.
#[inline(always)]
pub fn sub_bytes(x: &mut State) {
    let (u0, u1, u2, u3, u4, u5, u6, u7) = (x[7], x[6], x[5], x[4], x[3], x[2], x[1], x[0]);

    let t1 = u0 ^ u3;
    let t2 = u0 ^ u5;
    let t3 = u0 ^ u6;
    let t4 = u3 ^ u5;
    let t5 = u4 ^ u6;
    let t6 = t1 ^ t5;
    let t7 = u1 ^ u2;
    let t8 = u7 ^ t6;
    let t9 = u7 ^ t7;
    let t10 = t6 ^ t7;
    let t11 = u1 ^ u5;
    let t12 = u2 ^ u5;
    let t13 = t3 ^ t4;
    let t14 = t6 ^ t11;
    let t15 = t5 ^ t11;
    let t16 = t5 ^ t12;
    let t17 = t9 ^ t16;
    let t18 = u3 ^ u7;
    let t19 = t7 ^ t18;
    let t20 = t1 ^ t19;
    let t21 = u6 ^ u7;
    let t22 = t7 ^ t21;
    let t23 = t2 ^ t22;
    let t24 = t2 ^ t10;
    let t25 = t20 ^ t17;
    let t26 = t3 ^ t16;
    let t27 = t1 ^ t12;
    let d = u7;

    let m1 = t13 & t6;
    let m2 = t23 & t8;
    let m3 = t14 ^ m1;
    let m4 = t19 & d;
    let m5 = m4 ^ m1;
    let m6 = t3 & t16;
    let m7 = t22 & t9;
    let m8 = t26 ^ m6;
    let m9 = t20 & t17;
    let m10 = m9 ^ m6;
    let m11 = t1 & t15;
    let m12 = t4 & t27;
    let m13 = m12 ^ m11;
    let m14 = t2 & t10;
    let m15 = m14 ^ m11;
    let m16 = m3 ^ m2;
    let m17 = m5 ^ t24;
    let m18 = m8 ^ m7;
    let m19 = m10 ^ m15;
    let m20 = m16 ^ m13;
    let m21 = m17 ^ m15;
    let m22 = m18 ^ m13;
    let m23 = m19 ^ t25;
    let m24 = m22 ^ m23;
    let m25 = m22 & m20;
    let m26 = m21 ^ m25;
    let m27 = m20 ^ m21;
    let m28 = m23 ^ m25;
    let m29 = m28 & m27;
    let m30 = m26 & m24;
    let m31 = m20 & m23;
    let m32 = m27 & m31;
    let m33 = m27 ^ m25;
    let m34 = m21 & m22;
    let m35 = m24 & m34;
    let m36 = m24 ^ m25;
    let m37 = m21 ^ m29;
    let m38 = m32 ^ m33;
    let m39 = m23 ^ m30;
    let m40 = m35 ^ m36;
    let m41 = m38 ^ m40;
    let m42 = m37 ^ m39;
    let m43 = m37 ^ m38;
    let m44 = m39 ^ m40;
    let m45 = m42 ^ m41;
    let m46 = m44 & t6;
    let m47 = m40 & t8;
    let m48 = m39 & d;
    let m49 = m43 & t16;
    let m50 = m38 & t9;
    let m51 = m37 & t17;
    let m52 = m42 & t15;
    let m53 = m45 & t27;
    let m54 = m41 & t10;
    let m55 = m44 & t13;
    let m56 = m40 & t23;
    let m57 = m39 & t19;
    let m58 = m43 & t3;
    let m59 = m38 & t22;
    let m60 = m37 & t20;
    let m61 = m42 & t1;
    let m62 = m45 & t4;
    let m63 = m41 & t2;

    let l0 = m61 ^ m62;
    let l1 = m50 ^ m56;
    let l2 = m46 ^ m48;
    let l3 = m47 ^ m55;
    let l4 = m54 ^ m58;
    let l5 = m49 ^ m61;
    let l6 = m62 ^ l5;
    let l7 = m46 ^ l3;
    let l8 = m51 ^ m59;
    let l9 = m52 ^ m53;
    let l10 = m53 ^ l4;
    let l11 = m60 ^ l2;
    let l12 = m48 ^ m51;
    let l13 = m50 ^ l0;
    let l14 = m52 ^ m61;
    let l15 = m55 ^ l1;
    let l16 = m56 ^ l0;
    let l17 = m57 ^ l1;
    let l18 = m58 ^ l8;
    let l19 = m63 ^ l4;
    let l20 = l0 ^ l1;
    let l21 = l1 ^ l7;
    let l22 = l3 ^ l12;
    let l23 = l18 ^ l2;
    let l24 = l15 ^ l9;
    let l25 = l6 ^ l10;
    let l26 = l7 ^ l9;
    let l27 = l8 ^ l10;
    let l28 = l11 ^ l14;
    let l29 = l11 ^ l17;

    // s1, s2, s6 and s7 are XNORs in the circuit; the NOTs (= ^0x63) are in the round keys.
    x[7] = l6 ^ l24;
    x[6] = l16 ^ l26;
    x[5] = l19 ^ l28;
    x[4] = l6 ^ l21;
    x[3] = l20 ^ l22;
    x[2] = l25 ^ l29;
    x[1] = l13 ^ l27;
    x[0] = l6 ^ l23;
}

/// ShiftRows then MixColumns. Per column, `b_r = 2a_r ^ 3a_{r+1} ^ a_{r+2} ^ a_{r+3}`
/// `= xtime(t_r) ^ a_{r+1} ^ rot2(t)_r` with `t = a ^ rot1(a)`; `xtime` on bit planes is a
/// rotation of the plane index plus XORs of plane 7 into planes 1, 3 and 4.
#[inline(always)]
fn shift_rows_mix_columns(x: &mut State) {
    let r = x.map(V::shift_rows_rot1);
    let t: State = core::array::from_fn(|b| x[b].shift_rows() ^ r[b]);
    x[0] = t[7] ^ r[0] ^ t[0].rot2();
    x[1] = t[0] ^ t[7] ^ r[1] ^ t[1].rot2();
    x[2] = t[1] ^ r[2] ^ t[2].rot2();
    x[3] = t[2] ^ t[7] ^ r[3] ^ t[3].rot2();
    x[4] = t[3] ^ t[7] ^ r[4] ^ t[4].rot2();
    x[5] = t[4] ^ r[5] ^ t[5].rot2();
    x[6] = t[5] ^ r[6] ^ t[6].rot2();
    x[7] = t[6] ^ r[7] ^ t[7].rot2();
}

#[inline(always)]
fn add_round_key(x: &mut State, k: &State) {
    for (x, k) in x.iter_mut().zip(k.iter()) {
        *x ^= *k;
    }
}

/// An expanded AES-256 key in bitsliced form (15 round keys x 8 planes).
pub struct Aes256 {
    rk: [State; 15],
}

/// The state of 8 copies of one 16-byte block, transposed: plane `b`, byte `j` is
/// `0xff` iff bit `b` of byte `j` is set.
fn broadcast_bits(block: &[u8; 16]) -> State {
    let mut s = [V::load(block); 8];
    ortho(&mut s);
    s
}

/// Constant-time SubBytes on the 16 bytes of one block (used by the key schedule).
fn sub_bytes_block(block: [u8; 16]) -> [u8; 16] {
    let mut s = [V::zero(); 8];
    s[0] = V::load(&block);
    ortho(&mut s);
    sub_bytes(&mut s);
    ortho(&mut s);
    s[0].to_bytes().map(|b| b ^ 0x63)
}

impl Aes256 {
    pub fn new(key: &[u8; 32]) -> Aes256 {
        // FIPS-197 key expansion into 60 words, SubWord done with the bitsliced S-box.
        let mut w = [[0u8; 4]; 60];
        for (i, c) in key.chunks_exact(4).enumerate() {
            w[i].copy_from_slice(c);
        }
        let mut rcon = 1u8;
        for i in 8..60 {
            let mut t = w[i - 1];
            if i % 8 == 0 {
                t = [t[1], t[2], t[3], t[0]];
            }
            if i % 4 == 0 {
                let s =
                    sub_bytes_block([t[0], t[1], t[2], t[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                t = [s[0], s[1], s[2], s[3]];
            }
            if i % 8 == 0 {
                t[0] ^= rcon;
                rcon = (rcon << 1) ^ (0x1b & 0u8.wrapping_sub(rcon >> 7));
            }
            for k in 0..4 {
                w[i][k] = w[i - 8][k] ^ t[k];
            }
        }
        let mut rk = [[V::zero(); 8]; 15];
        for (r, rk) in rk.iter_mut().enumerate() {
            let mut b = [0u8; 16];
            for (j, b) in b.iter_mut().enumerate() {
                // Rounds 1..14 also cancel the 0x63 that `sub_bytes` leaves out: it passes
                // unchanged through ShiftRows and MixColumns (which maps a column of equal
                // bytes to itself).
                *b = w[4 * r + j / 4][j % 4] ^ if r == 0 { 0 } else { 0x63 };
            }
            *rk = broadcast_bits(&b);
            b.iter_mut().for_each(|b| *b = 0);
        }
        w.iter_mut().flatten().for_each(|b| *b = 0);
        Aes256 { rk }
    }

    /// Encrypts the 8 blocks of a bitsliced state in place.
    #[inline(always)]
    pub fn encrypt_state(&self, x: &mut State) {
        self.encrypt_state_with(x, |_| {});
    }

    /// Encrypts the 8 blocks of a bitsliced state in place, calling `side(r)` in the
    /// middle of each of the 13 full rounds (`r = 0..13`): independent scalar work placed
    /// there (GHASH) runs on the integer units while the vector units do the AES.
    #[inline(always)]
    pub fn encrypt_state_with(&self, x: &mut State, mut side: impl FnMut(usize)) {
        let [rk0, mid @ .., last] = &self.rk;
        add_round_key(x, rk0);
        for (r, k) in mid.iter().enumerate() {
            sub_bytes(x);
            side(r);
            shift_rows_mix_columns(x);
            add_round_key(x, k);
        }
        sub_bytes(x);
        for v in x.iter_mut() {
            *v = v.shift_rows();
        }
        add_round_key(x, last);
    }

    /// Encrypts 8 blocks (in memory order) in place.
    pub fn encrypt8(&self, blocks: &mut [[u8; 16]; 8]) {
        let mut s: State = core::array::from_fn(|k| V::load(&blocks[k]));
        ortho(&mut s);
        self.encrypt_state(&mut s);
        ortho(&mut s);
        for (b, v) in blocks.iter_mut().zip(s.iter()) {
            v.store(b);
        }
    }

    /// Keystream for the 8 counter blocks `nonce ‖ be32(ctr[k])`, as vectors in block order.
    #[inline(always)]
    pub fn ctr8(&self, nonce_block: V, ctr: [u32; 8]) -> State {
        self.ctr8_with(nonce_block, ctr, |_| {})
    }

    /// [`Self::ctr8`] with side work interleaved into the rounds (see
    /// [`Self::encrypt_state_with`]).
    #[inline(always)]
    pub fn ctr8_with(&self, nonce_block: V, ctr: [u32; 8], side: impl FnMut(usize)) -> State {
        let mut s: State = core::array::from_fn(|k| nonce_block.with_lane3(ctr[k].swap_bytes()));
        ortho(&mut s);
        self.encrypt_state_with(&mut s, side);
        ortho(&mut s);
        s
    }

    /// Overwrites the round keys.
    pub fn wipe(&mut self) {
        for s in self.rk.iter_mut() {
            for v in s.iter_mut() {
                // SAFETY: `v` is a valid, aligned, exclusive reference.
                unsafe { core::ptr::write_volatile(v, V::zero()) };
            }
        }
    }
}
