//! Property tests: random sequences of operations (put, get, ranges, part reads, heads,
//! multipart uploads, copies, part copies, deletes, listings) on a few keys, every body
//! cut at random points, call-outs failed or delayed at random, the provider flipping,
//! truncating or restoring stored bytes at random times; after every operation the two
//! invariants hold (see [`super::check`]): (a) what went upstream as object data is
//! verified ciphertext of the format and holds no plaintext marker, (b) what came back is
//! a prefix of what the client stored at that range, and exactly it when complete (and
//! complete whenever nothing was tampered with and nothing failed).
//! A second property: how bodies are cut into chunks changes nothing a client sees.

use proptest::prelude::*;

use super::drive::Splitter;
use super::sim::{Op, Range, Sim, Tamper, KEYS};
use super::*;

fn range() -> impl Strategy<Value = Option<Range>> {
    prop_oneof![
        1 => Just(None),
        2 => (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Some(Range::FromTo(a, b))),
        1 => any::<u32>().prop_map(|a| Some(Range::From(a))),
        1 => any::<u32>().prop_map(|n| Some(Range::Suffix(n))),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let key = || 0usize..KEYS.len();
    let size = prop_oneof![0usize..100, 65_500usize..65_600, 100usize..300_000];
    let tamper = prop_oneof![
        any::<u32>().prop_map(Tamper::Flip),
        any::<u32>().prop_map(Tamper::Truncate),
        any::<u32>().prop_map(Tamper::Envelope),
        Just(Tamper::Restore),
    ];
    prop_oneof![
        4 => (key(), size, 0u8..4).prop_map(|(key, len, chunked)| Op::Put { key, len, chunked }),
        5 => (key(), range()).prop_map(|(key, range)| Op::Get { key, range }),
        1 => key().prop_map(|key| Op::Head { key }),
        1 => (key(), 1u32..4).prop_map(|(key, n)| Op::Part { key, n }),
        2 => (key(), prop_oneof![3 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)], 1usize..20_000, prop::bool::weighted(0.2))
            .prop_map(|(key, big, last, last_big)| Op::Multipart { key, big, last, last_big }),
        1 => (key(), key(), any::<bool>()).prop_map(|(src, dst, replace)| Op::Copy { src, dst, replace }),
        1 => (key(), key(), prop::option::of((any::<u32>(), 0u32..200_000))).prop_map(|(src, dst, range)| Op::PartCopy { src, dst, range }),
        1 => key().prop_map(|key| Op::Delete { key }),
        1 => Just(Op::List),
        3 => (key(), tamper, 0u8..4, range()).prop_map(|(key, how, read, range)| Op::Tamper { key, how, read, range }),
        1 => (0usize..2).prop_map(|proxy| Op::Restart { proxy }),
    ]
}

/// `n` cases, or `PROPTEST_CASES` times `n / 48` (for longer runs: `PROPTEST_CASES=480`).
fn cases(n: u32) -> u32 {
    let scale = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok());
    scale.map_or(n, |c| (c * n / 48).max(1))
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(48),
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn run_all(sim: &mut Sim, ops: &[Op]) -> Result<(), TestCaseError> {
    // Every case starts with an object stored, so that early copies and tampering act.
    let first = Op::Put {
        key: 0,
        len: 70_000,
        chunked: 0,
    };
    for (i, op) in std::iter::once(&first).chain(ops).enumerate() {
        sim.run(op)
            .map_err(|e| TestCaseError::fail(format!("op {i} {op:?}: {e}")))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Shared-data mode, no faults: every untampered read succeeds exactly.
    #[test]
    fn random_operations_keep_both_invariants(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..14)) {
        let mut sim = Sim::new(Options::shared(), seed, false, Splitter::Seeded);
        run_all(&mut sim, &ops)?;
    }

    /// Redis mode, call-outs failing and delayed at random, ChaCha20 for some seeds.
    #[test]
    fn random_operations_with_failing_call_outs(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..14)) {
        let opts = if seed % 2 == 0 { Options::redis() } else { Options::redis().with("suite", "chacha20-poly1305".into()) };
        let mut sim = Sim::new(opts, seed, true, Splitter::Seeded);
        run_all(&mut sim, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(12), ..config() })]

    /// How Envoy cuts bodies into chunks changes nothing a client sees (same seed: same
    /// keys and nonces, so even ETags agree), but for how much of a verified prefix a read
    /// cut short by tampering got before its reset.
    #[test]
    fn body_splits_change_nothing_clients_see(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..10)) {
        let mut whole = Sim::new(Options::shared(), seed, false, Splitter::Whole);
        let mut cut = Sim::new(Options::shared(), seed, false, Splitter::Seeded);
        run_all(&mut whole, &ops)?;
        run_all(&mut cut, &ops)?;
        prop_assert_eq!(whole.seen.len(), cut.seen.len());
        for (i, (a, b)) in whole.seen.iter().zip(&cut.seen).enumerate() {
            prop_assert!((a.0, &a.1, a.3) == (b.0, &b.1, b.3), "response {} differs: {:?} / {:?}", i, (a.0, &a.1, a.3), (b.0, &b.1, b.3));
            if a.3 {
                prop_assert!(a.2 == b.2, "response {} has other bytes", i);
            } else {
                // A read cut short by a tampered frame: how much verified prefix went out
                // before the reset depends on where the chunks ended (a chunk that fails
                // releases none of its frames); both are prefixes of one another.
                let n = a.2.len().min(b.2.len());
                prop_assert!(a.2[..n] == b.2[..n], "response {}: the released prefixes differ", i);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(32), ..config() })]

    /// Concurrent first readers of multipart objects on one worker (the part tables not
    /// cached), call-outs failing and delayed at random, one object's sealed table
    /// damaged or not: every read ends, and each either returns exactly its bytes or is
    /// refused (503 to retry, 500 for the damaged object); without faults and damage,
    /// every read succeeds.
    #[test]
    fn concurrent_first_reads_share_lookups_under_faults(
        seed in any::<u64>(),
        reads in prop::collection::vec((0usize..2, 0u8..3, any::<u32>()), 2..8),
        fail in 0u8..3,
        damage in any::<bool>(),
    ) {
        use super::check::{check_read, marked};
        use super::drive::RandomFaults;
        let mut h = Harness::shared(seed);
        let objs = [("a", marked(3000, 1)), ("b", marked(70_000, 2))];
        for (k, d) in &objs {
            prop_assert_eq!(h.multipart(k, &[d]).status, 200);
        }
        h.restart(0);
        if damage {
            let n = h.world.s3.raw("b").len();
            h.world.s3.flip("b", n - 100, 1);
        }
        h.world.random_faults = Some(RandomFaults { fail: f64::from(fail) * 0.15, delay: 0.5, max_delay_ms: 3000 });
        let reqs: Vec<(usize, Request, (usize, usize))> = reads
            .iter()
            .map(|&(o, kind, x)| {
                let (k, d) = &objs[o];
                let n = d.len();
                let a = x as usize % n;
                match kind {
                    0 => (o, Request::get(&obj(k)).header("range", &format!("bytes={a}-{}", a + 99)), (a, (a + 99).min(n - 1))),
                    1 => (o, Request::get(&format!("{}?partNumber=1", obj(k))), (0, n - 1)),
                    _ => (o, Request::get(&obj(k)).header("range", &format!("bytes=-{}", a + 1)), (n - a - 1, n - 1)),
                }
            })
            .collect();
        let wants: Vec<(usize, (usize, usize))> = reqs.iter().map(|(o, _, w)| (*o, *w)).collect();
        let got = h.send_all(reqs.into_iter().map(|(_, r, _)| (0, r)).collect());
        for (r, (o, w)) in got.iter().zip(wants) {
            prop_assert!(!r.stuck, "a read never ended");
            check_read(r, &objs[o].1, w).map_err(TestCaseError::fail)?;
            let damaged = damage && o == 1;
            if r.ok() {
                prop_assert!(!damaged, "a read of the damaged object succeeded");
            } else if fail == 0 && !damaged {
                // Delays alone never fail a read (they stay within the call-out timeouts).
                prop_assert!(false, "an undamaged read failed without failing call-outs: {} {:?}", r.status, r.code());
            } else {
                prop_assert!(r.status == 503 || (damaged && r.status == 500), "{} {:?}", r.status, r.code());
            }
        }
        prop_assert!(h.world.anomalies.is_empty(), "{:?}", h.world.anomalies);
    }
}

/// Found by `random_operations_with_failing_call_outs` (fresh-clone CI, 2026-12-01): part 1
/// of an empty single object, read with call-outs failing at random.
#[test]
fn part_one_of_an_empty_object_under_faults() {
    for seed in 0..64u64 {
        for faults in [false, true] {
            let mut sim = Sim::new(Options::redis(), seed, faults, Splitter::Seeded);
            let ops = [
                Op::Put {
                    key: 2,
                    len: 0,
                    chunked: 0,
                },
                Op::Part { key: 2, n: 1 },
            ];
            run_all(&mut sim, &ops).unwrap_or_else(|e| panic!("seed {seed} faults {faults}: {e}"));
        }
    }
}
