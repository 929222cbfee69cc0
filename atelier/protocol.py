"""uvicorn's HTTP protocol (httptools) with its own error answer in our JSON shape.

A request the parser refuses (a request line or headers past llhttp's limits, bytes
that are not HTTP) never reaches the app: uvicorn answers it itself, in plain text
(``Invalid HTTP request received.``). Same status and connection handling, but the
``{"error", "message"}`` every other answer has (filebrowser/guards.py).
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


class JsonErrorsHttpTools(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": "bad_request", "message": msg}).encode()
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"content-type: application/json\r\n",
                        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                        b"connection: close\r\n", b"\r\n", body])
        self.transport.write(b"".join(content))
        self.transport.close()
