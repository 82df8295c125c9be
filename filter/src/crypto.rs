//! Cryptographic primitives: AES-256-GCM for frames and the envelope tag, AES key wrap
//! with padding (RFC 5649, `aes-kw`) for data keys, and the system CSPRNG (`getrandom`; in
//! Envoy this is WASI `random_get`, served by the host's CSPRNG).
//!
//! AES-256-GCM comes from [`fastgcm`] (bitsliced AES + integer-multiply GHASH on wasm
//! SIMD128, ~4-5x RustCrypto's portable code in V8) when compiled for `wasm32` with
//! `+simd128` (set in `.cargo/config.toml`), and from RustCrypto `aes-gcm` everywhere
//! else (natively it uses AES-NI/PCLMULQDQ). Both are checked against each other and
//! against NIST and Wycheproof vectors in `fastgcm::tests`.

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
use aes_gcm::aead::{AeadInPlace, KeyInit};
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
use aes_gcm::{Aes256Gcm, Nonce, Tag};

pub mod fastgcm;

/// Length of a data key, a key-encryption key and an AES-256 key in general.
pub const KEY_LEN: usize = 32;
/// GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// GCM tag length.
pub const TAG_LEN: usize = 16;
/// Length of a data key wrapped with RFC 5649 (32 bytes + 8 bytes of integrity check).
pub const WRAPPED_DEK_LEN: usize = KEY_LEN + 8;

/// Cipher suite identifiers carried in the envelope (`s=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// AES-256-GCM, 96-bit random nonce per frame, 128-bit tag.
    Aes256Gcm = 1,
}

impl Suite {
    pub fn from_id(id: u8) -> Option<Suite> {
        match id {
            1 => Some(Suite::Aes256Gcm),
            _ => None,
        }
    }
    pub fn id(self) -> u8 {
        self as u8
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// A tag did not verify: the data was modified, truncated, reordered or spliced.
    Authentication,
    /// Unwrapping a data key failed: wrong key-encryption key or a corrupted envelope.
    Unwrap,
    /// The system random source failed.
    Random,
}

/// Fills `buf` from the CSPRNG.
pub fn random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::getrandom(buf).map_err(|_| CryptoError::Random)
}

/// A fresh random data key.
pub fn new_dek() -> Result<DataKey, CryptoError> {
    let mut k = [0u8; KEY_LEN];
    random(&mut k)?;
    Ok(DataKey(k))
}

/// A 256-bit data key. Zeroed on drop; never printed.
pub struct DataKey(pub(crate) [u8; KEY_LEN]);

impl DataKey {
    pub fn from_bytes(b: [u8; KEY_LEN]) -> Self {
        DataKey(b)
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        // Best effort; volatile write so the compiler keeps it.
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference to a u8.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// RFC 5649 key wrap with padding of `data` under `kek` into `out`
/// (`out.len()` = `data.len()` rounded up to 8, plus 8); returns the wrapped length.
fn kwp_wrap_into(kek: &[u8; KEY_LEN], data: &[u8], out: &mut [u8]) -> Result<usize, CryptoError> {
    let kw = aes_kw::KekAes256::from(*kek);
    let n = data.len().div_ceil(8) * 8 + 8;
    let out = out.get_mut(..n).ok_or(CryptoError::Unwrap)?;
    kw.wrap_with_padding(data, out)
        .map_err(|_| CryptoError::Unwrap)?;
    Ok(n)
}

/// Wraps a data key under a key-encryption key (RFC 5649).
pub fn wrap_dek(kek: &[u8; KEY_LEN], dek: &DataKey) -> Result<[u8; WRAPPED_DEK_LEN], CryptoError> {
    let mut out = [0u8; WRAPPED_DEK_LEN];
    kwp_wrap_into(kek, &dek.0, &mut out)?;
    Ok(out)
}

/// Unwraps a data key (RFC 5649). Fails on any modification or on the wrong KEK.
pub fn unwrap_dek(kek: &[u8; KEY_LEN], wrapped: &[u8]) -> Result<DataKey, CryptoError> {
    if wrapped.len() != WRAPPED_DEK_LEN {
        return Err(CryptoError::Unwrap);
    }
    let kw = aes_kw::KekAes256::from(*kek);
    let mut out = [0u8; WRAPPED_DEK_LEN - 8];
    let n = kw
        .unwrap_with_padding(wrapped, &mut out)
        .map_err(|_| CryptoError::Unwrap)?
        .len();
    let mut k = [0u8; KEY_LEN];
    let ok = n == KEY_LEN;
    if ok {
        k.copy_from_slice(out.get(..KEY_LEN).ok_or(CryptoError::Unwrap)?);
    }
    out.iter_mut().for_each(|b| *b = 0);
    if ok {
        Ok(DataKey(k))
    } else {
        Err(CryptoError::Unwrap)
    }
}

/// An AEAD keyed with one data key: seals and opens frames in place.
pub struct FrameAead {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    gcm: fastgcm::Aes256Gcm,
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    gcm: Aes256Gcm,
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl FrameAead {
    pub fn new(suite: Suite, dek: &DataKey) -> Self {
        match suite {
            Suite::Aes256Gcm => FrameAead {
                gcm: fastgcm::Aes256Gcm::new(&dek.0),
            },
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        self.gcm
            .seal(nonce, aad, buf)
            .map_err(|_| CryptoError::Authentication)
    }

    /// Decrypts `buf` in place if the tag verifies; on failure `buf` is zeroed and must
    /// not be released (the caller discards it).
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        self.gcm
            .open(nonce, aad, buf, tag)
            .map_err(|_| CryptoError::Authentication)
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
impl FrameAead {
    pub fn new(suite: Suite, dek: &DataKey) -> Self {
        match suite {
            Suite::Aes256Gcm => FrameAead {
                gcm: Aes256Gcm::new((&dek.0).into()),
            },
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .gcm
            .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, buf)
            .map_err(|_| CryptoError::Authentication)?;
        Ok(tag.into())
    }

    /// Decrypts `buf` in place if the tag verifies; on failure `buf` is left unspecified
    /// and must not be released (the caller discards it).
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        self.gcm
            .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, buf, Tag::from_slice(tag))
            .map_err(|_| CryptoError::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// RFC 5649 section 6, second example (7 octets under a 192-bit KEK) cannot be used
    /// with AES-256; this checks the wrap against an independent computation instead:
    /// unwrap(wrap(k)) == k and any bit flip is rejected.
    #[test]
    fn kwp_round_trip_and_tamper() {
        let kek = [7u8; 32];
        let dek = DataKey([0x42; 32]);
        let w = wrap_dek(&kek, &dek).unwrap();
        let d = unwrap_dek(&kek, &w).unwrap();
        assert_eq!(d.0, dek.0);
        for i in 0..w.len() {
            let mut t = w;
            t[i] ^= 1;
            assert!(unwrap_dek(&kek, &t).is_err(), "flip at {i} accepted");
        }
        assert!(unwrap_dek(&[8u8; 32], &w).is_err());
        assert!(unwrap_dek(&kek, &w[..39]).is_err());
    }

    /// NIST CAVP KWP_AE_256 vector ([PLAINTEXT LENGTH = 8], COUNT = 0), from
    /// kwtestvectors.zip (SP 800-38F): one octet of key data under a 256-bit KEK.
    #[test]
    fn kwp_nist_vector() {
        let k: [u8; 32] = unhex("2800f18237cf8d2ba1dfe361784fd7519b0fdb0ec73e2ab1c0b966b9173fc5b5")
            .try_into()
            .unwrap();
        let mut out = [0u8; 16];
        let n = kwp_wrap_into(&k, &unhex("ad"), &mut out).unwrap();
        assert_eq!(hex::encode(&out[..n]), "c1eccf2d077a385e67aaeb35552c893c");
    }

    /// NIST GCM test vector (gcmEncryptExtIV256.rsp, Count 0 of [Keylen = 256][IVlen = 96]
    /// [PTlen = 128][AADlen = 128][Taglen = 128]).
    #[test]
    fn gcm_nist_vector() {
        let key: [u8; 32] =
            unhex("92e11dcdaa866f5ce790fd24501f92509aacf4cb8b1339d50c9c1240935dd08b")
                .try_into()
                .unwrap();
        let iv: [u8; 12] = unhex("ac93a1a6145299bde902f21a").try_into().unwrap();
        let pt = unhex("2d71bcfa914e4ac045b2aa60955fad24");
        let aad = unhex("1e0889016f67601c8ebea4943bc23ad6");
        let ct = unhex("8995ae2e6df3dbf96fac7b7137bae67f");
        let tag = unhex("eca5aa77d51d4a0a14d9c51e1da474ab");
        let aead = FrameAead::new(Suite::Aes256Gcm, &DataKey(key));
        let mut buf = pt.clone();
        let t = aead.seal(&iv, &aad, &mut buf).unwrap();
        assert_eq!(buf, ct);
        assert_eq!(t.to_vec(), tag);
        let t: [u8; 16] = tag.clone().try_into().unwrap();
        aead.open(&iv, &aad, &mut buf, &t).unwrap();
        assert_eq!(buf, pt);
        let mut bad = t;
        bad[0] ^= 1;
        let mut buf2 = ct.clone();
        assert!(aead.open(&iv, &aad, &mut buf2, &bad).is_err());
    }
}
