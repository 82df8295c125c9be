//! Plugin configuration (JSON from Envoy's filter `configuration`) and secrets (from the
//! VM's environment: Envoy `vm_config.environment_variables.host_env_keys`).
//!
//! Secrets are never read from the plugin configuration, never logged, and `Debug`
//! prints only key ids and access key ids.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;

use crate::crypto::{Suite, KEY_LEN};
use crate::format::valid_key_id;

/// Environment variable names (the defaults; each can be renamed in the config).
pub const ENV_KEKS: &str = "S3CRYPT_KEKS";
pub const ENV_ACTIVE_KEY_ID: &str = "S3CRYPT_ACTIVE_KEY_ID";
pub const ENV_CLIENT_CREDENTIALS: &str = "S3CRYPT_CLIENT_CREDENTIALS";
pub const ENV_BACKEND_ACCESS_KEY_ID: &str = "S3CRYPT_BACKEND_ACCESS_KEY_ID";
/// Per-client backend identities: `CLIENTKEY=BACKENDKEY:SECRET[,...]`.
pub const ENV_BACKEND_CREDENTIALS: &str = "S3CRYPT_BACKEND_CREDENTIALS";
pub const ENV_BACKEND_SECRET_ACCESS_KEY: &str = "S3CRYPT_BACKEND_SECRET_ACCESS_KEY";
pub const ENV_REDIS_AUTH: &str = "S3CRYPT_REDIS_AUTH";

/// How the object data the filter sends upstream (PutObject, UploadPart, the parts it
/// writes itself) is covered, so that the backend verifies every byte it stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamPayload {
    /// aws-chunked `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: every 64 KiB chunk signed in the
    /// chain of the request's signature (whole bodies of call-outs: their SHA-256 signed).
    /// Accepted by AWS S3, Ceph RGW and MinIO. The default.
    #[default]
    SignedChunks,
    /// The same with a signed `x-amz-checksum-crc32c` trailer
    /// (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`; call-outs: the checksum header):
    /// what AWS object lock buckets accept in place of Content-MD5.
    SignedChunksCrc32c,
    /// `UNSIGNED-PAYLOAD`: the backend verifies nothing about the bytes.
    Unsigned,
}

/// Where multipart upload state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StateStore {
    /// Envoy shared data: one Envoy process (all its workers). The embedded default.
    #[default]
    SharedData,
    /// Redis behind webdis, reached by HTTP call-outs; shared data is the per-pod cache.
    Redis,
}

/// What the filter does with `If-None-Match` / `If-Match` on writes (PutObject,
/// CompleteMultipartUpload, CopyObject, and `If-Match` on DeleteObject). The filter cannot
/// find out whether the backend enforces them (Ceph RGW 16 ignores `If-None-Match: *` on
/// a PUT), so the operator says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConditionalWrites {
    /// Refused with 501 NotImplemented (the default): never silently ignored.
    #[default]
    Refuse,
    /// The backend enforces them (AWS S3, MinIO): `If-None-Match: *` goes upstream as
    /// signed; `If-Match` is checked by the filter against the client-visible ETag (a
    /// HEAD) and goes upstream as the backend's ETag of that version, so the backend
    /// still decides atomically.
    Backend,
}

/// The non-secret part, as written in Envoy's filter configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Host (and port) of the S3 backend as it must appear in the signed `host` header.
    pub upstream_authority: String,
    /// Envoy cluster of the S3 backend (for call-outs such as the HEAD of a copy source).
    #[serde(default = "default_cluster")]
    pub upstream_cluster: String,
    /// Region used to sign upstream requests.
    #[serde(default = "default_region")]
    pub region: String,
    /// Endpoint domains for virtual-hosted-style client requests (`bucket.<suffix>`).
    #[serde(default)]
    pub virtual_host_suffixes: Vec<String>,
    /// Key id used for new objects when S3CRYPT_ACTIVE_KEY_ID is not set.
    #[serde(default)]
    pub active_key_id: Option<String>,
    /// Cipher suite of new objects: `aes-256-gcm` (the default) or `chacha20-poly1305`.
    /// Objects of either suite are always readable (the envelope names the suite).
    #[serde(default = "default_suite")]
    pub suite: String,
    /// Where objects without an envelope are served unchanged (migration of plaintext
    /// buckets): `false` (the default: nowhere, such an object is an integrity error) or a
    /// list of `bucket` or `bucket/key-prefix` scopes. `true` is refused: the scope must
    /// be named.
    #[serde(default)]
    pub passthrough_unencrypted: PassthroughSetting,
    /// Accept upload records without a MAC (version 1, written by the release before
    /// records were authenticated). Off: such records are refused (the upload gets 404
    /// NoSuchUpload). Turn on only while uploads begun before an upgrade finish (at most
    /// `upload_ttl_secs`), in Redis mode: anyone who can write Redis can forge them.
    #[serde(default)]
    pub accept_unauthenticated_upload_state: bool,
    /// How long an unfinished multipart upload's state is kept, seconds (7 days).
    #[serde(default = "default_upload_ttl")]
    pub upload_ttl_secs: i64,
    /// Maximum accepted clock skew of signed requests, seconds.
    #[serde(default = "default_skew")]
    pub max_clock_skew_secs: i64,
    /// Multipart upload state: `shared_data` (one replica) or `redis` (several).
    #[serde(default)]
    pub state_store: StateStore,
    /// Envoy cluster of the webdis endpoint (Redis mode).
    #[serde(default = "default_redis_cluster")]
    pub redis_cluster: String,
    /// `:authority` of call-outs to webdis.
    #[serde(default = "default_redis_authority")]
    pub redis_authority: String,
    /// Timeout of one call-out to webdis, milliseconds.
    #[serde(default = "default_redis_timeout")]
    pub redis_timeout_ms: u64,
    /// Largest part UploadPartCopy accepts, bytes (64 MiB): the copied range is
    /// re-encrypted by the filter and held until it is sent upstream as one UploadPart.
    #[serde(default = "default_max_copy_part")]
    pub max_copy_part_bytes: u64,
    /// Memory all UploadPartCopy parts being re-encrypted may hold at once, per Envoy
    /// worker, bytes (256 MiB); a copy that would exceed it answers 503 SlowDown.
    #[serde(default = "default_max_copy_buffer")]
    pub max_copy_buffer_bytes: u64,
    /// Keep a copy of the ciphertext of each short last part (stored under 5 MiB) of an
    /// upload in the state store until CompleteMultipartUpload, which then closes the
    /// object with a part sealing its part table (readers find it in one request; see
    /// FORMAT.md, "Layout closing"). Off: such objects are read by walking their parts.
    #[serde(default = "default_true")]
    pub stage_short_parts: bool,
    /// Seal each multipart object's plaintext ETag (S3's `md5-of-md5s-N`) in the part
    /// table Complete writes (a version 2 table, FORMAT.md "The multipart ETag"). Off:
    /// version 1 tables, which the previous release reads (for a rolling upgrade or a
    /// rollback window); such objects show the backend's ETag.
    #[serde(default = "default_true")]
    pub seal_multipart_etags: bool,
    /// Shared-data mode: short parts staged at once per Envoy process (8; each under
    /// 5 MiB, so at most 40 MiB). A new one evicts the oldest when all are taken.
    #[serde(default = "default_staging_slots")]
    pub staging_slots: u32,
    /// `If-None-Match` / `If-Match` on writes: `refuse` (the default) or `backend`.
    #[serde(default)]
    pub conditional_writes: ConditionalWrites,
    /// Slots of the per-process cache that maps a single object as listings show it
    /// (bucket, key, backend ETag, stored size) to its plaintext ETag and size (16,384;
    /// each a few hundred bytes of Envoy shared data). 0: no cache (every listed single
    /// object of a page is looked up at the backend).
    #[serde(default = "default_etag_cache_slots")]
    pub etag_cache_slots: u32,
    /// Listed single objects the cache does not know that one listing response looks up
    /// at the backend (16, one small ranged read each); a page with more unknown entries
    /// is cut before the next one and answered truncated (the client asks for the rest).
    #[serde(default = "default_listing_lookups")]
    pub listing_lookups: u32,
    /// How upstream object data is signed: `signed-chunks` (the default),
    /// `signed-chunks-crc32c` or `unsigned` ([`UpstreamPayload`]).
    #[serde(default)]
    pub upstream_payload: UpstreamPayload,
    /// Read (never write) the objects of the Python predecessor (s3proxy-python 2026.2.x)
    /// while a bucket is migrated (README "Migrating from s3proxy-python"); off unless set.
    #[serde(default)]
    pub predecessor_read: Option<PredecessorRead>,
    /// Environment variable names, if the defaults do not suit.
    #[serde(default)]
    pub env: EnvNames,
}

/// `predecessor_read`: where the predecessor's key string is and how its objects are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredecessorRead {
    /// Environment variable holding the predecessor's key string (`S3PROXY_ENCRYPT_KEY`).
    #[serde(default = "default_predecessor_key_env")]
    pub key_env: String,
    /// Its metadata name for the wrapped key (`isec`: `x-amz-meta-isec`).
    #[serde(default = "default_predecessor_meta")]
    pub metadata_name: String,
    /// Largest segment a read holds while it verifies it, bytes (64 MiB): a segment is
    /// released only whole, after its tag verified. A read of an object with a larger
    /// segment is refused (the `s3crypt` tool reads it).
    #[serde(default = "default_predecessor_segment")]
    pub max_segment_bytes: u64,
}

/// What the filter needs to read the predecessor's objects (from `predecessor_read`).
#[derive(Clone)]
pub struct Predecessor {
    pub kek: [u8; KEY_LEN],
    /// `x-amz-meta-<metadata_name>`, lowercase.
    pub meta_header: String,
    pub max_segment: u64,
}

impl std::fmt::Debug for Predecessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Predecessor(..)")
    }
}

/// `passthrough_unencrypted` as written: a boolean or a list of scopes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PassthroughSetting {
    Enabled(bool),
    Scopes(Vec<String>),
}

impl Default for PassthroughSetting {
    fn default() -> Self {
        PassthroughSetting::Enabled(false)
    }
}

/// One place where plaintext (envelope-less) objects may be served: a bucket, or a key
/// prefix in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassthroughScope {
    pub bucket: String,
    pub prefix: String,
}

fn parse_passthrough(s: &PassthroughSetting) -> Result<Vec<PassthroughScope>, String> {
    let scopes = match s {
        PassthroughSetting::Enabled(false) => return Ok(Vec::new()),
        PassthroughSetting::Enabled(true) => {
            return Err("passthrough_unencrypted must name where plaintext objects may be served: a list of \"bucket\" or \"bucket/prefix\" scopes (true is not accepted)".into())
        }
        PassthroughSetting::Scopes(v) => v,
    };
    if scopes.is_empty() {
        return Err("passthrough_unencrypted: an empty list; use false".into());
    }
    scopes
        .iter()
        .map(|s| {
            let (bucket, prefix) = s.split_once('/').unwrap_or((s, ""));
            if bucket.is_empty() {
                return Err(format!("passthrough_unencrypted: {s:?} names no bucket"));
            }
            Ok(PassthroughScope {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvNames {
    pub keks: String,
    pub active_key_id: String,
    pub client_credentials: String,
    pub backend_access_key_id: String,
    pub backend_secret_access_key: String,
    /// Optional per-client backend identities (`CLIENTKEY=BACKENDKEY:SECRET,...`).
    pub backend_credentials: String,
    /// Optional `user:password` for webdis HTTP basic auth (Redis mode).
    pub redis_auth: String,
}

impl Default for EnvNames {
    fn default() -> Self {
        EnvNames {
            keks: ENV_KEKS.into(),
            active_key_id: ENV_ACTIVE_KEY_ID.into(),
            client_credentials: ENV_CLIENT_CREDENTIALS.into(),
            backend_access_key_id: ENV_BACKEND_ACCESS_KEY_ID.into(),
            backend_secret_access_key: ENV_BACKEND_SECRET_ACCESS_KEY.into(),
            backend_credentials: ENV_BACKEND_CREDENTIALS.into(),
            redis_auth: ENV_REDIS_AUTH.into(),
        }
    }
}

fn default_suite() -> String {
    Suite::Aes256Gcm.name().into()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_cluster() -> String {
    "s3_backend".into()
}
fn default_redis_cluster() -> String {
    "redis_webdis".into()
}
fn default_redis_authority() -> String {
    "webdis".into()
}
fn default_redis_timeout() -> u64 {
    1000
}
fn default_upload_ttl() -> i64 {
    7 * 24 * 3600
}
fn default_max_copy_part() -> u64 {
    64 << 20
}
fn default_max_copy_buffer() -> u64 {
    256 << 20
}
fn default_predecessor_key_env() -> String {
    "S3PROXY_ENCRYPT_KEY".into()
}
fn default_predecessor_meta() -> String {
    crate::predecessor::DEFAULT_META.into()
}
fn default_predecessor_segment() -> u64 {
    64 << 20
}
fn default_true() -> bool {
    true
}
fn default_staging_slots() -> u32 {
    8
}
fn default_etag_cache_slots() -> u32 {
    16_384
}
fn default_listing_lookups() -> u32 {
    16
}
fn default_skew() -> i64 {
    15 * 60
}

/// Everything the filter needs at run time.
pub struct Config {
    pub plugin: PluginConfig,
    /// Cipher suite of new objects (from `plugin.suite`).
    pub suite: Suite,
    keks: BTreeMap<String, [u8; KEY_LEN]>,
    pub active_key_id: String,
    clients: BTreeMap<String, String>,
    /// The shared backend identity (for clients without their own): access key, secret.
    backend: Option<(String, String)>,
    /// Client access key → its own backend identity.
    backends: BTreeMap<String, (String, String)>,
    /// `Authorization` header value for webdis, if configured.
    redis_authorization: Option<String>,
    /// Where envelope-less objects may be served (from `plugin.passthrough_unencrypted`).
    pub passthrough: Vec<PassthroughScope>,
    /// Reading the predecessor's objects (from `plugin.predecessor_read`), if enabled.
    pub predecessor: Option<Predecessor>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("plugin", &self.plugin)
            .field("key_ids", &self.keks.keys().collect::<Vec<_>>())
            .field("active_key_id", &self.active_key_id)
            .field(
                "client_access_keys",
                &self.clients.keys().collect::<Vec<_>>(),
            )
            .field("backend_access_key", &self.backend.as_ref().map(|b| &b.0))
            .field(
                "client_backend_keys",
                &self
                    .backends
                    .iter()
                    .map(|(c, b)| (c, &b.0))
                    .collect::<Vec<_>>(),
            )
            .field("redis_auth", &self.redis_authorization.is_some())
            .finish()
    }
}

impl Config {
    /// Builds the configuration from the plugin JSON and an environment lookup.
    /// Errors name the offending setting, never a secret value.
    pub fn load(json: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
        let plugin: PluginConfig = serde_json::from_slice(json)
            .map_err(|e| format!("invalid plugin configuration: {e}"))?;
        if plugin.upstream_authority.is_empty() {
            return Err("upstream_authority must be set".into());
        }
        let suite = Suite::from_name(&plugin.suite).ok_or_else(|| {
            format!(
                "suite {:?} is not supported (use \"{}\" or \"{}\")",
                plugin.suite,
                Suite::Aes256Gcm.name(),
                Suite::ChaCha20Poly1305.name()
            )
        })?;
        let n = &plugin.env;
        let keks = parse_keks(&env(&n.keks).ok_or_else(|| format!("{} is not set", n.keks))?)
            .map_err(|e| format!("{}: {e}", n.keks))?;
        let active_key_id = env(&n.active_key_id)
            .filter(|s| !s.is_empty())
            .or_else(|| plugin.active_key_id.clone())
            .or_else(|| keks.keys().next().cloned())
            .ok_or("no key-encryption key configured")?;
        if !keks.contains_key(&active_key_id) {
            return Err(format!(
                "active key id {active_key_id:?} is not among the configured keys"
            ));
        }
        let clients = parse_credentials(
            &env(&n.client_credentials)
                .ok_or_else(|| format!("{} is not set", n.client_credentials))?,
        )
        .map_err(|e| format!("{}: {e}", n.client_credentials))?;
        let backends = match env(&n.backend_credentials).filter(|s| !s.trim().is_empty()) {
            Some(v) => parse_backend_credentials(&v, &clients)
                .map_err(|e| format!("{}: {e}", n.backend_credentials))?,
            None => BTreeMap::new(),
        };
        let backend_access_key = env(&n.backend_access_key_id).filter(|s| !s.is_empty());
        let backend_secret = env(&n.backend_secret_access_key).filter(|s| !s.is_empty());
        let backend = match (backend_access_key, backend_secret) {
            (Some(ak), Some(sk)) => Some((ak, sk)),
            (None, None) if clients.keys().all(|c| backends.contains_key(c)) => None,
            (None, _) => return Err(format!("{} is not set", n.backend_access_key_id)),
            (Some(_), None) => return Err(format!("{} is not set", n.backend_secret_access_key)),
        };
        if plugin.redis_timeout_ms == 0
            || plugin.upload_ttl_secs <= 0
            || plugin.max_copy_part_bytes == 0
        {
            return Err(
                "redis_timeout_ms, upload_ttl_secs and max_copy_part_bytes must be positive".into(),
            );
        }
        if plugin.staging_slots > 64 {
            return Err("staging_slots must be at most 64".into());
        }
        if plugin.etag_cache_slots > 1 << 20 {
            return Err("etag_cache_slots must be at most 1048576".into());
        }
        if !(1..=1000).contains(&plugin.listing_lookups) {
            return Err("listing_lookups must be between 1 and 1000".into());
        }
        if plugin.max_copy_buffer_bytes < plugin.max_copy_part_bytes {
            return Err("max_copy_buffer_bytes must be at least max_copy_part_bytes".into());
        }
        let passthrough = parse_passthrough(&plugin.passthrough_unencrypted)?;
        let predecessor = match &plugin.predecessor_read {
            None => None,
            Some(p) => {
                let key = env(&p.key_env)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| format!("predecessor_read: {} is not set", p.key_env))?;
                let name = p.metadata_name.to_ascii_lowercase();
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(
                        "predecessor_read.metadata_name must be letters, digits and -".into(),
                    );
                }
                // A read holds one segment (wasm32 has 4 GiB for every stream of a worker).
                if !(1 << 20..=256 << 20).contains(&p.max_segment_bytes) {
                    return Err(
                        "predecessor_read.max_segment_bytes must be 1 MiB to 256 MiB".into(),
                    );
                }
                Some(Predecessor {
                    kek: crate::predecessor::kek_from_key_string(&key),
                    meta_header: format!("x-amz-meta-{name}"),
                    max_segment: p.max_segment_bytes,
                })
            }
        };
        let redis_authorization = env(&n.redis_auth)
            .filter(|s| !s.is_empty())
            .map(|s| format!("Basic {}", B64.encode(s.as_bytes())));
        Ok(Config {
            plugin,
            suite,
            keks,
            active_key_id,
            clients,
            backend,
            backends,
            redis_authorization,
            passthrough,
            predecessor,
        })
    }

    /// Whether an object without an envelope may be served (or copied) as it is: only
    /// inside a configured passthrough scope.
    pub fn passthrough_allowed(&self, bucket: &str, key: &str) -> bool {
        self.passthrough
            .iter()
            .any(|s| s.bucket == bucket && key.starts_with(s.prefix.as_str()))
    }

    /// The key-encryption key with this id.
    pub fn kek(&self, id: &str) -> Option<&[u8; KEY_LEN]> {
        self.keks.get(id)
    }

    /// The active key-encryption key (for new objects).
    pub fn active_kek(&self) -> Option<&[u8; KEY_LEN]> {
        self.keks.get(&self.active_key_id)
    }

    /// Secret of a client access key.
    pub fn client_secret(&self, access_key: &str) -> Option<String> {
        self.clients.get(access_key).cloned()
    }

    /// The backend identity (access key, secret) requests of this client are signed
    /// with: its own if configured, else the shared one. (`load` made sure every client
    /// has one; `None` only for a client that is not configured.)
    pub fn backend_identity(&self, client: Option<&str>) -> Option<(&str, &str)> {
        client
            .and_then(|c| self.backends.get(c))
            .or(self.backend.as_ref())
            .map(|(ak, sk)| (ak.as_str(), sk.as_str()))
    }

    /// `Authorization` header for webdis call-outs, if configured.
    pub fn redis_authorization(&self) -> Option<&str> {
        self.redis_authorization.as_deref()
    }
}

/// `id=base64key[,id=base64key...]` (32-byte keys), as `S3CRYPT_KEKS` holds them.
pub fn parse_keks(v: &str) -> Result<BTreeMap<String, [u8; KEY_LEN]>, String> {
    // Errors name an entry by its position, never by its text: a key written without its
    // id (or with a stray `=`) would be the "id", and configuration errors are logged.
    let mut m = BTreeMap::new();
    for (n, item) in v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let n = n.saturating_add(1);
        let (id, k) = item
            .split_once('=')
            .ok_or_else(|| format!("key entry {n}: expected id=base64key"))?;
        let id = id.trim();
        if !valid_key_id(id) {
            return Err(format!(
                "key entry {n}: invalid key id (1-64 of A-Z a-z 0-9 . _ -)"
            ));
        }
        let key: [u8; KEY_LEN] = B64
            .decode(k.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("key entry {n}: the key is not 32 bytes of base64"))?;
        if m.insert(id.to_string(), key).is_some() {
            return Err(format!("key entry {n}: its key id is given twice"));
        }
    }
    if m.is_empty() {
        return Err("no keys".into());
    }
    Ok(m)
}

/// `ACCESSKEY:SECRET[,ACCESSKEY:SECRET...]`.
fn parse_credentials(v: &str) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (ak, sk) = item
            .split_once(':')
            .ok_or("expected ACCESSKEY:SECRET entries")?;
        if ak.is_empty() || sk.is_empty() {
            return Err("empty access key or secret".into());
        }
        if m.insert(ak.to_string(), sk.to_string()).is_some() {
            return Err(format!("access key {ak:?} given twice"));
        }
    }
    if m.is_empty() {
        return Err("no credentials".into());
    }
    Ok(m)
}

/// `CLIENTKEY=BACKENDKEY:SECRET[,...]`, each client one of `clients`, once.
fn parse_backend_credentials(
    v: &str,
    clients: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, (String, String)>, String> {
    let mut m = BTreeMap::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (client, backend) = item
            .split_once('=')
            .ok_or("expected CLIENTKEY=BACKENDKEY:SECRET entries")?;
        let (ak, sk) = backend
            .split_once(':')
            .ok_or("expected CLIENTKEY=BACKENDKEY:SECRET entries")?;
        if client.is_empty() || ak.is_empty() || sk.is_empty() {
            return Err("empty client key, backend key or secret".into());
        }
        if !clients.contains_key(client) {
            return Err(format!(
                "client access key {client:?} is not a configured client"
            ));
        }
        if m.insert(client.to_string(), (ak.to_string(), sk.to_string()))
            .is_some()
        {
            return Err(format!("client access key {client:?} given twice"));
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            ENV_KEKS => Some(format!(
                "a={},b={}",
                B64.encode([1u8; 32]),
                B64.encode([2u8; 32])
            )),
            ENV_ACTIVE_KEY_ID => Some("b".into()),
            ENV_CLIENT_CREDENTIALS => Some("AK1:secret1, AK2:secret2".into()),
            ENV_BACKEND_ACCESS_KEY_ID => Some("BK".into()),
            ENV_BACKEND_SECRET_ACCESS_KEY => Some("bsecret".into()),
            _ => None,
        }
    }

    #[test]
    fn key_errors_never_repeat_the_key() {
        let key = B64.encode([7u8; 32]);
        for bad in [
            key.clone(),                 // no id: "AAAA…" before the first `=`
            format!("{key},x={key}"),    // the same, first of two
            format!("x={key},x={key}"),  // an id twice
            format!("k={}", &key[..20]), // a short key
            format!("bad id!={key}"),    // an invalid id
        ] {
            let e = parse_keks(&bad).unwrap_err();
            assert!(!e.contains(&key[..16]) && !e.contains("bad id"), "{e}");
        }
        let e = parse_predecessor_free(&key);
        assert!(!e.contains(&key[..16]), "{e}");
    }

    /// The configuration error of a keys variable holding only a key (what the filter logs).
    fn parse_predecessor_free(key: &str) -> String {
        let k = key.to_string();
        let env = move |n: &str| match n {
            ENV_KEKS => Some(k.clone()),
            _ => env(n),
        };
        Config::load(br#"{"upstream_authority":"x"}"#, &env).unwrap_err()
    }

    #[test]
    fn loads_and_hides_secrets() {
        let c = Config::load(br#"{"upstream_authority":"127.0.0.1:9000"}"#, &env).unwrap();
        assert_eq!(c.active_key_id, "b");
        assert_eq!(c.active_kek(), Some(&[2u8; 32]));
        assert_eq!(c.client_secret("AK2").as_deref(), Some("secret2"));
        assert_eq!(c.client_secret("nope"), None);
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("secret1")
                && !dbg.contains("bsecret")
                && !dbg.contains(&B64.encode([1u8; 32]))
        );
    }

    #[test]
    fn per_client_backend_identities() {
        let c = Config::load(br#"{"upstream_authority":"x"}"#, &env).unwrap();
        assert_eq!(c.backend_identity(Some("AK1")), Some(("BK", "bsecret")));
        assert_eq!(c.backend_identity(None), Some(("BK", "bsecret")));
        let with = |extra: &'static str, shared: bool| {
            move |k: &str| match k {
                ENV_BACKEND_CREDENTIALS => Some(extra.to_string()),
                ENV_BACKEND_ACCESS_KEY_ID | ENV_BACKEND_SECRET_ACCESS_KEY if !shared => None,
                _ => env(k),
            }
        };
        let c = Config::load(br#"{"upstream_authority":"x"}"#, &with("AK1=BK1:bs1", true)).unwrap();
        assert_eq!(c.backend_identity(Some("AK1")), Some(("BK1", "bs1")));
        assert_eq!(c.backend_identity(Some("AK2")), Some(("BK", "bsecret")));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("bs1") && !dbg.contains("bsecret"), "{dbg}");
        // Without a shared identity every client needs its own.
        let all = with("AK1=BK1:bs1, AK2=BK2:bs2", false);
        let c = Config::load(br#"{"upstream_authority":"x"}"#, &all).unwrap();
        assert_eq!(c.backend_identity(Some("AK2")), Some(("BK2", "bs2")));
        assert_eq!(c.backend_identity(None), None);
        let e = Config::load(
            br#"{"upstream_authority":"x"}"#,
            &with("AK1=BK1:bs1", false),
        )
        .unwrap_err();
        assert!(e.contains(ENV_BACKEND_ACCESS_KEY_ID), "{e}");
        for bad in ["AK9=BK:s", "AK1=BK", "AK1", "AK1=:s", "AK1=BK:s,AK1=BK2:t"] {
            let e = Config::load(br#"{"upstream_authority":"x"}"#, &with(bad, true)).unwrap_err();
            assert!(
                e.contains(ENV_BACKEND_CREDENTIALS) && !e.contains(":s"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn rejects_bad_settings() {
        let bad_env = |k: &str| {
            if k == ENV_KEKS {
                Some("a=short".into())
            } else {
                env(k)
            }
        };
        let e = Config::load(br#"{"upstream_authority":"x"}"#, &bad_env).unwrap_err();
        assert!(e.contains("not 32 bytes"), "{e}");
        assert!(Config::load(br#"{"upstream_authority":"x","bogus":1}"#, &env).is_err());
        let no_active = |k: &str| {
            if k == ENV_ACTIVE_KEY_ID {
                Some("zzz".into())
            } else {
                env(k)
            }
        };
        assert!(Config::load(br#"{"upstream_authority":"x"}"#, &no_active).is_err());
        assert!(Config::load(
            br#"{"upstream_authority":"x","max_copy_part_bytes":0}"#,
            &env
        )
        .is_err());
        assert!(Config::load(
            br#"{"upstream_authority":"x","max_copy_part_bytes":10,"max_copy_buffer_bytes":9}"#,
            &env
        )
        .is_err());
        let c = Config::load(br#"{"upstream_authority":"x"}"#, &env).unwrap();
        assert_eq!(c.plugin.max_copy_part_bytes, 64 << 20);
        assert_eq!(c.plugin.max_copy_buffer_bytes, 256 << 20);
    }

    #[test]
    fn upstream_payload_setting() {
        let c = Config::load(br#"{"upstream_authority":"x"}"#, &env).unwrap();
        assert_eq!(c.plugin.upstream_payload, UpstreamPayload::SignedChunks);
        for (v, want) in [
            ("signed-chunks", UpstreamPayload::SignedChunks),
            ("signed-chunks-crc32c", UpstreamPayload::SignedChunksCrc32c),
            ("unsigned", UpstreamPayload::Unsigned),
        ] {
            let j = format!(r#"{{"upstream_authority":"x","upstream_payload":"{v}"}}"#);
            assert_eq!(
                Config::load(j.as_bytes(), &env)
                    .unwrap()
                    .plugin
                    .upstream_payload,
                want
            );
        }
        for bad in [r#""signed""#, r#""UNSIGNED""#, "true"] {
            let j = format!(r#"{{"upstream_authority":"x","upstream_payload":{bad}}}"#);
            assert!(Config::load(j.as_bytes(), &env).is_err(), "{bad}");
        }
    }

    #[test]
    fn suite_setting() {
        let c = Config::load(br#"{"upstream_authority":"x"}"#, &env).unwrap();
        assert_eq!(c.suite, Suite::Aes256Gcm);
        let c = Config::load(br#"{"upstream_authority":"x","suite":"aes-256-gcm"}"#, &env).unwrap();
        assert_eq!(c.suite, Suite::Aes256Gcm);
        let c = Config::load(
            br#"{"upstream_authority":"x","suite":"chacha20-poly1305"}"#,
            &env,
        )
        .unwrap();
        assert_eq!(c.suite, Suite::ChaCha20Poly1305);
        for bad in [
            r#"{"upstream_authority":"x","suite":"aes-128-gcm"}"#,
            r#"{"upstream_authority":"x","suite":"ChaCha20-Poly1305"}"#,
            r#"{"upstream_authority":"x","suite":""}"#,
        ] {
            let e = Config::load(bad.as_bytes(), &env).unwrap_err();
            assert!(e.contains("suite"), "{bad}: {e}");
        }
        assert!(Config::load(br#"{"upstream_authority":"x","suite":2}"#, &env).is_err());
    }

    #[test]
    fn passthrough_is_off_by_default_and_scoped() {
        let c = Config::load(br#"{"upstream_authority":"x"}"#, &env).unwrap();
        assert!(c.passthrough.is_empty());
        assert!(!c.passthrough_allowed("b", "k"));
        let c = Config::load(
            br#"{"upstream_authority":"x","passthrough_unencrypted":["legacy","b/old/"]}"#,
            &env,
        )
        .unwrap();
        assert!(c.passthrough_allowed("legacy", "any/key"));
        assert!(c.passthrough_allowed("b", "old/x"));
        assert!(!c.passthrough_allowed("b", "new/x"));
        assert!(!c.passthrough_allowed("legacy2", "k"));
        for bad in [
            r#"{"upstream_authority":"x","passthrough_unencrypted":true}"#,
            r#"{"upstream_authority":"x","passthrough_unencrypted":[]}"#,
            r#"{"upstream_authority":"x","passthrough_unencrypted":["/k"]}"#,
        ] {
            assert!(Config::load(bad.as_bytes(), &env).is_err(), "{bad}");
        }
    }
}
