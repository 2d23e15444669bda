"""Wire types of Envoy's metrics service, which ``xds-protos`` does not ship.

``envoy.service.metrics.v3.MetricsService/StreamMetrics`` carries
``StreamMetricsMessage``s whose metrics are Prometheus' ``io.prometheus.client``
``MetricFamily`` (client_model's metrics.proto). The generated Python package
leaves both out, so the few messages the stats sink reads are declared here as
descriptors (field numbers as in the upstream .proto files; only names differ,
which the wire never carries). Fields not declared (summaries, histograms,
exemplars) are skipped by the parser.

Upstream definitions:
- envoy/service/metrics/v3/metrics_service.proto: ``StreamMetricsMessage {
  Identifier identifier = 1 (node = 1, only on a stream's first message);
  repeated io.prometheus.client.MetricFamily envoy_metrics = 2; }``,
  ``StreamMetricsResponse {}``.
- io/prometheus/client/metrics.proto (proto2): ``MetricFamily { name = 1;
  help = 2; type = 3; repeated Metric metric = 4; }``, ``Metric { repeated
  LabelPair label = 1; Gauge gauge = 2; Counter counter = 3; int64 timestamp_ms
  = 6; }``, ``Counter { double value = 1; }``, ``Gauge { double value = 1; }``.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "controlplane.envoy_metrics"
FILE_NAME = "controlplane/envoy_metrics.proto"

_F = descriptor_pb2.FieldDescriptorProto


def _field(msg: descriptor_pb2.DescriptorProto, name: str, number: int, type_: int, *,
           type_name: str = "", repeated: bool = False) -> None:
    field = msg.field.add(name=name, number=number, type=type_,
                          label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto2",
                                           dependency=[base_pb2.DESCRIPTOR.name])
    label = f.message_type.add(name="LabelPair")
    _field(label, "name", 1, _F.TYPE_STRING)
    _field(label, "value", 2, _F.TYPE_STRING)
    for name in ("Counter", "Gauge"):
        _field(f.message_type.add(name=name), "value", 1, _F.TYPE_DOUBLE)
    metric = f.message_type.add(name="Metric")
    _field(metric, "label", 1, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.LabelPair", repeated=True)
    _field(metric, "gauge", 2, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Gauge")
    _field(metric, "counter", 3, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Counter")
    _field(metric, "timestamp_ms", 6, _F.TYPE_INT64)
    family = f.message_type.add(name="MetricFamily")
    _field(family, "name", 1, _F.TYPE_STRING)
    _field(family, "help", 2, _F.TYPE_STRING)
    _field(family, "type", 3, _F.TYPE_INT32)  # an enum upstream: COUNTER 0, GAUGE 1, ...
    _field(family, "metric", 4, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Metric", repeated=True)
    ident = f.message_type.add(name="Identifier")
    _field(ident, "node", 1, _F.TYPE_MESSAGE, type_name=".envoy.config.core.v3.Node")
    message = f.message_type.add(name="StreamMetricsMessage")
    _field(message, "identifier", 1, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Identifier")
    _field(message, "envoy_metrics", 2, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.MetricFamily",
           repeated=True)
    f.message_type.add(name="StreamMetricsResponse")
    return f


def _load() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(FILE_NAME)
    except KeyError:
        pool.Add(_file())
    return pool


_POOL = _load()


def _cls(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


StreamMetricsMessage: Any = _cls("StreamMetricsMessage")
StreamMetricsResponse: Any = _cls("StreamMetricsResponse")
MetricFamily: Any = _cls("MetricFamily")
COUNTER, GAUGE = 0, 1
