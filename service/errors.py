"""Every error is JSON that says what was wrong; no stack trace ever reaches a client."""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, **extra):
        super().__init__(message)
        self.status, self.error, self.message, self.extra = status, error, message, extra
        self.headers: dict[str, str] = {}

    def response(self):
        body = {"error": self.error, "message": self.message, **self.extra}
        return jsonify(body), self.status, self.headers


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return exc.response()

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        names = {413: "body_too_large", 404: "not_found", 405: "method_not_allowed"}
        body = {"error": names.get(exc.code, exc.name.lower().replace(" ", "_")), "message": exc.description}
        return jsonify(body), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")  # the traceback stays in the server log
        return jsonify({"error": "internal_error", "message": "avh-cds failed to process this request"}), 500
