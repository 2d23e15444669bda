"""Load a golden case: manifests in a directory -> inventory -> every tenant's resources.

Goldens are rewritten only by a person, with ``UPDATE_GOLDEN=1``, who then reviews the
diff; under CI (``tests.tools.in_ci``) ``UPDATE_GOLDEN`` is refused: a run that rewrote
its own expectations would pass whatever the code does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from controlplane.core.inventory import Inventory
from controlplane.core.settings import Settings
from controlplane.dns.views import (
    TenantView,
    Transport,
    Upstream,
    build_tenant_view,
    cluster_records,
    with_resolver,
)
from controlplane.resolvers.pool import GATE_TEMPLATE
from controlplane.sources.files import FileSource
from controlplane.store.store import Store
from controlplane.translate import translate_view
from controlplane.translate.unbound import (
    ResolverPaths,
    dnsdist_conf,
    gate_script,
    rpz_zone,
    unbound_conf,
)
from controlplane.translate.unbound_table import table_file, table_zones
from tests.tools import in_ci

GOLDEN = Path(__file__).parent / "golden"
# Where golden views find their tenant resolver (the runner picks a free port in real runs).
RESOLVER = Upstream("127.0.0.1", 5300)


def updating_goldens() -> bool:
    """True when ``UPDATE_GOLDEN=1`` asks to rewrite the goldens; refused under CI."""
    asked = os.environ.get("UPDATE_GOLDEN", "") not in ("", "0")
    if asked and in_ci():
        raise RuntimeError("UPDATE_GOLDEN is refused under CI: goldens are rewritten by a "
                           "person who reviews the diff, never by the run that checks them")
    return os.environ.get("UPDATE_GOLDEN") == "1"


def load_inventory(directory: Path) -> Inventory:
    store = Store()
    FileSource(directory, store, lambda: None).load_all()
    return store.inventory()


def tenant_views(inv: Inventory, settings: Settings) -> dict[str, TenantView]:
    records = cluster_records(inv, zone=settings.dns.zone)
    views = {}
    for policy in [*inv.policies.values(), None]:
        view, _ = build_tenant_view(policy, records, inv, settings.dns)
        views[view.tenant] = with_resolver(view, RESOLVER)
    return views


def golden_paths(tenant: str, *, doh: bool) -> ResolverPaths:
    d = f"/var/lib/dns-controlplane/resolvers/{tenant}"
    return ResolverPaths(directory=d, listen=RESOLVER, control_socket=f"{d}/control.sock",
                         rpz_file=f"{d}/policy.rpz", ca_file=f"{d}/ca.pem",
                         gate_socket="/var/lib/dns-controlplane/resolvers/policy-gate.sock",
                         gate_script=f"{d}/gate.py",
                         doh_proxy=Upstream("127.0.0.1", 5301) if doh else None)


def resolver_files(view: TenantView) -> dict[str, str]:
    """The tenant resolver's config files for a forwarding view (empty otherwise)."""
    fwd = view.forward
    if fwd is None:
        return {}
    doh = fwd.transport is Transport.HTTPS
    paths = golden_paths(view.tenant, doh=doh)
    files = {"unbound.conf": unbound_conf(view.tenant, fwd, paths), "policy.rpz": rpz_zone(fwd)}
    for zone, text in table_zones(fwd).items():
        files[Path(table_file(paths.directory, zone)).name] = text
    if fwd.gate is not None:
        files["gate.py"] = gate_script(view.tenant, fwd, paths, GATE_TEMPLATE.read_text())
    if doh and paths.doh_proxy is not None:
        files["dnsdist.conf"] = dnsdist_conf(fwd, listen=paths.doh_proxy, ca_file=paths.ca_file)
    return files


def resources_json(view: TenantView) -> dict[str, Any]:
    resources = translate_view(view, host="127.0.0.1", port=15053)
    return {type_url: {name: MessageToDict(msg) for name, msg in sorted(by_name.items())}
            for type_url, by_name in sorted(resources.items())}
