"""avh-cds: a CDS Hooks 2.0 service for aggressive vertebral hemangioma compressing the spinal cord."""
from __future__ import annotations

import functools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from flask import Flask, Request, Response, request
from flask.ctx import AppContext, _sentinel
from flask.globals import _cv_app, _cv_request
from flask.signals import (appcontext_popped, appcontext_pushed, appcontext_tearing_down, request_finished,
                           request_started, request_tearing_down)
from flask.sessions import NullSession, SecureCookieSessionInterface
from werkzeug.datastructures import Headers
from werkzeug.exceptions import BadRequest
from werkzeug.routing import MapAdapter, RequestRedirect

from service.ops import health, metrics
from service.config import Settings
from service.api.accesslog import log_routes_of, logged_method, logged_path
from service.api.engine import Engine
from service.errors import register_error_handlers, routing_redirect
from service.fastjson import OrjsonProvider
from service.fhir.prefetch import PrefetchResolver
from service.api.registry import Registry
from service.api.schemacheck import SchemaValidator
from service.api.aftersend import after_sent
from service.security import access_line, guard, install as install_security, logs_access
from service.security.refusals import warn_refused
from service.security.logs import configure_logging
from service.api.services import build_registry
from service.feedback.store import FeedbackStore, database_url

SCHEMAS = Path(__file__).parent / "api" / "schemas"


@dataclass
class Avh:
    """What a running app holds: loaded once at start-up, shared by all requests."""
    settings: Settings
    engine: Engine
    registry: Registry
    prefetch: PrefetchResolver
    validators: dict
    store: FeedbackStore
    readiness: list = field(default_factory=list)   # health.Check probes run by GET /readyz

    pathway_urls: dict = field(default_factory=dict)   # source_url by the request's scheme, host and root

    def source_url(self, req: Request) -> str:
        """The page each card's Source links to: under AVH_CDS_PUBLIC_URL, else under the URL the call `req` was
        sent to. Remembered for up to PATHWAY_URLS hosts (werkzeug works the URL out anew for each request: ~2% of a
        call; the Host header is the caller's, so what is remembered is bounded)."""
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/") + "/pathway"
        environ = req.environ
        key = tuple(map(environ.get, URL_PARTS))
        url = self.pathway_urls.get(key)
        if url is None:
            url = req.host_url.rstrip("/") + "/pathway"
            if len(self.pathway_urls) < PATHWAY_URLS:
                self.pathway_urls[key] = url
        return url


class SlashesMerged(MapAdapter):
    """A request's path with leading doubled slashes (`//cds-services`) answered as one with doubled slashes elsewhere
    (`/cds-services//x`): werkzeug matched the first as if it had one slash (it strips them) and served it, and
    redirects the second (merge_slashes; errors.routing_redirect answers: a GET redirected to the path with single
    slashes, a CDS call a 404 naming it). A path a route matches with its leading slashes is now that redirect too,
    unless it ends with a slash: the trailing slash's answer drops the leading ones too (`//fhir/Patient/x/`
    redirected to /fhir/Patient/x at once, not through /fhir/Patient/x/). Only the request's own match: a path
    matched for it (errors.match_without_slash, `//pathway/`) is matched as werkzeug does."""

    def match(self, path_info=None, method=None, return_rule=False, query_args=None, websocket=None):
        matched = super().match(path_info, method, return_rule, query_args, websocket)
        rest = self.path_info.lstrip("/")
        if path_info is None and self.path_info.startswith("//") and not rest.endswith("/"):
            raise RequestRedirect(self.make_redirect_url(quote(rest, safe="/:|+"), query_args))
        return matched


class RoutedAdapter(SlashesMerged):
    """A MapAdapter that remembers the rule its request matched: an adapter is reused for every request with the same
    routing inputs (AvhFlask.create_url_adapter), and matching them again gives the same rule and arguments. It is
    handed to `remember` once its request matched a rule: a refused route leaves nothing behind."""

    def match(self, path_info=None, method=None, return_rule=False, query_args=None, websocket=None):
        if not return_rule or path_info is not None or method is not None or query_args is not None \
                or websocket is not None:
            return super().match(path_info, method, return_rule, query_args, websocket)
        matched = self.__dict__.get("matched")
        if matched is None:      # a refusal (404, 405, a redirect) is raised: neither it nor the adapter is remembered
            matched = self.matched = super().match(return_rule=True)
            self.remember(self)
        rule, arguments = matched
        return rule, dict(arguments)        # the request's own: Flask's url_value_preprocessors may change them


class SessionsIfSigned(SecureCookieSessionInterface):
    """Flask's cookie sessions, for an app with a secret key; without one (avh-cds sets none: it keeps no session),
    one null session for every request, where Flask asked for a signer it could not make and made a new NullSession
    each time. A null session is never saved, and any write to it raises, as to a new one."""
    no_session = NullSession()

    def open_session(self, app, request):
        return super().open_session(app, request) if app.secret_key else self.no_session


class AvhRequest(Request):
    """Flask's Request, its body limit read from the app context without going through the current_app proxy twice
    (Flask 3.1's property, read once a hook call): the same value, a request's own limit set with
    `max_content_length = ...`, else the app's MAX_CONTENT_LENGTH, else (outside an app context) werkzeug's."""

    @property
    def max_content_length(self) -> int | None:
        if self._max_content_length is not None:
            return self._max_content_length
        app_context = _cv_app.get(None)
        return Request.max_content_length.fget(self) if app_context is None \
            else app_context.app.config["MAX_CONTENT_LENGTH"]

    @max_content_length.setter
    def max_content_length(self, value: int | None) -> None:
        self._max_content_length = value

    @property
    def blueprint(self) -> str | None:
        """Flask's, remembered with the rule it was read for (it is the rule's endpoint up to its last dot): read five
        times a hook call (the guard, the three hook compositions, the access line), each through two properties."""
        rule = self.url_rule
        known = self.__dict__.get("_blueprint_of")
        if known is not None and known[0] is rule:
            return known[1]
        blueprint = Request.blueprint.fget(self)
        self._blueprint_of = (rule, blueprint)
        return blueprint

    def close(self) -> None:
        """werkzeug's close, which closes the files of a parsed form, asked only when a form was parsed (`files` is a
        cached property): with none it walked an empty tuple through iter_multi_items' type checks, ~5,000
        instructions a call."""
        if "files" in self.__dict__:
            super().close()


class AvhResponse(Response):
    """Flask's Response, handed to the server without werkzeug's copy of its headers when the copy would be the same:
    werkzeug's get_wsgi_headers copies them (each value converted and checked again: they were when set), then
    changes them only for a Location or Content-Location (made absolute URIs), a status without a body (1xx, 204, 304)
    or a body without Content-Length. Every answer of a hook call has none of these.

    A body set whole (`set_data`: one bytes chunk) is handed over as a WholeBody, not as werkzeug's ClosingIterator
    over a generator (a typing subscript, two casts, a Python call a chunk and one at its end: ~10,000 instructions
    a call); the server gets the same bytes and the same close()."""

    @classmethod
    def of_json(cls, body: bytes) -> AvhResponse:
        """cls(body, content_type="application/json"): the same attributes, values and order (tests/test_thin_dispatch.py
        compares them), without werkzeug's checks of the two header values (a regular expression and a walk of the
        list each: both values are known good) and its status text made again (~20,000 instructions a call). A
        subclass (a deployer's, with its own __init__ or content-length setting) is made by its constructor."""
        if cls is not AvhResponse:
            return cls(body, content_type="application/json")
        response = _new_object(cls)
        headers = response.headers = Headers()
        headers._list = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        response._status, response._status_code = JSON_STATUS
        response.direct_passthrough = False
        response._on_close = []
        response.response = [body]
        return response

    def get_wsgi_response(self, environ):
        status = self.status_code
        if status < 200 or status in (204, 304):
            return super().get_wsgi_response(environ)
        headers = self.headers.to_wsgi_list()           # a new list, as werkzeug's copy gives
        names = {key.lower() for key, _ in headers}
        if "content-length" not in names or "location" in names or "content-location" in names:
            return super().get_wsgi_response(environ)
        body = self.response
        if type(body) is list and len(body) == 1 and type(body[0]) is bytes and not self.direct_passthrough \
                and environ["REQUEST_METHOD"] != "HEAD":
            return WholeBody(body, self.close), self.status, headers
        return self.get_app_iter(environ), self.status, headers


_new_object = object.__new__
JSON_STATUS = ("200 OK", 200)       # what Response's status setter makes of its default_status, 200


class WholeBody:
    """The WSGI iterable of a response whose body is `chunks` (a list of bytes, iterated in C), closed as werkzeug's
    ClosingIterator closes it: `close` is the response's (its call_on_close functions: service/api/aftersend.py)."""
    __slots__ = ("chunks", "close")

    def __init__(self, chunks: list, close):
        self.chunks, self.close = chunks, close

    def __iter__(self):
        return iter(self.chunks)


class AvhFlask(Flask):
    """Flask, with ensure_sync's answer remembered per function (the override Flask documents for it), and a request's
    URL adapter and rule remembered by what werkzeug works them out from.

    Flask asks `inspect` on every call whether each before- and after-request function and the view is a coroutine
    function; the answer depends on the function alone. Up to SYNC_FUNCTIONS are
    remembered (the app registers about twenty; after_this_request's per-call closures would be new each time).

    Flask binds the URL map to each request's environ (the host, the IDNA form of its name, the path) and matches
    the path against the rules: ~0.1 M instructions of a hook call, the same for every call to the same URL. The
    adapter (which holds nothing of a request but ROUTING) is kept, once its request matched a rule, for up to ADAPTERS
    such keys of up to LONGEST_ROUTING characters (the Host header and the path are the caller's: the memory is
    bounded, and starts again when full).

    A Host header that is not a host name is a 400 (INVALID_HOST) on every route. With Flask's own host settings
    (TRUSTED_HOSTS, SERVER_NAME, host or subdomain matching) Flask makes each adapter anew and nothing is remembered;
    the environment cannot set them (Settings reads AVH_CDS_* alone), code wrapping create_app can. The Host is then
    refused as without them, and an untrusted one with werkzeug's 400 "Host '...' is not trusted."."""

    session_interface = SessionsIfSigned()
    request_class = AvhRequest
    response_class = AvhResponse

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sync_functions: dict = {}
        self._adapters: dict = {}
        self._hooks: dict = {}

    # A thin dispatch: Flask's own steps, in its order, with the hook functions a request's blueprints have composed
    # once, and a signal sent only when something listens to it. Flask walks the app's and each blueprint's hook
    # lists, applies ensure_sync to each function and sends six blinker signals on every request (~0.1 M
    # instructions of a hook call); which functions run depends on the blueprints alone, and Flask refuses new ones
    # once it has handled a request (`_check_setup_finished`). The request context is read from Flask's context
    # variable once, not through its `request_ctx` proxy (a Python call for each lookup).

    def _composed(self, req: Request) -> tuple:
        """(url value preprocessors, before-request, after-request, teardown functions) of `req`, as Flask's
        preprocess_request, process_response and do_teardown_request call them, ensure_sync applied; they depend on
        its blueprint alone (`req.blueprints` are that blueprint and its parents)."""
        hooks = self._hooks.get(req.blueprint)
        if hooks is None:
            blueprints = req.blueprints
            first, last = (None, *reversed(blueprints)), (*blueprints, None)
            hooks = (tuple(f for name in first for f in self.url_value_preprocessors.get(name, ())),
                     tuple(self.ensure_sync(f) for name in first for f in self.before_request_funcs.get(name, ())),
                     tuple(self.ensure_sync(f) for name in last
                           for f in reversed(self.after_request_funcs.get(name, ()))),
                     tuple(self.ensure_sync(f) for name in last
                           for f in reversed(self.teardown_request_funcs.get(name, ()))))
            if self._got_first_request:         # hooks are still being registered until then
                self._hooks[req.blueprint] = hooks
        return hooks

    def app_context(self) -> AppContext:
        return QuietAppContext(self)

    def full_dispatch_request(self):
        self._got_first_request = True
        try:
            if request_started.receivers:
                request_started.send(self, _async_wrapper=self.ensure_sync)
            rv = self.preprocess_request()
            if rv is None:
                rv = self.dispatch_request()
        except Exception as e:
            rv = self.handle_user_exception(e)
        return self.finalize_request(rv)

    def finalize_request(self, rv, from_error_handler: bool = False):
        # An answer made by the view is returned by make_response as it is, after its type checks and a cast.
        response = rv if type(rv) is self.response_class else self.make_response(rv)
        try:
            response = self.process_response(response)
            if request_finished.receivers:
                request_finished.send(self, _async_wrapper=self.ensure_sync, response=response)
        except Exception:
            if not from_error_handler:
                raise
            self.logger.exception("Request finalizing failed with an error while handling an error")
        return response

    def dispatch_request(self):
        req = _cv_request.get().request
        if req.routing_exception is not None:
            self.raise_routing_exception(req)
        rule = req.url_rule
        if getattr(rule, "provide_automatic_options", False) and req.method == "OPTIONS":
            return self.make_default_options_response()
        return self.ensure_sync(self.view_functions[rule.endpoint])(**req.view_args)

    def preprocess_request(self):
        req = _cv_request.get().request
        preprocessors, before, _, _ = self._composed(req)
        for url_func in preprocessors:
            url_func(req.endpoint, req.view_args)
        for before_func in before:
            rv = before_func()
            if rv is not None:
                return rv
        return None

    def process_response(self, response):
        ctx = _cv_request.get()
        for func in ctx._after_request_functions:
            response = self.ensure_sync(func)(response)
        for func in self._composed(ctx.request)[2]:
            response = func(response)
        if not self.session_interface.is_null_session(ctx._session):
            self.session_interface.save_session(self, ctx._session, response)
        return response

    def do_teardown_request(self, exc=_sentinel) -> None:
        if exc is _sentinel:
            exc = sys.exc_info()[1]
        for func in self._composed(_cv_request.get().request)[3]:
            func(exc)
        if request_tearing_down.receivers:
            request_tearing_down.send(self, _async_wrapper=self.ensure_sync, exc=exc)

    def do_teardown_appcontext(self, exc=_sentinel) -> None:
        if not self.teardown_appcontext_funcs and not appcontext_tearing_down.receivers:
            return
        super().do_teardown_appcontext(exc)

    def log_exception(self, exc_info) -> None:
        """Flask's line for an error no handler answered (`Exception on <path> [GET]`) named the path as the caller
        sent it: now as the access line names it (its traceback, as every one, without messages: JsonLinesFormatter)."""
        self.logger.error("Exception on %s [%s]", logged_path(request.environ), logged_method(request.method),
                          exc_info=exc_info)

    def make_default_options_response(self) -> Response:
        """Flask's answer to OPTIONS (its Allow header, the methods sorted as a 405's are: werkzeug gives them from a
        set, in an order that changed from one process to the next), without the Content-Type text/html it gave its
        empty body: this service answers JSON or its pages, never an HTML fragment."""
        response = super().make_default_options_response()
        del response.headers["Content-Type"]
        if "Allow" in response.headers:
            response.headers["Allow"] = ", ".join(sorted(response.allow))
        return response

    def handle_http_exception(self, e):
        """Flask answers a routing redirect as werkzeug raised it, past every error handler: errors.routing_redirect
        answers it instead (a relative Location, a JSON body)."""
        if isinstance(e, RequestRedirect):
            return routing_redirect(e)
        return super().handle_http_exception(e)

    def create_url_adapter(self, request: Request | None):
        if request is None:
            return super().create_url_adapter(request)
        remembered = self.config["TRUSTED_HOSTS"] is None and self.config["SERVER_NAME"] is None \
            and not self.url_map.host_matching and not self.subdomain_matching
        if remembered:
            key = tuple(map(request.environ.get, ROUTING))
            known = self._adapters.get(key)
            if known is not None:
                request.host, adapter = known           # as Flask sets it, from the same environ
                return adapter
        adapter = super().create_url_adapter(request)      # a bad or untrusted Host header raises, not remembered
        if not request.host:
            raise BadRequest(INVALID_HOST)
        if not remembered:
            self.url_map.bind(request.host)     # BadHost for a name IDNA cannot encode, as without SERVER_NAME
            adapter.__class__ = SlashesMerged
            return adapter
        adapter.__class__ = RoutedAdapter
        adapter.remember = functools.partial(self._remember, key, request.host)
        return adapter

    def _remember(self, key: tuple, host: str, adapter: RoutedAdapter) -> None:
        """Keeps a matched request's adapter, unless its routing inputs are longer than a hook call's ever are."""
        if sum(map(len, filter(None, key))) > LONGEST_ROUTING:
            return
        if len(self._adapters) >= ADAPTERS:
            self._adapters.clear()
        self._adapters[key] = (host, adapter)

    def ensure_sync(self, func):
        try:
            return self._sync_functions[func]
        except KeyError:
            sync = super().ensure_sync(func)
            if len(self._sync_functions) < SYNC_FUNCTIONS:
                self._sync_functions[func] = sync
            return sync
        except TypeError:       # an unhashable callable: asked each time
            return super().ensure_sync(func)


class QuietAppContext(AppContext):
    """Flask's app context, sending appcontext_pushed and appcontext_popped only when something listens to them."""

    def push(self) -> None:
        self._cv_tokens.append(_cv_app.set(self))
        if appcontext_pushed.receivers:
            appcontext_pushed.send(self.app, _async_wrapper=self.app.ensure_sync)

    def pop(self, exc=_sentinel) -> None:
        try:
            if len(self._cv_tokens) == 1:
                if exc is _sentinel:
                    exc = sys.exc_info()[1]
                self.app.do_teardown_appcontext(exc)
        finally:
            ctx = _cv_app.get()
            _cv_app.reset(self._cv_tokens.pop())
        if ctx is not self:
            raise AssertionError(f"Popped wrong app context. ({ctx!r} instead of {self!r})")
        if appcontext_popped.receivers:
            appcontext_popped.send(self.app, _async_wrapper=self.app.ensure_sync)


SYNC_FUNCTIONS = 256
# What werkzeug binds the URL map to a request by (get_host, Map.bind_to_environ) and matches it with.
ROUTING = ("REQUEST_METHOD", "PATH_INFO", "SCRIPT_NAME", "QUERY_STRING", "wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME",
           "SERVER_PORT", "HTTP_CONNECTION", "HTTP_UPGRADE")
ADAPTERS = 256
# Characters of routing inputs an adapter is remembered for at most (a hook call's are ~100): the Host, path, query and
# Connection headers are the caller's, up to gunicorn's limits (8 KB a header), and ADAPTERS of them would be ~7 MB.
LONGEST_ROUTING = 1024
# What request.host_url is made of (werkzeug: scheme, Host header or server name and port, script root).
URL_PARTS = ("wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "SCRIPT_NAME")
PATHWAY_URLS = 64
# werkzeug reads a Host header that is not a host name ("", "a b", "a@b", "x/y") as none, which would have written
# links such as a card's source "http:/pathway#..."; HTTP says 400 (RFC 9112, 3.2).
INVALID_HOST = "the Host header is not a host name"


# The app's own before- and after-request functions: each step is its concern's (metrics, the guard, the refusal
# warning, the access line, CORS), called in the order they ran as hooks of their own. The request, the app and g are
# read once for all of them, from Flask's context variables (what its proxies read, each lookup through a Python call),
# and Flask makes two hook calls a request, not six. A step that raises stops the steps after it, as it stopped the
# hooks after it.

def before_request() -> Response | None:
    """The request's start (g.started: the access line's `ms` and the request histogram, so the calls the guard
    refuses are timed too), then the guard."""
    req, app_context = _cv_request.get().request, _cv_app.get()
    call = vars(app_context.g)
    call["started"] = time.perf_counter()
    return guard(req, app_context.app, call)


def after_request(response: Response) -> Response:
    """The refusal warning, CORS (a browser's call), then, once the answer has been sent (service/api/aftersend.py),
    the metrics histogram and the access line, both timed to the answer ready to send (now)."""
    req, app_context = _cv_request.get().request, _cv_app.get()
    app, call = app_context.app, vars(app_context.g)
    warn_refused(req, call, response)
    answered = time.perf_counter()
    logged = logs_access(req)
    response = app.extensions["avh_security"].cors(req, response)
    status = response.status_code
    if logged and req.endpoint == "cds.invoke":     # the histogram's calls, decided here only: not a preflight
        after_sent(response, metrics.observe_request, req, app, call, status, answered)
    if logged:          # last: once a call's line is written, its metrics and issued cards are recorded
        after_sent(response, access_line, req, app, call, status, answered)
    return response


def _validators(registry: Registry) -> dict:
    contexts = json.loads((SCHEMAS / "contexts.json").read_text())
    validators = {name: SchemaValidator(json.loads((SCHEMAS / f"{name}.json").read_text()))
                  for name in ("request", "feedback")}
    for service in registry:
        validators[service.hook] = SchemaValidator({"$defs": contexts["$defs"], **contexts[service.hook]})
    return validators


def open_store(settings: Settings) -> FeedbackStore:
    store = FeedbackStore(database_url(settings.database_url, settings.sqlite_path),
                          settings.storage_timeout_seconds, settings.feedback_retry_after_seconds,
                          settings.issued_flush_seconds, settings.issued_max_pending)
    store.start()
    return store


def _add_dependency_checks(app: Flask, settings: Settings) -> None:
    """GET /readyz asks each shared dependency this instance uses: the feedback database (reported, not required:
    hooks answer without it), and Redis when it holds the replay cache (required: no authenticated call is
    answered without it)."""
    avh = app.extensions["avh"]
    avh.readiness.append(health.Check("database", avh.store.ping, required=False))
    verifier = app.extensions["avh_security"].verifier
    if settings.redis_url and verifier is not None:
        avh.readiness.append(health.Check("redis", verifier.replay.ping))


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    app = AvhFlask(__name__, static_folder=None)      # no static files: every page is self-contained
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = OrjsonProvider(app)
    app.json.sort_keys = False
    engine = Engine.load(settings.cards_dir, settings.model_cache_size, settings.max_json_depth,
                         settings.cache_max_bytes)   # a bad card file fails here
    registry = build_registry(engine.valuesets)
    app.extensions["avh"] = Avh(settings, engine, registry,
                                PrefetchResolver.from_settings(settings, wanted=engine.selector.wanted), _validators(registry),
                                open_store(settings))
    app.extensions["avh"].readiness.append(health.cards_loaded(app.extensions["avh"]))
    metrics.init_app(app)
    install_security(app, settings)                # auth, fhirServer allowlist, input limits, CORS, access log
    app.before_request(before_request)
    app.after_request(after_request)
    _add_dependency_checks(app, settings)
    register_error_handlers(app)
    if settings.fixture_fhir:
        from service.fhir import fixture_server
        fixture_server.init_app(app, settings.fixtures_dir)
    from service.api import governance, pages, routes
    app.register_blueprint(routes.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(governance.bp)
    app.register_blueprint(health.bp)
    if settings.auth == "off":
        from service.api import explain       # "why no card?": development only, never with authentication on
        app.register_blueprint(explain.bp)
    log_routes_of(app)          # gunicorn's access line names a path by this app's routes
    return app
