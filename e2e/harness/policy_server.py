"""A real external authorization server for the e2e tests: Envoy's
``envoy.service.auth.v3.Authorization/Check`` over gRPC, deciding with a real Rego policy
(the ``regopy`` engine), the way OPA's Envoy plugin does.

    python -m e2e.harness.policy_server --port P --policy examples/policy-server/dns.rego --log FILE

The input is the CheckRequest as JSON with the proto field names (``input.attributes...``).
The query is ``data.envoy.authz.allow``: a boolean, or an object with ``allowed`` and
``dynamic_metadata`` (OPA's object form). Each Check is logged as one line:
``<name> <type> allow|deny ns=<dns.namespace> labels=<k=v,...>``.

``--rules FILE`` replaces the Rego policy with a JSON file read again on every Check, so a
test changes the server's mind while it runs: ``{"allow": [names], "ttl": seconds,
"delay": seconds, "types": {name: [types]}}`` (a listed name, or a name under a listed
``*.suffix``, is allowed, everything else denied; a name in ``types`` is decided per type,
``dns.per_type``, the listed types allowed; ``delay`` makes it slow from the next Check on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.struct_pb2 import Struct
from regopy import Interpreter


class RegoAuthorization(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, policy: str, log: Path, *, delay: float = 0.0,
                 status: int | None = None, rules: Path | None = None) -> None:
        self.policy = policy
        self.rules = rules
        self.log = log
        self.delay = delay  # a slow server
        self.status = status  # a server that answers this status code whatever it decides

    def evaluate(self, data: dict[str, Any]) -> Any:
        if self.rules is not None:
            rules = json.loads(self.rules.read_text())
            name = data["attributes"]["context_extensions"]["dns.name"]
            meta: dict[str, Any] = {"dns.ttl_seconds": rules.get("ttl", 30)}
            typed = rules.get("types", {})
            if name in typed:  # decided per type: the listed types are allowed
                meta["dns.per_type"] = True
                qtype = data["attributes"]["context_extensions"]["dns.type"]
                return {"allowed": qtype in typed[name], "dynamic_metadata": meta}
            allowed = any(name == n or (n.startswith("*.") and name.endswith(n[1:]))
                          for n in rules.get("allow", []))
            return {"allowed": allowed, "dynamic_metadata": meta}
        rego = Interpreter()
        rego.add_module("dns", self.policy)
        rego.set_input_term(json.dumps(data))
        result = json.loads(str(rego.query("data.envoy.authz.allow")))
        return result["expressions"][0] if result.get("expressions") else False

    async def Check(self, request: external_auth_pb2.CheckRequest,  # noqa: N802 - gRPC name
                    context: grpc.aio.ServicerContext) -> external_auth_pb2.CheckResponse:
        data = {"attributes": MessageToDict(request.attributes,
                                            preserving_proto_field_name=True)}
        delay = self.delay
        if self.rules is not None:
            delay = float(json.loads(self.rules.read_text()).get("delay", 0.0))
        if delay:
            await asyncio.sleep(delay)
        verdict = self.evaluate(data)
        meta: dict[str, Any] = {}
        if isinstance(verdict, dict):
            allowed = bool(verdict.get("allowed"))
            meta = verdict.get("dynamic_metadata") or {}
        else:
            allowed = verdict is True
        resp = external_auth_pb2.CheckResponse()
        resp.status.code = (0 if allowed else 7) if self.status is None else self.status
        if meta:
            resp.dynamic_metadata.CopyFrom(ParseDict(meta, Struct()))
        ext = request.attributes.context_extensions
        with self.log.open("a") as f:
            labels = ",".join(f"{k}={v}" for k, v in sorted(request.attributes.source.labels
                                                              .items()))
            f.write(f"{ext['dns.name']} {ext['dns.type']} {'allow' if allowed else 'deny'} "
                    f"ns={ext.get('dns.namespace', '')} labels={labels}\n")
        return resp


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--rules", type=Path, help="JSON rules read on every Check")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--status", type=int, default=None, help="answer this status code")
    parser.add_argument("--tls-cert", type=Path, help="serve TLS with this certificate...")
    parser.add_argument("--tls-key", type=Path, help="... and key")
    parser.add_argument("--client-ca", type=Path, help="require client certificates it signed")
    args = parser.parse_args()
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        RegoAuthorization(args.policy.read_text(), args.log, delay=args.delay,
                          status=args.status, rules=args.rules), server)
    if args.tls_cert:
        creds = grpc.ssl_server_credentials(
            [(args.tls_key.read_bytes(), args.tls_cert.read_bytes())],
            root_certificates=args.client_ca.read_bytes() if args.client_ca else None,
            require_client_auth=args.client_ca is not None)
        server.add_secure_port(f"127.0.0.1:{args.port}", creds)
    else:
        server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    args.log.touch()
    print("serving", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
