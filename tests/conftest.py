"""Fixtures: one stack (S3 server + Envoy with s3crypt) per backend per test session, a
fresh bucket per test. The backend is Ceph RGW (scripts/rgw.sh); a test module marked
`pytestmark = pytest.mark.backend("s3s-fs")` gets a stack on s3s-fs instead, for what RGW
cannot show (its docstring says what). Extra Envoy instances a test starts are stopped
with the stack."""

import itertools
import pathlib
import re
import signal
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from stack import DEFAULT_BACKEND, Stack  # noqa: E402

_n = itertools.count()


def pytest_configure(config):
    config.addinivalue_line("markers", "backend(name): the S3 server of the test's stack (rgw, s3s-fs)")
    # Ceph's daemons outlive their parent: a SIGTERM (timeout, CI cancel) must still run
    # the fixtures' teardown that stops them.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))


@pytest.fixture(scope="session")
def _stacks(tmp_path_factory):
    stacks = {}

    def get(backend):
        if backend not in stacks:
            stacks[backend] = Stack.start(tmp_path_factory.mktemp(f"stack-{backend}"), backend=backend)
        return stacks[backend]

    yield get
    for st in stacks.values():
        st.stop()


@pytest.fixture(scope="module")
def stack(_stacks, request):
    marker = request.node.get_closest_marker("backend")
    return _stacks(marker.args[0] if marker else DEFAULT_BACKEND)


@pytest.fixture
def bucket(stack, request):
    # S3 bucket names: 3-63 of a-z 0-9 - (RGW enforces them as AWS does).
    name = re.sub(r"[^a-z0-9-]+", "-", f"t{next(_n)}-{request.node.name[:40].lower()}")
    name = re.sub(r"-+", "-", name)[:63].rstrip("-")
    stack.s3().create_bucket(Bucket=name)
    return name


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed and "stack" in item.funcargs:
        rep.sections.append(("stack logs", item.funcargs["stack"].logs()))
