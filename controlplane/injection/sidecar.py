"""What the sidecar-injection webhook adds to a pod: pure values, no I/O.

- ``sidecar_container``: Envoy, bootstrapped with ``bootstrap.bootstrap_config``
  (plus the overlay below), as a native sidecar (an init container with
  ``restartPolicy: Always``) or, for clusters older than 1.29, an ordinary
  first container (``mode="legacy"``).
- ``pod_dns_config``: the ``dnsConfig`` for ``dnsPolicy: None`` that is what the
  kubelet writes for ``ClusterFirst`` in that namespace, with the sidecar as the
  only cluster nameserver and the pod's own ``dnsConfig`` merged as the kubelet
  merges it.
- ``token_volume``: the pod's projected ServiceAccount token for the control plane.
- ``front_container`` (unless ``InjectionConfig.front`` is off): the DNS front, kresd
  from the ``dns-front`` image, on the pod's DNS address over UDP and TCP, in front of
  Envoy's DNS listener (moved to ``envoy_dns_address``, 127.0.0.1:15053). Its
  configuration (``front.front_config``, the same for every pod) travels in the
  container's environment (``DNS_FRONT_CONFIG``) and is written at start into an
  ``emptyDir`` that also holds kresd's run directory and answer cache: no ConfigMap, so
  the webhook creates no object in the pod's namespace (it may not, and a ConfigMap
  would outlive the pod or need an owner), the root filesystem stays read-only, and a
  change of the text reaches new pods with the next admission. It starts after Envoy
  (native: the next init container; legacy: the next container), so its first queries
  find Envoy's listeners.

Readiness: the startup probe (native mode) and the postStart hold (legacy mode) send
one real DNS query to the container's DNS listener (Envoy's; the front's on the pod's
DNS address) with bash (``/dev/udp``; the Envoy
image has bash but no curl or dig) and succeed on any answer. Envoy's admin
``/ready`` is not enough: it reports LIVE once the first LDS response is applied even
when the DNS listener in it failed to bind (measured on Envoy 1.40: "cannot bind
'127.0.0.1:53': Permission denied", yet ``/ready`` 200).

The bootstrap is ``bootstrap_config``'s, plus one thing when the xDS address is a name:
an explicit c-ares resolver for the xDS cluster (the cluster DNS), because the pod's
resolv.conf points at this very sidecar, which has no listener before it reaches the
control plane.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from controlplane.core.names import parse_ip, split_host_port
from controlplane.core.settings import TOKEN_DIR, InjectionConfig, SidecarMode
from controlplane.injection.bootstrap import XDS_CLUSTER, bootstrap_config
from controlplane.injection.front import FRONT_NAME, FrontAddresses, front_config

SIDECAR_NAME = "dns-sidecar"
INJECT_NAMESPACE_LABEL = "dns.example.com/inject"  # on a namespace: "enabled"
INJECT_NAMESPACE_VALUE = "enabled"
OPT_OUT_ANNOTATION = "dns.example.com/inject"  # on a pod: "disabled" (or "false")
OPT_OUT_VALUES = frozenset({"disabled", "false", "no", "off"})
INJECTED_ANNOTATION = "dns.example.com/injected"  # set by the webhook: the sidecar mode
TOKEN_VOLUME = "dns-controlplane-token"
TOKEN_AUDIENCE = "dns-controlplane"

TOKEN_EXPIRATION_SECONDS = 3600
PORT_SYSCTL = "net.ipv4.ip_unprivileged_port_start"
PROBE_NAME = "ready.dns-sidecar.invalid"  # RFC 6761: never a real name, never forwarded
MODES = tuple(SidecarMode)
# The kubelet's and the API server's limits (pkg/apis/core/validation, since 1.28's
# ExpandedDNSConfig): 3 nameservers, 32 search domains, 2048 characters in the search
# line counting the spaces.
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32
MAX_SEARCH_CHARS = 2048
POD_NAME_PLACEHOLDER = "@@POD_NAME@@"  # cannot occur in a namespace or a label
FRONT_VOLUME = "dns-front"  # emptyDir: the front's config, run directory and cache
FRONT_DIR = "/var/lib/dns-front"
FRONT_CONFIG_ENV = "DNS_FRONT_CONFIG"
FRONT_CACHE_LIMIT = "64Mi"  # the emptyDir's sizeLimit: the 8 MiB LMDB cache and the config


def envoy_dns_address(config: InjectionConfig) -> str:
    """Where Envoy's DNS listener is: behind the front, or on the pod's DNS address."""
    return config.envoy_dns_address if config.front else config.dns_address


def front_addresses(config: InjectionConfig) -> FrontAddresses:
    return FrontAddresses(dns=config.dns_address, envoy_dns=config.envoy_dns_address,
                          set=config.set_address, hop=config.hop_address)


def config_problem(config: InjectionConfig) -> str | None:
    """Why ``config`` cannot produce a working sidecar, or None."""
    if config.mode not in MODES:
        return f"sidecar mode {config.mode!r} is not one of {', '.join(MODES)}"
    try:
        dns_host, dns_port = split_host_port(config.dns_address, 53)
        xds_host, _ = split_host_port(config.xds_address, 18000)
        for address in (config.admin_address, config.hop_address):
            split_host_port(address, 1)
        if config.stats_address.lower() != "off":
            split_host_port(config.stats_address, 15090)
        if config.cluster_dns:
            dns_ip, _ = split_host_port(config.cluster_dns, 53)
            if parse_ip(dns_ip) is None:
                return f"cluster DNS {config.cluster_dns!r} is not an IP address"
    except ValueError as exc:
        return str(exc)
    if dns_port != 53 or parse_ip(dns_host) is None:
        return (f"the sidecar's DNS address {config.dns_address!r} must be IP:53: resolv.conf "
                "names nameservers without a port")
    if parse_ip(xds_host) is None and not config.cluster_dns:
        return (f"the xDS address {config.xds_address!r} is a name: give the cluster DNS "
                "address to resolve it with (the pod's resolv.conf points at the sidecar "
                "itself, which has no configuration before it reaches the control plane)")
    if config.concurrency < 1:
        return "the sidecar's concurrency is at least 1"
    if config.front:
        problem = front_addresses(config).problem()
        if problem:
            return problem
    try:
        sidecar_bootstrap(config, node_id="check", namespace="check", labels={})
        if config.front:
            front_config(front_addresses(config), cache_dir=f"{FRONT_DIR}/cache")
    except ValueError as exc:
        return str(exc)
    return None


def sidecar_ports(config: InjectionConfig) -> dict[int, str]:
    """The ports the sidecar binds in the pod's network namespace, with their use."""
    ports = {
        split_host_port(envoy_dns_address(config), 53)[1]: "DNS listener",
        split_host_port(config.admin_address, 15000)[1]: "Envoy admin",
        split_host_port(config.hop_address, 15054)[1]: "resolver hop",
    }
    if config.front:
        ports[split_host_port(config.dns_address, 53)[1]] = "DNS front"
        ports[split_host_port(config.set_address, 15055)[1]] = "set listener"
    if config.stats_address.lower() != "off":
        ports[split_host_port(config.stats_address, 15090)[1]] = "stats listener"
    return ports


def sidecar_bootstrap(config: InjectionConfig, *, node_id: str, namespace: str,
                      labels: Mapping[str, str]) -> dict[str, Any]:
    """``bootstrap_config`` for an injected sidecar (and the xDS resolver of the module doc)."""
    boot = bootstrap_config(
        node_id=node_id, namespace=namespace, labels=dict(labels),
        xds_address=config.xds_address, dns_address=envoy_dns_address(config),
        admin_address=config.admin_address, stats_address=config.stats_address,
        resolver_hop_address=config.hop_address, delta=config.delta,
        front_set_address=config.set_address if config.front else "",
        xds_ca=config.xds_ca, xds_server_name=config.xds_server_name,
        # The projected token, re-read for every new ADS stream (it rotates); gRPC sends
        # it only over TLS, so plaintext ADS (local runs) goes without.
        token_path=config.token_path if config.xds_ca else "")
    static = boot["static_resources"]
    xds_host, xds_port = split_host_port(config.xds_address, 18000)
    if parse_ip(xds_host) is None and config.cluster_dns:
        dns_ip, dns_port = split_host_port(config.cluster_dns, 53)
        # With a token file ADS goes through Envoy's Google gRPC client, which resolves
        # its target itself: name the DNS server in the target (gRPC's dns:// authority).
        for service in boot["dynamic_resources"]["ads_config"]["grpc_services"]:
            google = service.get("google_grpc")
            if google is not None and google["target_uri"] == f"{xds_host}:{xds_port}":
                google["target_uri"] = f"dns://{dns_ip}:{dns_port}/{xds_host}:{xds_port}"
        (xds,) = [c for c in static["clusters"] if c["name"] == XDS_CLUSTER]
        xds["typed_dns_resolver_config"] = {
            "name": "envoy.network.dns_resolver.cares",
            "typed_config": {
                "@type": "type.googleapis.com/"
                         "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
                "resolvers": [{"socket_address": {"address": dns_ip, "port_value": dns_port}}],
                "dns_resolver_options": {"no_default_search_domain": True},
            },
        }
    return boot


def kubelet_escape(text: str) -> str:
    """``text`` with every ``$`` doubled, so the kubelet's ``$(VAR)`` expansion keeps it."""
    return text.replace("$", "$$")


def sidecar_args(config: InjectionConfig, *, namespace: str,
                 labels: Mapping[str, str]) -> list[str]:
    """Envoy's arguments; the node id holds ``$(POD_NAME)``, which the kubelet expands
    from the downward API (the name is not known at admission for ``generateName``)."""
    boot = sidecar_bootstrap(config, node_id=f"{POD_NAME_PLACEHOLDER}.{namespace}",
                             namespace=namespace, labels=labels)
    text = kubelet_escape(json.dumps(boot, separators=(",", ":"), sort_keys=True))
    text = text.replace(POD_NAME_PLACEHOLDER, "$(POD_NAME)")
    return ["--config-yaml", text, "--disable-hot-restart", "--concurrency",
            str(config.concurrency), "--log-level", "warn"]


def _query_bytes(name: str) -> str:
    """A DNS query (id 0x6472, RD, one A question) as a bash printf format."""
    labels = "".join(f"\\x{len(label):02x}{label}" for label in name.split("."))
    return ("\\x64\\x72\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00"
            + labels + "\\x00\\x00\\x01\\x00\\x01")


def dns_check_script(address: str) -> str:
    """bash that exits 0 when the DNS listener at ``address`` answers one query (any
    rcode), non-zero otherwise (nothing bound: the kernel refuses at once; no answer in
    0.9 s)."""
    host, port = split_host_port(address, 53)
    return (f"exec 3<>/dev/udp/{host}/{port} && printf '{_query_bytes(PROBE_NAME)}' >&3 "
            "&& read -r -t 0.9 -N 1 reply <&3")


def ready_hold_script(address: str, *, attempts: int = 1200) -> str:
    """bash that returns once the DNS listener at ``address`` answers
    (``dns_check_script`` every 0.1 s, at most ``attempts`` times): the legacy mode's
    postStart hook, which the kubelet runs to completion before it starts the next
    container."""
    return (f"i=0; while [ $i -lt {attempts} ]; do ( {dns_check_script(address)} ) "
            "2>/dev/null && exit 0; sleep 0.1; i=$((i+1)); done; "
            "echo 'the DNS sidecar did not answer' >&2; exit 1")


def sidecar_container(config: InjectionConfig, *, namespace: str,
                      labels: Mapping[str, str]) -> dict[str, Any]:
    """The Envoy container, in the API's JSON shape (camelCase)."""
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": config.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["envoy"],
        "args": sidecar_args(config, namespace=namespace, labels=labels),
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE",
             "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "startupProbe": _startup_probe(envoy_dns_address(config)),
        "resources": {
            "requests": {"cpu": config.cpu_request, "memory": config.memory_request},
            "limits": {"memory": config.memory_limit},
        },
        "securityContext": _security_context(config.run_as_user),
        "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if config.stats_address.lower() != "off":
        _, stats_port = split_host_port(config.stats_address, 15090)
        container["ports"] = [{"containerPort": stats_port, "protocol": "TCP"}]
    _start_order(container, config, envoy_dns_address(config))
    return container


def _startup_probe(address: str) -> dict[str, Any]:
    return {"exec": {"command": ["bash", "-c", dns_check_script(address)]},
            "periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 120}


def _security_context(user: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _start_order(container: dict[str, Any], config: InjectionConfig, address: str) -> None:
    """Native: a sidecar init container. Legacy: hold the next container until ``address``
    answers, and keep answering while the application stops."""
    if config.mode == SidecarMode.NATIVE:
        container["restartPolicy"] = "Always"
    else:
        container["lifecycle"] = {
            # The kubelet starts the next container only when postStart returns.
            "postStart": {"exec": {"command": ["bash", "-c", ready_hold_script(address)]}},
            # Every container gets SIGTERM at once: keep answering while the app stops.
            "preStop": {"exec": {"command": ["sleep", "5"]}},
        }


def front_start_script() -> str:
    """sh that writes the configuration from the environment into the emptyDir and runs
    kresd on it (kresd's run directory and cache are there too)."""
    return (f'printf "%s" "${FRONT_CONFIG_ENV}" > {FRONT_DIR}/front.lua && '
            f"exec kresd -n -c {FRONT_DIR}/front.lua {FRONT_DIR}")


def front_container(config: InjectionConfig) -> dict[str, Any]:
    """The DNS front container (kresd), in the API's JSON shape; see the module doc."""
    lua = front_config(front_addresses(config), cache_dir=f"{FRONT_DIR}/cache")
    container: dict[str, Any] = {
        "name": FRONT_NAME,
        "image": config.front_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", kubelet_escape(front_start_script())],
        "env": [{"name": FRONT_CONFIG_ENV, "value": kubelet_escape(lua)}],
        "startupProbe": _startup_probe(config.dns_address),
        "resources": {
            "requests": {"cpu": config.front_cpu_request,
                         "memory": config.front_memory_request},
            "limits": {"memory": config.front_memory_limit},
        },
        "securityContext": _security_context(config.front_run_as_user),
        "volumeMounts": [{"name": FRONT_VOLUME, "mountPath": FRONT_DIR}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    _start_order(container, config, config.dns_address)
    return container


def front_volume() -> dict[str, Any]:
    return {"name": FRONT_VOLUME, "emptyDir": {"sizeLimit": FRONT_CACHE_LIMIT}}


def token_volume() -> dict[str, Any]:
    """The projected ServiceAccount token the sidecar proves its pod's identity with."""
    return {"name": TOKEN_VOLUME, "projected": {"defaultMode": 0o444, "sources": [{
        "serviceAccountToken": {"audience": TOKEN_AUDIENCE,
                                "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                                "path": "token"}}]}}


def _omit_duplicates(items: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def pod_dns_config(*, namespace: str, zone: str, nameserver: str,
                   own: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """(``dnsConfig`` for ``dnsPolicy: None``, problems) as the kubelet builds ClusterFirst.

    kubelet (pkg/kubelet/network/dns): searches ``<ns>.svc.<zone> svc.<zone> <zone>``,
    options ``ndots:5``; the pod's ``dnsConfig`` is appended (nameservers and searches,
    duplicates removed, first kept) and its options override those of the same name.
    The node's own search domains, which the kubelet appends for ClusterFirst, are not
    known at admission and are left out. A problem means the API server would reject
    the result (the kubelet's limits); the caller must not inject then.
    """
    own = own or {}
    nameservers = _omit_duplicates([nameserver, *[str(n) for n in own.get("nameservers") or []]])
    searches = _omit_duplicates([f"{namespace}.svc.{zone}", f"svc.{zone}", zone,
                                 *[str(s) for s in own.get("searches") or []]])
    options: dict[str, str | None] = {"ndots": "5"}
    for option in own.get("options") or []:
        if isinstance(option, Mapping) and option.get("name"):
            value = option.get("value")
            options[str(option["name"])] = None if value is None else str(value)
    problems = []
    if len(nameservers) > MAX_NAMESERVERS:
        problems.append(f"dnsConfig.nameservers: the sidecar plus {len(nameservers) - 1} of "
                        f"the pod's make {len(nameservers)}, over the limit of "
                        f"{MAX_NAMESERVERS}")
    if len(searches) > MAX_SEARCHES:
        problems.append(f"dnsConfig.searches: the 3 cluster domains plus the pod's make "
                        f"{len(searches)} search domains, over the limit of {MAX_SEARCHES}")
    chars = len(" ".join(searches))
    if chars > MAX_SEARCH_CHARS:
        problems.append(f"dnsConfig.searches: the search line would be {chars} characters, "
                        f"over the limit of {MAX_SEARCH_CHARS}")
    config: dict[str, Any] = {
        "nameservers": nameservers,
        "searches": searches,
        "options": [{"name": k} if v is None else {"name": k, "value": v}
                    for k, v in options.items()],
    }
    return config, problems


def resolv_conf(dns_config: Mapping[str, Any]) -> str:
    """The resolv.conf the kubelet writes for ``dnsPolicy: None`` and this ``dnsConfig``."""
    lines = [f"nameserver {n}" for n in dns_config.get("nameservers") or []]
    if dns_config.get("searches"):
        lines.append("search " + " ".join(dns_config["searches"]))
    options = [o["name"] if o.get("value") is None else f"{o['name']}:{o['value']}"
               for o in dns_config.get("options") or []]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"
