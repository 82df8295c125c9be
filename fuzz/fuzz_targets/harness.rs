//! The whole filter in the in-memory harness (`s3crypt_core::harness`), from arbitrary
//! input: a sequence of client operations (puts, reads of every kind, multipart uploads,
//! copies, part copies, deletes, listings, restarts) and provider tampering, in shared-data
//! or Redis mode, with call-outs failing and delayed at random and every body cut at
//! seeded points, checked by the harness's model after every operation.
//!
//! Input: byte 0 flags (bit 0 Redis mode with two replicas, bit 1 random call-out faults,
//! bit 2 ChaCha20-Poly1305), bytes 1..9 the seed (little endian), then operations of 6
//! bytes each (a tag, then parameters), at most 12.
//!
//! - no panic, no stuck request;
//! - (a) what goes upstream as object data is verified ciphertext of the format and holds
//!   no plaintext marker; (b) what a client gets is a prefix of what it stored at that
//!   range, and exactly it when complete (and complete unless something was tampered
//!   with or a call-out failed).
#![no_main]
use libfuzzer_sys::fuzz_target;
use s3crypt_core::harness::drive::Splitter;
use s3crypt_core::harness::sim::{Op, Range, Sim, Tamper, KEYS};
use s3crypt_core::harness::Options;

/// The bytes of one operation.
struct Params<'a>(&'a [u8]);

impl Params<'_> {
    fn byte(&self, i: usize) -> u8 {
        self.0.get(i).copied().unwrap_or(0)
    }
    fn key(&self, i: usize) -> usize {
        usize::from(self.byte(i)) % KEYS.len()
    }
    fn u32_at(&self, i: usize) -> u32 {
        u32::from_le_bytes([
            self.byte(i),
            self.byte(i + 1),
            self.byte(i + 2),
            self.byte(i + 3),
        ])
    }
    fn range(&self, i: usize) -> Option<Range> {
        let x = u32::from(u16::from_le_bytes([self.byte(i + 1), self.byte(i + 2)]));
        let y = u32::from(self.byte(i + 3)) << 10;
        match self.byte(i) % 5 {
            0 | 1 => None,
            2 => Some(Range::FromTo(x, y)),
            3 => Some(Range::From(x)),
            _ => Some(Range::Suffix(x)),
        }
    }
}

fn op(p: &Params) -> Op {
    let len = |i| {
        usize::from(u16::from_le_bytes([p.byte(i), p.byte(i + 1)]))
            + usize::from(p.byte(i + 2) % 2) * 65_000
    };
    match p.byte(0) % 12 {
        0 | 1 => Op::Put {
            key: p.key(1),
            len: len(2),
            chunked: p.byte(5) % 4,
        },
        2 | 3 => Op::Get {
            key: p.key(1),
            range: p.range(2),
        },
        4 => Op::Head { key: p.key(1) },
        5 => Op::Part {
            key: p.key(1),
            n: u32::from(p.byte(2) % 3) + 1,
        },
        6 => Op::Multipart {
            key: p.key(1),
            // At most one 5 MiB part: each costs a lot under the sanitizer.
            big: p.byte(2) % 2,
            last: len(3) % 20_000 + 1,
            last_big: false,
        },
        7 => Op::Copy {
            src: p.key(1),
            dst: p.key(2),
            replace: p.byte(3) % 2 == 1,
        },
        8 => Op::PartCopy {
            src: p.key(1),
            dst: p.key(2),
            range: (p.byte(3) % 2 == 1)
                .then(|| (u32::from(p.byte(4)) << 8, u32::from(p.byte(5)) << 9)),
        },
        9 => Op::Delete { key: p.key(1) },
        10 => match p.byte(1) % 4 {
            0 => Op::List,
            _ => Op::Restart {
                proxy: usize::from(p.byte(2) % 2),
            },
        },
        _ => Op::Tamper {
            key: p.key(1),
            how: match p.byte(2) % 4 {
                0 => Tamper::Flip(p.u32_at(2)),
                1 => Tamper::Truncate(p.u32_at(2)),
                2 => Tamper::Envelope(p.u32_at(2)),
                _ => Tamper::Restore,
            },
            read: p.byte(3) % 4,
            range: p.range(4),
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let flags = data.first().copied().unwrap_or(0);
    let mut seed = [0u8; 8];
    for (d, s) in seed.iter_mut().zip(data.iter().skip(1)) {
        *d = *s;
    }
    let seed = u64::from_le_bytes(seed);
    let mut opts = if flags & 1 == 1 {
        Options::redis()
    } else {
        Options::shared()
    };
    if flags & 4 == 4 {
        opts = opts.with("suite", "chacha20-poly1305".into());
    }
    let mut sim = Sim::new(opts, seed, flags & 2 == 2, Splitter::Seeded);
    // Every run starts with an object stored, so that early copies and tampering act.
    let first = Op::Put {
        key: 0,
        len: 70_000,
        chunked: 0,
    };
    let ops = data
        .get(9..)
        .unwrap_or(&[])
        .chunks(6)
        .take(12)
        .map(|c| op(&Params(c)));
    for (i, op) in std::iter::once(first).chain(ops).enumerate() {
        if std::env::var_os("S3CRYPT_FUZZ_TRACE").is_some() {
            eprintln!("op {i}: {op:?}");
        }
        if let Err(e) = sim.run(&op) {
            panic!("operation {i} {op:?}: {e}");
        }
    }
});
