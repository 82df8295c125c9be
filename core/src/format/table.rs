//! The part table a multipart object carries in its end part or closing table frame:
//! its run-length encoding, sealing and parsing.

use std::rc::Rc;

use super::*;
use crate::crypto::Random;

/// The end part numbered `number`, sealing the plaintext lengths of parts
/// `1 … number − 1` (`lengths`) as runs of equal lengths; more runs than fit are sealed as
/// "no table" (readers then walk the parts). `PART_OVERHEAD` bytes.
pub fn seal_end(
    suite: Suite,
    dek: &DataKey,
    number: u32,
    lengths: &[u64],
    rng: &Rc<dyn Random>,
) -> Result<Vec<u8>, FormatError> {
    let table = end_table(lengths, END_SEALED_LEN);
    let mut out = Vec::with_capacity(PART_OVERHEAD as usize);
    let mut e = FrameEncryptor::new(suite, dek, Geometry::end(number), rng);
    e.push(&table, &mut out)?;
    e.finish(&mut out)?;
    Ok(out)
}

/// The closing part numbered `number` (the object's last) holding `plain`, sealing the
/// plaintext lengths of all parts `1 … number` (`lengths`, this one's last); more runs
/// than fit are sealed as "no table". `plain.len() + PART_OVERHEAD` bytes.
pub fn seal_closing(
    suite: Suite,
    dek: &DataKey,
    number: u32,
    plain: &[u8],
    lengths: &[u64],
    rng: &Rc<dyn Random>,
) -> Result<Vec<u8>, FormatError> {
    if lengths.last() != Some(&(plain.len() as u64)) || lengths.len() as u64 != u64::from(number) {
        return Err(FormatError::Length);
    }
    let table = end_table(lengths, CLOSING_SEALED_LEN);
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

/// The sealed bytes of an end part or closing table frame (`size` bytes): `u8 1 ‖ u32be
/// parts ‖ u32be runs ‖ runs × (u32be count ‖ u64be length) ‖ zeros` (`runs = 0`: no
/// table, when more runs than fit would be needed). `lengths`: the parts of one object
/// (at most 10,000).
pub fn end_table(lengths: &[u64], size: u64) -> Vec<u8> {
    let mut runs: Vec<(u32, u64)> = Vec::new();
    for &l in lengths {
        match runs.last_mut() {
            // A run is at most `lengths.len()` ≤ 10,000 parts long: nothing to saturate.
            Some((n, len)) if *len == l => *n = n.saturating_add(1),
            _ => runs.push((1, l)),
        }
    }
    if runs.len() > max_runs(size) {
        runs.clear();
    }
    let mut t = Vec::with_capacity(size as usize);
    t.push(1);
    t.extend_from_slice(&(lengths.len() as u32).to_be_bytes());
    t.extend_from_slice(&(runs.len() as u32).to_be_bytes());
    for (n, l) in runs {
        t.extend_from_slice(&n.to_be_bytes());
        t.extend_from_slice(&l.to_be_bytes());
    }
    t.resize(size as usize, 0);
    t
}

/// Runs a sealed table of `size` bytes holds.
fn max_runs(size: u64) -> usize {
    (size as usize).saturating_sub(9) / 12
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
    if (size != END_SEALED_LEN && size != CLOSING_SEALED_LEN) || t.first() != Some(&1) {
        return Err(bad);
    }
    if u64::from(u32_at(1)?) != parts {
        return Err(bad);
    }
    let runs = u32_at(5)? as usize;
    if runs > max_runs(size) {
        return Err(bad);
    }
    let end = runs
        .checked_mul(12)
        .and_then(|n| n.checked_add(9))
        .ok_or(bad)?;
    if t.get(end..).ok_or(bad)?.iter().any(|&b| b != 0) {
        return Err(bad);
    }
    if runs == 0 {
        return Ok(None);
    }
    let mut lengths = Vec::new();
    for run in t.get(9..end).ok_or(bad)?.chunks_exact(12) {
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
