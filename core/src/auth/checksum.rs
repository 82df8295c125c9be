//! The checksums S3 accepts for object data (`x-amz-checksum-*`): CRC32, CRC32C,
//! CRC64/NVME, SHA-1, SHA-256. Values are the big-endian digest bytes, base64-encoded.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha1::Sha1;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    const ALL: [ChecksumAlgorithm; 5] = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ];

    /// From a header name such as `x-amz-checksum-crc32` (any case).
    pub fn from_header_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.header_name().eq_ignore_ascii_case(name))
    }

    /// From an algorithm name such as `CRC32` or `crc64nvme` (any case).
    pub fn from_algorithm_name(name: &str) -> Option<Self> {
        let n = name.trim();
        Self::ALL.into_iter().find(|a| {
            a.header_name()
                .trim_start_matches("x-amz-checksum-")
                .eq_ignore_ascii_case(n)
        })
    }

    pub fn header_name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
            ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }
}

/// An incremental checksum.
pub enum Checksummer {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64Nvme(u64),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Checksummer {
    pub fn new(algo: ChecksumAlgorithm) -> Self {
        match algo {
            ChecksumAlgorithm::Crc32 => Checksummer::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgorithm::Crc32c => Checksummer::Crc32c(0),
            ChecksumAlgorithm::Crc64Nvme => Checksummer::Crc64Nvme(!0),
            ChecksumAlgorithm::Sha1 => Checksummer::Sha1(Sha1::new()),
            ChecksumAlgorithm::Sha256 => Checksummer::Sha256(Sha256::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Checksummer::Crc32(h) => h.update(data),
            Checksummer::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Checksummer::Crc64Nvme(c) => *c = crc64nvme_update(*c, data),
            Checksummer::Sha1(h) => h.update(data),
            Checksummer::Sha256(h) => h.update(data),
        }
    }

    /// The value as S3 sends it: base64 of the big-endian bytes.
    pub fn finalize_base64(self) -> String {
        match self {
            Checksummer::Crc32(h) => B64.encode(h.finalize().to_be_bytes()),
            Checksummer::Crc32c(c) => B64.encode(c.to_be_bytes()),
            Checksummer::Crc64Nvme(c) => B64.encode((!c).to_be_bytes()),
            Checksummer::Sha1(h) => B64.encode(h.finalize()),
            Checksummer::Sha256(h) => B64.encode(h.finalize()),
        }
    }
}

/// CRC-64/NVME: reflected polynomial 0x9a6c9329ac4bc9b5, init and xorout all ones.
const CRC64_NVME_POLY: u64 = 0x9a6c_9329_ac4b_c9b5;

const fn crc64_tables() -> [[u64; 256]; 8] {
    let mut t = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u64;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ CRC64_NVME_POLY
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

static CRC64_TABLES: [[u64; 256]; 8] = crc64_tables();

/// Slice-by-8 update of a CRC-64/NVME register (pre-inverted).
fn crc64nvme_update(mut crc: u64, data: &[u8]) -> u64 {
    let t = &CRC64_TABLES;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        let v = crc ^ u64::from_le_bytes(b);
        crc = t[7][(v & 0xff) as usize]
            ^ t[6][((v >> 8) & 0xff) as usize]
            ^ t[5][((v >> 16) & 0xff) as usize]
            ^ t[4][((v >> 24) & 0xff) as usize]
            ^ t[3][((v >> 32) & 0xff) as usize]
            ^ t[2][((v >> 40) & 0xff) as usize]
            ^ t[1][((v >> 48) & 0xff) as usize]
            ^ t[0][(v >> 56) as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ u64::from(b)) & 0xff) as usize];
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hexval(algo: ChecksumAlgorithm, data: &[u8]) -> String {
        let mut c = Checksummer::new(algo);
        c.update(data);
        hex::encode(B64.decode(c.finalize_base64()).unwrap())
    }

    /// The standard "check" values of each CRC (CRC catalogue) for "123456789".
    #[test]
    fn check_values() {
        assert_eq!(hexval(ChecksumAlgorithm::Crc32, b"123456789"), "cbf43926");
        assert_eq!(hexval(ChecksumAlgorithm::Crc32c, b"123456789"), "e3069283");
        assert_eq!(
            hexval(ChecksumAlgorithm::Crc64Nvme, b"123456789"),
            "ae8b14860a799888"
        );
        assert_eq!(
            hexval(ChecksumAlgorithm::Sha1, b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hexval(ChecksumAlgorithm::Sha256, b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..10_007u32).map(|i| (i * 31 % 256) as u8).collect();
        for algo in ChecksumAlgorithm::ALL {
            let whole = hexval(algo, &data);
            let mut c = Checksummer::new(algo);
            for piece in data.chunks(13) {
                c.update(piece);
            }
            assert_eq!(
                hex::encode(B64.decode(c.finalize_base64()).unwrap()),
                whole,
                "{algo:?}"
            );
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            ChecksumAlgorithm::from_header_name("X-Amz-Checksum-CRC64NVME"),
            Some(ChecksumAlgorithm::Crc64Nvme)
        );
        assert_eq!(
            ChecksumAlgorithm::from_algorithm_name("crc32c"),
            Some(ChecksumAlgorithm::Crc32c)
        );
        assert_eq!(
            ChecksumAlgorithm::from_algorithm_name("SHA256"),
            Some(ChecksumAlgorithm::Sha256)
        );
        assert_eq!(
            ChecksumAlgorithm::from_header_name("x-amz-checksum-mode"),
            None
        );
    }
}
