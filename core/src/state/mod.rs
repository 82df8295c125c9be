//! Multipart upload state: what is recorded per upload, where, and the webdis protocol
//! used to reach Redis by HTTP call-outs.
//!
//! One record per upload, written once (CreateMultipartUpload, before the client sees the
//! UploadId), read by every UploadPart, removed once the backend completed or aborted the
//! upload. There is no read-modify-write: parts of one upload arriving at the same time on
//! different workers or replicas only read, so no update can be lost. A TTL bounds how long
//! an abandoned upload's record lives.
//!
//! Two stores (plugin configuration `state_store`): Envoy shared data (one Envoy process,
//! all its workers) and Redis behind webdis (several replicas). In the Redis mode shared
//! data caches records on each replica. Completed objects never need either: everything
//! a read needs is in the object (envelope header, part headers).

pub mod parts;
pub mod stage;

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::headers::Headers;

/// What an upload's record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadState {
    /// Unix seconds of CreateMultipartUpload (for the TTL).
    pub created: i64,
    /// [`object_tag`] of the upload's bucket and key: a part sent to another object's
    /// upload id is refused.
    pub object: String,
    /// The encoded envelope (key id, wrapped data key, tag).
    pub envelope: String,
}

/// Why a stored record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateError {
    /// Not a record (or a version the reader does not take).
    Malformed,
    /// A version 1 record (no MAC) while those are not accepted.
    Unauthenticated,
    /// Its MAC names a key that is not configured.
    UnknownKey,
    /// The MAC does not verify: forged, or another upload's record.
    BadMac,
    /// The record is for another object.
    WrongObject,
    /// Created in the future (beyond the clock skew) or older than the TTL.
    BadTime,
}

/// Version of the records written now: authenticated by a MAC keyed from a KEK.
const RECORD_VERSION: &str = "2";
const MAC_LABEL: &[u8] = b"s3crypt upload-state MAC key v2";

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().into()
        }
        // HMAC takes keys of any length.
        Err(_) => [0; 32],
    }
}

impl UploadState {
    /// The MAC of a record: HMAC-SHA256 under `HMAC-SHA256(KEK, MAC_LABEL)`, over the
    /// UploadId it is stored under, the key id, the created time, the object and the
    /// envelope (each field length-prefixed). Anyone with a configured KEK (every replica)
    /// can check it; nobody without one can forge it or move it to another UploadId.
    fn mac(&self, upload_id: &str, key_id: &str, kek: &[u8; 32]) -> [u8; 32] {
        let k = hmac(kek, &[MAC_LABEL]);
        let created = self.created.to_string();
        let fields: [&[u8]; 5] = [
            upload_id.as_bytes(),
            key_id.as_bytes(),
            created.as_bytes(),
            self.object.as_bytes(),
            self.envelope.as_bytes(),
        ];
        let mut msg = Vec::with_capacity(256);
        for f in fields {
            msg.extend_from_slice(&(f.len() as u64).to_be_bytes());
            msg.extend_from_slice(f);
        }
        hmac(&k, &[&msg])
    }

    /// The stored record (version 2):
    /// `2\n<key id>\n<created>\n<object>\n<envelope>\n<hex MAC>`.
    pub fn seal(&self, upload_id: &str, key_id: &str, kek: &[u8; 32]) -> String {
        format!(
            "{RECORD_VERSION}\n{key_id}\n{}\n{}\n{}\n{}",
            self.created,
            self.object,
            self.envelope,
            hex::encode(self.mac(upload_id, key_id, kek))
        )
    }

    /// Parses and authenticates a stored record for `upload_id`. Version 1 records (no
    /// MAC, written by the previous release) are taken only if `accept_v1`.
    pub fn open(
        v: &[u8],
        upload_id: &str,
        kek: &dyn Fn(&str) -> Option<[u8; 32]>,
        accept_v1: bool,
    ) -> Result<UploadState, StateError> {
        let text = std::str::from_utf8(v).map_err(|_| StateError::Malformed)?;
        let fields: Vec<&str> = text.split('\n').collect();
        match fields.as_slice() {
            ["1", created, object, envelope] => {
                if !accept_v1 {
                    return Err(StateError::Unauthenticated);
                }
                Self::from_fields(created, object, envelope)
            }
            [RECORD_VERSION, key_id, created, object, envelope, mac] => {
                let st = Self::from_fields(created, object, envelope)?;
                let kek = kek(key_id).ok_or(StateError::UnknownKey)?;
                let mac = hex::decode(mac).map_err(|_| StateError::Malformed)?;
                let want = st.mac(upload_id, key_id, &kek);
                if bool::from(want.as_slice().ct_eq(&mac)) {
                    Ok(st)
                } else {
                    Err(StateError::BadMac)
                }
            }
            _ => Err(StateError::Malformed),
        }
    }

    fn from_fields(created: &str, object: &str, envelope: &str) -> Result<UploadState, StateError> {
        let created = created.parse().map_err(|_| StateError::Malformed)?;
        if envelope.is_empty() || object.is_empty() {
            return Err(StateError::Malformed);
        }
        Ok(UploadState {
            created,
            object: object.to_string(),
            envelope: envelope.to_string(),
        })
    }

    /// The record is for `object` and alive at `now`: created no later than `now + skew`
    /// and no earlier than `now - ttl` (checked arithmetic: no time wraps).
    pub fn check(&self, object: &str, now: i64, ttl: i64, skew: i64) -> Result<(), StateError> {
        if self.object != object {
            return Err(StateError::WrongObject);
        }
        let too_new = now
            .checked_add(skew)
            .is_none_or(|limit| self.created > limit);
        let too_old = now.checked_sub(self.created).is_none_or(|age| age > ttl);
        if too_new || too_old {
            return Err(StateError::BadTime);
        }
        Ok(())
    }
}

/// A short, fixed-length tag of bucket and key (keys may hold any character).
pub fn object_tag(bucket: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(bucket.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Shared-data key of an upload.
pub fn shared_key(upload_id: &str) -> String {
    format!("s3crypt/mpu/{upload_id}")
}

/// What names an upload in a store key (UploadIds may hold any character): a hash, so
/// any UploadId is safe in a webdis URL path.
pub fn upload_tag(upload_id: &str) -> String {
    hex::encode(&Sha256::digest(upload_id.as_bytes())[..20])
}

/// Redis key of an upload.
pub fn redis_key(upload_id: &str) -> String {
    format!("s3crypt:mpu:{}", upload_tag(upload_id))
}

/// A request to webdis. `body`, when present, is the last argument of the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebdisRequest {
    pub headers: Headers,
    pub body: Option<Vec<u8>>,
}

fn request(cfg: &Config, method: &str, path: String, body: Option<Vec<u8>>) -> WebdisRequest {
    let mut h = Headers::new();
    h.set(":method", method);
    h.set(":path", path);
    h.set(":authority", cfg.plugin.redis_authority.clone());
    h.set(":scheme", "http");
    if let Some(a) = cfg.redis_authorization() {
        h.set("authorization", a);
    }
    WebdisRequest { headers: h, body }
}

/// `GET key`.
pub fn get(cfg: &Config, key: &str) -> WebdisRequest {
    request(cfg, "GET", format!("/GET/{key}"), None)
}

/// `SETEX key ttl value` (value in the PUT body, so it needs no escaping).
pub fn setex(cfg: &Config, key: &str, ttl: i64, value: &[u8]) -> WebdisRequest {
    request(
        cfg,
        "PUT",
        format!("/SETEX/{key}/{}", ttl.max(1)),
        Some(value.to_vec()),
    )
}

/// `DEL key`.
pub fn del(cfg: &Config, key: &str) -> WebdisRequest {
    del_keys(cfg, &[key.to_string()])
}

/// `DEL key1 key2 …` (URL-safe keys).
pub fn del_keys(cfg: &Config, keys: &[String]) -> WebdisRequest {
    request(cfg, "GET", format!("/DEL/{}", keys.join("/")), None)
}

/// `PING`: is Redis reachable before an operation that must record state?
pub fn ping(cfg: &Config) -> WebdisRequest {
    request(cfg, "GET", "/PING".to_string(), None)
}

/// Why a webdis answer was not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

fn json_reply(
    status: Option<u16>,
    body: &[u8],
    cmd: &str,
) -> Result<serde_json::Value, Unavailable> {
    if status != Some(200) {
        return Err(Unavailable);
    }
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| Unavailable)?;
    let r = v.get(cmd).cloned().ok_or(Unavailable)?;
    // webdis reports Redis errors as [false, "ERR ..."].
    if r.as_array()
        .and_then(|a| a.first())
        .and_then(|b| b.as_bool())
        == Some(false)
    {
        return Err(Unavailable);
    }
    Ok(r)
}

/// The answer to [`get`]: the value, or `None` if the key does not exist.
pub fn parse_get(status: Option<u16>, body: &[u8]) -> Result<Option<Vec<u8>>, Unavailable> {
    match json_reply(status, body, "GET")? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.into_bytes())),
        _ => Err(Unavailable),
    }
}

/// The answer to [`setex`] / [`ping`]: `Ok` when Redis said OK / PONG.
pub fn parse_ok(status: Option<u16>, body: &[u8], cmd: &str) -> Result<(), Unavailable> {
    let r = json_reply(status, body, cmd)?;
    let word = r
        .as_array()
        .and_then(|a| a.get(1))
        .and_then(|s| s.as_str())
        .or_else(|| r.as_str());
    match word {
        Some("OK") | Some("PONG") => Ok(()),
        _ => Err(Unavailable),
    }
}

/// The answer to [`del`]: how many keys were removed.
pub fn parse_del(status: Option<u16>, body: &[u8]) -> Result<u64, Unavailable> {
    json_reply(status, body, "DEL")?.as_u64().ok_or(Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let env = |k: &str| -> Option<String> {
            match k {
                "S3CRYPT_KEKS" => Some(format!("k1={}", "A".repeat(43) + "=")),
                "S3CRYPT_CLIENT_CREDENTIALS" => Some("AK:SK".into()),
                "S3CRYPT_BACKEND_ACCESS_KEY_ID" => Some("BAK".into()),
                "S3CRYPT_BACKEND_SECRET_ACCESS_KEY" => Some("BSK".into()),
                "S3CRYPT_REDIS_AUTH" => Some("user:pw".into()),
                _ => None,
            }
        };
        Config::load(
            br#"{"upstream_authority":"s3","state_store":"redis","redis_authority":"wd"}"#,
            &env,
        )
        .unwrap()
    }

    fn keks(id: &str) -> Option<[u8; 32]> {
        match id {
            "k1" => Some([1; 32]),
            "k2" => Some([2; 32]),
            _ => None,
        }
    }

    fn record() -> UploadState {
        UploadState {
            created: 1_700_000_000,
            object: object_tag("b", "k"),
            envelope: "v=2;s=1;t=m;k=k1;w=abc;e=def".into(),
        }
    }

    #[test]
    fn records_are_authenticated() {
        let s = record();
        let v = s.seal("upload-1", "k1", &[1; 32]);
        assert!(v.starts_with("2\nk1\n1700000000\n"), "{v}");
        assert_eq!(
            UploadState::open(v.as_bytes(), "upload-1", &keks, false),
            Ok(s.clone())
        );
        // Another UploadId (a record copied to another key), another KEK, a changed field.
        assert_eq!(
            UploadState::open(v.as_bytes(), "upload-2", &keks, false),
            Err(StateError::BadMac)
        );
        let forged = s.seal("upload-1", "k1", &[9; 32]);
        assert_eq!(
            UploadState::open(forged.as_bytes(), "upload-1", &keks, false),
            Err(StateError::BadMac)
        );
        for (from, to) in [
            ("1700000000", "1700000001"),
            (&s.object[..4], "ffff"),
            ("e=def", "e=deg"),
            ("\nk1\n", "\nk2\n"),
        ] {
            let t = v.replacen(from, to, 1);
            assert_ne!(t, v);
            assert_eq!(
                UploadState::open(t.as_bytes(), "upload-1", &keks, false),
                Err(StateError::BadMac),
                "{from}"
            );
        }
        let unknown = s.seal("upload-1", "k3", &[3; 32]);
        assert_eq!(
            UploadState::open(unknown.as_bytes(), "upload-1", &keks, false),
            Err(StateError::UnknownKey)
        );
        for bad in [
            &b""[..],
            b"2\n1\nx\ny",
            b"1\nnot-a-number\nx\ny",
            &[0xff, 0xfe],
        ] {
            assert!(UploadState::open(bad, "upload-1", &keks, true).is_err());
        }
        assert_ne!(object_tag("a", "bc"), object_tag("ab", "c"));
    }

    #[test]
    fn version_1_records_only_when_allowed() {
        let v1 = format!(
            "1\n1700000000\n{}\nv=2;s=1;t=m;k=k1;w=abc;e=def",
            object_tag("b", "k")
        );
        assert_eq!(
            UploadState::open(v1.as_bytes(), "u", &keks, false),
            Err(StateError::Unauthenticated)
        );
        assert_eq!(
            UploadState::open(v1.as_bytes(), "u", &keks, true),
            Ok(record())
        );
    }

    #[test]
    fn record_times_and_objects_are_checked() {
        let s = record();
        let (ttl, skew) = (3600, 900);
        let obj = object_tag("b", "k");
        assert!(s.check(&obj, s.created, ttl, skew).is_ok());
        assert!(s.check(&obj, s.created + ttl, ttl, skew).is_ok());
        assert_eq!(
            s.check(&obj, s.created + ttl + 1, ttl, skew),
            Err(StateError::BadTime)
        );
        assert!(s.check(&obj, s.created - skew, ttl, skew).is_ok());
        assert_eq!(
            s.check(&obj, s.created - skew - 1, ttl, skew),
            Err(StateError::BadTime)
        );
        assert_eq!(
            s.check(&object_tag("b", "other"), s.created, ttl, skew),
            Err(StateError::WrongObject)
        );
        // Forged extreme times cannot wrap the arithmetic.
        for created in [i64::MIN, i64::MAX, -1] {
            let t = UploadState {
                created,
                ..s.clone()
            };
            assert_eq!(
                t.check(&obj, 1_700_000_000, ttl, skew),
                Err(StateError::BadTime)
            );
        }
        assert_eq!(s.check(&obj, i64::MAX, ttl, skew), Err(StateError::BadTime));
        assert_eq!(s.check(&obj, i64::MIN, ttl, skew), Err(StateError::BadTime));
    }

    #[test]
    fn redis_keys_are_url_safe() {
        let k = redis_key("weird/+id?=&%20 \u{e9}");
        assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == ':'));
        assert_ne!(redis_key("a"), redis_key("b"));
    }

    #[test]
    fn webdis_requests() {
        let c = cfg();
        let r = setex(&c, "s3crypt:mpu:ab", 60, b"v\nx");
        assert_eq!(r.headers.get(":method"), Some("PUT"));
        assert_eq!(r.headers.get(":path"), Some("/SETEX/s3crypt:mpu:ab/60"));
        assert_eq!(r.headers.get(":authority"), Some("wd"));
        assert_eq!(r.headers.get("authorization"), Some("Basic dXNlcjpwdw=="));
        assert_eq!(r.body.as_deref(), Some(&b"v\nx"[..]));
        assert_eq!(get(&c, "k").headers.get(":path"), Some("/GET/k"));
        assert_eq!(del(&c, "k").headers.get(":path"), Some("/DEL/k"));
    }

    #[test]
    fn webdis_answers() {
        assert_eq!(
            parse_get(Some(200), br#"{"GET":"a\nb"}"#),
            Ok(Some(b"a\nb".to_vec()))
        );
        assert_eq!(parse_get(Some(200), br#"{"GET":null}"#), Ok(None));
        assert_eq!(parse_get(Some(503), b""), Err(Unavailable));
        assert_eq!(parse_get(None, b""), Err(Unavailable));
        assert_eq!(parse_get(Some(200), b"garbage"), Err(Unavailable));
        assert_eq!(
            parse_get(Some(200), br#"{"GET":[false,"ERR x"]}"#),
            Err(Unavailable)
        );
        assert_eq!(
            parse_ok(Some(200), br#"{"SETEX":[true,"OK"]}"#, "SETEX"),
            Ok(())
        );
        assert_eq!(
            parse_ok(Some(200), br#"{"PING":[true,"PONG"]}"#, "PING"),
            Ok(())
        );
        assert_eq!(parse_ok(Some(200), br#"{"PING":"PONG"}"#, "PING"), Ok(()));
        assert_eq!(
            parse_ok(Some(200), br#"{"SETEX":[false,"ERR"]}"#, "SETEX"),
            Err(Unavailable)
        );
        assert_eq!(parse_del(Some(200), br#"{"DEL":1}"#), Ok(1));
        assert_eq!(parse_del(Some(200), br#"{"DEL":"x"}"#), Err(Unavailable));
    }
}
