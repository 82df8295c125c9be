//! Genuine multipart objects, sealed by the crate and then changed: what a provider
//! that alters stored bytes can do.
//!
//! Input: `u8 suite` `u8 kind` (0: last part `final`, 1: end part, 2: closing part,
//! 3: version 1) `u8 parts` (1 or 2 before any end part) `u8 lengths` (part lengths and
//! nonces are drawn from it) `u64le seed` (split points, the range read), then
//! `(u16le offset, u8 xor)` changes to the stored bytes.
//!
//! - `PartsDecryptor` releases only bytes of the plaintext; it succeeds, with all of it,
//!   exactly when no stored byte changed;
//! - or (the seed chooses) a `RangeDecryptor` of any range releases only bytes of that
//!   range, all of them and successfully if the bytes it reads are unchanged;
//! - the walk and the sealed table (`Walk::try_end`) find the object's table or nothing.
#![no_main]
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use s3crypt_core::crypto::{DataKey, Random, SeededRandom, Suite};
use s3crypt_core::format::part_table::{PartTable, RangeDecryptor, Walk};
use s3crypt_core::format::{
    seal_closing, seal_end, FrameEncryptor, Geometry, Layout, PartsDecryptor,
};
use s3crypt_fuzz::{pieces, run, suite, walk, Input, Rng, SEED_KEY};

/// A sealed object: stored bytes, plaintext, its table, parts stored, v2.
type Sealed = (Vec<u8>, Vec<u8>, PartTable, u64, bool);

/// Seals a multipart object (cached: sealing 1,024 frames a part is most of the cost).
fn seal(s: Suite, kind: u8, n: u32, lengths_seed: u8) -> Rc<Sealed> {
    thread_local! {
        static CACHE: RefCell<HashMap<(u8, u8, u32, u8), Rc<Sealed>>> = RefCell::default();
    }
    CACHE.with_borrow_mut(|c| {
        c.entry((s.id(), kind, n, lengths_seed))
            .or_insert_with(|| Rc::new(seal_new(s, kind, n, lengths_seed)))
            .clone()
    })
}

fn seal_new(s: Suite, kind: u8, n: u32, lengths_seed: u8) -> Sealed {
    let key = DataKey::from_bytes(SEED_KEY);
    let nonces: Rc<dyn Random> = Rc::new(SeededRandom::new(lengths_seed.into()));
    let mut rng = Rng(lengths_seed.into());
    let lengths: Vec<u64> = (0..n).map(|_| 1 + rng.next() % 3000).collect();
    let plain: Vec<u8> = (0..lengths.iter().sum::<u64>())
        .map(|i| (i % 251) as u8)
        .collect();
    let mut stored = Vec::new();
    let mut at = 0;
    for (i, &len) in lengths.iter().enumerate() {
        let (number, last) = (i as u32 + 1, i as u32 + 1 == n);
        let p = &plain[at..at + len as usize];
        at += len as usize;
        if last && kind == 2 {
            stored
                .extend(seal_closing(s, &key, number, p, &lengths, Some(&ETAG), &nonces).unwrap());
            break;
        }
        let layout = if last && kind == 0 {
            Layout::Final
        } else {
            Layout::Part
        };
        let mut e = FrameEncryptor::new(s, &key, Geometry::part_in(layout, number, len), &nonces);
        e.push(p, &mut stored).unwrap();
        e.finish(&mut stored).unwrap();
    }
    let parts: Vec<(u32, u64)> = (1..).zip(lengths.iter().copied()).collect();
    let table = match kind {
        0 => PartTable::new(parts, true),
        1 => {
            stored.extend(seal_end(s, &key, n + 1, &lengths, Some(&ETAG), &nonces).unwrap());
            PartTable::from_end(&lengths)
        }
        2 => PartTable::from_closing(&lengths),
        _ => PartTable::new(parts, false),
    };
    let count = u64::from(n) + u64::from(kind == 1);
    let mut table = table.unwrap();
    if matches!(kind, 1 | 2) {
        // An end or closing part seals the object's multipart MD5 with its table.
        table.etag = Some(ETAG);
    }
    (stored, plain, table, count, kind != 3)
}

/// The multipart MD5 the fuzzed objects seal.
const ETAG: [u8; 16] = [0x3c; 16];

fn sealed(mut inp: Input) {
    let (s, kind) = (suite(inp.u8()), inp.u8() % 4);
    let n = 1 + u32::from(inp.u8() % 2);
    let lengths_seed = inp.u8() % 8;
    let mut rng = Rng(inp.u64());
    let sealed = seal(s, kind, n, lengths_seed);
    let (genuine, plain, table, count, v2) = &*sealed;
    let (count, v2) = (*count, *v2);
    let mut obj = genuine.clone();
    for c in inp.rest().chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([c[0], c[1]])) * 7 % obj.len();
        obj[at] ^= c[2];
    }
    let changed = obj != *genuine;
    let key = DataKey::from_bytes(SEED_KEY);

    // The whole object or a range of it (one or the other: each decrypts up to 1,024
    // frames a part).
    if rng.next() % 2 == 0 {
        let split = pieces(&obj, rng.next());
        let (out, r) = run(&mut PartsDecryptor::new(s, &key, count, v2), &split);
        assert!(
            plain.starts_with(&out),
            "released bytes that are not the plaintext"
        );
        assert_eq!(r.is_ok(), !changed, "changed: {changed}, result {r:?}");
        assert!(r.is_err() || out == *plain);
    } else {
        let first = rng.next() % plain.len() as u64;
        let last = first + rng.next() % (plain.len() as u64 - first);
        let plan = table.plan(first, last).unwrap();
        let bytes = &obj[plan.stored_first as usize..=plan.stored_last as usize];
        let clean = genuine[plan.stored_first as usize..=plan.stored_last as usize] == bytes[..];
        let (out, r) = run(
            &mut RangeDecryptor::new(s, &key, plan),
            &pieces(bytes, rng.next()),
        );
        let want = &plain[first as usize..=last as usize];
        assert!(
            want.starts_with(&out),
            "released bytes that are not the plaintext"
        );
        assert!(r.is_err() || out == want);
        // (A range skips the headers of the parts after its first: their numbers and lengths
        // come from the table, and every frame's associated data repeats them.)
        assert!(
            r.is_ok() || !clean,
            "range {first}..={last} of a genuine object: {r:?}"
        );
    }

    // The table, by walking and from the sealed end.
    let mut w = Walk::new(s, &key, obj.len() as u64, count, v2);
    match walk(&mut w, &obj) {
        Some(Ok(t)) => assert_eq!(&t, table),
        r => assert!(changed, "the walk of a genuine object failed: {r:?}"),
    }
    if let Some((a, b)) = w.end_read() {
        match w.try_end(&obj[a as usize..=b as usize]) {
            Some(t) => assert_eq!(&t, table),
            None => assert!(changed || !matches!(kind, 1 | 2), "no sealed table found"),
        }
        // The sealed ETag: only this object's, and the count of the client's parts.
        match w.end_etag(&obj[a as usize..=b as usize]) {
            Some(e) => assert_eq!(e, (ETAG, u64::from(n))),
            None => assert!(changed || !matches!(kind, 1 | 2), "no sealed ETag found"),
        }
    }
}

fuzz_target!(|data: &[u8]| sealed(Input(data)));
