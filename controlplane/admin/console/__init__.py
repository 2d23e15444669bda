"""The operator console: read-only pages under the admin address, no CDN.

Pages (one HTML shell, ``static/page.html``, filled with each page's title and script,
and the page's JS in ``static/``, which reads the admin API by polling):

- ``/console/``: tenants (policy, namespaces, sidecars with ACK/NACK state, a live
  rate chart, recent denied and WARN queries);
- ``/console/tenant?name=T``: one tenant's view (searchable names and answers with
  the admitting rule; what is forwarded, where, and how: plain, DoT or DoH);
- ``/console/queries``: the query log (every logged query, allowed too) with filters
  (tenant, sidecar, name, type, action, rcode, time), each row linking to explain;
- ``/console/sidecar?node=N``: one sidecar's config history (pushes, ACKs, NACKs with
  Envoy's reason);
- ``/console/explain``: the same as ``/api/v1/explain``, as a form;
- ``/console/errors``: current input errors with file and line, or object and reason.

Also ``/docs`` (Swagger UI) and ``/redoc`` with their scripts and styles served from
the ``fastapi-offline`` package, instead of FastAPI's default public CDN.

Every URL a page uses is relative (``static/console.js``, ``../api/v1/tenants``), and
the redirects too (``Location: console/``), so the console works unchanged behind
``kubectl port-forward`` and behind a reverse proxy that serves it under a path prefix:
no prefix setting is needed. Every route is a GET and passes the admin API's
authentication middleware like any other (admin_auth.py: only ``/healthz`` and
``/readyz`` are open).

Why polling, not server-sent events: every update is then an ordinary GET of a
public API path, authorised per path by the admin middleware (a token revoked or a
grant narrowed to ``/api/v1/views/acme/*`` takes effect within the 30 s decision
cache, where a long-lived event stream would keep flowing); it passes any proxy,
including buffering ones that hold SSE back; and the data changes at most every
few seconds (Envoy flushes its counters every 5 s), so a 2 s poll of a few KB shows
everything an event stream would.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from string import Template

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response

STATIC = resources.files(__package__) / "static"
# URL path -> (page: its script static/<page>.js and body data-page, title)
PAGES = {"": ("index", "Tenants"), "tenant": ("tenant", "Tenant"),
         "queries": ("queries", "Query log"), "sidecar": ("sidecar", "Sidecar"),
         "explain": ("explain", "Explain"), "errors": ("errors", "Errors")}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
# The console's pages run no inline script and load nothing from elsewhere.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Cache-Control": "no-cache", "Referrer-Policy": "no-referrer"}


def _docs_static() -> Path | None:
    """Swagger UI and ReDoc from the ``fastapi-offline`` package (no CDN)."""
    try:
        import fastapi_offline
    except ImportError:  # pragma: no cover - a dependency; /docs then says so
        return None
    return Path(fastapi_offline.__file__).parent / "static"


def _read(name: str) -> tuple[bytes, str]:
    item = STATIC / name
    if "/" in name or name.startswith(".") or not item.is_file():
        raise HTTPException(status_code=404, detail=f"no console file {name!r}")
    return item.read_bytes(), TYPES.get(Path(name).suffix, "application/octet-stream")


def render_page(path: str) -> str:
    """The HTML of the console page at ``path`` (a key of ``PAGES``): the shared shell
    (header, navigation, status line) with the page's title and script."""
    page, title = PAGES[path]
    shell = (STATIC / "page.html").read_text(encoding="utf-8")
    return Template(shell).substitute(page=page, title=title)


def install_console(app: FastAPI, *, title: str) -> None:
    """Add the console's pages and local ``/docs`` and ``/redoc`` to the admin app (built
    with ``docs_url=None, redoc_url=None``)."""

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("console/", status_code=307)

    @app.get("/console", include_in_schema=False)
    def console_no_slash() -> Response:
        return RedirectResponse("console/", status_code=307)

    def page(path: str) -> Response:
        return Response(render_page(path), media_type=TYPES[".html"], headers=HEADERS)

    @app.get("/console/", include_in_schema=False)
    def tenants_page() -> Response:
        return page("")

    @app.get("/console/{name}", include_in_schema=False)
    def other_page(name: str) -> Response:
        if name not in PAGES:
            raise HTTPException(status_code=404, detail=f"no console page {name!r}; pages: "
                                + ", ".join(sorted(p or "/" for p in PAGES)))
        return page(name)

    @app.get("/console/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        body, media = _read(name)
        return Response(body, media_type=media, headers=HEADERS)

    docs = _docs_static()

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        # Relative URLs: from /docs (or /<prefix>/docs), "docs/..." and "openapi.json"
        # resolve beside it, with or without a path prefix in front.
        return get_swagger_ui_html(openapi_url="openapi.json", title=f"{title} - Swagger UI",
                                   swagger_js_url="docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="docs/static/swagger-ui.css",
                                   swagger_favicon_url="docs/static/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="openapi.json", title=f"{title} - ReDoc",
                              redoc_js_url="docs/static/redoc.standalone.js",
                              redoc_favicon_url="docs/static/favicon.png",
                              with_google_fonts=False)

    @app.get("/docs/static/{name}", include_in_schema=False)
    def docs_static(name: str) -> Response:
        files = {"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js",
                 "favicon.png"}
        if docs is None or name not in files or not (docs / name).is_file():
            raise HTTPException(status_code=404, detail="API docs assets are not installed "
                                "(pip install fastapi-offline)")
        return Response((docs / name).read_bytes(),
                        media_type=TYPES.get(Path(name).suffix, "application/octet-stream"),
                        headers={"Cache-Control": "max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})
