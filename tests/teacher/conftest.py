from __future__ import annotations

import pytest

from tests.teacher.fake_api import FakeChatAPI
from tests.teacher.harness import API_KEY


@pytest.fixture
def fake_api():
    """Factory: ``fake_api(fault_rate=..., script=...)`` starts a loopback server, stopped after the test."""
    servers: list[FakeChatAPI] = []

    def start(**kwargs) -> FakeChatAPI:
        kwargs.setdefault("api_key", API_KEY)
        kwargs.setdefault("retry_after", "0.05")
        kwargs.setdefault("hang_s", 5.0)
        server = FakeChatAPI(**kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
