"""Load a golden case: manifests in a directory -> inventory -> every tenant's resources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from controlplane.inventory import Inventory, Store
from controlplane.settings import Settings
from controlplane.sources.files import FileSource
from controlplane.translate import translate_view
from controlplane.views import TenantView, build_tenant_view, cluster_records

GOLDEN = Path(__file__).parent / "golden"


def load_inventory(directory: Path) -> Inventory:
    store = Store()
    FileSource(directory, store, lambda: None).load_all()
    return store.inventory()


def tenant_views(inv: Inventory, settings: Settings) -> dict[str, TenantView]:
    records = cluster_records(inv, zone=settings.zone)
    views = {}
    for policy in [*inv.policies.values(), None]:
        view, _ = build_tenant_view(policy, records, inv, settings)
        views[view.tenant] = view
    return views


def resources_json(view: TenantView) -> dict[str, Any]:
    resources = translate_view(view, host="127.0.0.1", port=15053)
    return {type_url: {name: MessageToDict(msg) for name, msg in sorted(by_name.items())}
            for type_url, by_name in sorted(resources.items())}
