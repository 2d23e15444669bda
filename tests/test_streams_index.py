"""``Streams.node_owner``: who a node is, from the streams that hold a view, through the
index by node id (the query log asks it per record batch)."""

from __future__ import annotations

from controlplane.core.model import Workload
from controlplane.hub.metrics import HubMetrics
from controlplane.hub.streams import Streams
from controlplane.hub.view_key import ViewKey
from controlplane.xds.snapshot import SnapshotCache


def streams() -> Streams:
    return Streams(HubMetrics(), SnapshotCache(), clock=lambda: 0.0)


def test_a_node_is_known_from_its_view_until_its_stream_closes() -> None:
    s = streams()
    conn = s.open("peer-a")
    conn.workload = Workload(node_id="pod-a", namespace="acme")
    conn.caller = "token:acme"
    assert s.node_owner("pod-a") is None  # no view yet
    s.set_view(conn, ViewKey("acme", "127.0.0.1", 15053))
    assert s.node_owner("pod-a") == ("acme", "token:acme")
    assert s.node_tenant("pod-b") is None
    s.set_view(conn, ViewKey("globex", "127.0.0.1", 15053))  # moved to another view
    assert s.node_tenant("pod-a") == "globex"
    s.close(conn)
    assert s.node_owner("pod-a") is None


def test_a_second_stream_of_the_node_keeps_it_known_when_the_first_closes() -> None:
    s = streams()
    first, second = s.open("p1"), s.open("p2")
    for conn in (first, second):
        conn.workload = Workload(node_id="pod-a")
        s.set_view(conn, ViewKey("acme", "127.0.0.1", 15053))
    s.close(first)
    assert s.node_tenant("pod-a") == "acme"
    s.close(second)
    assert s.node_tenant("pod-a") is None
    assert not s._by_node  # nothing left behind


def test_the_lookup_does_not_scan_other_nodes_streams() -> None:
    s = streams()
    for i in range(2000):
        conn = s.open(f"p{i}")
        conn.workload = Workload(node_id=f"pod-{i}")
        s.set_view(conn, ViewKey(f"t{i % 10}", "127.0.0.1", 15053))
    for i in range(2000):
        s.connections[f"s{i + 1}"].workload = None  # a scan of connections would miss them
    assert s.node_tenant("pod-1234") == "t4"
