"""A scripted HTTP server for testing the S3 client's handling of answers that
real servers rarely give on demand: 5xx, SlowDown, errors inside a 200,
RequestTimeTooSkewed, stalls.

    fake_s3.py SCRIPT.json LOG.jsonl PORT_FILE

SCRIPT is a list of answers, used in order (the last one repeats):
    {"status": 200, "headers": {"ETag": "\\"abc\\""}, "body": "...", "delay_ms": 0}
Every request is logged to LOG as one JSON line (method, path, query, headers,
body size). The chosen port is written to PORT_FILE once the server listens.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

script_path, log_path, port_path = sys.argv[1:4]
with open(script_path, encoding="utf-8") as f:
    script = json.load(f)
lock = threading.Lock()
state = {"next": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with lock:
            i = min(state["next"], len(script) - 1)
            state["next"] += 1
            answer = script[i]
            with open(log_path, "a", encoding="utf-8") as log:
                path, _, query = self.path.partition("?")
                log.write(json.dumps({"method": self.command, "path": path, "query": query,
                                      "headers": {k.lower(): v for k, v in self.headers.items()},
                                      "body_size": len(body)}) + "\n")
        time.sleep(answer.get("delay_ms", 0) / 1000.0)
        payload = answer.get("body", "").encode()
        self.send_response(answer.get("status", 200))
        for k, v in answer.get("headers", {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_path + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402
os.replace(port_path + ".tmp", port_path)
server.serve_forever()
