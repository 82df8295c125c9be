#!/usr/bin/python3
"""Every place a Ceph cluster holds a byte string: run with the system Python (Debian's
python3-rados), `rgw_scan.py CEPH_CONF HEX_NEEDLE...`; prints one line per hit:
`pool<TAB>object<TAB>data|xattr NAME|omap KEY`. It reads every RADOS object of every pool
(data, xattrs, omap keys and values), so it sees what RGW stores for objects, metadata,
multipart parts, bucket indexes and logs: what a storage provider holds."""

import re
import subprocess
import sys

import rados


def omap_dump(conf, pool, nspace, name):
    """Every omap key and value of an object, as bytes, from `rados listomapvals` (keys
    raw, values as hex dumps, turned back into bytes)."""
    out = subprocess.run(["rados", "-c", conf, "-p", pool, "-N", nspace, "listomapvals", name],
                         check=True, capture_output=True).stdout
    blob = bytearray()
    for line in out.split(b"\n"):
        m = re.match(rb"^[0-9a-f]{8}  ((?:[0-9a-f]{2} {1,2})+)", line)
        if m:
            blob += bytes.fromhex(m.group(1).decode().replace(" ", ""))
        else:
            blob += line + b"\0"
    return bytes(blob)


def main():
    conf, needles = sys.argv[1], [bytes.fromhex(h) for h in sys.argv[2:]]
    with rados.Rados(conffile=conf) as cluster:
        for pool in cluster.list_pools():
            with cluster.open_ioctx(pool) as io:
                for obj in io.list_objects():
                    io.set_namespace(obj.nspace)
                    name = obj.key
                    places = []
                    try:
                        size, _ = io.stat(name)
                        chunks, off = [], 0
                        while off < size:
                            chunk = io.read(name, 1 << 22, off)
                            if not chunk:
                                break
                            chunks.append(chunk)
                            off += len(chunk)
                        places.append(("data", b"".join(chunks)))
                        for k, v in io.get_xattrs(name):
                            places.append((f"xattr {k}", v))
                        try:
                            with rados.ReadOpCtx() as op:
                                it, _ = io.get_omap_vals(op, "", "", 100000)
                                io.operate_read_op(op, name)
                                for k, v in it:
                                    places.append((f"omap {k}", k.encode() + b"\0" + (v or b"")))
                        except UnicodeDecodeError:
                            # Keys that are not UTF-8 (RGW's versioned index entries start
                            # with 0x80), which the binding cannot return: the CLI's dump.
                            places.append(("omap (dump)", omap_dump(conf, pool, obj.nspace, name)))
                    except rados.ObjectNotFound:
                        continue
                    for where, blob in places:
                        if any(n in blob for n in needles):
                            print(f"{pool}\t{obj.nspace}/{name}\t{where}")


if __name__ == "__main__":
    main()
