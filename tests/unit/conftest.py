"""The simulated providers as real loopback HTTP servers, one of each per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.simulators.runner import running


@pytest.fixture(scope="module")
def email_url() -> Iterator[str]:
    with running("email") as url:
        yield url


@pytest.fixture(scope="module")
def crm_url() -> Iterator[str]:
    with running("crm") as url:
        yield url


@pytest.fixture(scope="module")
def model_url() -> Iterator[str]:
    with running("model") as url:
        yield url
