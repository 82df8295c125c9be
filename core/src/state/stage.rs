//! Short last parts kept until CompleteMultipartUpload, so that the filter can close the
//! object with a closing part (docs/FORMAT.md, "Layout closing").
//!
//! A part stored shorter than 5 MiB can only be an object's last, and S3 lets nothing
//! follow it: the part table cannot go in a part after it. So UploadPart keeps a copy of
//! such a part's ciphertext (never plaintext: the bytes it sent upstream) in the state
//! store, and Complete rewrites it as a closing part that also seals the table.
//!
//! A staged part is a cache, never an authority: Complete uses it only if it is this
//! upload's, for the listed last part, its MD5 is the ETag the backend lists for that part
//! and it decrypts under the upload's data key; anything else (evicted, lost, replaced,
//! forged) and the object is completed as before, readers walking its parts. Memory is
//! bounded: in shared data by a fixed number of slots, in Redis by the upload TTL.

use crate::state::upload_tag;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// First line of a staged record.
const MAGIC: &str = "s3crypt-staged-part 1";

/// A staged part as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub created: i64,
    pub number: u32,
    pub cipher: Vec<u8>,
}

/// The record: `MAGIC \n created \n number \n upload tag \n base64(ciphertext)` (text, so
/// that webdis hands it back in a JSON string).
pub fn encode(upload_id: &str, created: i64, number: u32, cipher: &[u8]) -> Vec<u8> {
    let mut v = format!("{MAGIC}\n{created}\n{number}\n{}\n", upload_tag(upload_id)).into_bytes();
    v.extend_from_slice(B64.encode(cipher).as_bytes());
    v
}

/// Longest record a staged part (stored under 5 MiB) can make: anything longer is not
/// decoded at all (the store may be written by others).
const MAX_RECORD: usize = 256 + (crate::format::MIN_PART_SIZE as usize).div_ceil(3) * 4;

/// Reads a record if it is `upload_id`'s.
pub fn decode(v: &[u8], upload_id: &str) -> Option<Staged> {
    if v.len() > MAX_RECORD {
        return None;
    }
    let text = std::str::from_utf8(v).ok()?;
    let mut f = text.splitn(5, '\n');
    if f.next()? != MAGIC {
        return None;
    }
    let created = f.next()?.parse().ok()?;
    let number = f.next()?.parse().ok()?;
    if f.next()? != upload_tag(upload_id) {
        return None;
    }
    let cipher = B64.decode(f.next()?).ok()?;
    Some(Staged {
        created,
        number,
        cipher,
    })
}

/// Shared-data key of slot `i`'s record.
pub fn slot_key(i: u32) -> String {
    format!("s3crypt/stage/{i}")
}

/// Shared-data key of slot `i`'s owner line (`created sequence upload-tag`): read to
/// choose a slot without copying every slot's megabytes into the VM.
pub fn owner_key(i: u32) -> String {
    format!("s3crypt/stage/{i}/owner")
}

/// The owner line of a slot: when, in which order (a count over all slots) and for
/// which upload it was staged.
pub fn owner_line(upload_id: &str, created: i64, seq: u64) -> String {
    format!("{created} {seq} {}", upload_tag(upload_id))
}

#[derive(Clone, Copy)]
struct Owner<'a> {
    created: i64,
    seq: u64,
    tag: &'a str,
}

fn parse_owner(v: &[u8]) -> Option<Owner<'_>> {
    let mut f = std::str::from_utf8(v).ok()?.splitn(3, ' ');
    Some(Owner {
        created: f.next()?.parse().ok()?,
        seq: f.next()?.parse().ok()?,
        tag: f.next()?,
    })
}

/// The slot an upload's staged part goes to, given each slot's owner line, and the
/// sequence number to stage it under: the slot it already has, else a free or expired
/// one (older than `ttl`, or from the future), else the one staged first (evicted: that
/// upload then completes without a table).
pub fn choose_slot(
    owners: &[Option<Vec<u8>>],
    upload_id: &str,
    now: i64,
    ttl: i64,
) -> Option<(u32, u64)> {
    let tag = upload_tag(upload_id);
    let parsed: Vec<Option<Owner>> = owners
        .iter()
        .map(|o| o.as_deref().and_then(parse_owner))
        .collect();
    let seq = parsed
        .iter()
        .flatten()
        .map(|o| o.seq)
        .max()
        .map_or(0, |m| m.saturating_add(1));
    let expired = |c: i64| now.checked_sub(c).is_none_or(|age| age > ttl || age < 0);
    let slot = parsed
        .iter()
        .position(|o| o.is_some_and(|o| o.tag == tag))
        .or_else(|| {
            parsed
                .iter()
                .position(|o| o.is_none_or(|o| expired(o.created)))
        })
        .or_else(|| {
            parsed
                .iter()
                .enumerate()
                .filter_map(|(i, o)| o.map(|o| (o.seq, i)))
                .min()
                .map(|(_, i)| i)
        })?;
    Some((u32::try_from(slot).ok()?, seq))
}

/// The slot holding an upload's staged part, if any.
pub fn find_slot(owners: &[Option<Vec<u8>>], upload_id: &str) -> Option<u32> {
    let tag = upload_tag(upload_id);
    owners
        .iter()
        .position(|o| {
            o.as_deref()
                .and_then(parse_owner)
                .is_some_and(|o| o.tag == tag)
        })
        .and_then(|i| u32::try_from(i).ok())
}

/// Redis key of an upload's staged part.
pub fn redis_key(upload_id: &str) -> String {
    format!("s3crypt:stage:{}", upload_tag(upload_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_name_their_upload() {
        let v = encode("up/1\n", 1_700_000_000, 7, b"\x00\xffcipher");
        assert_eq!(
            decode(&v, "up/1\n"),
            Some(Staged {
                created: 1_700_000_000,
                number: 7,
                cipher: b"\x00\xffcipher".to_vec()
            })
        );
        assert!(std::str::from_utf8(&v).is_ok());
        assert_eq!(decode(&v, "up/2"), None);
        for bad in [&b""[..], b"s3crypt-staged-part 1\nx\n7\n", &[0xff]] {
            assert_eq!(decode(bad, "up/1\n"), None);
        }
        // The largest part that can be staged fits; a record beyond it is not decoded.
        let most = vec![7u8; crate::format::MIN_PART_SIZE as usize - 1];
        let v = encode("u", i64::MIN, 9_999, &most);
        assert_eq!(decode(&v, "u").map(|s| s.cipher.len()), Some(most.len()));
        let mut huge = encode("u", 0, 1, &[]);
        let head = huge.len();
        huge.extend(std::iter::repeat_n(b'A', (MAX_RECORD / 4 + 1) * 4));
        assert_eq!(decode(&huge, "u"), None, "valid base64, but too long");
        let fits = head + (MAX_RECORD - head) / 4 * 4;
        assert!(decode(&huge[..fits], "u").is_some());
        assert!(redis_key("a b/c?")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ':'));
    }

    #[test]
    fn slots_are_reused_then_freed_then_evicted_first_staged_first() {
        let own = |id: &str, t: i64, seq: u64| Some(owner_line(id, t, seq).into_bytes());
        let (now, ttl) = (10_000, 1_000);
        // Its own slot first, then a free one, then an expired one, then the first staged.
        let owners = vec![own("a", 9_500, 4), None, own("b", 9_900, 5)];
        assert_eq!(choose_slot(&owners, "b", now, ttl), Some((2, 6)));
        assert_eq!(choose_slot(&owners, "c", now, ttl), Some((1, 6)));
        let owners = vec![own("a", 9_500, 1), own("x", 8_000, 0), own("b", 9_900, 2)];
        assert_eq!(choose_slot(&owners, "c", now, ttl), Some((1, 3)));
        let owners = vec![own("a", 9_500, 1), own("x", 20_000, 0), own("b", 9_900, 2)];
        assert_eq!(
            choose_slot(&owners, "c", now, ttl),
            Some((1, 3)),
            "from the future"
        );
        // Staged in the same second: the order decides, not the slot index.
        let owners = vec![own("a", 9_900, 7), own("x", 9_900, 3), own("b", 9_900, 9)];
        assert_eq!(
            choose_slot(&owners, "c", now, ttl),
            Some((1, 10)),
            "first staged"
        );
        assert_eq!(find_slot(&owners, "b"), Some(2));
        assert_eq!(find_slot(&owners, "c"), None);
        assert_eq!(choose_slot(&[], "c", now, ttl), None);
        // Garbage owner lines count as free; extreme times and counts do not wrap.
        let owners = vec![Some(b"junk".to_vec()), own("x", i64::MIN, u64::MAX)];
        assert_eq!(
            choose_slot(&owners, "c", i64::MAX, ttl),
            Some((0, u64::MAX))
        );
    }
}
