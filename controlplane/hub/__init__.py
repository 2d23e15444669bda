"""The hub: changes in, per-view snapshots out. It coordinates: ``hub`` (the coordinator),
``streams`` (every ADS stream and its view), ``view_snapshots`` (views -> serialised
snapshots), ``view_key`` (which Envoys share a snapshot), ``front_sets`` (which pairs
the DNS fronts' sets list: new pairs lag the table), ``metrics``.

May import: every layer below it (``xds``, ``resolvers``, ``policyserver``, ``telemetry``,
``store``, ``runtime``, ``translate``, ``dns``, ``policy``, ``core``); never ``admin``,
``kube``, ``app`` or ``cli``.
"""
