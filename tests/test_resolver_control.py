"""The pool talks to unbound's control socket itself for commands without input
(``ResolverPool._control_socket``): the answers and errors ``unbound-control`` gives,
checked against the real unbound and the real program."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.core.errors import ResolverError
from controlplane.dns.views import Forwarding
from controlplane.resolvers.pool import ResolverPool
from tests.tools import require_tool


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[ResolverPool]:
    require_tool("unbound", "apt-get install unbound")
    p = ResolverPool(tmp_path / "pool")
    p.apply({"t": Forwarding(server=None)})
    yield p
    p.stop_all()


def test_a_command_answers_what_unbound_control_prints(pool: ResolverPool) -> None:
    res = pool.resolvers["t"]
    assert pool.control_bin is not None
    cli = subprocess.run([pool.control_bin, "-c", res.conf_path, "auth_zone_reload",
                          "cluster.local."], capture_output=True, text=True, check=True)
    assert pool._control(res, "auth_zone_reload cluster.local.") == cli.stdout == "ok\n"  # noqa: SLF001
    status = pool._control(res, "status")  # noqa: SLF001
    assert status is not None and f"(pid {res.unbound.pid}) is running" in status


def test_an_error_is_raised_or_none(pool: ResolverPool) -> None:
    res = pool.resolvers["t"]
    with pytest.raises(ResolverError, match="error no auth-zone nothere"):
        pool._control(res, "auth_zone_reload nothere.")  # noqa: SLF001
    assert pool._control(res, "auth_zone_reload nothere.", check=False) is None  # noqa: SLF001
    res.stop()  # nobody listens on the socket any more
    assert pool._control(res, "status", check=False) is None  # noqa: SLF001
    with pytest.raises(ResolverError, match="status"):
        pool._control(res, "status")  # noqa: SLF001


def test_a_socket_path_too_long_for_sockaddr_un_still_works(tmp_path: Path) -> None:
    """A deep resolver directory: unbound binds the socket path cut to 107 bytes (as
    unbound-control connects to it); the pool then uses the program, and the resolver
    comes up and answers (a path Python cannot connect to must not read as "not up")."""
    require_tool("unbound", "apt-get install unbound")
    deep = tmp_path / ("d" * max(1, 120 - len(str(tmp_path))))
    p = ResolverPool(deep / "pool")
    try:
        p.apply({"t": Forwarding(server=None)})
        res = p.resolvers["t"]
        assert len(res.paths.control_socket.encode()) > 107
        status = p._control(res, "status")  # noqa: SLF001
        assert status is not None and f"(pid {res.unbound.pid}) is running" in status
    finally:
        p.stop_all()
