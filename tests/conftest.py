"""Fixtures: one stack (s3s-fs + Envoy with s3crypt) per test session, a fresh bucket per
test. Extra Envoy instances a test starts are stopped with the stack."""

import itertools
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from stack import Stack  # noqa: E402

_n = itertools.count()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    st = Stack.start(tmp_path_factory.mktemp("stack"))
    yield st
    st.stop()


@pytest.fixture
def bucket(stack, request):
    name = f"t{next(_n)}-{request.node.name[:30].lower().replace('_', '-').replace('[', '-').replace(']', '')}".rstrip("-")
    stack.s3().create_bucket(Bucket=name)
    return name


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed and "stack" in item.funcargs:
        rep.sections.append(("stack logs", item.funcargs["stack"].logs()))
