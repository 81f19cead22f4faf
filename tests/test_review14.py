"""Hostile review of int14 (orders14, ui14): each test's docstring names the attack and the expected behaviour."""
import socket
import threading

from werkzeug.serving import make_server

from service.api.accesslog import DevelopmentAccessLog


def _dev_server_answer(raw: bytes) -> bytes:
    """What werkzeug's development server with `avh-cds serve`'s request handler answers to a raw request."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=DevelopmentAccessLog)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            sock.sendall(raw)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            return answer
    finally:
        server.shutdown()
        server.server_close()


def test_the_development_server_refuses_a_malformed_request_line_without_logging_it(caplog):
    """Attack (ui14, `avh-cds serve`): a request line that cannot be parsed. The request handler's log_request read
    self.path, which http.server never set for it: an AttributeError and a traceback instead of the 400, and
    http.server's error line quoted the request line whole (`Bad request syntax ('GET /fhir/Condition?patient=avh-01
    a HTTP/1.1')`), the patient's id in the log. Expected: the 400 (or 505) is answered, and the log names the
    refusal without the request line."""
    caplog.set_level("INFO", logger="werkzeug")
    for raw, status in ((b"GET /fhir/Condition?patient=avh-01 a HTTP/1.1\r\n\r\n", 400),
                        (b"GET /fhir/Condition?patient=avh-01 HTTP/9x\r\n\r\n", 400),
                        (b"GET /fhir/Condition?patient=avh-01 HTTP/2.0\r\n\r\n", 505)):
        assert f"Error code: {status}".encode() in _dev_server_answer(raw)    # http.server's error page
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "avh-01" not in logged and "patient=" not in logged
    assert "code 400" in logged and "code 505" in logged
