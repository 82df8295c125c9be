//! The part table a multipart object carries in its end part or closing table frame:
//! its run-length encoding, sealing and parsing.

use std::rc::Rc;

use super::*;
use crate::crypto::Random;

/// The end part numbered `number`, sealing the plaintext lengths of parts
/// `1 … number − 1` (`lengths`) as runs of equal lengths, and the object's plaintext
/// multipart MD5 `etag` if known; more runs than fit are sealed as "no table" (readers
/// then walk the parts). `PART_OVERHEAD` bytes.
pub fn seal_end(
    suite: Suite,
    dek: &DataKey,
    number: u32,
    lengths: &[u64],
    etag: Option<&[u8; 16]>,
    rng: &Rc<dyn Random>,
) -> Result<Vec<u8>, FormatError> {
    let table = end_table(lengths, END_SEALED_LEN, etag);
    let mut out = Vec::with_capacity(PART_OVERHEAD as usize);
    let mut e = FrameEncryptor::new(suite, dek, Geometry::end(number), rng);
    e.push(&table, &mut out)?;
    e.finish(&mut out)?;
    Ok(out)
}

/// The closing part numbered `number` (the object's last) holding `plain`, sealing the
/// plaintext lengths of all parts `1 … number` (`lengths`, this one's last) and the
/// object's plaintext multipart MD5 `etag` if known; more runs than fit are refused. `plain.len() + PART_OVERHEAD` bytes.
pub fn seal_closing(
    suite: Suite,
    dek: &DataKey,
    number: u32,
    plain: &[u8],
    lengths: &[u64],
    etag: Option<&[u8; 16]>,
    rng: &Rc<dyn Random>,
) -> Result<Vec<u8>, FormatError> {
    if lengths.last() != Some(&(plain.len() as u64)) || lengths.len() as u64 != u64::from(number) {
        return Err(FormatError::Length);
    }
    let table = end_table(lengths, CLOSING_SEALED_LEN, etag);
    if table.get(5..9) == Some(&[0u8; 4][..]) {
        // More runs than fit: a closing part must hold its table (it authenticates the
        // part's length), so the object is not closed this way.
        return Err(FormatError::Length);
    }
    let geo = Geometry::closing(number, plain.len() as u64);
    let capacity = geo.cipher_len().and_then(|n| usize::try_from(n).ok());
    let mut out = Vec::with_capacity(capacity.unwrap_or(0));
    let mut e = FrameEncryptor::new(suite, dek, geo, rng);
    e.push(plain, &mut out)?;
    e.finish(&mut out)?;
    let mut t = FrameEncryptor::new(suite, dek, Geometry::closing_table(number), rng);
    t.push(&table, &mut out)?;
    t.finish(&mut out)?;
    Ok(out)
}

/// Table version 1: `u8 1 ‖ u32be parts ‖ u32be runs` (no ETag; written before the
/// multipart ETag was sealed, still read).
const HEADER_V1: usize = 9;
/// Table version 2: `u8 2 ‖ u32be parts ‖ u32be runs ‖ md5 (16)`, the MD5 of the parts'
/// plaintext MD5s (the object's ETag is its hex and `-parts`).
const HEADER_V2: usize = 25;

/// The sealed bytes of an end part or closing table frame (`size` bytes): `u8 version ‖
/// u32be parts ‖ u32be runs ‖ [md5 (16), version 2] ‖ runs × (u32be count ‖ u64be length)
/// ‖ zeros` (`runs = 0`: no table, when more runs than fit would be needed). Version 2
/// when `etag` (the object's multipart MD5) is given, else 1. `lengths`: the parts of one
/// object (at most 10,000).
pub fn end_table(lengths: &[u64], size: u64, etag: Option<&[u8; 16]>) -> Vec<u8> {
    let mut runs: Vec<(u32, u64)> = Vec::new();
    for &l in lengths {
        match runs.last_mut() {
            // A run is at most `lengths.len()` ≤ 10,000 parts long: nothing to saturate.
            Some((n, len)) if *len == l => *n = n.saturating_add(1),
            _ => runs.push((1, l)),
        }
    }
    let header = if etag.is_some() { HEADER_V2 } else { HEADER_V1 };
    if runs.len() > max_runs(size, header) {
        runs.clear();
    }
    let mut t = Vec::with_capacity(size as usize);
    t.push(if etag.is_some() { 2 } else { 1 });
    t.extend_from_slice(&(lengths.len() as u32).to_be_bytes());
    t.extend_from_slice(&(runs.len() as u32).to_be_bytes());
    if let Some(m) = etag {
        t.extend_from_slice(m);
    }
    for (n, l) in runs {
        t.extend_from_slice(&n.to_be_bytes());
        t.extend_from_slice(&l.to_be_bytes());
    }
    t.resize(size as usize, 0);
    t
}

/// Runs a sealed table of `size` bytes with a header of `header` bytes holds.
fn max_runs(size: u64, header: usize) -> usize {
    (size as usize).saturating_sub(header) / 12
}

/// The table version of (verified) sealed table bytes, and its header length.
fn table_header(t: &[u8]) -> Option<usize> {
    match t.first() {
        Some(1) => Some(HEADER_V1),
        Some(2) => Some(HEADER_V2),
        _ => None,
    }
}

/// The object's plaintext multipart MD5 sealed in (verified) table bytes that
/// [`parse_end_table`] accepted: `None` for a version 1 table, which has none.
pub fn sealed_etag(t: &[u8]) -> Option<[u8; 16]> {
    (table_header(t)? == HEADER_V2).then(|| t.get(9..HEADER_V2)?.try_into().ok())?
}

/// Reads the (verified) sealed bytes of an end part or a closing table frame: the lengths
/// of the `parts` parts it lists, `Ok(None)` if it holds no table; an error if it is not a
/// table of exactly that many parts of at most 5 GiB.
pub fn parse_end_table(t: &[u8], parts: u64) -> Result<Option<Vec<u64>>, FormatError> {
    let bad = FormatError::Integrity;
    let u32_at = |i: usize| -> Result<u32, FormatError> {
        let b = t.get(i..).and_then(<[u8]>::first_chunk).ok_or(bad)?;
        Ok(u32::from_be_bytes(*b))
    };
    let size = t.len() as u64;
    if size != END_SEALED_LEN && size != CLOSING_SEALED_LEN {
        return Err(bad);
    }
    let header = table_header(t).ok_or(bad)?;
    if u64::from(u32_at(1)?) != parts {
        return Err(bad);
    }
    let runs = u32_at(5)? as usize;
    if runs > max_runs(size, header) {
        return Err(bad);
    }
    let end = runs
        .checked_mul(12)
        .and_then(|n| n.checked_add(header))
        .ok_or(bad)?;
    if t.get(end..).ok_or(bad)?.iter().any(|&b| b != 0) {
        return Err(bad);
    }
    if runs == 0 {
        return Ok(None);
    }
    let mut lengths = Vec::new();
    for run in t.get(header..end).ok_or(bad)?.chunks_exact(12) {
        let (n, l) = run.split_first_chunk::<4>().ok_or(bad)?;
        let n = u32::from_be_bytes(*n);
        let l = u64::from_be_bytes(l.try_into().map_err(|_| bad)?);
        let total = (lengths.len() as u64)
            .checked_add(u64::from(n))
            .ok_or(bad)?;
        if n == 0 || l > MAX_SINGLE || total > parts {
            return Err(bad);
        }
        lengths.resize(usize::try_from(total).map_err(|_| bad)?, l);
    }
    if lengths.len() as u64 != parts {
        return Err(bad);
    }
    Ok(Some(lengths))
}
