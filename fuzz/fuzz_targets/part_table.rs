//! Multipart objects: the sealed part table (`parse_end_table`), the cached table
//! (`PartTable::decode`, `plan`), the table walk (`Walk`) and the decryptors
//! (`PartsDecryptor`, `FrameDecryptor`, `RangeDecryptor`).
//!
//! Input: a mode byte, then per mode:
//! - 0 `u8 flags` (1: closing-table size) `u16le parts`, table bytes (zero-padded):
//!   what parses has that many lengths and seals again to the same lengths;
//! - 1 `u64le first` `u64le last`, a cached table: it encodes back to itself, a range
//!   plan lies within the object;
//! - 2 `u8 suite` `u8 v2` `u16le parts` `u64le stored length`, object bytes: under a key
//!   no input is sealed with, the walk never finds a table; under the seeds' key any table
//!   found is that many parts of that stored length;
//! - 3 `u8 suite` `u8 v2` `u16le parts` `u64le split seed`, object bytes: a whole object;
//! - 4 `u8 suite` `u8 kind` `u32le length` `u64le split seed`, stream bytes: one
//!   stream, a single object of that length (kind 0) or the part its header announces;
//!   (3, 4: under the other key nothing is released; under the seeds' key the result is
//!   the same whole and in pieces, and never more than the stream holds)
//! (Genuine sealed objects, changed or not, are the `sealed` target's.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use s3crypt_core::crypto::DataKey;
use s3crypt_core::format::part_table::{PartTable, Walk};
use s3crypt_core::format::{
    end_table, parse_end_table, parse_part_header, sealed_etag, Decrypt, FrameDecryptor, Geometry,
    PartsDecryptor, CLOSING_SEALED_LEN, END_SEALED_LEN, MAX_SINGLE,
};
use s3crypt_fuzz::{pieces, run, suite, walk, Input, OTHER_KEY, SEED_KEY};

fn end_tables(mut inp: Input) {
    let size = if inp.u8() & 1 == 0 {
        END_SEALED_LEN
    } else {
        CLOSING_SEALED_LEN
    };
    let parts = u64::from(inp.u16());
    let mut t = inp.rest().to_vec();
    t.resize(size as usize, 0);
    if let Ok(Some(l)) = parse_end_table(&t, parts) {
        assert!(l.len() as u64 == parts && l.iter().all(|&x| x <= MAX_SINGLE));
        // Re-encoded in its own version (with its sealed MD5, if any), it reads the same.
        let md5 = sealed_etag(&t);
        assert_eq!(
            parse_end_table(&end_table(&l, size, md5.as_ref()), parts),
            Ok(Some(l.clone()))
        );
        assert_eq!(sealed_etag(&end_table(&l, size, md5.as_ref())), md5);
        for t in [PartTable::from_end(&l), PartTable::from_closing(&l)]
            .into_iter()
            .flatten()
        {
            assert_eq!(t.plain_len(), l.iter().sum::<u64>());
            if t.plain_len() > 0 {
                assert!(t.plan(0, t.plain_len() - 1).is_some());
            }
        }
    }
}

fn cached_table(mut inp: Input) {
    let (first, last) = (inp.u64(), inp.u64());
    let Some(t) = PartTable::decode(inp.rest()) else {
        return;
    };
    assert_eq!(PartTable::decode(t.encode().as_bytes()), Some(t.clone()));
    let first = first % t.plain_len().max(1);
    if let Some(p) = t.plan(first, last) {
        assert!(p.stored_first <= p.stored_last && p.stored_last < t.stored_len());
    }
}

fn walks(mut inp: Input) {
    let (s, v2, parts, stored) = (suite(inp.u8()), inp.u8() & 1 == 1, inp.u16(), inp.u64());
    let obj = inp.rest();
    let mut w = Walk::new(s, &DataKey::from_bytes(OTHER_KEY), stored, parts.into(), v2);
    assert!(
        !matches!(walk(&mut w, obj), Some(Ok(_))),
        "a table from unsealed bytes"
    );
    if let Some((a, b)) = w.end_read() {
        let bytes = obj.get(a as usize..=b as usize).unwrap_or(&[]);
        assert!(
            w.try_end(bytes).is_none(),
            "a sealed table from unsealed bytes"
        );
    }
    let mut w = Walk::new(s, &DataKey::from_bytes(SEED_KEY), stored, parts.into(), v2);
    if let Some(Ok(t)) = walk(&mut w, obj) {
        assert_eq!(
            (t.stored_len(), t.count() as u64),
            (stored, u64::from(parts))
        );
    }
}

/// A decryptor made by `make` under either key, on `data` whole and in pieces.
fn decrypts(data: &[u8], seed: u64, limit: u64, make: &dyn Fn(&DataKey) -> Box<dyn Decrypt>) {
    let (out, _) = run(
        &mut *make(&DataKey::from_bytes(OTHER_KEY)),
        &pieces(data, seed),
    );
    assert!(
        out.is_empty(),
        "{} bytes released from unsealed input",
        out.len()
    );
    let key = DataKey::from_bytes(SEED_KEY);
    let whole = run(&mut *make(&key), &[data]);
    assert_eq!(
        whole,
        run(&mut *make(&key), &pieces(data, seed)),
        "depends on the split"
    );
    assert!(whole.0.len() as u64 <= limit.min(data.len() as u64));
}

fn objects(mut inp: Input) {
    let (s, v2, parts, seed) = (suite(inp.u8()), inp.u8() & 1 == 1, inp.u16(), inp.u64());
    let make =
        |k: &DataKey| -> Box<dyn Decrypt> { Box::new(PartsDecryptor::new(s, k, parts.into(), v2)) };
    decrypts(inp.rest(), seed, u64::MAX, &make);
}

fn streams(mut inp: Input) {
    let (s, kind, len, seed) = (suite(inp.u8()), inp.u8(), inp.u32(), inp.u64());
    let stream = inp.rest();
    let geo = match kind {
        0 => Geometry::single(len.into()),
        _ => match stream.get(..16).and_then(parse_part_header) {
            Some(g) if g.plain_len <= MAX_SINGLE => g,
            _ => return,
        },
    };
    let make = |k: &DataKey| -> Box<dyn Decrypt> { Box::new(FrameDecryptor::whole(s, k, geo)) };
    decrypts(stream, seed, geo.plain_len, &make);
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    match inp.u8() % 5 {
        0 => end_tables(inp),
        1 => cached_table(inp),
        2 => walks(inp),
        3 => objects(inp),
        _ => streams(inp),
    }
});
