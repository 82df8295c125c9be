//! The envelope: suite, layout, key id, wrapped data key, lengths and client-visible
//! checksums, sealed and carried in the object's metadata.

use super::*;
use crate::crypto::Random;

/// Client-visible checksum recorded at upload: algorithm header name and base64 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChecksum {
    pub header: String,
    pub value: String,
}

/// The envelope stored with every encrypted object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub suite: Suite,
    pub layout: Layout,
    pub key_id: String,
    pub wrapped_dek: [u8; WRAPPED_DEK_LEN],
    /// Plaintext length (single objects only).
    pub plain_len: Option<u64>,
    /// MD5 of the plaintext, the client-visible ETag, when known before upload.
    pub md5: Option<[u8; 16]>,
    /// The client's full-object checksum, when known before upload.
    pub checksum: Option<StoredChecksum>,
    /// Envelope version: 1 (digests in clear, read only), 2 ([`ENVELOPE_VERSION`]:
    /// multipart objects, and single objects written before version 3) or 3
    /// ([`SINGLE_ENVELOPE_VERSION`]: single objects with a sealed trailer).
    pub version: u8,
    /// Version 1: nonce ‖ tag of an empty message whose AAD is the fields above.
    /// Versions 2 and 3: nonce ‖ the sealed secrets block (MD5, checksum; [`SECRETS_LEN`]
    /// bytes) ‖ tag, whose AAD is the clear fields. `md5` and `checksum` are only known
    /// after [`Envelope::open`].
    pub tag: Vec<u8>,
}

/// The secrets block of version 2 and 3 envelopes and of trailers: `u8 flags (1 md5,
/// 2 checksum) ‖ md5 (16, zeros if absent) ‖ u8 len ‖ checksum header ‖ u8 len ‖
/// checksum value ‖ zeros` to [`SECRETS_LEN`] bytes.
pub(crate) fn encode_secrets(
    md5: Option<[u8; 16]>,
    checksum: Option<&StoredChecksum>,
) -> Result<[u8; SECRETS_LEN], FormatError> {
    let mut b = [0u8; SECRETS_LEN];
    let mut v = Vec::with_capacity(SECRETS_LEN);
    let flags = u8::from(md5.is_some()) | (u8::from(checksum.is_some()) << 1);
    v.push(flags);
    v.extend_from_slice(&md5.unwrap_or([0; 16]));
    let (h, val) = checksum.map_or(("", ""), |c| (c.header.as_str(), c.value.as_str()));
    for x in [h, val] {
        v.push(u8::try_from(x.len()).map_err(|_| FormatError::Envelope)?);
        v.extend_from_slice(x.as_bytes());
    }
    b.get_mut(..v.len())
        .ok_or(FormatError::Envelope)?
        .copy_from_slice(&v);
    Ok(b)
}

/// Reads a decrypted secrets block (strictly: unused bytes must be zero).
#[allow(clippy::type_complexity)]
pub(crate) fn decode_secrets(
    b: &[u8],
) -> Result<(Option<[u8; 16]>, Option<StoredChecksum>), FormatError> {
    let bad = FormatError::Envelope;
    let (&flags, rest) = b.split_first().ok_or(bad)?;
    if flags > 3 {
        return Err(bad);
    }
    let md5: [u8; 16] = rest.get(..16).and_then(|m| m.try_into().ok()).ok_or(bad)?;
    let mut pos = 17usize;
    let mut field = |b: &[u8]| -> Result<String, FormatError> {
        let len = usize::from(*b.get(pos).ok_or(FormatError::Envelope)?);
        let start = pos.checked_add(1).ok_or(FormatError::Envelope)?;
        let end = start.checked_add(len).ok_or(FormatError::Envelope)?;
        let s = b.get(start..end).ok_or(FormatError::Envelope)?;
        pos = end;
        String::from_utf8(s.to_vec()).map_err(|_| FormatError::Envelope)
    };
    let header = field(b)?;
    let value = field(b)?;
    let padding_zero = b.get(pos..).is_some_and(|p| p.iter().all(|&x| x == 0));
    let has_md5 = flags & 1 != 0;
    let has_sum = flags & 2 != 0;
    if b.len() != SECRETS_LEN
        || !padding_zero
        || (!has_md5 && md5 != [0; 16])
        || (has_sum == header.is_empty())
        || (!has_sum && !value.is_empty())
        || (has_sum && !header.starts_with("x-amz-checksum-"))
    {
        return Err(bad);
    }
    Ok((
        has_md5.then_some(md5),
        has_sum.then_some(StoredChecksum { header, value }),
    ))
}

/// Key ids are short and safe to log and to put in a header.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Envelope {
    /// A new envelope for a data key wrapped under `key_id`; `seal` fills in the tag.
    pub fn new(
        suite: Suite,
        layout: Layout,
        key_id: &str,
        wrapped_dek: [u8; WRAPPED_DEK_LEN],
        plain_len: Option<u64>,
    ) -> Envelope {
        Envelope {
            suite,
            layout,
            key_id: key_id.to_string(),
            wrapped_dek,
            plain_len,
            md5: None,
            checksum: None,
            version: ENVELOPE_VERSION,
            tag: Vec::new(),
        }
    }

    fn aad(&self) -> Vec<u8> {
        let mut a = Vec::with_capacity(128);
        a.extend_from_slice(b"s3crypt-envelope");
        a.push(self.version);
        a.push(self.suite.id());
        a.push(self.layout.code());
        a.push(self.key_id.len() as u8);
        a.extend_from_slice(self.key_id.as_bytes());
        a.extend_from_slice(&self.wrapped_dek);
        match self.plain_len {
            Some(l) => {
                a.push(1);
                a.extend_from_slice(&l.to_be_bytes());
            }
            None => a.push(0),
        }
        if self.version != 1 {
            // Version 2: the digests are sealed, not authenticated in clear.
            return a;
        }
        match &self.md5 {
            Some(m) => {
                a.push(1);
                a.extend_from_slice(m);
            }
            None => a.push(0),
        }
        match &self.checksum {
            Some(c) => {
                a.push(1);
                for s in [&c.header, &c.value] {
                    a.extend_from_slice(&(s.len() as u16).to_be_bytes());
                    a.extend_from_slice(s.as_bytes());
                }
            }
            None => a.push(0),
        }
        a
    }

    /// Computes the envelope tag under the data key.
    pub fn seal(&mut self, dek: &DataKey, rng: &dyn Random) -> Result<(), FormatError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce)?;
        self.seal_with_nonce(dek, nonce)
    }

    pub(crate) fn seal_with_nonce(
        &mut self,
        dek: &DataKey,
        nonce: [u8; NONCE_LEN],
    ) -> Result<(), FormatError> {
        let aead = FrameAead::new(self.suite, dek);
        let mut body = if self.version == 1 {
            Vec::new()
        } else {
            self.secrets()?.to_vec()
        };
        let tag = aead.seal(&nonce, &self.aad(), &mut body)?;
        self.tag = [&nonce[..], &body, &tag[..]].concat();
        Ok(())
    }

    /// The version 2 secrets block (see [`encode_secrets`]).
    fn secrets(&self) -> Result<[u8; SECRETS_LEN], FormatError> {
        encode_secrets(self.md5, self.checksum.as_ref())
    }

    /// Reads a decrypted secrets block (strictly: unused bytes must be zero).
    fn read_secrets(&mut self, b: &[u8]) -> Result<(), FormatError> {
        let (md5, checksum) = decode_secrets(b)?;
        self.md5 = md5;
        self.checksum = checksum;
        Ok(())
    }

    /// Checks the envelope under the (unwrapped) data key; for version 2 also decrypts
    /// the sealed digests into `md5` and `checksum`.
    pub fn open(&mut self, dek: &DataKey) -> Result<(), FormatError> {
        let body_len = if self.version == 1 { 0 } else { SECRETS_LEN };
        let (nonce, rest) = self
            .tag
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(FormatError::Envelope)?;
        let (body, tag) = rest
            .split_last_chunk::<TAG_LEN>()
            .ok_or(FormatError::Envelope)?;
        if body.len() != body_len {
            return Err(FormatError::Envelope);
        }
        let (nonce, tag) = (*nonce, *tag);
        let mut body = body.to_vec();
        if self.version != 1 {
            // The secrets are not known before this: authenticate without them.
            self.md5 = None;
            self.checksum = None;
        }
        FrameAead::new(self.suite, dek).open(&nonce, &self.aad(), &mut body, &tag)?;
        if self.version != 1 {
            self.read_secrets(&body)?;
        }
        Ok(())
    }

    /// [`Envelope::open`] without keeping what it decrypts.
    pub fn verify(&self, dek: &DataKey) -> Result<(), FormatError> {
        self.clone().open(dek)
    }

    /// The header value: version 2 `v=2;s=1;t=s;k=<id>;w=<b64>[;l=<len>];e=<b64>`;
    /// version 1 `v=1;s=1;t=s;k=<id>;w=<b64>[;l=<len>][;m=<hex>][;c=<name>:<b64>];a=<b64>`.
    pub fn encode(&self) -> String {
        let mut s = format!(
            "v={};s={};t={};k={};w={}",
            self.version,
            self.suite.id(),
            match self.layout {
                Layout::Single => "s",
                Layout::Part
                | Layout::Final
                | Layout::End
                | Layout::Closing
                | Layout::Table
                | Layout::Trailer => {
                    "m"
                }
            },
            self.key_id,
            B64.encode(self.wrapped_dek)
        );
        if let Some(l) = self.plain_len {
            s.push_str(&format!(";l={l}"));
        }
        if self.version != 1 {
            s.push_str(&format!(";e={}", B64.encode(&self.tag)));
            return s;
        }
        if let Some(m) = &self.md5 {
            s.push_str(&format!(";m={}", hex::encode(m)));
        }
        if let Some(c) = &self.checksum {
            s.push_str(&format!(";c={}:{}", c.header, c.value));
        }
        s.push_str(&format!(";a={}", B64.encode(&self.tag)));
        s
    }

    /// Parses a header value. Unknown versions, suites, layouts and fields are rejected
    /// (fail closed: an object we cannot fully interpret is never served).
    pub fn decode(v: &str) -> Result<Envelope, FormatError> {
        let mut version = None;
        let mut suite = None;
        let mut layout = None;
        let mut key_id = None;
        let mut wrapped = None;
        let mut plain_len = None;
        let mut md5 = None;
        let mut checksum = None;
        let mut tag = None;
        let mut sealed = false;
        for field in v.trim().split(';') {
            let (k, val) = field.split_once('=').ok_or(FormatError::Envelope)?;
            let dup = match k {
                "v" => version
                    .replace(val.parse::<u8>().map_err(|_| FormatError::Envelope)?)
                    .is_some(),
                "s" => suite
                    .replace(
                        val.parse::<u8>()
                            .ok()
                            .and_then(Suite::from_id)
                            .ok_or(FormatError::Envelope)?,
                    )
                    .is_some(),
                "t" => layout
                    .replace(match val {
                        "s" => Layout::Single,
                        "m" => Layout::Part,
                        _ => return Err(FormatError::Envelope),
                    })
                    .is_some(),
                "k" => {
                    if !valid_key_id(val) {
                        return Err(FormatError::Envelope);
                    }
                    key_id.replace(val.to_string()).is_some()
                }
                "w" => {
                    let b: [u8; WRAPPED_DEK_LEN] = B64
                        .decode(val)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .ok_or(FormatError::Envelope)?;
                    wrapped.replace(b).is_some()
                }
                "l" => plain_len
                    .replace(val.parse::<u64>().map_err(|_| FormatError::Envelope)?)
                    .is_some(),
                "m" => {
                    let b: [u8; 16] = hex::decode(val)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .ok_or(FormatError::Envelope)?;
                    md5.replace(b).is_some()
                }
                "c" => {
                    let (h, cv) = val.split_once(':').ok_or(FormatError::Envelope)?;
                    if !h.starts_with("x-amz-checksum-") || h.len() > 64 || cv.len() > 128 {
                        return Err(FormatError::Envelope);
                    }
                    checksum
                        .replace(StoredChecksum {
                            header: h.to_string(),
                            value: cv.to_string(),
                        })
                        .is_some()
                }
                "a" | "e" => {
                    let want = if k == "a" {
                        NONCE_LEN + TAG_LEN
                    } else {
                        NONCE_LEN + SECRETS_LEN + TAG_LEN
                    };
                    let b = B64
                        .decode(val)
                        .ok()
                        .filter(|b| b.len() == want)
                        .ok_or(FormatError::Envelope)?;
                    sealed = k == "e";
                    tag.replace(b).is_some()
                }
                _ => return Err(FormatError::Envelope),
            };
            if dup {
                return Err(FormatError::Envelope);
            }
        }
        // Version 1 carries its digests in clear and an `a` tag; versions 2 and 3 only
        // the sealed `e` block; version 3 (a trailer after the frames) is single only.
        let version = version.ok_or(FormatError::Envelope)?;
        let ok = match version {
            1 => !sealed,
            ENVELOPE_VERSION => sealed && md5.is_none() && checksum.is_none(),
            SINGLE_ENVELOPE_VERSION => {
                sealed && md5.is_none() && checksum.is_none() && layout == Some(Layout::Single)
            }
            _ => false,
        };
        if !ok {
            return Err(FormatError::Envelope);
        }
        let layout = layout.ok_or(FormatError::Envelope)?;
        if (layout == Layout::Single) != plain_len.is_some() {
            return Err(FormatError::Envelope);
        }
        Ok(Envelope {
            suite: suite.ok_or(FormatError::Envelope)?,
            layout,
            key_id: key_id.ok_or(FormatError::Envelope)?,
            wrapped_dek: wrapped.ok_or(FormatError::Envelope)?,
            plain_len,
            md5,
            checksum,
            version,
            tag: tag.ok_or(FormatError::Envelope)?,
        })
    }
}
