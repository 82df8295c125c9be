//! A tiny 128-bit vector type with exactly the operations the bitsliced AES needs.
//!
//! On `wasm32` with `+simd128` it is a real `v128` and every method is one SIMD128
//! instruction (shuffles take constant indices, so V8 lowers them to `pshufb` & co.).
//! Everywhere else it is a `u128` emulation with identical semantics (byte `j` of the
//! vector is bits `8j..8j+8`, 64-bit lane 0 is the low half), so that the *same*
//! algorithm is tested natively by `cargo test`.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use core::arch::wasm32::*;

/// 16 bytes in one SIMD register.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[derive(Clone, Copy)]
pub struct V(v128);

/// 16 bytes, emulated with a `u128` (byte `j` = bits `8j..8j+8`).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[derive(Clone, Copy)]
pub struct V(u128);

/// Defines a method applying a constant byte permutation: `out[j] = in[IDX[j]]`.
macro_rules! shuffle {
    ($(#[$m:meta])* $name:ident = [$($i:literal),+]) => {
        $(#[$m])*
        #[inline(always)]
        pub fn $name(self) -> V {
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            {
                V(i8x16_shuffle::<$($i),+>(self.0, self.0))
            }
            #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
            {
                self.permute([$($i),+])
            }
        }
    };
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl V {
    #[inline(always)]
    pub fn zero() -> V {
        V(u64x2_splat(0))
    }
    #[inline(always)]
    pub fn splat(b: u8) -> V {
        V(u8x16_splat(b))
    }
    #[inline(always)]
    pub fn load(b: &[u8; 16]) -> V {
        // SAFETY: `b` is valid for reading 16 bytes; `v128.load` has no alignment requirement.
        V(unsafe { v128_load(b.as_ptr().cast::<v128>()) })
    }
    #[inline(always)]
    pub fn store(self, b: &mut [u8; 16]) {
        // SAFETY: `b` is valid for writing 16 bytes; `v128.store` has no alignment requirement.
        unsafe { v128_store(b.as_mut_ptr().cast::<v128>(), self.0) }
    }
    #[inline(always)]
    pub fn xor(self, o: V) -> V {
        V(v128_xor(self.0, o.0))
    }
    #[inline(always)]
    pub fn and(self, o: V) -> V {
        V(v128_and(self.0, o.0))
    }
    #[inline(always)]
    pub fn or(self, o: V) -> V {
        V(v128_or(self.0, o.0))
    }
    /// `self & !o`.
    #[inline(always)]
    pub fn andnot(self, o: V) -> V {
        V(v128_andnot(self.0, o.0))
    }
    /// Logical right shift of each 64-bit lane.
    #[inline(always)]
    pub fn shr64(self, n: u32) -> V {
        V(u64x2_shr(self.0, n))
    }
    /// Left shift of each 64-bit lane.
    #[inline(always)]
    pub fn shl64(self, n: u32) -> V {
        V(i64x2_shl(self.0, n))
    }
    /// Logical right shift of each byte.
    #[inline(always)]
    pub fn shr8(self, n: u32) -> V {
        V(u8x16_shr(self.0, n))
    }
    /// `out[j] = table[idx[j]]` for indices below 16 (0 otherwise).
    #[inline(always)]
    pub fn swizzle(table: V, idx: V) -> V {
        V(i8x16_swizzle(table.0, idx.0))
    }
    /// The 32-bit lane 3 (bytes 12..16, little-endian) replaced by `x`.
    #[inline(always)]
    pub fn with_lane3(self, x: u32) -> V {
        V(u32x4_replace_lane::<3>(self.0, x))
    }
    /// 64-bit lane 0 (bytes 0..8, little-endian).
    #[inline(always)]
    pub fn lane0(self) -> u64 {
        u64x2_extract_lane::<0>(self.0)
    }
    /// The vector with 64-bit lanes `lo` (bytes 0..8) and `hi`.
    #[inline(always)]
    pub fn from_lanes(lo: u64, hi: u64) -> V {
        V(u64x2(lo, hi))
    }
    /// 64-bit lane 1 (bytes 8..16, little-endian).
    #[inline(always)]
    pub fn lane1(self) -> u64 {
        u64x2_extract_lane::<1>(self.0)
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
impl V {
    #[inline(always)]
    pub fn zero() -> V {
        V(0)
    }
    #[inline(always)]
    pub fn splat(b: u8) -> V {
        V(u128::from_le_bytes([b; 16]))
    }
    #[inline(always)]
    pub fn load(b: &[u8; 16]) -> V {
        V(u128::from_le_bytes(*b))
    }
    #[inline(always)]
    pub fn store(self, b: &mut [u8; 16]) {
        *b = self.0.to_le_bytes();
    }
    #[inline(always)]
    pub fn xor(self, o: V) -> V {
        V(self.0 ^ o.0)
    }
    #[inline(always)]
    pub fn and(self, o: V) -> V {
        V(self.0 & o.0)
    }
    #[inline(always)]
    pub fn or(self, o: V) -> V {
        V(self.0 | o.0)
    }
    #[inline(always)]
    pub fn andnot(self, o: V) -> V {
        V(self.0 & !o.0)
    }
    #[inline(always)]
    fn lanes(self) -> (u64, u64) {
        (self.0 as u64, (self.0 >> 64) as u64)
    }
    #[inline(always)]
    pub fn from_lanes(lo: u64, hi: u64) -> V {
        V(lo as u128 | (hi as u128) << 64)
    }
    #[inline(always)]
    pub fn shr64(self, n: u32) -> V {
        let (lo, hi) = self.lanes();
        V::from_lanes(lo >> n, hi >> n)
    }
    #[inline(always)]
    pub fn shl64(self, n: u32) -> V {
        let (lo, hi) = self.lanes();
        V::from_lanes(lo << n, hi << n)
    }
    #[inline(always)]
    pub fn shr8(self, n: u32) -> V {
        V(u128::from_le_bytes(self.0.to_le_bytes().map(|b| b >> n)))
    }
    #[inline(always)]
    pub fn swizzle(table: V, idx: V) -> V {
        let t = table.0.to_le_bytes();
        let i = idx.0.to_le_bytes();
        let mut o = [0u8; 16];
        for (o, &i) in o.iter_mut().zip(i.iter()) {
            *o = t.get(i as usize).copied().unwrap_or(0);
        }
        V(u128::from_le_bytes(o))
    }
    #[inline(always)]
    pub fn with_lane3(self, x: u32) -> V {
        V(self.0 & ((1u128 << 96) - 1) | (x as u128) << 96)
    }
    #[inline(always)]
    pub fn lane0(self) -> u64 {
        self.0 as u64
    }
    #[inline(always)]
    pub fn lane1(self) -> u64 {
        (self.0 >> 64) as u64
    }
    /// `out[j] = in[idx[j]]`.
    #[inline(always)]
    fn permute(self, idx: [u8; 16]) -> V {
        let b = self.0.to_le_bytes();
        V(u128::from_le_bytes(idx.map(|i| b[(i & 15) as usize])))
    }
}

impl V {
    /// Constant vector from 16 bytes (compile-time friendly).
    #[inline(always)]
    pub fn from_bytes(b: [u8; 16]) -> V {
        V::load(&b)
    }
    #[inline(always)]
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        self.store(&mut b);
        b
    }

    /// The bits of every byte in reverse order (two 16-entry in-register table lookups;
    /// the indices are data, but `swizzle` is a register permutation, not a memory access).
    #[inline(always)]
    pub fn brev8(self) -> V {
        const LO: [u8; 16] = [0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15];
        const HI: [u8; 16] = [
            0x00, 0x80, 0x40, 0xc0, 0x20, 0xa0, 0x60, 0xe0, 0x10, 0x90, 0x50, 0xd0, 0x30, 0xb0,
            0x70, 0xf0,
        ];
        let m = V::splat(0x0f);
        V::swizzle(V::from_bytes(HI), self.and(m)).or(V::swizzle(V::from_bytes(LO), self.shr8(4)))
    }

    // AES state byte `j` is row `j % 4`, column `j / 4`.
    shuffle!(
        /// AES ShiftRows: row `r` rotated left by `r` columns.
        shift_rows = [0, 5, 10, 15, 4, 9, 14, 3, 8, 13, 2, 7, 12, 1, 6, 11]
    );
    shuffle!(
        /// Each column rotated up by one row (`out[r] = in[r+1]`).
        rot1 = [1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12]
    );
    shuffle!(
        /// Each column rotated up by two rows.
        rot2 = [2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13]
    );
    shuffle!(
        /// `rot1(shift_rows(x))` in one shuffle.
        shift_rows_rot1 = [5, 10, 15, 0, 9, 14, 3, 4, 13, 2, 7, 8, 1, 6, 11, 12]
    );
    shuffle!(
        /// The 16 bytes in reverse order (a big-endian `u128` becomes little-endian).
        reverse = [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    );
}

impl core::ops::BitXor for V {
    type Output = V;
    #[inline(always)]
    fn bitxor(self, o: V) -> V {
        self.xor(o)
    }
}

impl core::ops::BitAnd for V {
    type Output = V;
    #[inline(always)]
    fn bitand(self, o: V) -> V {
        self.and(o)
    }
}

impl core::ops::BitXorAssign for V {
    #[inline(always)]
    fn bitxor_assign(&mut self, o: V) {
        *self = self.xor(o);
    }
}
