# Two commands matter: `make run` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install system-deps lint clean bench-client

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

# Tools the control plane and the tests use: unbound (the tenant resolvers; also the tenants'
# own DoT/DoH servers in e2e) with python3-unbound (its policy-server gate), dnsdist (the
# DoH client of a tenant resolver), dig and dnsmasq
# (e2e upstream DNS servers), musl-gcc (a static musl client, as in Alpine pods), openssl (test
# CAs), dnsperf (benchmarks), docker-compose (checks docker-compose.yml), kubectl (renders
# deploy/ with kustomize), prometheus (scrapes real Envoys in e2e); the application resolvers
# of e2e/harness/appclients.py: go (Go's pure resolver), busybox (nslookup), node (c-ares and
# getaddrinfo), javac (InetAddress and JNDI), kdig (a second wire-level client beside dig);
# kresd (knot-resolver: the pod's DNS front, docs/dns-front.md) with lua-http (its set fetch).
SYSTEM_TOOLS := unbound:unbound dnsdist:dnsdist dig:dnsutils dnsmasq:dnsmasq musl-gcc:musl-tools \
                openssl:openssl dnsperf:dnsperf docker-compose:docker-compose \
                kubectl:kubernetes-client prometheus:prometheus chromium:chromium chromedriver:chromium-driver \
                go:golang-go busybox:busybox kdig:knot-dnsutils node:nodejs javac:openjdk-17-jdk-headless kresd:knot-resolver
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  tool=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$tool >/dev/null || [ -x /usr/sbin/$$tool ] || missing="$$missing $$pkg"; \
	done; \
	[ -f /usr/lib/python3/dist-packages/unboundmodule.py ] || missing="$$missing python3-unbound"; \
	[ -f /usr/share/lua/5.1/http/request.lua ] || missing="$$missing lua-http"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

run: $(STAMP) system-deps
	$(BIN)/python -m controlplane._kit.demo --manifests examples $(RUN_ARGS)

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check controlplane tests e2e benchmarks deploy
	$(BIN)/mypy controlplane
	$(BIN)/lint-imports

# The C++ simulated sidecar of benchmarks/streams.py --clients cc (needs libgrpc++-dev,
# protobuf-compiler-grpc, libprotobuf-dev): benchmarks/ads_client_cc/build/ads_client.
bench-client:
	@missing=""; \
	command -v grpc_cpp_plugin >/dev/null || missing="$$missing protobuf-compiler-grpc"; \
	pkg-config --exists grpc++ 2>/dev/null || missing="$$missing libgrpc++-dev"; \
	pkg-config --exists protobuf 2>/dev/null || missing="$$missing libprotobuf-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi
	benchmarks/ads_client_cc/build.sh

clean:
	rm -rf $(VENV) .pytest_cache
