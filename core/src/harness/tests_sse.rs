//! The backend's server-side encryption under s3crypt's: SSE-S3 and SSE-KMS headers go
//! upstream and come back; SSE-C keys go with the client's request and with every request
//! the filter makes for that object (HEADs, part-table reads, ranged reads of a copy
//! source, parts it writes), and are never logged.

use md5::{Digest as _, Md5};

use super::check::marked;
use super::drive::SentKind;
use super::*;

const MIB: usize = 1 << 20;

/// An SSE-C key: (key, key MD5), base64.
fn customer_key(seed: u8) -> (String, String) {
    let k = [seed; 32];
    (B64.encode(k), B64.encode(Md5::digest(k)))
}

fn with_key(r: Request, (k, m): &(String, String)) -> Request {
    r.header("x-amz-server-side-encryption-customer-algorithm", "AES256")
        .header("x-amz-server-side-encryption-customer-key", k)
        .header("x-amz-server-side-encryption-customer-key-md5", m)
}

fn with_source_key(r: Request, (k, m): &(String, String)) -> Request {
    r.header(
        "x-amz-copy-source-server-side-encryption-customer-algorithm",
        "AES256",
    )
    .header("x-amz-copy-source-server-side-encryption-customer-key", k)
    .header(
        "x-amz-copy-source-server-side-encryption-customer-key-md5",
        m,
    )
}

fn copy(src: &str, dst: &str) -> Request {
    Request::new("PUT", &obj(dst)).header(
        "x-amz-copy-source",
        &format!("/{BUCKET}/{}", client::encode(src, false)),
    )
}

/// No log note of the proxy holds the key.
fn not_logged(h: &Harness, key: &(String, String)) {
    for n in h.proxy().stats.notes.borrow().iter() {
        assert!(!n.contains(&key.0), "the SSE-C key was logged: {n}");
    }
}

#[test]
fn sse_s3_and_kms_headers_pass_both_ways() {
    let mut h = Harness::shared(110);
    let from = h.mark();
    let r =
        h.send(Request::put(&obj("s3"), b"data").header("x-amz-server-side-encryption", "AES256"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-amz-server-side-encryption"), Some("AES256"));
    let up: Vec<&Sent> = h
        .sent_since(from)
        .iter()
        .filter(|s| s.kind == SentKind::Upstream)
        .collect();
    assert_eq!(
        up[0].headers.get("x-amz-server-side-encryption"),
        Some("AES256")
    );
    let g = h.get("s3");
    assert_eq!(
        (g.body.as_slice(), g.header("x-amz-server-side-encryption")),
        (&b"data"[..], Some("AES256"))
    );
    assert_eq!(
        h.head("s3").header("x-amz-server-side-encryption"),
        Some("AES256")
    );
    let kms = [
        ("x-amz-server-side-encryption", "aws:kms"),
        (
            "x-amz-server-side-encryption-aws-kms-key-id",
            "arn:aws:kms:us-east-1:1:key/k",
        ),
        ("x-amz-server-side-encryption-context", "eyJhIjoiYiJ9"),
        ("x-amz-server-side-encryption-bucket-key-enabled", "true"),
    ];
    let mut put = Request::put(&obj("kms"), b"data");
    let mut create = Request::new("POST", &format!("{}?uploads", obj("kms-mp")));
    for (k, v) in kms {
        put = put.header(k, v);
        create = create.header(k, v);
    }
    let from = h.mark();
    assert_eq!(h.send(put).status, 200);
    assert_eq!(h.send(create).status, 200);
    let up: Vec<&Sent> = h
        .sent_since(from)
        .iter()
        .filter(|s| s.kind == SentKind::Upstream)
        .collect();
    assert_eq!(up.len(), 2);
    for s in up {
        for (k, v) in kms {
            assert_eq!(s.headers.get(k), Some(v), "{} {k}", s.path());
        }
    }
    assert_eq!(
        h.head("kms")
            .header("x-amz-server-side-encryption-aws-kms-key-id"),
        Some(kms[1].1)
    );
}

#[test]
fn sse_c_single_objects_every_read_carries_the_key() {
    let mut h = Harness::shared(111);
    let key = customer_key(1);
    let data = marked(200_000, 1);
    let r = h.send(with_key(Request::put(&obj("c"), &data), &key));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-amz-server-side-encryption-customer-key-md5"),
        Some(key.1.as_str())
    );
    // Without the key the backend refuses, as S3 does.
    assert_eq!(h.get("c").status, 400);
    let g = h.send(with_key(Request::get(&obj("c")), &key));
    assert!(g.ok() && g.body == data);
    // A range read makes a HEAD first: it carries the key.
    let from = h.mark();
    let g = h.send(with_key(
        Request::get(&obj("c")).header("range", "bytes=70000-70009"),
        &key,
    ));
    assert_eq!(g.status, 206, "{}", g.text());
    assert_eq!(g.body, &data[70000..70010]);
    for s in h.sent_since(from) {
        assert_eq!(
            s.headers.get("x-amz-server-side-encryption-customer-key"),
            Some(key.0.as_str()),
            "{:?}",
            s.kind
        );
    }
    // GetObjectAttributes (a HEAD call-out).
    let a = h.send(with_key(
        Request::get(&format!("{}?attributes", obj("c")))
            .header("x-amz-object-attributes", "ObjectSize"),
        &key,
    ));
    assert_eq!(
        a.xml("ObjectSize"),
        Some(data.len().to_string()),
        "{}",
        a.text()
    );
    let a = h.send(
        Request::get(&format!("{}?attributes", obj("c")))
            .header("x-amz-object-attributes", "ObjectSize"),
    );
    assert_eq!(a.status, 400);
    // CopyObject from an SSE-C source to an SSE-C destination under another key.
    let key2 = customer_key(2);
    let r = h.send(with_key(with_source_key(copy("c", "c2"), &key), &key2));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.send(with_key(Request::get(&obj("c2")), &key2)).body, data);
    // UploadPartCopy of it into an SSE-C upload.
    let id = {
        let r = h.send(with_key(
            Request::new("POST", &format!("{}?uploads", obj("pc"))),
            &key2,
        ));
        r.xml("UploadId").unwrap()
    };
    let r = h.send(with_key(
        with_source_key(
            Request::new("PUT", &part_path("pc", &id, 1))
                .header("x-amz-copy-source", &format!("/{BUCKET}/c")),
            &key,
        ),
        &key2,
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let e = r.xml("ETag").unwrap();
    let r = h.send(with_key(
        Request::post(
            &format!("{}?uploadId={}", obj("pc"), enc(&id)),
            complete_body(&[(1, e)]).as_bytes(),
        ),
        &key2,
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.send(with_key(Request::get(&obj("pc")), &key2)).body, data);
    not_logged(&h, &key);
    not_logged(&h, &key2);
    h.assert_clean();
}

#[test]
fn sse_c_multipart_objects_table_reads_and_copies_carry_the_key() {
    let mut h = Harness::shared(112);
    let key = customer_key(3);
    let p = [marked(5 * MIB + 7, 1), marked(5 * MIB + 9, 2)];
    let data = [&p[0][..], &p[1][..]].concat();
    let id = h
        .send(with_key(
            Request::new("POST", &format!("{}?uploads", obj("m"))),
            &key,
        ))
        .xml("UploadId")
        .unwrap();
    let mut etags = Vec::new();
    for (n, part) in (1u32..).zip(&p) {
        // A part without the upload's key is refused by the backend.
        if n == 1 {
            assert_eq!(h.upload_part("m", &id, 1, part).status, 400);
        }
        let r = h.send(with_key(Request::put(&part_path("m", &id, n), part), &key));
        assert_eq!(r.status, 200, "{}", r.text());
        etags.push((n, r.header("etag").unwrap().to_string()));
    }
    // The end part the filter adds needs the key: the Complete must carry it.
    let complete = Request::post(
        &format!("{}?uploadId={}", obj("m"), enc(&id)),
        complete_body(&etags).as_bytes(),
    );
    let r = h.send(complete.clone());
    assert_ne!(r.status, 200, "{}", r.text());
    assert!(h.world.s3.object("m").is_none());
    let r = h.send(with_key(complete, &key));
    assert_eq!(r.status, 200, "{}", r.text());
    // Part reads, ranges and attributes need the part table: its reads carry the key.
    h.restart(0);
    let from = h.mark();
    let g = h.send(with_key(
        Request::get(&format!("{}?partNumber=2", obj("m"))),
        &key,
    ));
    assert_eq!(g.status, 206, "{}", g.text());
    assert_eq!(g.body, p[1]);
    let callouts: Vec<&Sent> = h
        .sent_since(from)
        .iter()
        .filter(|s| s.kind != SentKind::Upstream)
        .collect();
    assert!(!callouts.is_empty());
    for s in callouts {
        assert_eq!(
            s.headers
                .get("x-amz-server-side-encryption-customer-key-md5"),
            Some(key.1.as_str())
        );
    }
    h.restart(0);
    let a = h.send(with_key(
        Request::get(&format!("{}?attributes", obj("m")))
            .header("x-amz-object-attributes", "ObjectParts,ObjectSize"),
        &key,
    ));
    assert_eq!(a.xml("PartsCount").as_deref(), Some("2"), "{}", a.text());
    assert_eq!(a.xml("ObjectSize"), Some(data.len().to_string()));
    // A multipart copy: the source's key for its reads and part copies, the
    // destination's for the upload it creates.
    h.restart(0);
    let key2 = customer_key(4);
    let r = h.send(with_key(with_source_key(copy("m", "m2"), &key), &key2));
    assert_eq!(r.status, 200, "{}", r.text());
    let g = h.send(with_key(Request::get(&obj("m2")), &key2));
    assert!(g.ok() && g.body == data);
    assert_eq!(h.send(with_key(Request::get(&obj("m2")), &key)).status, 400);
    not_logged(&h, &key);
    not_logged(&h, &key2);
}
