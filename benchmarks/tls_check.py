"""The per-connection certificate check: what gRPC pays before every TLS handshake.

    .venv/bin/python benchmarks/tls_check.py [--calls 20000]

``CertificateFiles.fetch`` on unchanged files (two ``stat`` calls, no read): prints the
time per call. tests/test_ads_tls.py checks that it reads nothing; this measures the cost
(a few microseconds on a laptop; well under a millisecond anywhere it matters).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane.identity.tlsfiles import CertificateFiles, write_server_files  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_server_files(directory, ["dns-controlplane.dns-system.svc"])
        files = CertificateFiles(directory)
        files.load()
        start = time.perf_counter()
        for _ in range(args.calls):
            files.fetch()
        per_call = (time.perf_counter() - start) / args.calls
    print(f"the per-connection check (two stat calls) takes {per_call * 1e6:.1f} µs "
          f"({args.calls} calls)")


if __name__ == "__main__":
    main()
