//! S3-style errors: every failure the filter reports to a client is one of these,
//! rendered as the XML body S3 uses, with the HTTP status S3 gives for the code.

use std::fmt;

/// An error answered to the client as S3 would answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl S3Error {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        S3Error {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn access_denied(msg: impl Into<String>) -> Self {
        Self::new(403, "AccessDenied", msg)
    }
    pub fn signature_mismatch() -> Self {
        Self::new(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        )
    }
    pub fn invalid_access_key() -> Self {
        Self::new(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        )
    }
    pub fn bad_digest() -> Self {
        Self::new(400, "BadDigest", "The Content-MD5 or checksum value that you specified did not match what the server received.")
    }
    pub fn invalid_digest() -> Self {
        Self::new(
            400,
            "InvalidDigest",
            "The Content-MD5 or checksum value that you specified is not valid.",
        )
    }
    pub fn sha256_mismatch() -> Self {
        Self::new(
            400,
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    }
    pub fn invalid_request(msg: impl Into<String>) -> Self {
        Self::new(400, "InvalidRequest", msg)
    }
    pub fn invalid_argument(msg: impl Into<String>) -> Self {
        Self::new(400, "InvalidArgument", msg)
    }
    pub fn incomplete_body() -> Self {
        Self::new(
            400,
            "IncompleteBody",
            "You did not provide the number of bytes specified by the Content-Length HTTP header.",
        )
    }
    pub fn missing_content_length() -> Self {
        Self::new(
            411,
            "MissingContentLength",
            "You must provide the Content-Length HTTP header.",
        )
    }
    pub fn entity_too_large() -> Self {
        Self::new(
            400,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed object size.",
        )
    }
    pub fn invalid_range(msg: impl Into<String>) -> Self {
        Self::new(416, "InvalidRange", msg)
    }
    pub fn not_implemented(msg: impl Into<String>) -> Self {
        Self::new(501, "NotImplemented", msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, "InternalError", msg)
    }
    pub fn service_unavailable(msg: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", msg)
    }
    pub fn slow_down(msg: impl Into<String>) -> Self {
        Self::new(503, "SlowDown", msg)
    }
    /// The stored object failed authentication (tampered, truncated or spliced).
    pub fn integrity() -> Self {
        Self::new(
            500,
            "InternalError",
            "s3crypt: the stored object failed integrity verification; no data was released.",
        )
    }

    /// The XML body S3 sends with this error.
    pub fn to_xml(&self, resource: &str, request_id: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>{}</RequestId></Error>",
            self.code,
            xml_escape(&self.message),
            xml_escape(resource),
            xml_escape(request_id)
        )
    }
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for S3Error {}

/// Escapes text for inclusion in XML character data or attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_s3_xml() {
        let e = S3Error::signature_mismatch();
        let x = e.to_xml("/b/k<1>", "req-1");
        assert!(x.contains("<Code>SignatureDoesNotMatch</Code>"));
        assert!(x.contains("<Resource>/b/k&lt;1&gt;</Resource>"));
        assert_eq!(e.status, 403);
    }
}
