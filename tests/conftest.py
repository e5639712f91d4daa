"""Shared pytest fixtures. Unit tests need nothing outside the process;
integration tests (tests/integration) start real processes and sockets."""
import os

import pytest


@pytest.fixture
def shm_name(request):
    """A unique shared-memory arena name for this test (the test closes the arena, which unlinks it)."""
    return f"pstate-test-{os.getpid()}-{request.node.name[:40]}".replace("[", "_").replace("]", "_")
