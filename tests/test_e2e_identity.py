"""Per-client backend identity (S3CRYPT_BACKEND_CREDENTIALS): each client credential may
map to its own backend user, and every request the filter makes for a client (the
upstream request, and its call-outs: HEADs, part-table reads, copy-source reads) is
signed as that user, so the backend's ownership, ACLs and policies apply to each client
as they would without the proxy. Against RGW with three users: A and B with their own
backend users, C on the shared one."""

import botocore.exceptions
import pytest

from test_e2e_multipart import MiB, upload_parts
from test_e2e_objects import pattern


@pytest.fixture(scope="module")
def clients(stack):
    a = stack.add_client()
    b = stack.add_client()
    c = stack.add_client(own_backend_user=False)
    envoy = stack.start_envoy()
    yield {name: (envoy.s3(access_key=x[0], secret=x[1]), x) for name, x in (("a", a), ("b", b), ("c", c))}
    envoy.stop()


def status(fn, *args, **kw):
    try:
        fn(*args, **kw)
        return 200
    except botocore.exceptions.ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"]


def test_each_client_acts_as_its_backend_user(stack, clients):
    (sa, a), (sb, b), (sc, _) = clients["a"], clients["b"], clients["c"]
    bucket = "identity-a"
    sa.create_bucket(Bucket=bucket)
    # The bucket and the object belong to A's backend user, not the proxy's.
    direct_a = stack.backend_s3_as(a[3], a[4])
    assert direct_a.get_bucket_acl(Bucket=bucket)["Owner"]["ID"] == a[2]
    data = b"A's private object " * 1000
    sa.put_object(Bucket=bucket, Key="private", Body=data)
    assert direct_a.get_object_acl(Bucket=bucket, Key="private")["Owner"]["ID"] == a[2]
    assert sa.get_object(Bucket=bucket, Key="private")["Body"].read() == data
    # B and the shared identity cannot read, head, list or copy it: the backend says so.
    for s in (sb, sc):
        assert status(s.get_object, Bucket=bucket, Key="private") == 403
        assert status(s.head_object, Bucket=bucket, Key="private") == 403
        assert status(s.list_objects_v2, Bucket=bucket) == 403
        assert status(s.get_object, Bucket=bucket, Key="private", Range="bytes=10-20") == 403
    sb.create_bucket(Bucket="identity-b")
    assert status(sb.copy_object, Bucket="identity-b", Key="stolen",
                  CopySource={"Bucket": bucket, "Key": "private"}) == 403
    up = sb.create_multipart_upload(Bucket="identity-b", Key="stolen-part")["UploadId"]
    assert status(sb.upload_part_copy, Bucket="identity-b", Key="stolen-part", UploadId=up, PartNumber=1,
                  CopySource={"Bucket": bucket, "Key": "private"}) == 403
    sb.abort_multipart_upload(Bucket="identity-b", Key="stolen-part", UploadId=up)
    # A grant to B's backend user (an ACL only the backend knows) lets B read it.
    sa.put_object_acl(Bucket=bucket, Key="private", GrantRead=f"id={b[2]}")
    assert sb.get_object(Bucket=bucket, Key="private")["Body"].read() == data
    assert sb.get_object(Bucket=bucket, Key="private", Range="bytes=10-20")["Body"].read() == data[10:21]
    sb.copy_object(Bucket="identity-b", Key="copied", CopySource={"Bucket": bucket, "Key": "private"})
    assert sb.get_object(Bucket="identity-b", Key="copied")["Body"].read() == data
    assert stack.backend_s3_as(b[3], b[4]).get_object_acl(Bucket="identity-b", Key="copied")["Owner"]["ID"] == b[2]
    assert status(sc.get_object, Bucket=bucket, Key="private") == 403


def test_multipart_reads_use_the_clients_identity(stack, clients):
    """A ranged read of a multipart object makes call-outs (HEAD, the part table): as
    the client's backend user, so a client without access gets 403, never the data or
    an integrity error."""
    (sa, a), (sb, b) = clients["a"], clients["b"]
    bucket = "identity-mp"
    sa.create_bucket(Bucket=bucket)
    parts = {1: pattern(5 * MiB, 71), 2: pattern(1000, 72)}
    upload_parts(sa, bucket, "mp", parts)
    want = (parts[1] + parts[2])[5 * MiB - 10:5 * MiB + 10]
    assert sa.get_object(Bucket=bucket, Key="mp", Range=f"bytes={5 * MiB - 10}-{5 * MiB + 9}")["Body"].read() == want
    assert status(sb.get_object, Bucket=bucket, Key="mp", Range=f"bytes={5 * MiB - 10}-{5 * MiB + 9}") == 403
    assert status(sb.get_object, Bucket=bucket, Key="mp", PartNumber=2) == 403
    # B cannot complete or abort A's upload either, and A's upload survives B's attempts.
    up = sa.create_multipart_upload(Bucket=bucket, Key="mp2")["UploadId"]
    e1 = sa.upload_part(Bucket=bucket, Key="mp2", UploadId=up, PartNumber=1, Body=b"x" * 1000)["ETag"]
    assert status(sb.upload_part, Bucket=bucket, Key="mp2", UploadId=up, PartNumber=2, Body=b"y") == 403
    assert status(sb.abort_multipart_upload, Bucket=bucket, Key="mp2", UploadId=up) == 403
    assert status(sb.complete_multipart_upload, Bucket=bucket, Key="mp2", UploadId=up,
                  MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]}) == 403
    sa.complete_multipart_upload(Bucket=bucket, Key="mp2", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]})
    assert sa.get_object(Bucket=bucket, Key="mp2")["Body"].read() == b"x" * 1000
