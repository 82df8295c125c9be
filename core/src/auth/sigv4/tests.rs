use super::*;

const AK: &str = "AKIAIOSFODNN7EXAMPLE";
const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn secret(ak: &str) -> Option<String> {
    (ak == AK).then(|| SK.to_string())
}

fn hs(pairs: &[(&str, &str)]) -> Headers {
    Headers::from_pairs(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn t0() -> i64 {
    parse_amz_date("20130524T000000Z").unwrap()
}

fn auth(signed: &str, sig: &str) -> String {
    format!("AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,SignedHeaders={signed},Signature={sig}")
}

/// AWS S3 API reference, "Signature Calculations for the Authorization Header:
/// Transferring Payload in a Single Chunk", example GET Object.
#[test]
fn aws_example_get_object() {
    let h = hs(&[
        (":authority", "examplebucket.s3.amazonaws.com"),
        ("range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
        (
            "authorization",
            &auth(
                "host;range;x-amz-content-sha256;x-amz-date",
                "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            ),
        ),
    ]);
    let v = verify("GET", "/test.txt", &h, &secret, t0()).unwrap();
    assert_eq!(v.access_key, AK);
    assert_eq!(v.payload, PayloadMode::Sha256(EMPTY_SHA256.into()));
}

/// Same page, example PUT Object.
#[test]
fn aws_example_put_object() {
    let h = hs(&[
        ("host", "examplebucket.s3.amazonaws.com"),
        ("date", "Fri, 24 May 2013 00:00:00 GMT"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        (
            "x-amz-content-sha256",
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
        ),
        (
            "authorization",
            &auth(
                "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
            ),
        ),
    ]);
    verify("PUT", "/test%24file.text", &h, &secret, t0()).unwrap();
}

/// Same page, example GET Bucket Lifecycle and GET Bucket (List Objects).
#[test]
fn aws_example_lifecycle_and_list() {
    let base = [
        (":authority", "examplebucket.s3.amazonaws.com"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
    ];
    let mut h = hs(&base);
    h.set(
        "authorization",
        auth(
            "host;x-amz-content-sha256;x-amz-date",
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        ),
    );
    verify("GET", "/?lifecycle", &h, &secret, t0()).unwrap();
    let mut h = hs(&base);
    h.set(
        "authorization",
        auth(
            "host;x-amz-content-sha256;x-amz-date",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    );
    verify("GET", "/?max-keys=2&prefix=J", &h, &secret, t0()).unwrap();
}

/// AWS "Authenticating Requests: Using Query Parameters" example.
#[test]
fn aws_example_presigned() {
    let h = hs(&[(":authority", "examplebucket.s3.amazonaws.com")]);
    let path = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
    let v = verify("GET", path, &h, &secret, t0() + 10).unwrap();
    assert!(v.presigned);
    assert_eq!(v.payload, PayloadMode::Unsigned);
    // Expired a day later, not yet valid long before.
    assert_eq!(
        verify("GET", path, &h, &secret, t0() + 86_401)
            .unwrap_err()
            .message,
        "Request has expired"
    );
    assert_eq!(
        verify("GET", path, &h, &secret, t0() - 3600)
            .unwrap_err()
            .message,
        "Request is not valid yet"
    );
    // Any change to a signed parameter breaks it.
    let bad = path.replace("X-Amz-Expires=86400", "X-Amz-Expires=86401");
    assert_eq!(
        verify("GET", &bad, &h, &secret, t0() + 10)
            .unwrap_err()
            .code,
        "SignatureDoesNotMatch"
    );
    assert_eq!(strip_presign_params(path), "/test.txt");
    assert_eq!(
        strip_presign_params("/a?versionId=3&X-Amz-Date=1"),
        "/a?versionId=3"
    );
}

#[test]
fn errors() {
    let mut h = hs(&[
        (":authority", "h"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
    ]);
    assert_eq!(
        verify("GET", "/", &h, &secret, t0()).unwrap_err().code,
        "AccessDenied"
    );
    h.set(
        "authorization",
        auth("host;x-amz-content-sha256;x-amz-date", &"0".repeat(64)).replace(AK, "NOPE"),
    );
    assert_eq!(
        verify("GET", "/", &h, &secret, t0()).unwrap_err().code,
        "InvalidAccessKeyId"
    );
    h.set(
        "authorization",
        auth("host;x-amz-content-sha256;x-amz-date", &"0".repeat(64)),
    );
    assert_eq!(
        verify("GET", "/", &h, &secret, t0()).unwrap_err().code,
        "SignatureDoesNotMatch"
    );
    assert_eq!(
        verify("GET", "/", &h, &secret, t0() + 3600)
            .unwrap_err()
            .code,
        "RequestTimeTooSkewed"
    );
    h.set("authorization", "AWS AKID:sig");
    assert_eq!(
        verify("GET", "/", &h, &secret, t0()).unwrap_err().status,
        400
    );
}

#[test]
fn sign_then_verify_round_trip_and_tamper() {
    let now = 1_700_000_000;
    let raw = "/bucket/a%20b/c+d~e?uploads&x-id=Put%20Object&prefix=a%2Fb";
    let mut h = hs(&[
        (":method", "PUT"),
        (":authority", "127.0.0.1:9000"),
        ("content-type", "text/plain"),
        ("x-amz-meta-note", "  two   spaces "),
        ("x-amz-meta-s3crypt", "v=1;s=1"),
        ("user-agent", "not signed"),
    ]);
    sign(
        "PUT",
        raw,
        &mut h,
        AK,
        SK,
        "us-east-1",
        now,
        UNSIGNED_PAYLOAD,
    );
    let v = verify("PUT", raw, &h, &secret, now).unwrap();
    assert_eq!(v.payload, PayloadMode::Unsigned);
    // Unsigned headers may change; signed ones may not.
    let mut ok = h.clone();
    ok.set("user-agent", "other");
    assert!(verify("PUT", raw, &ok, &secret, now).is_ok());
    for (name, value) in [
        ("x-amz-meta-note", "x"),
        ("content-type", "a/b"),
        (":authority", "evil"),
        ("x-amz-meta-s3crypt", "v=2"),
    ] {
        let mut t = h.clone();
        t.set(name, value);
        assert_eq!(
            verify("PUT", raw, &t, &secret, now).unwrap_err().code,
            "SignatureDoesNotMatch",
            "{name}"
        );
    }
    assert!(verify("PUT", "/bucket/a%20b/c+d~e?uploads", &h, &secret, now).is_err());
    assert!(verify("POST", raw, &h, &secret, now).is_err());
}

#[test]
fn dates() {
    assert_eq!(amz_date(0), "19700101T000000Z");
    assert_eq!(parse_amz_date("20130524T000000Z"), Some(1_369_353_600));
    assert_eq!(amz_date(1_369_353_600 + 3661), "20130524T010101Z");
    for t in [0i64, 951_782_400, 1_709_164_800, 4_102_444_800] {
        assert_eq!(parse_amz_date(&amz_date(t)), Some(t));
    }
    assert_eq!(parse_amz_date("2013-05-24T00:00:00Z"), None);
}

#[test]
fn canonical_forms() {
    assert_eq!(canonical_uri("/a b/%7e/+/x").unwrap(), "/a%20b/~/%2B/x");
    assert_eq!(
        canonical_query("b=2&a=&c=x%2Fy&a=1", false).unwrap(),
        "a=&a=1&b=2&c=x%2Fy"
    );
    assert_eq!(canonical_query("uploads", false).unwrap(), "uploads=");
    // Malformed escapes are errors (one decoder for the whole filter), not literals.
    assert!(canonical_uri("/a%zz").is_err());
    assert!(canonical_query("a=%2", false).is_err());
}

fn presigned_path(signed: &str, expires: &str, now: i64) -> String {
    let date = amz_date(now);
    let params = format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={AK}%2F{}%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders={}",
        &date[..8],
        signed.replace(';', "%3B")
    );
    let raw = format!("/b/k?{params}");
    let h = hs(&[(":authority", "h")]);
    let signed: Vec<String> = signed.split(';').map(str::to_string).collect();
    let canonical = canonical_request("PUT", &raw, &h, &signed, UNSIGNED_PAYLOAD, true).unwrap();
    let scope = format!("{}/us-east-1/s3/aws4_request", &date[..8]);
    let key = signing_key(SK, &date[..8], "us-east-1");
    let sig = hex::encode(hmac(
        &key,
        string_to_sign(&date, &scope, &canonical).as_bytes(),
    ));
    format!("{raw}&X-Amz-Signature={sig}")
}

/// Every x-amz-* header present must be signed, in header auth and presigned URLs
/// alike: a captured or presigned request cannot gain a copy source, metadata, tags.
#[test]
fn unsigned_amz_headers_are_refused() {
    let now = 1_700_000_000;
    let raw = "/b/k";
    let mut h = hs(&[(":authority", "h"), ("x-amz-meta-a", "1")]);
    sign(
        "PUT",
        raw,
        &mut h,
        AK,
        SK,
        "us-east-1",
        now,
        UNSIGNED_PAYLOAD,
    );
    let ok = verify("PUT", raw, &h, &secret, now).unwrap();
    assert!(ok.signed_headers.contains(&"x-amz-meta-a".to_string()));
    for extra in [
        "x-amz-copy-source",
        "x-amz-meta-b",
        "x-amz-tagging",
        "x-amz-website-redirect-location",
        "X-Amz-Acl",
    ] {
        let mut t = h.clone();
        t.0.push((extra.to_string(), "/b/secret".into()));
        let e = verify("PUT", raw, &t, &secret, now).unwrap_err();
        assert_eq!((e.status, e.code), (403, "AccessDenied"), "{extra}");
        assert!(
            e.message.contains(&extra.to_ascii_lowercase()),
            "{}",
            e.message
        );
    }
    // Unsigned non-x-amz headers do not break the signature (they are ignored later).
    let mut t = h.clone();
    t.set("user-agent", "x");
    assert!(verify("PUT", raw, &t, &secret, now).is_ok());

    let p = presigned_path("host", "300", now);
    let h = hs(&[(":authority", "h")]);
    assert!(verify("PUT", &p, &h, &secret, now).is_ok());
    for extra in ["x-amz-copy-source", "x-amz-meta-x", "x-amz-content-sha256"] {
        let mut t = h.clone();
        t.set(extra, "/b/secret");
        let e = verify("PUT", &p, &t, &secret, now).unwrap_err();
        assert_eq!((e.status, e.code), (403, "AccessDenied"), "{extra}");
    }
}

#[test]
fn presigned_urls_must_sign_host_and_expire_sanely() {
    let now = 1_700_000_000;
    let h = hs(&[(":authority", "h"), ("x-amz-meta-a", "1")]);
    // Signed correctly, but host is not among the signed headers.
    let p = presigned_path("x-amz-meta-a", "300", now);
    assert_eq!(verify("PUT", &p, &h, &secret, now).unwrap_err().status, 400);
    for bad in ["0", "-1", "604801", "x", ""] {
        let p = presigned_path("host", bad, now);
        let e = verify("PUT", &p, &hs(&[(":authority", "h")]), &secret, now).unwrap_err();
        assert_eq!(e.code, "AuthorizationQueryParametersError", "{bad}");
    }
    let p = presigned_path("host", "604800", now);
    assert!(verify("PUT", &p, &hs(&[(":authority", "h")]), &secret, now).is_ok());
    // Two signatures (or two of any parameter): refused before anything is checked.
    let twice = format!("{p}&X-Amz-Signature=00");
    assert_eq!(
        verify("PUT", &twice, &hs(&[(":authority", "h")]), &secret, now)
            .unwrap_err()
            .code,
        "InvalidArgument"
    );
}
