"""End to end: a single-part object's ETag is the MD5 of its plaintext in PUT, HEAD, GET,
conditions and listings, with boto3 through Envoy (FORMAT.md, envelope version 3: the MD5
is sealed in a trailer after the object's frames)."""

import hashlib

import botocore.exceptions
import pytest

from test_e2e_objects import pattern

F = 65536


def md5_etag(data):
    return '"%s"' % hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("size", [1, F + 1])
def test_put_head_get_and_conditions_show_the_plaintext_md5(stack, bucket, size):
    s3 = stack.s3()
    data = pattern(size, seed=size + 3)
    etag = md5_etag(data)
    # No Content-MD5 is sent (botocore sends a CRC32 checksum instead).
    assert s3.put_object(Bucket=bucket, Key="e", Body=data)["ETag"] == etag
    stored = stack.backend_s3().head_object(Bucket=bucket, Key="e")
    assert stored["ETag"] != etag  # the backend only has ciphertext
    assert s3.head_object(Bucket=bucket, Key="e")["ETag"] == etag
    g = s3.get_object(Bucket=bucket, Key="e")
    assert g["ETag"] == etag and g["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key="e", IfMatch=etag)["Body"].read() == data
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="e", IfNoneMatch=etag)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket=bucket, Key="e", IfMatch=stored["ETag"])
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_listings_show_plaintext_etags_and_sizes(stack, bucket):
    s3 = stack.s3()
    want = {}
    for i, n in enumerate([0, 1, 1000, F, F + 1]):
        data = pattern(n, seed=40 + i)
        s3.put_object(Bucket=bucket, Key=f"l/{i}", Body=data)
        want[f"l/{i}"] = (n, md5_etag(data))
    # Objects the filter never wrote or read in this process: server-side copies made at
    # the backend (same bytes and envelope, other keys), found by the listing's lookups.
    raw = stack.backend_s3()
    for i in range(1, 5):
        raw.copy_object(Bucket=bucket, Key=f"l/copy{i}", CopySource={"Bucket": bucket, "Key": f"l/{i}"})
        want[f"l/copy{i}"] = want[f"l/{i}"]
    listed = {}
    token = None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, Prefix="l/", **kw)
        for o in page.get("Contents", []):
            assert o["Key"] not in listed
            listed[o["Key"]] = (o["Size"], o.get("ETag"))
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    has_etags = all(e is not None for _, e in listed.values())
    if not has_etags:
        # (s3s-fs lists no ETags: then only the sizes can be checked.)
        want = {k: (s, None) for k, (s, _) in want.items()}
    assert listed == want
    for k, (n, etag) in want.items():
        head = s3.head_object(Bucket=bucket, Key=k)
        assert head["ContentLength"] == n
        assert head["ETag"] == etag or etag is None


def test_a_long_page_held_for_a_lookup_is_cut_not_reset(stack, bucket):
    """Found with pgBackRest: a listing page held while one listed object is looked up
    went to Envoy as one buffer after the lookup; a page over Envoy's buffer limit (1 MiB)
    made Envoy reset the stream, and Envoy 1.40 then crashed (a watermark it never raised).
    The filter cuts such a page (FORMAT-independent: ops/listing.rs HELD_PAGE_MAX)."""
    from concurrent.futures import ThreadPoolExecutor

    s3 = stack.s3()
    stem = "p/" + "k" * 980  # 1000 keys of ~1 KiB: a ~1.3 MB page
    want = {}

    def put(i):
        data = pattern(20 + i, seed=i)
        s3.put_object(Bucket=bucket, Key=f"{stem}{i:04}", Body=data)
        return f"{stem}{i:04}", (len(data), md5_etag(data))

    with ThreadPoolExecutor(4) as ex:
        want = dict(ex.map(put, range(1000)))
    # The provider copies one object over the last key: a version the filter never saw,
    # looked up while the (otherwise known, ~1.3 MB) first page is held.
    last, other = f"{stem}0999", f"{stem}0001"
    stack.backend_s3().copy_object(Bucket=bucket, Key=last, CopySource={"Bucket": bucket, "Key": other})
    want[last] = want[other]
    cut = stack.counter("s3crypt_listings_cut")
    listed, pages, token = {}, 0, None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, Prefix="p/", **kw)
        pages += 1
        for o in page.get("Contents", []):
            assert o["Key"] not in listed
            listed[o["Key"]] = (o["Size"], o["ETag"])
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert listed == want
    assert pages >= 4, pages
    assert stack.counter("s3crypt_listings_cut") > cut
    assert s3.head_object(Bucket=bucket, Key=last)["ETag"] == want[last][1]
