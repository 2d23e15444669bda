"""The sidecar-injection webhook's HTTPS server: thin, around ``admission.review``.

``POST /inject`` takes an ``admission.k8s.io/v1`` AdmissionReview and answers one;
``GET /healthz`` answers 200. The certificate and key are ``tls.crt`` and ``tls.key``
in the certificate directory: a Secret (cert-manager's, see deploy/webhook.yaml) or,
when the directory holds none, a CA and a certificate made there at start (with
``ca.crt`` for a caBundle; local runs and tests). Files that change (cert-manager
renews the Secret, the kubelet swaps the mounted files) are loaded again for new
connections without a restart.

Every decision goes to an ``InjectionLog``: counters for
``dnscp_injection_total{result,reason}`` and the latest decisions for
``GET /api/v1/injection`` on the admin API, so pods admitted without a sidecar are
visible.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from controlplane.core.errors import BadReview, ConfigError
from controlplane.core.settings import InjectionConfig, SidecarMode, WebhookSettings
from controlplane.identity.certs import CA_FILE, CERT_FILE, KEY_FILE, make_ca_and_server
from controlplane.injection.admission import Decision, review
from controlplane.injection.sidecar import config_problem

log = logging.getLogger("controlplane.injection.webhook")


class InjectionLog:
    """Counts and the latest decisions of the webhook, newest last."""

    def __init__(self, config: InjectionConfig, keep: int = 200) -> None:
        self.config = config
        self.counts: Counter[tuple[str, str]] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self.errors = 0  # requests answered 400 (not an AdmissionReview)

    def record(self, decision: Decision, at: float) -> None:
        self.counts[(decision.result, decision.reason)] += 1
        entry = decision.as_dict()
        entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        self.recent.append(entry)

    def summary(self, *, result: str | None = None, limit: int = 100) -> dict[str, Any]:
        items = [e for e in reversed(self.recent) if result in (None, e["result"])]
        return {
            "mode": self.config.mode,
            "image": self.config.image,
            "xds_address": self.config.xds_address,
            "counts": [{"result": r, "reason": why, "count": n}
                       for (r, why), n in sorted(self.counts.items())],
            "bad_requests": self.errors,
            "recent": items[:limit],
        }

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "dnscp_injection", "Pods seen by the sidecar-injection webhook, by result "
            "(injected, already-injected, skipped, rejected) and reason",
            labels=["result", "reason"])
        for (result, reason), n in sorted(self.counts.items()):
            family.add_metric([result, reason], n)
        yield family


def create_webhook_app(config: InjectionConfig, injections: InjectionLog) -> FastAPI:
    app = FastAPI(title="DNS sidecar injection webhook", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/inject")
    async def inject(request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            answer, decision = review(json.loads(raw), config)
        except (ValueError, BadReview) as exc:  # JSONDecodeError is a ValueError
            injections.errors += 1
            log.warning("webhook: bad request: %s", exc)
            return JSONResponse({"error": str(exc)}, status_code=400)
        injections.record(decision, time.time())
        obj = f"Pod {decision.namespace}/{decision.pod}"
        if decision.result == "rejected":
            log.warning("webhook: rejected %s: %s", obj, decision.message,
                        extra={"object": obj})
        elif decision.result == "skipped":
            log.info("webhook: no sidecar for %s: %s", obj, decision.message,
                     extra={"object": obj})
        else:
            log.info("webhook: %s: %s", obj, decision.message, extra={"object": obj})
        return JSONResponse(answer)

    return app


@dataclass(frozen=True, slots=True)
class WebhookTls:
    cert_file: Path
    key_file: Path
    ca_file: Path | None  # only when this process made the certificate


def webhook_tls(directory: Path, server_name: str) -> WebhookTls:
    """tls.crt and tls.key in ``directory``; a CA and a certificate for ``server_name``
    are made there (with ca.crt) when either file is absent."""
    cert, key = directory / CERT_FILE, directory / KEY_FILE
    if cert.exists() and key.exists():
        ca = directory / CA_FILE
        return WebhookTls(cert, key, ca if ca.exists() else None)
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, cert_pem, key_pem = make_ca_and_server(server_name)
    (directory / CA_FILE).write_bytes(ca_pem)
    key.touch(mode=0o600)
    key.write_bytes(key_pem)
    cert.write_bytes(cert_pem)
    log.info("webhook: made a CA and a certificate for %s in %s (caBundle: %s)",
             server_name, directory, directory / CA_FILE)
    return WebhookTls(cert, key, directory / CA_FILE)


class ReloadingContext:
    """An SSLContext whose certificate is loaded again when its files change."""

    def __init__(self, tls: WebhookTls, context: ssl.SSLContext) -> None:
        self.tls = tls
        self.context = context
        self._stamp = self._files_stamp()  # the files ``context`` was made from

    def _files_stamp(self) -> tuple[float, float]:
        return (self.tls.cert_file.stat().st_mtime, self.tls.key_file.stat().st_mtime)

    def reload(self) -> bool:
        """Load the files if they changed; True when loaded. A half-written pair (the
        key no longer matches) keeps the previous certificate until the next try."""
        try:
            stamp = self._files_stamp()
            if stamp == self._stamp:
                return False
            self.context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            log.warning("webhook: certificate not reloaded (%s); keeping the previous one", exc)
            return False
        self._stamp = stamp
        log.info("webhook: certificate reloaded from %s", self.tls.cert_file)
        return True


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the control plane decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_webhook(*, host: str, port: int, tls: WebhookTls, app: FastAPI,
                      stop: asyncio.Event, reload_interval: float = 5.0) -> None:
    """Serve ``app`` over TLS until ``stop``; look for a new certificate every interval."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            lifespan="off", ssl_certfile=str(tls.cert_file),
                            ssl_keyfile=str(tls.key_file))
    config.load()  # makes config.ssl, the context every new connection uses
    assert config.ssl is not None
    context = ReloadingContext(tls, config.ssl)
    server = _Server(config)

    async def reload_loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), reload_interval)
            context.reload()

    async def stopper() -> None:
        await stop.wait()
        server.should_exit = True

    reloader = asyncio.create_task(reload_loop())
    watcher = asyncio.create_task(stopper())
    log.info("webhook: POST https://%s:%d/inject", host, port)
    serving = asyncio.ensure_future(server.serve())
    try:
        await asyncio.wait({serving, reloader}, return_when=asyncio.FIRST_COMPLETED)
        if reloader.done() and not reloader.cancelled() and reloader.exception() is not None:
            # A crashed reload loop ends this task with its error (the app's supervisor
            # reports it and ends the process) instead of serving an expiring certificate.
            server.should_exit = True
            await serving
            reloader.result()
        await serving
    finally:
        reloader.cancel()
        watcher.cancel()
    if not stop.is_set():
        raise RuntimeError(f"webhook server on {host}:{port} stopped (is the port in use?)")


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def first_nameserver(resolv_conf: str) -> str:
    """The first non-loopback nameserver of a resolv.conf text, or ""."""
    import ipaddress

    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            with contextlib.suppress(ValueError):
                if not ipaddress.ip_address(parts[1].split("%")[0]).is_loopback:
                    return parts[1]
    return ""


def injection_config(args: argparse.Namespace, *, zone: str,
                     resolv_conf: Path = Path("/etc/resolv.conf"),
                     sa_namespace: Path = SERVICE_ACCOUNT_NAMESPACE) -> InjectionConfig:
    """The InjectionConfig of ``controlplane serve``'s ``--webhook-*`` flags, with the
    defaults read from this pod (its namespace, its cluster DNS, the ADS CA)."""
    from controlplane.identity.tlsfiles import ca_bundle

    namespace = args.webhook_namespace or (
        sa_namespace.read_text().strip() if sa_namespace.is_file() else "dns-system")
    xds = args.webhook_xds_address or f"dns-controlplane.{namespace}.svc.{zone}:18000"
    if args.webhook_xds_ca:
        try:
            xds_ca = Path(args.webhook_xds_ca).read_text()
        except OSError as exc:
            raise ConfigError(flag="--webhook-xds-ca", reason=str(exc)) from exc
    elif args.xds_tls_dir:
        xds_ca = ca_bundle(Path(args.xds_tls_dir))
    else:
        xds_ca = ""
    if args.webhook_address and args.xds_tls_dir and not xds_ca:
        raise ConfigError(flag="--webhook-address", reason="ADS is served over TLS but there "
                          "is no CA for the sidecars to verify it with (no ca.crt in "
                          f"{args.xds_tls_dir}): give --webhook-xds-ca FILE")
    cluster_dns = args.webhook_cluster_dns
    if not cluster_dns and resolv_conf.is_file():
        cluster_dns = first_nameserver(resolv_conf.read_text())
    config = InjectionConfig(
        mode=SidecarMode(args.webhook_sidecar_mode), image=args.webhook_sidecar_image,
        xds_address=xds, xds_ca=xds_ca, xds_server_name=args.webhook_xds_server_name,
        cluster_dns=cluster_dns, zone=zone, own_namespace=namespace,
        front=args.webhook_sidecar_front == "on", front_image=args.webhook_front_image)
    problem = config_problem(config)
    if problem and args.webhook_address:
        raise ConfigError(flag="--webhook-*", reason=problem)
    return config


def webhook_log(settings: WebhookSettings) -> InjectionLog | None:
    """The decisions' log when the webhook is on (``--webhook-address``), else None."""
    return InjectionLog(settings.injection) if settings.enabled else None


async def serve_webhook(settings: WebhookSettings, injections: InjectionLog,
                        stop: asyncio.Event) -> None:
    """The webhook of ``controlplane serve``: a supervised task of app.serve."""
    import tempfile

    directory = (Path(settings.cert_dir) if settings.cert_dir
                 else Path(tempfile.mkdtemp(prefix="dns-cp-webhook-")))
    tls = webhook_tls(directory, settings.server_name)
    app = create_webhook_app(settings.injection, injections)
    log.info("webhook: %s sidecars (%s), xDS %s", settings.injection.mode,
             settings.injection.image, settings.injection.xds_address)
    await run_webhook(host=settings.host, port=settings.port, tls=tls,
                      app=app, stop=stop)
