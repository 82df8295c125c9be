//! Keys and backend credentials: from the environment variables the filter reads (or a
//! file, or stdin), never from the command line.

use std::collections::BTreeMap;
use std::io::Read;

use s3crypt_core::config::{parse_keks, ENV_ACTIVE_KEY_ID, ENV_KEKS};
use s3crypt_core::crypto::KEY_LEN;
use s3crypt_core::predecessor::{kek_from_key_string, DEFAULT_META};

use crate::Fail;

/// The predecessor's key string (as it read it).
pub const ENV_PREDECESSOR_KEY: &str = "S3PROXY_ENCRYPT_KEY";

pub struct Keys {
    keks: BTreeMap<String, [u8; KEY_LEN]>,
    active: Option<String>,
    predecessor: Option<[u8; KEY_LEN]>,
    predecessor_meta: String,
}

/// Most bytes of keys read from stdin.
const MAX_SECRET_INPUT: u64 = 1 << 20;

/// Parses keys in the `S3CRYPT_KEKS` format. An error says which entry is wrong, never
/// what it holds (a mistyped entry, say a key without its id, may be a key).
fn parse_keys(v: &str) -> Result<BTreeMap<String, [u8; KEY_LEN]>, Fail> {
    parse_keks(v).map_err(|_| {
        let items = v.split(',').map(str::trim).filter(|s| !s.is_empty());
        let bad = items.enumerate().find_map(|(i, item)| parse_keks(item).err().map(|_| i + 1));
        Fail::usage(match bad {
            Some(n) => format!(
                "keys: entry {n} is not id=base64key (id: 1-64 of A-Z a-z 0-9 . _ -; key: 32 bytes of base64; the entry is not shown)"
            ),
            None => "keys: no keys, or a key id given twice".into(),
        })
    })
}

/// Where a secret comes from: a file (`-`: stdin), else the environment variable.
fn secret(file: Option<&str>, var: &str) -> Result<Option<String>, Fail> {
    match file {
        Some("-") => {
            // All of stdin (a keys file may hold one key a line), bounded.
            let mut s = String::new();
            std::io::stdin()
                .take(MAX_SECRET_INPUT + 1)
                .read_to_string(&mut s)
                .map_err(|e| Fail::usage(format!("cannot read stdin: {e}")))?;
            if s.len() as u64 > MAX_SECRET_INPUT {
                return Err(Fail::usage("stdin: more than a keys file holds".into()));
            }
            Ok(Some(s.trim_end_matches(['\r', '\n']).to_string()))
        }
        Some(path) => {
            let s = std::fs::read_to_string(path)
                .map_err(|e| Fail::usage(format!("cannot read {path}: {e}")))?;
            Ok(Some(s.trim_end_matches(['\r', '\n']).to_string()))
        }
        None => Ok(std::env::var(var).ok().filter(|s| !s.is_empty())),
    }
}

impl Keys {
    /// `keys_file`: a file in the `S3CRYPT_KEKS` format (`id=base64[,…]`, newlines allowed)
    /// instead of the variable; `s3proxy_key_file`: the predecessor's key string instead of
    /// `S3PROXY_ENCRYPT_KEY`. At most one of them may be `-` (stdin).
    pub fn load(
        keys_file: Option<&str>,
        active: Option<&str>,
        s3proxy_key_file: Option<&str>,
        s3proxy_meta: Option<&str>,
    ) -> Result<Keys, Fail> {
        if keys_file == Some("-") && s3proxy_key_file == Some("-") {
            return Err(Fail::usage(
                "only one of --keys-file and --s3proxy-key-file can be stdin".into(),
            ));
        }
        let keks = match secret(keys_file, ENV_KEKS)? {
            Some(v) => parse_keys(&v.replace(['\n', '\r'], ","))?,
            None => BTreeMap::new(),
        };
        // (Checked by `active()`, for the commands that write: reading needs only the keys
        // objects are under, whatever the filter's active key is.)
        let active = active.map(str::to_string).or_else(|| {
            std::env::var(ENV_ACTIVE_KEY_ID)
                .ok()
                .filter(|s| !s.is_empty())
        });
        let predecessor =
            secret(s3proxy_key_file, ENV_PREDECESSOR_KEY)?.map(|s| kek_from_key_string(&s));
        if keks.is_empty() && predecessor.is_none() {
            return Err(Fail::usage(format!(
                "no keys: set {ENV_KEKS} (as for the filter) or --keys-file FILE, or {ENV_PREDECESSOR_KEY} / --s3proxy-key-file for the predecessor's objects"
            )));
        }
        Ok(Keys {
            keks,
            active,
            predecessor,
            predecessor_meta: s3proxy_meta.unwrap_or(DEFAULT_META).to_ascii_lowercase(),
        })
    }

    pub fn kek(&self, id: &str) -> Option<&[u8; KEY_LEN]> {
        self.keks.get(id)
    }

    /// The active key id and key (for rewrap and re-encryption).
    pub fn active(&self) -> Result<(&str, &[u8; KEY_LEN]), Fail> {
        let id = self.active.as_deref().ok_or_else(|| {
            Fail::usage(format!(
                "no active key: set {ENV_ACTIVE_KEY_ID} or --active-key-id"
            ))
        })?;
        let k = self.keks.get(id).ok_or_else(|| {
            Fail::usage(format!("the active key id {id:?} is not among the keys"))
        })?;
        Ok((id, k))
    }

    pub fn predecessor(&self) -> Option<&[u8; KEY_LEN]> {
        self.predecessor.as_ref()
    }

    pub fn predecessor_meta(&self) -> &str {
        &self.predecessor_meta
    }
}
