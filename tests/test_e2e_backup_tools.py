"""PostgreSQL backup tools, unmodified, through Envoy + s3crypt onto Ceph RGW: barman-cloud
(Debian barman-cli-cloud 3.4, boto3 1.26) on the plain-http listener and pgBackRest 2.45
(https only) on the TLS listener. Each archives WAL (16 MiB segments, multipart), takes a
base backup (multipart), restores it into a new cluster that replays the archived WAL, and
the restored cluster holds the data. The provider holds only ciphertext: no plaintext
canary anywhere in the cluster's RADOS objects, every stored object carries the envelope.
A second run works and, where the tool avoids redundant work against S3, does so here too.

PostgreSQL 15 runs from /usr/lib/postgresql/15/bin as user postgres in a directory of its
own under /tmp (pytest's directories are root-only), on a free loopback port. The tools are
Debian packages installed by scripts/setup.sh: a missing one is a failure, not a skip."""

import json
import os
import pathlib
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time

import pytest

from stack import REGION, free_port
from test_e2e_multipart import PART_OVERHEAD

MiB = 1 << 20
PGBIN = pathlib.Path("/usr/lib/postgresql/15/bin")
TOOLS = [PGBIN / "initdb", PGBIN / "pg_ctl", PGBIN / "postgres", PGBIN / "psql",
         "/usr/bin/barman-cloud-backup", "/usr/bin/barman-cloud-wal-archive", "/usr/bin/barman-cloud-backup-list",
         "/usr/bin/barman-cloud-restore", "/usr/bin/barman-cloud-wal-restore", "/usr/bin/pgbackrest"]
# Rows of ~190 bytes: the table is ~40 MiB and its WAL spans several 16 MiB segments.
ROWS = 200_000


def require_tools():
    missing = [str(t) for t in TOOLS if not os.access(t, os.X_OK)]
    assert not missing, f"missing {missing}: run `make setup` (scripts/setup.sh installs postgresql, " \
                        "barman-cli-cloud and pgbackrest)"


def pg_user():
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def pg_env(extra=None):
    """A clean environment for commands run as postgres (nothing of the test's venv)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/var/lib/postgresql", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    env.update(extra or {})
    return env


def as_postgres(cmd, env=None, check=True, timeout=600):
    cmd = ["runuser", "-u", "postgres", "--", "env", "-i", *[f"{k}={v}" for k, v in pg_env(env).items()],
           *map(str, cmd)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")
    if check:
        assert r.returncode == 0, f"{cmd[6:]} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-4000:]}"
    return r


def write_private(path, text, mode=0o600):
    path = pathlib.Path(path)
    path.write_text(text)
    os.chown(path, *pg_user())
    os.chmod(path, mode)
    return path


class Postgres:
    """One PostgreSQL 15 cluster owned by postgres in `base/name`."""

    def __init__(self, base, name):
        self.dir = pathlib.Path(base) / name
        self.data = self.dir / "data"
        self.port = free_port()
        self.log = self.dir / "postgres.log"
        self.dir.mkdir(mode=0o700)
        os.chown(self.dir, *pg_user())
        self.running = False

    def mkdata(self):
        self.data.mkdir(mode=0o700)
        os.chown(self.data, *pg_user())

    def initdb(self, **settings):
        as_postgres([PGBIN / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        self.configure(**settings)

    def configure(self, **settings):
        """Settings appended to postgresql.auto.conf (the last one of a name wins)."""
        settings = {"port": self.port, "listen_addresses": "'127.0.0.1'", "unix_socket_directories": f"'{self.dir}'",
                    "fsync": "off", **settings}
        with open(self.data / "postgresql.auto.conf", "a") as f:
            f.write("".join(f"{k} = {v}\n" for k, v in settings.items()))

    def start(self):
        as_postgres([PGBIN / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "300", "start"], timeout=330,
                    check=False).returncode == 0 or pytest.fail(f"postgres did not start:\n{self.tail()}")
        self.running = True

    def stop(self):
        if self.running:
            as_postgres([PGBIN / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "120", "stop"], timeout=150)
            self.running = False

    def tail(self):
        try:
            return "".join(self.log.read_text(errors="replace").splitlines(True)[-40:])
        except OSError:
            return ""

    def sql(self, query, db="postgres"):
        r = as_postgres([PGBIN / "psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", self.dir, "-p", self.port, "-U", "postgres",
                         "-d", db, "-Atqc", query])
        return r.stdout.strip()

    def fill(self, canary, first, last):
        self.sql("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, payload text NOT NULL)")
        self.sql(f"INSERT INTO t SELECT g, '{canary}-' || g || '-' || md5(g::text) || repeat(md5((g * 7)::text), 4) "
                 f"FROM generate_series({first}, {last}) g")

    def digest(self):
        """Row count and a checksum of the payload column."""
        return self.sql("SELECT count(*) || ' ' || md5(string_agg(payload, ',' ORDER BY id)) FROM t")

    def switch_and_wait_archived(self, timeout=180):
        """Closes the current WAL segment and waits until the archiver shipped it: its name."""
        seg = self.sql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.time() + timeout
        while time.time() < deadline:
            last, failed = self.sql("SELECT coalesce(last_archived_wal, ''), failed_count "
                                    "FROM pg_stat_archiver").split("|")
            if last >= seg:
                return seg
            time.sleep(0.5)
        pytest.fail(f"WAL {seg} not archived within {timeout}s (last {last}, {failed} failures):\n{self.tail()}")

    def wait_promoted(self, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.sql("SELECT pg_is_in_recovery()") == "f":
                    return
            except AssertionError:
                pass
            time.sleep(0.5)
        pytest.fail(f"restored cluster still in recovery after {timeout}s:\n{self.tail()}")


@pytest.fixture
def pgbase():
    """A directory postgres can reach (pytest's tmp directories are root-only); every
    cluster started in it is stopped at the end."""
    require_tools()
    base = pathlib.Path(tempfile.mkdtemp(prefix="s3crypt-pg-", dir="/tmp"))
    os.chmod(base, 0o755)
    clusters = []
    yield base, clusters
    for c in clusters:
        try:
            c.stop()
        except Exception:  # noqa: BLE001 (teardown: stop the others too)
            subprocess.run(["runuser", "-u", "postgres", "--", str(PGBIN / "pg_ctl"), "-D", str(c.data), "-m",
                            "immediate", "stop"], capture_output=True, timeout=60)
    shutil.rmtree(base, ignore_errors=True)


def stored_objects(stack, bucket, prefix=""):
    """{key: backend head_object} of every object the backend stores under `prefix`."""
    b = stack.backend_s3()
    out = {}
    for page in b.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = b.head_object(Bucket=bucket, Key=o["Key"])
    return out


def assert_ciphertext_only(stack, bucket, canary, prefix=""):
    stored = stored_objects(stack, bucket, prefix)
    assert stored, "nothing stored"
    plain = [k for k, h in stored.items() if "s3crypt" not in h["Metadata"]]
    assert not plain, f"objects without the s3crypt envelope: {plain}"
    hits = stack.backend_holds(canary.encode())
    assert not hits, f"the provider holds plaintext: {hits[:20]}"
    return stored


def stored_parts(head):
    """The number of parts of a stored (backend) object from its multipart ETag, 1 if none
    (one more than the client's when the filter added an end part, README "Multipart")."""
    m = re.fullmatch(r'"[0-9a-f]{32}-(\d+)"', head["ETag"])
    return int(m.group(1)) if m else 1


def tamper_stored(stack, bucket, key, part_size):
    """The provider flips one bit in the middle of the first stored part of a multipart
    object whose client parts were `part_size` bytes, and stores it again as the same
    parts with the same metadata. (RGW 16 ignores partNumber on GET: the parts' bounds
    come from the format, README "Multipart".)"""
    n = stored_parts(stack.backend_s3().head_object(Bucket=bucket, Key=key))
    assert n >= 2, key
    stored = bytearray(stack.stored(bucket, key))
    size = part_size + PART_OVERHEAD
    stored[size // 2] ^= 1
    parts = [bytes(stored[i * size:(i + 1) * size]) for i in range(n - 1)] + [bytes(stored[(n - 1) * size:])]
    assert all(len(p) == size for p in parts[:-1]) and parts[-1], [len(p) for p in parts]
    stack.rewrite_stored_parts(bucket, key, parts)


def assert_verified_prefix(path, true):
    """What a failed read left behind (the tools write as they download; PostgreSQL
    ignores the file of a failed restore_command) is a strict prefix of the true bytes:
    only verified plaintext was released."""
    if path.exists():
        got = path.read_bytes()
        assert len(got) < len(true) and true.startswith(got), (len(got), len(true))


def client_parts(s3, bucket, key):
    """The number of parts the client uploaded, as the filter presents it."""
    return s3.head_object(Bucket=bucket, Key=key, PartNumber=1).get("PartsCount", 1)


# ---------------------------------------------------------------------------- barman-cloud


def test_barman_cloud_archive_backup_restore(stack, bucket, pgbase):
    base, clusters = pgbase
    canary = "s3crypt-barman-canary-" + secrets.token_hex(8)
    url = f"s3://{bucket}/barman"
    creds = {"AWS_ACCESS_KEY_ID": stack.client_creds[0], "AWS_SECRET_ACCESS_KEY": stack.client_creds[1],
             "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}
    cloud = ["--endpoint-url", stack.endpoint]
    # archive_command and restore_command run in the server's environment: the
    # credentials are in scripts only postgres can read.
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in creds.items())
    archive = write_private(base / "barman-archive.sh", "#!/bin/sh\n" + exports + "exec barman-cloud-wal-archive "
                            + shlex.join(cloud) + f" {url} pg \"$1\"\n", 0o700)
    restore = write_private(base / "barman-restore.sh", "#!/bin/sh\n" + exports + "exec barman-cloud-wal-restore "
                            + shlex.join(cloud) + f" {url} pg \"$1\" \"$2\"\n", 0o700)

    pg = Postgres(base, "primary")
    clusters.append(pg)
    pg.initdb(archive_mode="on", archive_command=f"'{archive} %p'", wal_level="replica")
    pg.start()
    pg.fill(canary, 1, ROWS)
    seg = pg.switch_and_wait_archived()
    # A copy of one archived segment, to archive it a second time below.
    seg_copy = base / seg
    shutil.copyfile(pg.data / "pg_wal" / seg, seg_copy)
    os.chown(seg_copy, *pg_user())

    tool = ["--endpoint-url", stack.endpoint, "-h", pg.dir, "-p", pg.port]
    as_postgres(["barman-cloud-backup", "--immediate-checkpoint", *tool, url, "pg"], env=creds)
    listing = as_postgres(["barman-cloud-backup-list", "--format", "json", *cloud, url, "pg"], env=creds).stdout
    backups = json.loads(listing)["backups_list"]
    assert len(backups) == 1 and backups[0]["status"] == "DONE", listing
    backup_id = backups[0]["backup_id"]

    # Rows after the base backup come back only by replaying archived WAL.
    pg.fill(canary, ROWS + 1, ROWS + 5000)
    pg.sql("UPDATE t SET payload = payload || '-updated' WHERE id % 1000 = 0")
    want = pg.digest()
    assert want.startswith(f"{ROWS + 5000} ")
    pg.switch_and_wait_archived()
    pg.stop()

    rs = Postgres(base, "restored")
    clusters.append(rs)
    as_postgres(["barman-cloud-restore", *cloud, url, "pg", backup_id, rs.data], env=creds)
    rs.configure(archive_mode="off", restore_command=f"'{restore} %f %p'")
    write_private(rs.data / "recovery.signal", "")
    rs.start()
    rs.wait_promoted()
    assert rs.digest() == want
    rs.stop()

    # What the provider holds: WAL segments (16 MiB, 2 parts with boto3's 8 MiB default)
    # and the base backup tarball (barman's own multipart upload) as ciphertext.
    stored = assert_ciphertext_only(stack, bucket, canary)
    wals = {k: h for k, h in stored.items() if re.search(r"/wals/[0-9A-F]{16}/[0-9A-F]{24}$", k)}
    assert len(wals) >= 3, sorted(stored)
    s3 = stack.s3()
    assert {client_parts(s3, bucket, k) for k in wals} == {2}, {k: h["ETag"] for k, h in wals.items()}
    assert all(stored_parts(h) >= 2 for h in wals.values()), {k: h["ETag"] for k, h in wals.items()}
    tars = [k for k in stored if k.endswith("/data.tar")]
    assert len(tars) == 1 and client_parts(s3, bucket, tars[0]) >= 2, {k: h["ETag"] for k, h in stored.items()}
    wal_key = next(k for k in wals if k.endswith("/" + seg))
    assert s3.head_object(Bucket=bucket, Key=wal_key)["ContentLength"] == 16 * MiB

    # A second run: a new base backup of the primary, listed next to the first one, and
    # the already archived segment once more. barman-cloud-wal-archive 3.4 does not look
    # for an existing WAL (it uploads all of it again, as it does against AWS): the object
    # is then the same segment, readable.
    pg.start()
    as_postgres(["barman-cloud-backup", "--immediate-checkpoint", *tool, url, "pg"], env=creds)
    backups = json.loads(as_postgres(["barman-cloud-backup-list", "--format", "json", *cloud, url, "pg"],
                                     env=creds).stdout)["backups_list"]
    assert [b["status"] for b in backups] == ["DONE", "DONE"], backups
    pg.stop()
    encrypted = stack.counter("s3crypt_bytes_encrypted")
    as_postgres([archive, seg_copy])
    assert stack.counter("s3crypt_bytes_encrypted") >= encrypted + 16 * MiB
    assert s3.get_object(Bucket=bucket, Key=wal_key)["Body"].read() == seg_copy.read_bytes()
    assert_ciphertext_only(stack, bucket, canary)

    # The provider changes one bit of that archived segment: barman-cloud-wal-restore
    # fails (PostgreSQL would not replay it) having received only verified bytes.
    tamper_stored(stack, bucket, wal_key, 8 * MiB)
    failures = stack.counter("s3crypt_integrity_failures")
    dest = rs.dir / "RECOVERYXLOG"
    r = as_postgres([restore, seg, dest], check=False)
    assert r.returncode != 0, r.stdout + r.stderr
    assert_verified_prefix(dest, seg_copy.read_bytes())
    assert stack.counter("s3crypt_integrity_failures") > failures


# ------------------------------------------------------------------------------ pgBackRest


def test_pgbackrest_full_incr_restore_over_tls(stack, bucket, pgbase):
    base, clusters = pgbase
    canary = "s3crypt-pgbackrest-canary-" + secrets.token_hex(8)
    pg = Postgres(base, "primary")
    clusters.append(pg)
    ca = base / "ca.pem"
    shutil.copyfile(stack.tls[0], ca)
    os.chmod(ca, 0o644)
    for d in ("pgbr-log", "pgbr-lock", "pgbr-spool"):
        (base / d).mkdir()
        os.chown(base / d, *pg_user())
    tls_port = stack.main.tls_port
    # pgBackRest 2.45 matches the host it connects to against the certificate's DNS names
    # only (not its IP address: "unable to find hostname '127.0.0.1' in certificate"): the
    # endpoint is "localhost" (127.0.0.1 in /etc/hosts, a name of the stack's certificate).
    conf = write_private(base / "pgbackrest.conf", f"""[global]
repo1-type=s3
repo1-path=/pgbr
repo1-s3-bucket={bucket}
repo1-s3-endpoint=localhost
repo1-storage-port={tls_port}
repo1-s3-region={REGION}
repo1-s3-uri-style=path
repo1-s3-key={stack.client_creds[0]}
repo1-s3-key-secret={stack.client_creds[1]}
repo1-storage-ca-file={ca}
repo1-storage-upload-chunk-size=5MiB
repo1-retention-full=2
compress-type=none
start-fast=y
log-path={base / "pgbr-log"}
lock-path={base / "pgbr-lock"}
spool-path={base / "pgbr-spool"}
log-level-console=info

[main]
pg1-path={pg.data}
pg1-port={pg.port}
pg1-socket-path={pg.dir}
""")
    pgbr = ["pgbackrest", f"--config={conf}", "--stanza=main"]
    pg.initdb(archive_mode="on", archive_command=f"'{shlex.join(pgbr)} archive-push %p'", wal_level="replica")
    pg.start()
    pg.fill(canary, 1, ROWS)
    as_postgres([*pgbr, "stanza-create"])
    as_postgres([*pgbr, "check"])
    as_postgres([*pgbr, "--type=full", "backup"])

    # A small change, then the incremental backup copies only the changed files.
    pg.sql("CREATE TABLE small (id int)")
    pg.sql("INSERT INTO small SELECT generate_series(1, 1000)")
    as_postgres([*pgbr, "--type=incr", "backup"])
    info = json.loads(as_postgres([*pgbr, "--output=json", "info"]).stdout)[0]
    full, incr = info["backup"]
    assert (full["type"], incr["type"]) == ("full", "incr"), info
    assert incr["reference"] == [full["label"]], incr
    full_delta, incr_delta = full["info"]["repository"]["delta"], incr["info"]["repository"]["delta"]
    assert full_delta > 40 * MiB and incr_delta < full_delta / 4, (full_delta, incr_delta)
    s3 = stack.s3()

    def files(label):
        return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"pgbr/backup/main/{label}/") for o in page.get("Contents", [])]

    full_files, incr_files = files(full["label"]), files(incr["label"])
    assert len(incr_files) < len(full_files) / 2, (len(full_files), len(incr_files))

    # Changes after the last backup, replayed from the archive at restore.
    pg.fill(canary, ROWS + 1, ROWS + 5000)
    pg.sql("UPDATE t SET payload = payload || '-updated' WHERE id % 1000 = 0")
    want = pg.digest() + " " + pg.sql("SELECT count(*) FROM small")
    seg = pg.switch_and_wait_archived()
    seg_copy = base / seg
    shutil.copyfile(pg.data / "pg_wal" / seg, seg_copy)
    os.chown(seg_copy, *pg_user())
    pg.stop()

    rs = Postgres(base, "restored")
    clusters.append(rs)
    rs.mkdata()
    as_postgres([*pgbr, f"--pg1-path={rs.data}", "restore"])
    auto = (rs.data / "postgresql.auto.conf").read_text()
    assert "restore_command" in auto and (rs.data / "recovery.signal").exists(), auto
    rs.configure(archive_mode="off")
    rs.start()
    rs.wait_promoted()
    assert rs.digest() + " " + rs.sql("SELECT count(*) FROM small") == want
    rs.stop()

    # Multipart (5 MiB chunks) for the table's 40 MiB relation file and the WAL segments.
    stored = assert_ciphertext_only(stack, bucket, canary)
    assert max(stored_parts(h) for h in stored.values()) >= 8, {k: h["ETag"] for k, h in stored.items()}
    wals = {k: h for k, h in stored.items() if re.search(r"/[0-9A-F]{24}-[0-9a-f]{40}$", k)}
    assert wals and {client_parts(s3, bucket, k) for k in wals} == {4}, {k: h["ETag"] for k, h in wals.items()}

    # The already archived segment once more: pgBackRest finds it in the repository with
    # the same checksum and does not upload it again.
    encrypted = stack.counter("s3crypt_bytes_encrypted")
    r = as_postgres([*pgbr, f"--pg1-path={pg.data}", "archive-push", seg_copy])
    assert "already exists in the repo1 archive with the same checksum" in r.stdout + r.stderr, r.stdout + r.stderr
    assert stack.counter("s3crypt_bytes_encrypted") == encrypted

    # The provider changes one bit of that archived segment: archive-get fails (PostgreSQL
    # would not replay it) having received only verified bytes.
    wal_key = next(k for k in wals if f"/{seg}-" in k)
    tamper_stored(stack, bucket, wal_key, 5 * MiB)
    failures = stack.counter("s3crypt_integrity_failures")
    dest = rs.dir / "RECOVERYXLOG"
    r = as_postgres([*pgbr, "archive-get", seg, dest], check=False)
    assert r.returncode != 0, r.stdout + r.stderr
    assert_verified_prefix(dest, seg_copy.read_bytes())
    assert stack.counter("s3crypt_integrity_failures") > failures
