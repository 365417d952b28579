"""The real `fmforge ui` fixture, for the HTTP cases that go over the wire."""

from tests.integration.server.conftest import server

__all__ = ["server"]
