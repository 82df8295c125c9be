"""Listings and multipart uploads against moto's S3 emulation, a second, independent S3
implementation besides Ceph RGW (the server of the other tests).

The filter rewrites listing XML and reads part tables from whatever a server returns;
moto writes its XML differently from RGW (element order, namespaces, its own ETag and
upload-id forms), so the listing-size rewrite, part-table reads across parts and
ListMultipartUploads are checked on both. moto does not verify signatures (signing is
covered against RGW)."""

import subprocess

import pytest

from stack import Stack, free_port, wait_http
from test_e2e_clients import venv_bin
from test_e2e_multipart import MiB, upload_parts
from test_e2e_objects import pattern


class MotoStack(Stack):
    """The test stack with moto_server as the S3 backend."""

    def _start_s3(self):
        self.s3_port = free_port()
        self.s3_log = self.root / "moto.log"
        with open(self.s3_log, "wb") as log:
            self.s3_proc = subprocess.Popen(
                [venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(self.s3_port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.backend_endpoint = f"http://127.0.0.1:{self.s3_port}"
        wait_http(self.backend_endpoint, proc=self.s3_proc, log=self.s3_log)


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    st = MotoStack.start(tmp_path_factory.mktemp("moto"))
    yield st
    st.stop()


def test_listing_sizes_of_multipart_and_single_objects(moto):
    s3, raw = moto.s3(), moto.backend_s3()
    s3.create_bucket(Bucket="lst")
    parts = {1: pattern(5 * MiB + 1, 80), 2: pattern(5 * MiB + 77, 81), 3: pattern(1000, 82)}
    data = b"".join(parts[n] for n in sorted(parts))
    upload_parts(s3, "lst", "dir/multi", parts)
    single = pattern(200_000, 83)
    s3.put_object(Bucket="lst", Key="dir/single", Body=single)
    s3.put_object(Bucket="lst", Key="empty", Body=b"")
    want = {"dir/multi": len(data), "dir/single": len(single), "empty": 0}

    stored = {o["Key"]: (o["Size"], o["ETag"]) for o in raw.list_objects_v2(Bucket="lst")["Contents"]}
    assert stored["dir/multi"][1].endswith('-3"')  # moto lists the multipart ETag
    assert all(stored[k][0] > n for k, n in want.items() if n)  # the backend holds ciphertext

    v2 = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket="lst")["Contents"]}
    v1 = {o["Key"]: o["Size"] for o in s3.list_objects(Bucket="lst")["Contents"]}
    assert v2 == want and v1 == want
    paged = s3.list_objects_v2(Bucket="lst", Prefix="dir/", MaxKeys=1)
    assert [(o["Key"], o["Size"]) for o in paged["Contents"]] == [("dir/multi", len(data))]
    rest = s3.list_objects_v2(Bucket="lst", Prefix="dir/", ContinuationToken=paged["NextContinuationToken"])
    assert [(o["Key"], o["Size"]) for o in rest["Contents"]] == [("dir/single", len(single))]
    versions = {v["Key"]: v["Size"] for v in s3.list_object_versions(Bucket="lst")["Versions"]}
    assert versions == want
    assert s3.head_object(Bucket="lst", Key="dir/multi")["ContentLength"] == len(data)

    # Reads of the multipart object on this server too: a range across parts, every part.
    r = s3.get_object(Bucket="lst", Key="dir/multi", Range=f"bytes={5 * MiB - 5}-{10 * MiB + 90}")
    assert r["Body"].read() == data[5 * MiB - 5:10 * MiB + 91]
    for n, p in parts.items():
        g = s3.get_object(Bucket="lst", Key="dir/multi", PartNumber=n)
        assert g["PartsCount"] == 3 and g["Body"].read() == p
    assert s3.get_object(Bucket="lst", Key="dir/multi")["Body"].read() == data


def test_list_multipart_uploads_passes_through(moto):
    """ListMultipartUploads lists uploads in progress, and abort cleans up (also on RGW:
    test_e2e_multipart.py::test_list_multipart_uploads_on_rgw)."""
    s3 = moto.s3()
    s3.create_bucket(Bucket="mpu")
    uid = s3.create_multipart_upload(Bucket="mpu", Key="k")["UploadId"]
    s3.upload_part(Bucket="mpu", Key="k", UploadId=uid, PartNumber=1, Body=b"x" * 100)
    ups = s3.list_multipart_uploads(Bucket="mpu").get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in ups] == [("k", uid)]
    assert [p["Size"] for p in s3.list_parts(Bucket="mpu", Key="k", UploadId=uid)["Parts"]] == [100]
    s3.abort_multipart_upload(Bucket="mpu", Key="k", UploadId=uid)
    assert s3.list_multipart_uploads(Bucket="mpu").get("Uploads", []) == []
