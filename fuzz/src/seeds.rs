//! Writes the committed seed corpora, fuzz/corpus/<target>/<name>: `make fuzz-seeds`
//! (an ignored test, so that it is built without the fuzzing instrumentation).

use std::path::Path;
use std::rc::Rc;

use s3crypt_core::auth::checksum::{ChecksumAlgorithm, Checksummer};
use s3crypt_core::auth::sigv4::{self, EMPTY_SHA256};
use s3crypt_core::crypto::{wrap_dek, DataKey, Random, SeededRandom, Suite};
use s3crypt_core::format::part_table::PartTable;
use s3crypt_core::format::{
    end_table, part_header, Envelope, FrameEncryptor, Geometry, Layout, StoredChecksum,
    CLOSING_SEALED_LEN, END_SEALED_LEN, PART_OVERHEAD,
};
use s3crypt_core::headers::Headers;

use crate::*;

fn write(target: &str, name: &str, bytes: &[u8]) {
    assert!(
        bytes.len() < 20_000,
        "{target}/{name} is too large for a seed"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    Headers::from_pairs(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn checksum(name: &str, data: &[u8]) -> String {
    let mut c = Checksummer::new(ChecksumAlgorithm::from_header_name(name).unwrap());
    c.update(data);
    c.finalize_base64()
}

fn chunked() {
    let data: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut sizes = [128usize, 100, 1000].into_iter().cycle();
    let mut next = || sizes.next().unwrap();
    // (name, mode, trailer index + 1, signed trailers)
    for (name, mode, trailer) in [
        ("unsigned-trailer-crc32", 0u8, 1u8),
        ("unsigned-no-trailer", 0, 0),
        ("signed", 1, 0),
        ("signed-trailer-sha256", 2, 5),
        ("signed-trailer-none", 2, 0),
    ] {
        let hash = CHUNKED_PAYLOADS[usize::from(mode)];
        let mut signer = (mode != 0).then(|| ChunkSigner::for_put(hash));
        let trailers: Vec<(String, String)> = match trailer {
            0 => vec![],
            t => {
                let n = TRAILERS[usize::from(t) - 1];
                vec![(n.to_string(), checksum(n, &data))]
            }
        };
        let body = encode_chunked(&data, &mut next, signer.as_mut(), &trailers, mode == 2);
        let input = chunked_input(
            mode,
            trailer,
            data.len() as u32,
            0x0123_4567_89ab_cdef,
            &body,
        );
        write("chunked", name, &input);
    }
    let mut signer = ChunkSigner::for_put(CHUNKED_PAYLOADS[1]);
    let body = encode_chunked(b"", &mut next, Some(&mut signer), &[], false);
    write("chunked", "signed-empty", &chunked_input(1, 0, 0, 7, &body));
}

fn request(method: &str, path: &str, h: Headers) -> Request {
    Request {
        method: method.into(),
        path: path.into(),
        headers: h,
    }
}

fn sigv4_seeds() {
    // The AWS S3 API reference examples ("Signature Calculations for the Authorization
    // Header: Transferring Payload in a Single Chunk", "Authenticating Requests: Using
    // Query Parameters"), signed with the documentation's secret at 20130524T000000Z.
    let get = request(
        "GET",
        "/test.txt",
        headers(&[
            (":authority", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
        ]),
    );
    let put = request(
        "PUT",
        "/test%24file.text",
        headers(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
        ]),
    );
    let presigned = request(
        "GET",
        "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
        headers(&[(":authority", "examplebucket.s3.amazonaws.com")]),
    );
    // Requests signed by the crate's own `sign`.
    let mut meta = headers(&[
        (":authority", "photos.s3.local:8080"),
        ("content-type", "image/png"),
        ("x-amz-meta-owner", "  Ann   Smith "),
        ("x-amz-checksum-crc32", "AAAAAA=="),
    ]);
    sigv4::sign(
        "PUT",
        "/photos/a%20b/c.png?x-id=PutObject",
        &mut meta,
        ACCESS_KEY,
        SECRET_KEY,
        REGION,
        NOW,
        sigv4::UNSIGNED_PAYLOAD,
    );
    let streaming = Request {
        method: "PUT".into(),
        path: "/key".into(),
        headers: signed_put(sigv4::STREAMING_SIGNED_TRAILER),
    };
    for (name, ctl, r) in [
        ("aws-get-object", 0u8, get),
        ("aws-put-object", 0x41, put),
        ("aws-presigned", 0x82, presigned),
        (
            "signed-put-meta",
            0xc3,
            request("PUT", "/photos/a%20b/c.png?x-id=PutObject", meta),
        ),
        ("signed-streaming", 0x14, streaming),
    ] {
        let mut v = vec![ctl];
        v.extend_from_slice(r.serialize().as_bytes());
        write("sigv4", name, &v);
    }
}

fn envelope() {
    let rng = SeededRandom::new(1);
    let dek = DataKey::from_bytes([3; 32]);
    let w = wrap_dek(&KEK, &dek).unwrap();
    let sum = StoredChecksum {
        header: "x-amz-checksum-crc32".into(),
        value: "NhCmhg==".into(),
    };
    for (name, suite, layout, version, len, digests) in [
        (
            "v2-single-digests",
            Suite::Aes256Gcm,
            Layout::Single,
            2u8,
            Some(11u64),
            true,
        ),
        (
            "v2-single-chacha",
            Suite::ChaCha20Poly1305,
            Layout::Single,
            2,
            Some(0),
            false,
        ),
        (
            "v2-multipart",
            Suite::Aes256Gcm,
            Layout::Part,
            2,
            None,
            false,
        ),
        (
            "v1-single-digests",
            Suite::Aes256Gcm,
            Layout::Single,
            1,
            Some(11),
            true,
        ),
        (
            "v1-multipart",
            Suite::ChaCha20Poly1305,
            Layout::Part,
            1,
            None,
            false,
        ),
    ] {
        let mut e = Envelope::new(suite, layout, "kek-2024.a_1", w, len);
        e.version = version;
        if digests {
            e.md5 = Some([0xab; 16]);
            e.checksum = Some(sum.clone());
        }
        e.seal(&dek, &rng).unwrap();
        write("envelope", name, e.encode().as_bytes());
    }
}

fn xml() {
    let ns = "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"";
    let decl = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    // Stored sizes of s3crypt objects: 100 bytes single (one frame, 28 bytes overhead),
    // a 2-part object of 6 MiB + 1 byte, and a plain (foreign) object.
    let single = 100 + 28;
    let multi = 6 * 1024 * 1024 + 1 + 2 * PART_OVERHEAD;
    let docs = [
        ("list-objects-v2", format!("{decl}<ListBucketResult {ns}><Name>bucket</Name><Prefix>photos/</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated><Contents><Key>photos/a&amp;b.png</Key><LastModified>2009-10-12T17:50:30.000Z</LastModified><ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag><Size>{single}</Size><StorageClass>STANDARD</StorageClass></Contents><Contents><Key>photos/big.bin</Key><LastModified>2009-10-12T17:50:30.000Z</LastModified><ETag>\"3858f62230ac3c915f300c664312c11f-2\"</ETag><Size>{multi}</Size><StorageClass>STANDARD</StorageClass></Contents><Contents><Key>photos/odd</Key><ETag>\"x\"</ETag><Size>5</Size></Contents><CommonPrefixes><Prefix>photos/2006/</Prefix></CommonPrefixes></ListBucketResult>")),
        ("list-objects-v1", format!("{decl}<ListBucketResult {ns}><Name>bucket</Name><Prefix/><Marker/><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated><Contents><Key>my-image.jpg</Key><LastModified>2009-10-12T17:50:30.000Z</LastModified><ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag><Size>{single}</Size><StorageClass>STANDARD</StorageClass><Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID><DisplayName>mtd@amazon.com</DisplayName></Owner></Contents></ListBucketResult>")),
        ("list-object-versions", format!("{decl}<ListVersionsResult {ns}><Name>bucket</Name><Prefix>my</Prefix><KeyMarker/><VersionIdMarker/><MaxKeys>5</MaxKeys><IsTruncated>false</IsTruncated><Version><Key>my-image.jpg</Key><VersionId>3/L4kqtJl40Nr8X8gdRQBpUMLUo</VersionId><IsLatest>true</IsLatest><LastModified>2009-10-12T17:50:30.000Z</LastModified><ETag>\"fba9dede5f27731c9771645a39863328\"</ETag><Size> {single} </Size><StorageClass>STANDARD</StorageClass></Version><DeleteMarker><Key>my-second-image.jpg</Key><VersionId>03jpff543dhffds434rfdsFDN943fdsFkdmqnh892</VersionId><IsLatest>true</IsLatest></DeleteMarker></ListVersionsResult>")),
        ("list-parts", format!("{decl}<ListPartsResult {ns}><Bucket>example-bucket</Bucket><Key>example-object</Key><UploadId>XXBsb2FkIElEIGZvciBlbHZpbmcncyVcdS1tb3ZpZS5tMnRzEEEwbG9hZA</UploadId><PartNumberMarker>1</PartNumberMarker><NextPartNumberMarker>3</NextPartNumberMarker><MaxParts>2</MaxParts><IsTruncated>true</IsTruncated><Part><PartNumber>2</PartNumber><LastModified>2010-11-10T20:48:34.000Z</LastModified><ETag>\"7778aef83f66abc1fa1e8477f296d394\"</ETag><Size>{}</Size></Part><Part><PartNumber>3</PartNumber><LastModified>2010-11-10T20:48:33.000Z</LastModified><ETag>\"aaaa18db4cc2f85cedef654fccc4a4x8\"</ETag><Size>{}</Size></Part></ListPartsResult>", 5 * 1024 * 1024 + PART_OVERHEAD, 1 + PART_OVERHEAD)),
        ("copy-object-result", format!("{decl}<CopyObjectResult><LastModified>2009-10-28T22:32:00.000Z</LastModified><ETag>\"9b2cf535f27731c974343645a3985328\"</ETag></CopyObjectResult>")),
        ("complete-multipart-upload", "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Part><PartNumber>1</PartNumber><ETag>\"a54357aff0632cce46d942af68356b38\"</ETag></Part><Part><PartNumber>2</PartNumber><ETag>\"0c78aef83f66abc1fa1e8477f296d394\"</ETag></Part><Part><PartNumber>3</PartNumber><ETag>\"acbd18db4cc2f85cedef654fccc4a4d8\"</ETag></Part></CompleteMultipartUpload>".to_string()),
        ("complete-multipart-upload-result", format!("{decl}<CompleteMultipartUploadResult {ns}><Location>http://Example-Bucket.s3.amazonaws.com/Example-Object</Location><Bucket>Example-Bucket</Bucket><Key>Example-Object</Key><ETag>\"3858f62230ac3c915f300c664312c11f-9\"</ETag></CompleteMultipartUploadResult>")),
        ("initiate-multipart-upload-result", format!("{decl}<InitiateMultipartUploadResult {ns}><Bucket>example-bucket</Bucket><Key>example-object</Key><UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId></InitiateMultipartUploadResult>")),
        ("error", format!("{decl}<Error><Code>NoSuchKey</Code><Message>The resource you requested does not exist</Message><Resource>/mybucket/myfoto.jpg</Resource><RequestId>4442587FB7D0A2F9</RequestId></Error>")),
        ("delete-objects", "<Delete><Object><Key>sample1.txt</Key></Object><Object><Key>sample2.txt</Key><VersionId>OYcLXagmS.WaD..oyH4KRguB95_YhLs7</VersionId></Object><Quiet>true</Quiet></Delete>".to_string()),
    ];
    for (name, doc) in docs {
        write("xml", name, doc.as_bytes());
    }
}

fn classify() {
    let suffixes = "s3.local,s3.amazonaws.com";
    let reqs = [
        ("get-object-path-style", "GET\n/bucket/photos/a%20b.png?versionId=3\nhost:127.0.0.1:8080"),
        ("put-object-virtual-host", "PUT\n/dir/file.txt?x-id=PutObject\n:authority:photos.s3.local:8080\ncontent-type:text/plain"),
        ("list-objects-v2", "GET\n/?list-type=2&prefix=photos%2F2006%2F&delimiter=%2F&max-keys=100\n:authority:photos.s3.amazonaws.com"),
        ("upload-part-copy", "PUT\n/bucket/big.bin?partNumber=2&uploadId=VXBsb2FkIElE\n:authority:127.0.0.1\nx-amz-copy-source:/src/key%20a?versionId=1"),
        ("complete-multipart", "POST\n/bucket/big.bin?uploadId=VXBsb2FkIElE\n:authority:127.0.0.1"),
        ("delete-objects", "POST\n/bucket?delete\n:authority:127.0.0.1"),
        ("bucket-tagging", "PUT\n/bucket?tagging\n:authority:127.0.0.1"),
        ("presigned-get", "GET\n/bucket/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404&response-content-type=text%2Fplain\n:authority:127.0.0.1"),
        ("list-buckets", "GET\n/\n:authority:s3.local"),
    ];
    for (name, r) in reqs {
        write("classify", name, format!("{suffixes}\n{r}").as_bytes());
    }
}

fn part_table() {
    let mib5 = 5 * 1024 * 1024;
    let trim = |mut t: Vec<u8>| {
        while t.last() == Some(&0) {
            t.pop();
        }
        t
    };
    // 0: sealed end tables (zero padding dropped: the target pads).
    for (name, flags, lengths) in [
        ("end-table", 0u8, vec![mib5, mib5, mib5, 123]),
        ("closing-table", 1, vec![mib5, 6 * 1024 * 1024, 7]),
    ] {
        let size = if flags == 0 {
            END_SEALED_LEN
        } else {
            CLOSING_SEALED_LEN
        };
        let mut v = vec![0, flags];
        v.extend_from_slice(&(lengths.len() as u16).to_le_bytes());
        v.extend(trim(end_table(&lengths, size, None)));
        write("part_table", name, &v);
        // The same as written now: a version 2 table with the multipart MD5.
        let mut v2 = vec![0, flags];
        v2.extend_from_slice(&(lengths.len() as u16).to_le_bytes());
        v2.extend(trim(end_table(&lengths, size, Some(&[0x5a; 16]))));
        write("part_table", &format!("{name}-etag"), &v2);
    }
    // 1: cached tables.
    for (name, t) in [
        ("cached-end", PartTable::from_end(&[mib5, mib5, 9])),
        ("cached-closing", PartTable::from_closing(&[mib5, 100])),
        ("cached-v1", PartTable::new(vec![(1, mib5), (3, 77)], false)),
    ] {
        let mut v = vec![1];
        v.extend_from_slice(&100u64.to_le_bytes());
        v.extend_from_slice(&(mib5 + 5).to_le_bytes());
        v.extend_from_slice(t.unwrap().encode().as_bytes());
        write("part_table", name, &v);
    }
    // 2, 3: a part header and what follows.
    let head = part_header(&Geometry::part_in(Layout::Final, 1, 40));
    let mut walk = vec![2, 0, 1];
    walk.extend_from_slice(&1u16.to_le_bytes());
    walk.extend_from_slice(&(40 + PART_OVERHEAD).to_le_bytes());
    walk.extend_from_slice(&head);
    walk.extend_from_slice(&[0x55; 64]);
    write("part_table", "walk-final-part", &walk);
    let mut parts = vec![3, 1, 1];
    parts.extend_from_slice(&1u16.to_le_bytes());
    parts.extend_from_slice(&42u64.to_le_bytes());
    parts.extend_from_slice(&head);
    parts.extend_from_slice(&[0xaa; 200]);
    write("part_table", "parts-final-part", &parts);
    // 4: a genuine single object under the seeds' key.
    let nonces: Rc<dyn Random> = Rc::new(SeededRandom::new(4));
    let plain: Vec<u8> = (0..100u8).collect();
    let mut stored = Vec::new();
    let mut e = FrameEncryptor::new(
        Suite::Aes256Gcm,
        &DataKey::from_bytes(SEED_KEY),
        Geometry::single(100),
        &nonces,
    );
    e.push(&plain, &mut stored).unwrap();
    e.finish(&mut stored).unwrap();
    let mut single = vec![4, 0, 0];
    single.extend_from_slice(&100u32.to_le_bytes());
    single.extend_from_slice(&99u64.to_le_bytes());
    single.extend(stored);
    write("part_table", "stream-single-100", &single);
}

fn sealed() {
    // Genuine objects of every kind, untouched and with one byte changed.
    for (name, suite, kind, parts, flip) in [
        ("sealed-final", 0u8, 0u8, 1u8, false),
        ("sealed-end", 1, 1, 1, false),
        ("sealed-closing", 0, 2, 1, false),
        ("sealed-v1", 1, 3, 1, false),
        ("sealed-end-changed", 0, 1, 0, true),
    ] {
        let mut v = vec![suite, kind, parts, 3];
        v.extend_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        if flip {
            v.extend_from_slice(&[0x10, 0x00, 0x01]);
        }
        write("sealed", name, &v);
    }
}

#[test]
#[ignore = "writes fuzz/corpus: make fuzz-seeds"]
fn write_seeds() {
    chunked();
    sigv4_seeds();
    envelope();
    xml();
    classify();
    part_table();
    sealed();
    seeds_are_genuine();
}

/// The seeds are what their names say: bodies and requests that the crate accepts,
/// envelopes that open.
#[test]
fn seeds_are_genuine() {
    use s3crypt_core::auth::chunked::ChunkedDecoder;
    use s3crypt_core::auth::sigv4::PayloadMode;
    use s3crypt_core::crypto::unwrap_dek;
    let dir = |t: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(t);
    let files = |t: &str| {
        let mut v: Vec<_> = std::fs::read_dir(dir(t))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v.into_iter()
            .map(|p| (p.display().to_string(), std::fs::read(p).unwrap()))
    };
    for (name, data) in files("chunked") {
        let mut inp = Input(&data);
        let (m, t, len, _) = (inp.u8(), inp.u8(), inp.u32(), inp.u64());
        let mode = [
            PayloadMode::StreamingUnsignedTrailer,
            PayloadMode::StreamingSigned,
            PayloadMode::StreamingSignedTrailer,
        ][usize::from(m)]
        .clone();
        let ctx = chunk_context(CHUNKED_PAYLOADS[usize::from(m)]);
        let trailer = (t > 0).then(|| TRAILERS[usize::from(t) - 1]);
        let mut d = ChunkedDecoder::new(&mode, ctx, trailer, len.into()).unwrap();
        let mut out = Vec::new();
        d.push(inp.rest(), &mut out).unwrap();
        d.finish().unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    for (name, data) in files("sigv4") {
        let r = Request::parse(std::str::from_utf8(&data[1..]).unwrap());
        sigv4::verify(&r.method, &r.path, &r.headers, &secret_for, NOW)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    for (name, data) in files("envelope") {
        let mut e = Envelope::decode(std::str::from_utf8(&data).unwrap()).unwrap();
        let dek = unwrap_dek(&KEK, &e.wrapped_dek).unwrap();
        e.open(&dek).unwrap_or_else(|err| panic!("{name}: {err:?}"));
    }
    for (name, data) in files("classify") {
        let text = std::str::from_utf8(&data).unwrap();
        let (suffixes, rest) = text.split_once('\n').unwrap();
        let suffixes: Vec<String> = suffixes.split(',').map(str::to_string).collect();
        let r = Request::parse(rest);
        let path = sigv4::strip_presign_params(&r.path);
        s3crypt_core::s3::parse_request(&r.method, &path, &r.headers, &suffixes)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}
