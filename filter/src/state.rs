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

use sha2::{Digest as _, Sha256};

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

impl UploadState {
    pub fn encode(&self) -> String {
        format!("1\n{}\n{}\n{}", self.created, self.object, self.envelope)
    }

    pub fn decode(v: &[u8]) -> Option<UploadState> {
        let text = std::str::from_utf8(v).ok()?;
        let mut it = text.splitn(4, '\n');
        if it.next()? != "1" {
            return None;
        }
        let created = it.next()?.parse().ok()?;
        let object = it.next()?.to_string();
        let envelope = it.next()?.to_string();
        if envelope.is_empty() || envelope.contains('\n') {
            return None;
        }
        Some(UploadState {
            created,
            object,
            envelope,
        })
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

/// Redis key of an upload: hashed, so any UploadId is safe in a webdis URL path.
pub fn redis_key(upload_id: &str) -> String {
    format!(
        "s3crypt:mpu:{}",
        hex::encode(&Sha256::digest(upload_id.as_bytes())[..20])
    )
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
    request(cfg, "GET", format!("/DEL/{key}"), None)
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

    #[test]
    fn record_round_trip_and_rejects_garbage() {
        let s = UploadState {
            created: 1700000000,
            object: object_tag("b", "k\nwith newline"),
            envelope: "v=1;s=1;t=m;k=x;w=abc;a=def".into(),
        };
        assert_eq!(UploadState::decode(s.encode().as_bytes()), Some(s.clone()));
        assert_eq!(UploadState::decode(b""), None);
        assert_eq!(UploadState::decode(b"2\n1\nx\ny"), None);
        assert_eq!(UploadState::decode(b"1\nnot-a-number\nx\ny"), None);
        assert_eq!(UploadState::decode(b"1\n5\nx\n"), None);
        assert_eq!(UploadState::decode(&[0xff, 0xfe]), None);
        assert_ne!(object_tag("a", "bc"), object_tag("ab", "c"));
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
