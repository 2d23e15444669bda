"""The sidecar-injection webhook's HTTPS server: thin, around ``admission.review``.

``POST /inject`` takes an ``admission.k8s.io/v1`` AdmissionReview and answers one;
``GET /healthz`` answers 200. The certificate and key are ``tls.crt`` and ``tls.key``
in the certificate directory: a Secret (cert-manager's, see deploy/webhook.yaml) or,
when the directory holds none, a CA and a certificate made there at start (with
``ca.crt`` for a caBundle; local runs and tests). Files that change (cert-manager
renews the Secret, the kubelet swaps the mounted files) are loaded again for new
connections without a restart.

Every decision goes to an ``InjectionLog``: counters for
``dnscp_injection_total{result,reason,caller}`` and the latest decisions for
``GET /api/v1/injection`` on the admin API, so pods admitted without a sidecar are
visible. Each entry says whether its caller was proven to be the API server
(``caller.py``: a client certificate or a TokenReview'd token of
``--webhook-caller-user``); the unproven ones are kept apart and counted by why.

It never answers 500: a body over ``MAX_REVIEW_BYTES`` is 413, one that is not JSON,
nests too deeply for the parser, or has a field of the wrong type where the webhook
reads it (``review_shape.py``) is 400 with the reason naming the field; anything else is
a well-formed AdmissionReview answer (tests/test_webhook_fuzz.py feeds it arbitrary
JSON).
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
from starlette.background import BackgroundTask
from uvicorn.protocols.http.h11_impl import H11Protocol

from controlplane.core.errors import BadReview, ConfigError
from controlplane.core.settings import InjectionConfig, SidecarMode, WebhookSettings
from controlplane.identity.certs import CA_FILE, CERT_FILE, KEY_FILE, make_ca_and_server
from controlplane.identity.tokenreview import IdentityApi
from controlplane.injection.admission import Decision, review
from controlplane.injection.caller import NOT_CONFIGURED, UNCHECKED, Caller, CallerCheck
from controlplane.injection.sidecar import config_problem

log = logging.getLogger("controlplane.injection.webhook")


CALLERS = ("verified", "unverified")
MAX_REVIEW_BYTES = 8 << 20  # the API server's request bodies are at most 3 MiB
PEER_CERT = "dnscp_peer_cert"  # in the request scope's state: the verified client cert


class InjectionLog:
    """Counts and the latest decisions of the webhook, newest last, by caller: reviews
    from a proven caller (``caller.CallerCheck``) and the others are kept apart, so a
    flood from anyone who reaches the port cannot push the verified entries out."""

    def __init__(self, config: InjectionConfig, keep: int = 200) -> None:
        self.config = config
        self.counts: Counter[tuple[str, str, str]] = Counter()  # (caller, result, reason)
        self.recent: dict[str, deque[dict[str, Any]]] = {
            c: deque(maxlen=keep) for c in CALLERS}
        self.unverified: Counter[str] = Counter()  # by Caller.why
        self.errors = 0  # requests answered 400 or 413 (not an AdmissionReview)
        self._seq = 0

    def record(self, decision: Decision, at: float,
               caller: Caller = UNCHECKED) -> None:
        kind = CALLERS[0] if caller.verified else CALLERS[1]
        self.counts[(kind, decision.result, decision.reason)] += 1
        if not caller.verified:
            self.unverified[caller.why] += 1
        entry = decision.as_dict()
        entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        entry["caller"] = caller.as_dict()
        self._seq += 1
        entry["seq"] = self._seq
        self.recent[kind].append(entry)

    def summary(self, *, result: str | None = None, caller: str | None = None,
                limit: int = 100) -> dict[str, Any]:
        kinds = [c for c in CALLERS if caller in (None, c)]
        entries = sorted((e for c in kinds for e in self.recent[c]
                          if result in (None, e["result"])), key=lambda e: -int(e["seq"]))
        return {
            "mode": self.config.mode,
            "image": self.config.image,
            "xds_address": self.config.xds_address,
            "counts": [{"caller": c, "result": r, "reason": why, "count": n}
                       for (c, r, why), n in sorted(self.counts.items())],
            "unverified": dict(sorted(self.unverified.items())),
            "bad_requests": self.errors,
            "recent": entries[:limit],
        }

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "dnscp_injection", "Pods seen by the sidecar-injection webhook, by result "
            "(injected, already-injected, skipped, rejected), reason and caller (verified: "
            "the API server's client certificate or token; unverified: anyone else)",
            labels=["result", "reason", "caller"])
        for (caller, result, reason), n in sorted(self.counts.items()):
            family.add_metric([result, reason, caller], n)
        yield family
        why = CounterMetricFamily(
            "dnscp_injection_unverified", "Reviews from a caller the webhook could not "
            "prove to be the API server, by why (injection/caller.py)", labels=["why"])
        for reason, n in sorted(self.unverified.items()):
            why.add_metric([reason], n)
        yield why
        yield CounterMetricFamily("dnscp_injection_bad_requests", "Requests answered 400 "
                                  "or 413: not an AdmissionReview the webhook can read",
                                  value=self.errors)


async def read_body(request: Request, limit: int = MAX_REVIEW_BYTES) -> bytes | None:
    """The request body, or None when it is longer than ``limit`` (not read further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def decode_review(raw: bytes) -> Any:
    """The JSON of a request body; ``BadReview`` saying why it is not JSON."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise BadReview("the body nests arrays or objects too deeply to be an "
                        "AdmissionReview") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, huge integers
        raise BadReview(f"the body is not JSON: {exc}") from None


def create_webhook_app(config: InjectionConfig, injections: InjectionLog,
                       callers: CallerCheck | None = None) -> FastAPI:
    app = FastAPI(title="DNS sidecar injection webhook", docs_url=None, redoc_url=None,
                  openapi_url=None)
    callers = callers or CallerCheck()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def refuse(status: int, reason: str) -> JSONResponse:
        injections.errors += 1
        log.warning("webhook: bad request (%d): %s", status, reason)
        return JSONResponse({"error": reason}, status_code=status)

    @app.post("/inject")
    async def inject(request: Request) -> JSONResponse:
        raw = await read_body(request)
        if raw is None:
            return refuse(413, f"the body is over {MAX_REVIEW_BYTES} bytes: not an "
                          "AdmissionReview the API server sends")
        try:
            answer, decision = review(decode_review(raw), config)
        except BadReview as exc:
            return refuse(400, str(exc))
        at = time.time()
        peer_cert = (request.scope.get("state") or {}).get(PEER_CERT)
        authorization = request.headers.get("authorization", "")

        async def record() -> None:
            caller = await callers.identify(peer_cert=peer_cert, authorization=authorization)
            injections.record(decision, at, caller)
            _log_decision(decision, caller, quiet=callers.configured and not caller.verified)

        # The answer does not wait for the caller's TokenReview (the API server that
        # waits for this answer is the one that reviews the token): recorded once sent.
        return JSONResponse(answer, background=BackgroundTask(record))

    return app


def _log_decision(decision: Decision, caller: Caller, *, quiet: bool) -> None:
    """One line per decision; those of unproven callers, when callers are checked, at
    debug only (they are counted and listed), so a flood does not fill the log."""
    obj = f"Pod {decision.namespace}/{decision.pod}"
    who = (f" [caller {caller.by} {caller.user}]" if caller.verified
           else f" [unverified caller: {caller.why}]")
    if quiet:
        log.debug("webhook: %s: %s: %s%s", decision.result, obj, decision.message, who,
                  extra={"object": obj})
    elif decision.result == "rejected":
        log.warning("webhook: rejected %s: %s%s", obj, decision.message, who,
                    extra={"object": obj})
    elif decision.result == "skipped":
        log.info("webhook: no sidecar for %s: %s%s", obj, decision.message, who,
                 extra={"object": obj})
    else:
        log.info("webhook: %s: %s%s", obj, decision.message, who, extra={"object": obj})


class PeerCertProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol that puts the connection's verified client certificate
    (``getpeercert()``: None when the client sent none) into every request's
    ``scope["state"][PEER_CERT]``: uvicorn gives the app no other view of the TLS
    session. One protocol object serves one connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app_state = {**self.app_state,
                          PEER_CERT: transport.get_extra_info("peercert") or None}


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
                      stop: asyncio.Event, reload_interval: float = 5.0,
                      client_ca: Path | None = None) -> None:
    """Serve ``app`` over TLS until ``stop``; look for a new certificate every interval.
    With ``client_ca`` the server asks every client for a certificate and verifies it
    against that CA (optional: a client without one is served; one the CA did not sign
    fails the handshake, OpenSSL cannot ask without verifying)."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            lifespan="off", ssl_certfile=str(tls.cert_file),
                            ssl_keyfile=str(tls.key_file), http=PeerCertProtocol,
                            ssl_ca_certs=str(client_ca) if client_ca else None,
                            ssl_cert_reqs=ssl.CERT_OPTIONAL if client_ca else ssl.CERT_NONE)
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


def caller_check(settings: WebhookSettings, identity_api: IdentityApi | None) -> CallerCheck:
    """How the webhook tells the API server from other callers (``caller.py``)."""
    if settings.caller_tokenreview and identity_api is None:
        raise ConfigError(flag="--webhook-caller-tokenreview", reason="needs the Kubernetes "
                          "API (--kubeconfig, or in-cluster)")
    check = CallerCheck(users=settings.caller_users, client_ca=bool(settings.client_ca),
                        api=identity_api if settings.caller_tokenreview else None,
                        audiences=settings.caller_audiences)
    if check.configured:
        log.info("webhook: the injection log marks as verified only reviews from %s as %s",
                 " or ".join(w for w, on in (("a client certificate", check.client_ca),
                                             ("a TokenReview'd token", check.api)) if on),
                 ", ".join(sorted(check.users)))
    else:
        log.warning("webhook: every caller that reaches the port can add entries to the "
                    "injection log, listed as unverified (%s)", NOT_CONFIGURED)
    return check


async def serve_webhook(settings: WebhookSettings, injections: InjectionLog,
                        stop: asyncio.Event, *, identity_api: IdentityApi | None = None
                        ) -> None:
    """The webhook of ``controlplane serve``: a supervised task of app.serve."""
    import tempfile

    directory = (Path(settings.cert_dir) if settings.cert_dir
                 else Path(tempfile.mkdtemp(prefix="dns-cp-webhook-")))
    tls = webhook_tls(directory, settings.server_name)
    app = create_webhook_app(settings.injection, injections,
                             caller_check(settings, identity_api))
    log.info("webhook: %s sidecars (%s), xDS %s", settings.injection.mode,
             settings.injection.image, settings.injection.xds_address)
    await run_webhook(host=settings.host, port=settings.port, tls=tls, app=app, stop=stop,
                      client_ca=Path(settings.client_ca) if settings.client_ca else None)
