"""A stateful stand-in for an S3 Express One Zone directory bucket, as AWS
documents it, for testing the S3 client's directory-bucket path (AWS itself is
not reachable from the test machines):

  - CreateSession (GET /<bucket>?session), signed for the "s3express" service
    with the configured access key, answers session credentials; every other
    request must carry x-amz-s3session-token with a live session's token and
    be signed with that session's access key (ExpiredToken once it lapsed);
  - PUT with x-amz-write-offset-bytes appends, only at the object's size (0
    creates it): else 400 InvalidWriteOffset; each append adds a part, and
    past --max-parts parts it is 400 TooManyParts; user metadata on an append
    to an existing object is 400 InvalidRequest;
  - conditional PUT and CompleteMultipartUpload (If-Match, If-None-Match: *),
    UploadPartCopy with x-amz-copy-source-if-match and ranges, GET with
    ranges, HEAD, DELETE, DeleteObjects, ListObjects (v1 and v2).

Signatures are not verified (the credential scope and the session are).

    fake_s3_express.py LOG.jsonl PORT_FILE ACCESS_KEY [--max-parts N] [--session-seconds S]

Every request is logged to LOG as one JSON line (method, path, query, the
headers that matter, status).
"""
import hashlib
import json
import secrets
import sys
import threading
import time
import urllib.parse
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape, unescape

log_path, port_path, access_key = sys.argv[1:4]
args = sys.argv[4:]
max_parts = int(args[args.index("--max-parts") + 1]) if "--max-parts" in args else 10000
session_seconds = int(args[args.index("--session-seconds") + 1]) if "--session-seconds" in args else 300

lock = threading.Lock()
objects = {}   # key -> {"data": bytes, "etag": str, "parts": int, "mtime": float}
uploads = {}   # upload id -> {"key": str, "parts": {n: (etag, bytes)}}
sessions = {}  # token -> (access key id, expires)


def new_etag(data):
    return hashlib.md5(data + secrets.token_bytes(8)).hexdigest()


def bare(etag):
    return etag.strip().strip('"')


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=None):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("x-amz-request-id", secrets.token_hex(8))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.status = status

    def error(self, status, code, message=""):
        self.code = code
        self.answer(status, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>%s</Code><Message>%s</Message>"
                            "</Error>" % (code, escape(message)), {"Content-Type": "application/xml"})

    def credential(self):
        auth = self.headers.get("Authorization", "")
        at = auth.find("Credential=")
        if at < 0:
            return None, None
        scope = auth[at + 11:].split(",")[0].split("/")
        return scope[0], scope[3] if len(scope) > 3 else None

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query_text = self.path.partition("?")
        query = dict(urllib.parse.parse_qsl(query_text, keep_blank_values=True))
        parts = urllib.parse.unquote(path).lstrip("/").split("/", 1)
        key = parts[1] if len(parts) > 1 else ""
        self.status = 0
        self.code = None
        with lock:
            self.dispatch(key, query, body)
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps({
                    "method": self.command, "path": path, "query": query_text, "status": self.status, "code": self.code,
                    "offset": self.headers.get("x-amz-write-offset-bytes"),
                    "session": bool(self.headers.get("x-amz-s3session-token")),
                    "copy_source": self.headers.get("x-amz-copy-source")}) + "\n")

    def dispatch(self, key, query, body):
        key_id, service = self.credential()
        if service != "s3express":
            return self.error(403, "AccessDenied", "not signed for s3express")
        if "session" in query and not key:
            if key_id != access_key:
                return self.error(403, "InvalidAccessKeyId", "unknown access key")
            token, secret, sid = secrets.token_hex(24), secrets.token_hex(20), "ASIA" + secrets.token_hex(8).upper()
            expires = time.time() + session_seconds
            sessions[token] = (sid, expires)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
            return self.answer(200, "<CreateSessionResult><Credentials><SessionToken>%s</SessionToken>"
                                    "<SecretAccessKey>%s</SecretAccessKey><AccessKeyId>%s</AccessKeyId>"
                                    "<Expiration>%s</Expiration></Credentials></CreateSessionResult>"
                               % (token, secret, sid, stamp), {"Content-Type": "application/xml"})
        token = self.headers.get("x-amz-s3session-token")
        if not token or token not in sessions:
            return self.error(403, "AccessDenied", "no session")
        sid, expires = sessions[token]
        if time.time() > expires:
            return self.error(400, "ExpiredToken", "the session expired")
        if key_id != sid:
            return self.error(403, "InvalidAccessKeyId", "not the session's access key")
        if not key:
            if self.command == "GET" and "session" not in query:
                return self.list(query)
            if self.command == "POST" and "delete" in query:
                return self.delete_many(body)
            return self.error(400, "InvalidRequest", "unsupported bucket operation")
        if "uploads" in query and self.command == "POST":
            uid = secrets.token_hex(12)
            uploads[uid] = {"key": key, "parts": {}}
            return self.answer(200, "<InitiateMultipartUploadResult><UploadId>%s</UploadId>"
                                    "</InitiateMultipartUploadResult>" % uid)
        if "uploadId" in query:
            return self.multipart(key, query, body)
        obj = objects.get(key)
        if self.command in ("GET", "HEAD"):
            if obj is None:
                return self.error(404, "NoSuchKey") if self.command == "GET" else self.answer(404)
            data, headers = obj["data"], {"ETag": '"%s"' % obj["etag"], "Last-Modified": formatdate(obj["mtime"], usegmt=True)}
            rng = self.headers.get("Range")
            if rng and self.command == "GET":
                first, _, last = rng[len("bytes="):].partition("-")
                first, last = int(first), min(int(last), len(data) - 1)
                if first >= len(data):
                    return self.error(416, "InvalidRange")
                headers["Content-Range"] = "bytes %d-%d/%d" % (first, last, len(data))
                return self.answer(206, data[first:last + 1], headers)
            return self.answer(200, data, headers)  # HEAD: its length, no body
        if self.command == "DELETE":
            objects.pop(key, None)
            return self.answer(204)
        if self.command == "PUT":
            return self.put(key, obj, body)
        return self.error(400, "InvalidRequest")

    def conditions_fail(self, obj):
        if self.headers.get("If-None-Match") == "*" and obj is not None:
            return True
        match = self.headers.get("If-Match")
        return match is not None and (obj is None or bare(match) != obj["etag"])

    def put(self, key, obj, body):
        offset = self.headers.get("x-amz-write-offset-bytes")
        if self.conditions_fail(obj):
            return self.error(412, "PreconditionFailed")
        if offset is not None:
            offset = int(offset)
            if not body:
                return self.error(400, "InvalidRequest", "Request body cannot be empty when 'write offset' is specified.")
            size = len(obj["data"]) if obj else 0
            if offset != size:
                return self.error(400, "InvalidWriteOffset", "The write offset value that you specified does not "
                                                             "match the current object size.")
            if obj is not None and any(h.lower().startswith("x-amz-meta-") for h in self.headers.keys()):
                return self.error(400, "InvalidRequest", "Cannot specify both a write offset value and user-defined "
                                                         "object metadata for existing objects.")
            if obj is not None and obj["parts"] >= max_parts:
                return self.error(400, "TooManyParts", "You have attempted to add more parts than the maximum.")
            data = (obj["data"] if obj else b"") + body
            parts = (obj["parts"] if obj else 0) + 1
        else:
            data, parts = body, 1
        etag = new_etag(data)
        objects[key] = {"data": data, "etag": etag, "parts": parts, "mtime": time.time()}
        return self.answer(200, b"", {"ETag": '"%s"' % etag, "x-amz-object-size": str(len(data))})

    def multipart(self, key, query, body):
        up = uploads.get(query["uploadId"])
        if up is None or up["key"] != key:
            return self.error(404, "NoSuchUpload")
        if self.command == "DELETE":
            del uploads[query["uploadId"]]
            return self.answer(204)
        if self.command == "PUT":
            number = int(query["partNumber"])
            source = self.headers.get("x-amz-copy-source")
            if source:
                skey = urllib.parse.unquote(source).lstrip("/").split("/", 1)[1]
                src = objects.get(skey)
                if src is None:
                    return self.error(404, "NoSuchKey")
                want = self.headers.get("x-amz-copy-source-if-match")
                if want and bare(want) != src["etag"]:
                    return self.error(412, "PreconditionFailed")
                data = src["data"]
                rng = self.headers.get("x-amz-copy-source-range")
                if rng:
                    first, _, last = rng[len("bytes="):].partition("-")
                    data = data[int(first):int(last) + 1]
                etag = hashlib.md5(data).hexdigest()
                up["parts"][number] = (etag, data)
                return self.answer(200, "<CopyPartResult><ETag>\"%s\"</ETag></CopyPartResult>" % etag)
            etag = hashlib.md5(body).hexdigest()
            up["parts"][number] = (etag, body)
            return self.answer(200, b"", {"ETag": '"%s"' % etag})
        if self.command == "POST":
            if self.conditions_fail(objects.get(key)):
                return self.error(412, "PreconditionFailed")
            text = body.decode()
            numbers = [int(n.split("</PartNumber>")[0]) for n in text.split("<PartNumber>")[1:]]
            data = b""
            for n in numbers:
                if n not in up["parts"]:
                    return self.error(400, "InvalidPart")
                data += up["parts"][n][1]
            del uploads[query["uploadId"]]
            etag = new_etag(data) + "-%d" % len(numbers)
            objects[key] = {"data": data, "etag": etag, "parts": len(numbers), "mtime": time.time()}
            return self.answer(200, "<CompleteMultipartUploadResult><ETag>\"%s\"</ETag>"
                                    "</CompleteMultipartUploadResult>" % etag)
        return self.error(400, "InvalidRequest")

    def list(self, query):
        prefix, after = query.get("prefix", ""), query.get("marker", query.get("continuation-token", ""))
        keys = sorted(k for k in objects if k.startswith(prefix) and k > after)
        page, more = keys[:1000], len(keys) > 1000
        out = "<ListBucketResult><IsTruncated>%s</IsTruncated>" % ("true" if more else "false")
        for k in page:
            out += "<Contents><Key>%s</Key><Size>%d</Size><ETag>\"%s\"</ETag></Contents>" % (
                escape(k), len(objects[k]["data"]), objects[k]["etag"])
        if more:
            out += "<NextMarker>%s</NextMarker>" % escape(page[-1])
        return self.answer(200, out + "</ListBucketResult>", {"Content-Type": "application/xml"})

    def delete_many(self, body):
        text = body.decode()
        for part in text.split("<Key>")[1:]:
            objects.pop(unescape(part.split("</Key>")[0], {"&quot;": '"', "&apos;": "'"}), None)
        return self.answer(200, "<DeleteResult></DeleteResult>", {"Content-Type": "application/xml"})

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_any


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_path + ".tmp", "w", encoding="utf-8") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402
os.rename(port_path + ".tmp", port_path)
server.serve_forever()
