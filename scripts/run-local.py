#!/usr/bin/env python3
"""`make run`: the local stack on fixed ports — Ceph RGW (a one-node cluster whose data
persists in .run/rgw, scripts/rgw.sh) behind Envoy with the s3crypt filter — with a
key-encryption key and client credentials generated once into .run/secrets.env (mode 600)
and reused. Runs until interrupted; the objects are there again at the next start."""

import base64
import os
import pathlib
import secrets
import signal
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from stack import Stack  # noqa: E402

RUN = pathlib.Path(os.environ.get("S3CRYPT_RUN_DIR", ROOT / ".run"))
PORT = int(os.environ.get("S3CRYPT_PORT", 8080))
ADMIN = int(os.environ.get("S3CRYPT_ADMIN_PORT", 9901))
TLS_PORT = int(os.environ.get("S3CRYPT_TLS_PORT", 8443))
S3PORT = int(os.environ.get("S3CRYPT_S3_PORT", 9000))
MON_PORT = int(os.environ.get("S3CRYPT_CEPH_MON_PORT", 3300))  # and MON_PORT + 1
OSD_PORTS = os.environ.get("S3CRYPT_CEPH_OSD_PORTS", "6800-6815")


def load_secrets():
    f = RUN / "secrets.env"
    if not f.exists():
        RUN.mkdir(exist_ok=True)
        values = {
            "KEY_ID": "local-1",
            "KEK": base64.b64encode(os.urandom(32)).decode(),
            "CLIENT_ACCESS_KEY": "S3CRYPT" + secrets.token_hex(6).upper(),
            "CLIENT_SECRET": secrets.token_urlsafe(30),
            "BACKEND_ACCESS_KEY": "LOCALS3" + secrets.token_hex(4).upper(),
            "BACKEND_SECRET": secrets.token_urlsafe(30),
        }
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(f"{k}={v}\n" for k, v in values.items()))
    return dict(line.split("=", 1) for line in f.read_text().split())


def main():
    s = load_secrets()

    def configure(st):
        st.root = RUN
        st.s3_port = S3PORT
        st.rgw_objstore = "bluestore"  # kept in .run/rgw across restarts
        st.rgw_ports = {"mon_port": MON_PORT, "osd_ports": OSD_PORTS}
        st.key_id, st.kek = s["KEY_ID"], base64.b64decode(s["KEK"])
        st.client_creds = (s["CLIENT_ACCESS_KEY"], s["CLIENT_SECRET"])
        st.all_client_creds = [st.client_creds]
        st.backend_creds = (s["BACKEND_ACCESS_KEY"], s["BACKEND_SECRET"])

    stack = Stack.start(RUN, configure=configure, port=PORT, admin_port=ADMIN, tls_port=TLS_PORT)
    ep, tls_ep, ca = stack.endpoint, stack.main.tls_endpoint, stack.tls[0]
    print(f"""
s3crypt is running.

  S3 endpoint (Envoy + s3crypt):  {ep}
  the same over TLS:              {tls_ep} (certificate from the local CA {ca})
  probes (answered by Envoy):     {ep}/healthz  {ep}/readyz
  Prometheus stats:               {stack.admin_url}/stats/prometheus
  backend S3 server (ciphertext): {stack.backend_endpoint} (Ceph RGW, data in {RUN / 'rgw'})
  backend credentials:            {stack.backend_creds[0]} / see BACKEND_SECRET in secrets.env
  secrets:                        {RUN / 'secrets.env'} (key id {stack.key_id})

Use it with the aws CLI:

  export AWS_ACCESS_KEY_ID={stack.client_creds[0]}
  export AWS_SECRET_ACCESS_KEY={stack.client_creds[1]}
  export AWS_DEFAULT_REGION=us-east-1
  aws --endpoint-url {ep} s3 mb s3://demo
  aws --endpoint-url {ep} s3 cp ./README.md s3://demo/README.md
  aws --endpoint-url {ep} s3 cp s3://demo/README.md -
  aws --endpoint-url {ep} s3 ls s3://demo

Read what is stored without Envoy (the s3crypt tool, README "Recovery and key rotation"):

  set -a; . {RUN / 'secrets.env'}; set +a
  export S3CRYPT_KEKS="$KEY_ID=$KEK" S3CRYPT_BACKEND_ENDPOINT={stack.backend_endpoint}
  export S3CRYPT_BACKEND_ACCESS_KEY_ID="$BACKEND_ACCESS_KEY" S3CRYPT_BACKEND_SECRET_ACCESS_KEY="$BACKEND_SECRET"
  {ROOT / 'target' / 'release' / 's3crypt'} verify s3://demo
  {ROOT / 'target' / 'release' / 's3crypt'} decrypt s3://demo/README.md -o README.back

Over TLS (SDKs then send aws-chunked uploads with trailing checksums), trust the local CA:

  export AWS_CA_BUNDLE={ca}
  aws --endpoint-url {tls_ep} s3 ls s3://demo

Press Ctrl-C to stop.
""", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop and all(e.proc.poll() is None for e in stack.envoys) and stack.backend_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        print("stopped.")


if __name__ == "__main__":
    main()
