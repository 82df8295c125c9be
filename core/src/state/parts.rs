//! Part ETags: S3 answers an UploadPart with the MD5 of the part's bytes, lists it in
//! ListParts and expects it back in CompleteMultipartUpload. Clients compare it with the
//! MD5 of what they sent (s3cmd does, and retries until it matches), so the filter
//! answers the MD5 of the plaintext, and maps it back to the backend's ETag (the MD5 of
//! the ciphertext, or whatever the backend chose) when it rebuilds a Complete.
//!
//! Per upload, per part number, the entry of the part's newest upload: the backend's ETag
//! in clear (the backend made it; it says nothing about the plaintext) and the plaintext
//! MD5 sealed with the upload's AEAD suite under a key derived from the upload's data key
//! (HMAC-SHA256(DEK, [`KEY_LABEL`])), with a random nonce and the upload, the part number
//! and the backend ETag as associated data: whoever can read the store learns nothing
//! about the plaintext, and whoever can write it cannot make an entry that opens for
//! another upload, another part number or another backend ETag. (A keyed digest would
//! let Complete compare, but ListParts must show the MD5 itself: it is sealed.)
//!
//! Stored as text (webdis hands values back in JSON strings):
//! entry `1 <base64(nonce ‖ sealed MD5 ‖ tag)> <backend ETag>`.
//! * Redis: one hash per upload ([`redis_key`]), field = part number: concurrent parts
//!   write different fields, a part uploaded again overwrites its own; `HSET` then
//!   `EXPIRE` (the upload TTL); Complete and ListParts read it with one `HGETALL`.
//! * Shared data: one value per upload ([`shared_key`]), a header line and one line
//!   `<number> <entry>` per part, updated by compare-and-swap (no update of another
//!   worker is lost). Created empty with the upload record, so that every update has a
//!   version to compare with.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{request, upload_tag, Unavailable, WebdisRequest};
use crate::config::Config;
use crate::crypto::{DataKey, FrameAead, Random, Suite, KEY_LEN, NONCE_LEN, TAG_LEN};

/// What the part-ETag key is derived with from the upload's data key.
pub const KEY_LABEL: &[u8] = b"s3crypt part ETag key v1";
/// First word of an entry.
const ENTRY_VERSION: &str = "1";
/// First line of the shared-data value.
pub const SHARED_HEADER: &str = "s3crypt-parts 1";
/// Longest backend ETag recorded (S3's are 34 characters with their quotes).
pub const MAX_BACKEND_ETAG: usize = 104;

/// An opened entry: the backend's ETag of the part's newest upload, and the MD5 of its
/// plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartEtag {
    pub backend: String,
    pub md5: [u8; 16],
}

/// A backend ETag an entry can hold: short, printable, no XML markup (it goes back into
/// a part list and a listing). Anything else is refused when it is recorded.
pub fn recordable_etag(e: &str) -> bool {
    !e.is_empty()
        && e.len() <= MAX_BACKEND_ETAG
        && e.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !e.contains(['&', '<', '>'])
}

/// The key an upload's part entries are sealed with: derived from its data key, for its
/// suite (derived once per request, however many entries it opens).
pub struct EtagKey(FrameAead);

impl EtagKey {
    pub fn new(suite: Suite, dek: &DataKey) -> EtagKey {
        let key = match Hmac::<Sha256>::new_from_slice(&dek.0) {
            Ok(mut m) => {
                m.update(KEY_LABEL);
                let k: [u8; KEY_LEN] = m.finalize().into_bytes().into();
                k
            }
            // HMAC takes keys of any length.
            Err(_) => [0; KEY_LEN],
        };
        EtagKey(FrameAead::new(suite, &DataKey::from_bytes(key)))
    }

    /// The entry of part `number` of upload `upload_id`: its backend ETag and its
    /// plaintext MD5, sealed. `None` if there is no randomness or the ETag is not
    /// recordable.
    pub fn seal(
        &self,
        upload_id: &str,
        number: u32,
        backend: &str,
        md5: &[u8; 16],
        rng: &dyn Random,
    ) -> Option<String> {
        if !recordable_etag(backend) {
            return None;
        }
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).ok()?;
        let mut buf = *md5;
        let tag = self
            .0
            .seal(&nonce, &aad(upload_id, number, backend), &mut buf)
            .ok()?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + 16 + TAG_LEN);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&buf);
        sealed.extend_from_slice(&tag);
        Some(format!("{ENTRY_VERSION} {} {backend}", B64.encode(sealed)))
    }

    /// Opens the entry of part `number` of upload `upload_id`: `None` if it is not one
    /// (forged, moved from another part or upload, another backend ETag put in).
    pub fn open(&self, upload_id: &str, number: u32, v: &str) -> Option<PartEtag> {
        let mut f = v.splitn(3, ' ');
        if f.next()? != ENTRY_VERSION {
            return None;
        }
        let sealed = B64.decode(f.next()?).ok()?;
        let backend = f.next()?;
        if !recordable_etag(backend) || sealed.len() != NONCE_LEN + 16 + TAG_LEN {
            return None;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(16);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let tag: [u8; TAG_LEN] = tag.try_into().ok()?;
        let mut md5: [u8; 16] = ct.try_into().ok()?;
        self.0
            .open(&nonce, &aad(upload_id, number, backend), &mut md5, &tag)
            .ok()?;
        Some(PartEtag {
            backend: backend.to_string(),
            md5,
        })
    }
}

/// Associated data: label, upload, part number, backend ETag (each length-prefixed).
fn aad(upload_id: &str, number: u32, backend: &str) -> Vec<u8> {
    let tag = upload_tag(upload_id);
    let mut a = Vec::with_capacity(64 + backend.len());
    for f in [
        KEY_LABEL,
        tag.as_bytes(),
        &number.to_be_bytes(),
        backend.as_bytes(),
    ] {
        a.extend_from_slice(&(f.len() as u64).to_be_bytes());
        a.extend_from_slice(f);
    }
    a
}

/// Shared-data key of an upload's part entries.
pub fn shared_key(upload_id: &str) -> String {
    format!("s3crypt/mpu/{upload_id}/parts")
}

/// Redis key of an upload's part entries (a hash).
pub fn redis_key(upload_id: &str) -> String {
    format!("s3crypt:parts:{}", upload_tag(upload_id))
}

/// The shared-data value `cur` with part `number`'s entry set to `entry` (its earlier
/// entry, if any, dropped). Lines that do not parse are dropped.
pub fn shared_with(cur: Option<&[u8]>, number: u32, entry: &str) -> Vec<u8> {
    let mut out = format!("{SHARED_HEADER}\n");
    for (n, e) in cur.map(shared_entries).unwrap_or_default() {
        if n != number {
            out.push_str(&format!("{n} {e}\n"));
        }
    }
    out.push_str(&format!("{number} {entry}\n"));
    out.into_bytes()
}

/// The entries of a shared-data value, by part number (nothing if it is not one).
pub fn shared_entries(v: &[u8]) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::str::from_utf8(v) else {
        return out;
    };
    let mut lines = text.split('\n');
    if lines.next() != Some(SHARED_HEADER) {
        return out;
    }
    for line in lines {
        if let Some((n, e)) = line.split_once(' ') {
            if let Ok(n) = n.parse::<u32>() {
                out.insert(n, e.to_string());
            }
        }
    }
    out
}

/// `HSET key number entry` (the entry in the PUT body).
pub fn hset(cfg: &Config, key: &str, number: u32, entry: &str) -> WebdisRequest {
    request(
        cfg,
        "PUT",
        format!("/HSET/{key}/{number}"),
        Some(entry.as_bytes().to_vec()),
    )
}

/// `EXPIRE key ttl`.
pub fn expire(cfg: &Config, key: &str, ttl: i64) -> WebdisRequest {
    request(cfg, "GET", format!("/EXPIRE/{key}/{}", ttl.max(1)), None)
}

/// `HGETALL key`.
pub fn hgetall(cfg: &Config, key: &str) -> WebdisRequest {
    request(cfg, "GET", format!("/HGETALL/{key}"), None)
}

/// The answer to [`hset`] / [`expire`]: Redis answered an integer.
pub fn parse_int(status: Option<u16>, body: &[u8], cmd: &str) -> Result<i64, Unavailable> {
    super::json_reply(status, body, cmd)?
        .as_i64()
        .ok_or(Unavailable)
}

/// The answer to [`hgetall`]: the entries by part number (webdis answers an object; a
/// flat array of fields and values is read too). Fields that are not part numbers and
/// values that are not strings are skipped.
pub fn parse_hgetall(
    status: Option<u16>,
    body: &[u8],
) -> Result<BTreeMap<u32, String>, Unavailable> {
    let mut out = BTreeMap::new();
    let mut put = |k: &str, v: &serde_json::Value| {
        if let (Ok(n), Some(v)) = (k.parse::<u32>(), v.as_str()) {
            out.insert(n, v.to_string());
        }
    };
    match super::json_reply(status, body, "HGETALL")? {
        serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| put(k, v)),
        serde_json::Value::Array(a) => {
            for kv in a.chunks(2) {
                if let [serde_json::Value::String(k), v] = kv {
                    put(k, v);
                }
            }
        }
        serde_json::Value::Null => {}
        _ => return Err(Unavailable),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededRandom;

    #[test]
    fn entries_are_sealed_and_bound() {
        let rng = SeededRandom::new(3);
        let dek = DataKey::from_bytes([5; 32]);
        let md5 = [0xab; 16];
        for suite in [Suite::Aes256Gcm, Suite::ChaCha20Poly1305] {
            let k = EtagKey::new(suite, &dek);
            let e = k.seal("up-1", 3, "\"c0ffee\"", &md5, &rng).unwrap();
            assert!(!e.contains(&hex::encode(md5)), "{e}");
            assert!(e.ends_with(" \"c0ffee\""), "{e}");
            let want = PartEtag {
                backend: "\"c0ffee\"".into(),
                md5,
            };
            assert_eq!(k.open("up-1", 3, &e), Some(want));
            // Another part number, upload, key, suite, backend ETag.
            assert_eq!(k.open("up-1", 4, &e), None);
            assert_eq!(k.open("up-2", 3, &e), None);
            let other = EtagKey::new(suite, &DataKey::from_bytes([6; 32]));
            assert_eq!(other.open("up-1", 3, &e), None);
            let swapped = e.replace("\"c0ffee\"", "\"c0ffef\"");
            assert_eq!(k.open("up-1", 3, &swapped), None);
            for bad in ["", "1", "2 AAAA x", "1 !!! \"x\"", "1 AAAA \"x\""] {
                assert_eq!(k.open("up-1", 3, bad), None, "{bad}");
            }
        }
        let aes = EtagKey::new(Suite::Aes256Gcm, &dek);
        let e = aes.seal("u", 1, "\"x\"", &md5, &rng).unwrap();
        assert_eq!(
            EtagKey::new(Suite::ChaCha20Poly1305, &dek).open("u", 1, &e),
            None
        );
        // Backend ETags that could not go back into XML are not recorded.
        for bad in ["", "a<b", "a&b", "x\ny", &"e".repeat(105)] {
            assert!(aes.seal("u", 1, bad, &md5, &rng).is_none());
        }
    }

    #[test]
    fn shared_values_keep_the_newest_entry_per_part() {
        let v = shared_with(None, 2, "1 b \"x\"");
        let v = shared_with(Some(&v), 1, "1 a \"y\"");
        let v = shared_with(Some(&v), 2, "1 c \"z\"");
        let m = shared_entries(&v);
        assert_eq!(m.len(), 2);
        assert_eq!(m[&1], "1 a \"y\"");
        assert_eq!(m[&2], "1 c \"z\"");
        assert!(shared_entries(b"garbage\n1 x").is_empty());
        assert!(shared_entries(&[0xff]).is_empty());
    }

    #[test]
    fn webdis_hashes() {
        let m = parse_hgetall(Some(200), br#"{"HGETALL":{"1":"a","x":"b","2":"c"}}"#).unwrap();
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            [(1, "a".into()), (2, "c".into())]
        );
        let m = parse_hgetall(Some(200), br#"{"HGETALL":["3","d","4"]}"#).unwrap();
        assert_eq!(m.into_iter().collect::<Vec<_>>(), [(3, "d".into())]);
        assert!(parse_hgetall(Some(200), br#"{"HGETALL":{}}"#)
            .unwrap()
            .is_empty());
        assert!(parse_hgetall(Some(503), b"").is_err());
        assert!(parse_hgetall(Some(200), br#"{"HGETALL":[false,"ERR"]}"#).is_err());
        assert_eq!(parse_int(Some(200), br#"{"HSET":1}"#, "HSET"), Ok(1));
        assert!(parse_int(Some(200), br#"{"HSET":[false,"ERR"]}"#, "HSET").is_err());
        assert!(redis_key("a/b c")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ':'));
    }
}
