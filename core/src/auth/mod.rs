//! Who sent a request and what it carries: SigV4 (headers, presigned, chunk signatures),
//! aws-chunked bodies and the payload checksums S3 knows.
pub mod checksum;
pub mod chunked;
pub mod sigv4;
