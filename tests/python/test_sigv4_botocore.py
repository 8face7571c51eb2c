"""Our SigV4 signer against botocore's S3 signer, on many random S3 requests.

Each request is signed by botocore.auth.S3SigV4Auth (at a fixed time) and by
tests/helpers/sigv4_tool (the library's signer); the canonical request, the string to
sign, the signature and the headers to send must be the same.

Run with Debian's interpreter, which has python3-botocore:

    /usr/bin/python3 tests/python/test_sigv4_botocore.py --tool build/dev/tests/tdo_sigv4_tool \
        [--count 1000] [--seed 20130524]

botocore takes the URL path as already encoded (S3SigV4Auth does not normalize or encode it),
so its URL gets the path encoded once the S3 way, and the tool gets the decoded path.
"""
import argparse
import base64
import datetime
import difflib
import json
import os
import random
import subprocess
import sys
import types
from urllib.parse import quote, urlsplit

try:
    import botocore
    import botocore.auth
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
except ImportError as e:  # not a skip: the comparison is part of the suite
    sys.exit(f"botocore is required (Debian: apt-get install python3-botocore; run /usr/bin/python3): {e}")


# --- botocore at a fixed time ------------------------------------------------------------------

class _Clock(datetime.datetime):
    """botocore.auth reads datetime.datetime.utcnow(); this one answers the time we set."""
    now = None

    @classmethod
    def utcnow(cls):
        return cls.now


_fake_datetime = types.ModuleType("datetime")
_fake_datetime.__dict__.update(datetime.__dict__)
_fake_datetime.datetime = _Clock
botocore.auth.datetime = _fake_datetime  # only botocore.auth sees the fixed clock


class CapturingS3SigV4Auth(S3SigV4Auth):
    """S3SigV4Auth unchanged, keeping what it computed along the way."""

    def canonical_request(self, request):
        self.last_canonical_request = super().canonical_request(request)
        return self.last_canonical_request

    def string_to_sign(self, request, canonical_request):
        self.last_string_to_sign = super().string_to_sign(request, canonical_request)
        return self.last_string_to_sign

    def signature(self, string_to_sign, request):
        self.last_signature = super().signature(string_to_sign, request)
        return self.last_signature


def botocore_sign(req):
    """Signs one request description with botocore; returns its figures."""
    body = req["payload"].encode("utf-8")
    url = f"{req['scheme']}://{req['host']}{quote(req['path'], safe='/')}"
    request = AWSRequest(method=req["method"], url=url, data=body, params=[tuple(p) for p in req["query"]])
    for name, value in req["headers"]:
        request.headers[name] = value  # HTTPHeaders appends: repeated names stay repeated
    # Explicit payload signing: a signed body hash, or UNSIGNED-PAYLOAD.
    request.context["client_config"] = types.SimpleNamespace(
        s3={"payload_signing_enabled": not req["unsigned_payload"]})
    _Clock.now = datetime.datetime.fromtimestamp(req["time"], datetime.timezone.utc).replace(tzinfo=None)
    credentials = Credentials(req["access_key_id"], req["secret_access_key"], req["session_token"] or None)
    auth = CapturingS3SigV4Auth(credentials, "s3", req["region"])
    auth.add_auth(request)
    return {
        "url_path": urlsplit(url).path,
        "canonical_query": auth.canonical_query_string(request),
        "canonical_request": auth.last_canonical_request,
        "string_to_sign": auth.last_string_to_sign,
        "signature": auth.last_signature,
        "x-amz-date": request.headers.get("X-Amz-Date"),
        "x-amz-content-sha256": request.headers.get("X-Amz-Content-SHA256"),
        "x-amz-security-token": request.headers.get("X-Amz-Security-Token"),
        "authorization": request.headers.get("Authorization"),
    }


def tool_input(req):
    line = {
        "method": req["method"], "host": req["host"], "path": req["path"],
        "query": req["query"], "headers": req["headers"],
        "access_key_id": req["access_key_id"], "secret_access_key": req["secret_access_key"],
        "session_token": req["session_token"], "region": req["region"], "service": "s3",
        "content_sha256_header": True, "time": req["time"],
    }
    if req["unsigned_payload"]:
        line["payload_sha256"] = "UNSIGNED-PAYLOAD"
    else:
        line["payload"] = req["payload"]
    return line


# --- random S3 requests ------------------------------------------------------------------------

ATOMS = (
    ["a", "b", "Z", "0", "9", "data", "2025", "x-y", "a_b", "v1.2", "training", "~tilde"]
    + list(" +=&%~!'()*$@:,;?#[]\"<>{}|^`\\")
    + ["%20", "%2F", "%25", "a+b", "a b", "x=y&z", "100%"]
    + ["é", "ü", "ß", "ñ", "Ω", "中文", "ሴ", "日本語"]
    + ["😀", "🩺", "𝄞", "🏃‍♀️"]  # 4-byte sequences (and a ZWJ sequence)
)
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
HOSTS = ["examplebucket.s3.amazonaws.com", "s3.amazonaws.com", "s3.eu-west-1.amazonaws.com",
         "bucket.s3.us-west-2.amazonaws.com", "127.0.0.1:7480", "minio:9000", "localhost:4566",
         "[::1]:9000", "acct.r2.cloudflarestorage.com"]
REGIONS = ["us-east-1", "eu-west-1", "eu-central-1", "ap-southeast-2", "us-gov-west-1", "cn-north-1",
           "sa-east-1", "auto"]
METHODS = ["GET", "PUT", "POST", "HEAD", "DELETE"]


def segment(rng):
    return "".join(rng.choice(ATOMS) for _ in range(rng.randint(1, 4)))


def key(rng):
    parts = []
    for _ in range(rng.randint(1, 5)):
        roll = rng.random()
        if roll < 0.08:
            parts.append("..")
        elif roll < 0.12:
            parts.append(".")
        elif roll < 0.20:
            parts.append("")  # consecutive slashes
        else:
            parts.append(segment(rng))
    k = "/".join(parts)
    if rng.random() < 0.15:
        k += "/"
    return k


def token(rng, n):
    return "".join(rng.choice(B64) for _ in range(n))


def spaced(rng, value):
    """A header value with the whitespace trimall must deal with."""
    roll = rng.random()
    if roll < 0.25:
        return value
    words = value.split(" ") if " " in value else [value, segment(rng).replace("\\", "")]
    sep = lambda: rng.choice([" ", "  ", "   ", "\t", " \t ", "    "])  # noqa: E731
    inner = sep().join(w for w in words)
    return rng.choice(["", " ", "  ", "\t"]) + inner + rng.choice(["", " ", "   ", "\t "])


def header_value_text(rng):
    # Header values: printable ASCII (and a few non-ASCII letters); no control characters.
    atoms = [a for a in ATOMS if a.isprintable() and a not in ("😀", "🩺", "𝄞", "🏃‍♀️")]
    return "".join(rng.choice(atoms) for _ in range(rng.randint(1, 5)))


def case_variant(rng, name):
    return rng.choice([name, name.lower(), name.upper(), name.title()])


def random_query(rng, bucket_key):
    menu = [
        lambda: ("uploads", ""),
        lambda: ("uploadId", token(rng, rng.randint(8, 60))),
        lambda: ("partNumber", str(rng.randint(1, 10000))),
        lambda: ("list-type", "2"),
        lambda: ("prefix", segment(rng) + rng.choice(["", "/", "/sub/"])),
        lambda: ("delimiter", "/"),
        lambda: ("continuation-token", token(rng, 40)),
        lambda: ("max-keys", str(rng.randint(0, 1000))),
        lambda: ("versionId", token(rng, 32)),
        lambda: ("start-after", bucket_key),
        lambda: ("encoding-type", "url"),
        lambda: ("x-id", rng.choice(["PutObject", "GetObject", "UploadPartCopy"])),
        lambda: ("tagging", ""),
        lambda: (segment(rng), ""),  # odd names, empty values
        lambda: (segment(rng), segment(rng)),
    ]
    query = [rng.choice(menu)() for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 4, 6]))]
    if query and rng.random() < 0.15:
        query.append((query[0][0], segment(rng)))  # a repeated name
    return [list(p) for p in query]


def random_headers(rng, bucket, obj_key, payload):
    etag = '"' + "".join(rng.choice("0123456789abcdef") for _ in range(32)) + '"'
    menu = [
        lambda: ("x-amz-meta-" + rng.choice(["author", "source", "note", "a-b", "x1"]),
                 spaced(rng, header_value_text(rng))),
        lambda: ("Content-Type", spaced(rng, rng.choice(["application/x-ndjson", "text/plain; charset=utf-8",
                                                          "application/octet-stream"]))),
        lambda: ("Range", f"bytes={rng.randint(0, 100)}-{rng.randint(101, 10**9)}"),
        lambda: ("If-Match", etag),
        lambda: ("If-None-Match", "*"),
        lambda: ("x-amz-copy-source", "/" + bucket + "/" + quote(obj_key, safe="/")),
        lambda: ("x-amz-copy-source-if-match", etag),
        lambda: ("x-amz-copy-source-range", f"bytes=0-{rng.randint(5 * 2**20, 5 * 2**30)}"),
        lambda: ("Content-MD5", base64.b64encode(rng.randbytes(16)).decode()),
        lambda: ("Content-Length", str(len(payload.encode("utf-8")))),
        lambda: ("x-amz-storage-class", rng.choice(["STANDARD", "STANDARD_IA", "REDUCED_REDUNDANCY"])),
        lambda: ("Cache-Control", spaced(rng, "no-cache, no-store")),
        lambda: ("x-amz-tagging", "project=training&kind=a b"),
        lambda: ("x-amz-meta-empty", rng.choice(["", " ", "   ", "\t"])),
        lambda: ("x-amz-acl", "bucket-owner-full-control"),
    ]
    headers = [rng.choice(menu)() for _ in range(rng.choice([0, 1, 2, 3, 4, 6, 8]))]
    if rng.random() < 0.2:
        # The same name twice, in two spellings: joined with ',' in the order sent.
        headers.append(("x-amz-meta-dup", spaced(rng, header_value_text(rng))))
        headers.append(("X-Amz-Meta-Dup", spaced(rng, header_value_text(rng))))
    return [[case_variant(rng, n), v] for n, v in headers]


CREDENTIAL_POOL = [
    ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""),
    ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ""),
    ("ASIAEXAMPLETEMPORARY", "temporary/secret+key=", "FwoGZXIvYXdzEJr//////////wEaDH+token/with+chars=="),
    ("minioadmin", "minioadmin", ""),
]
DAY = 86400
NEAR_DAYS = [1369353600 + d * DAY + s for d in (-1, 0, 1) for s in (0, 1, DAY // 2, DAY - 1)]


def random_request(rng):
    bucket = rng.choice(["examplebucket", "training-data", "b", "my.bucket"])
    obj_key = key(rng)
    path_style = rng.random() < 0.5
    path = "/" + (bucket + "/" if path_style else "") + obj_key
    if rng.random() < 0.05:
        path = "/"
    if rng.random() < 0.4:
        ak, sk, tok = rng.choice(CREDENTIAL_POOL)
    else:
        ak, sk = "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16)), token(rng, 40)
        tok = token(rng, rng.randint(20, 400)) if rng.random() < 0.35 else ""
    roll = rng.random()
    payload = "" if roll < 0.35 else (segment(rng) * rng.randint(1, 20) if roll < 0.8 else
                                      json.dumps({"output": segment(rng)}, ensure_ascii=False) + "\n")
    return {
        "scheme": rng.choice(["http", "https"]),
        "method": rng.choice(METHODS),
        "host": rng.choice(HOSTS),
        "path": path,
        "query": random_query(rng, obj_key),
        "headers": random_headers(rng, bucket, obj_key, payload),
        "payload": payload,
        "unsigned_payload": rng.random() < 0.2,
        "access_key_id": ak, "secret_access_key": sk, "session_token": tok,
        "region": rng.choice(REGIONS),
        "time": rng.choice(NEAR_DAYS) if rng.random() < 0.3 else rng.randint(946684800, 4102444799),
    }


def fixed_requests():
    base = {"scheme": "https", "method": "GET", "host": "examplebucket.s3.amazonaws.com", "query": [],
            "headers": [], "payload": "", "unsigned_payload": False,
            "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "session_token": "", "region": "us-east-1", "time": 1369353600}
    return [
        dict(base, path="/test.txt", headers=[["Range", "bytes=0-9"]]),  # the S3 reference's GET Object
        dict(base, path="/"),
        dict(base, path="/../.."),
        dict(base, path="//a//b//"),
        dict(base, path="/a%2Fb/c%20d"),  # '%' is part of the key: encoded to %25
        dict(base, path="/a b/+/=/&/!/'/(/)/*/~", query=[["prefix", "a b/+"], ["uploads", ""]]),
        dict(base, path="/k", headers=[["X-Amz-Meta-A", "  a   b  "], ["x-amz-meta-a", "\tc\t"]]),
        dict(base, method="PUT", path="/training/2025/11/health_journal_2025_11.jsonl",
             payload='{"instruction":"x"}\n', headers=[["If-None-Match", "*"]], session_token="tok"),
    ]


# --- the comparison ----------------------------------------------------------------------------

def run_tool(tool, requests):
    lines = "".join(json.dumps(tool_input(r)) + "\n" for r in requests)
    proc = subprocess.run([tool], input=lines.encode("utf-8"), capture_output=True, timeout=600)
    if proc.returncode != 0:
        sys.exit(f"{tool} exited with {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
    out = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    if len(out) != len(requests):
        sys.exit(f"{tool} answered {len(out)} lines for {len(requests)} requests")
    return out


def differences(req, ours, theirs):
    if "error" in ours:
        return [f"our signer refused it: {ours['error']}"]
    headers = dict(ours["headers"])
    pairs = [
        ("canonical_uri", ours["canonical_uri"], theirs["url_path"]),
        ("canonical_query", ours["canonical_query"], theirs["canonical_query"]),
        ("canonical_request", ours["canonical_request"], theirs["canonical_request"]),
        ("string_to_sign", ours["string_to_sign"], theirs["string_to_sign"]),
        ("signature", ours["signature"], theirs["signature"]),
        ("amz_date", ours["amz_date"], theirs["x-amz-date"]),
    ]
    for name in ("x-amz-date", "x-amz-content-sha256", "x-amz-security-token", "authorization"):
        pairs.append((name, headers.get(name), theirs[name]))
    out = []
    for name, a, b in pairs:
        if a != b:
            if name == "canonical_request":
                diff = "\n".join(difflib.unified_diff(b.split("\n"), a.split("\n"), "botocore", "ours", lineterm=""))
                out.append(f"{name} differs:\n{diff}")
            else:
                out.append(f"{name}: ours {a!r}, botocore {b!r}")
    return out


def coverage(requests):
    """How many requests exercise each rule the brief lists: all must be > 0."""
    def has_path(pred):
        return sum(1 for r in requests if pred(r["path"]))
    return {
        "'..' segment": has_path(lambda p: "/../" in p + "/"),
        "'.' segment": has_path(lambda p: "/./" in p + "/"),
        "consecutive slashes": has_path(lambda p: "//" in p),
        "trailing slash": has_path(lambda p: len(p) > 1 and p.endswith("/")),
        "space in key": has_path(lambda p: " " in p),
        "'+' '=' '&' '%' in key": has_path(lambda p: any(c in p for c in "+=&%")),
        "!'()* in key": has_path(lambda p: any(c in p for c in "!'()*")),
        "4-byte UTF-8 in key": has_path(lambda p: any(ord(c) > 0xFFFF for c in p)),
        "query with empty value": sum(1 for r in requests if any(v == "" for _, v in r["query"])),
        "uploads": sum(1 for r in requests if ["uploads", ""] in r["query"]),
        "uploadId + partNumber": sum(1 for r in requests if {"uploadId", "partNumber"} <= {n for n, _ in r["query"]}),
        "list-type=2 + prefix": sum(1 for r in requests if {"list-type", "prefix"} <= {n for n, _ in r["query"]}),
        "repeated query name": sum(1 for r in requests if len({n for n, _ in r["query"]}) < len(r["query"])),
        "repeated header": sum(1 for r in requests
                               if len({n.lower() for n, _ in r["headers"]}) < len(r["headers"])),
        "header with inner runs of spaces": sum(1 for r in requests if any("  " in v.strip() or "\t" in v.strip()
                                                                            for _, v in r["headers"])),
        "header with outer spaces": sum(1 for r in requests if any(v != v.strip() for _, v in r["headers"])),
        "if-match with quotes": sum(1 for r in requests if any(n.lower() == "if-match" for n, _ in r["headers"])),
        "if-none-match: *": sum(1 for r in requests if ["if-none-match", "*"] in
                                [[n.lower(), v] for n, v in r["headers"]]),
        "x-amz-copy-source": sum(1 for r in requests if any(n.lower() == "x-amz-copy-source" for n, _ in r["headers"])),
        "x-amz-copy-source-if-match": sum(1 for r in requests
                                          if any(n.lower() == "x-amz-copy-source-if-match" for n, _ in r["headers"])),
        "session token": sum(1 for r in requests if r["session_token"]),
        "UNSIGNED-PAYLOAD": sum(1 for r in requests if r["unsigned_payload"]),
        "non-empty payload": sum(1 for r in requests if r["payload"]),
        "regions": len({r["region"] for r in requests}),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tool", default=os.environ.get("TDO_SIGV4_TOOL"), help="path to tdo_sigv4_tool")
    parser.add_argument("--count", type=int, default=int(os.environ.get("TDO_SIGV4_COUNT", "1000")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("TDO_SIGV4_SEED", "20130524")))
    args = parser.parse_args()
    if not args.tool:
        sys.exit("--tool (or TDO_SIGV4_TOOL) is required")
    if args.count < 500:
        sys.exit("--count must be at least 500")

    rng = random.Random(args.seed)
    requests = fixed_requests() + [random_request(rng) for _ in range(args.count)]
    theirs = [botocore_sign(r) for r in requests]

    # The S3 reference's GET Object example: botocore itself is set up right.
    assert theirs[0]["signature"] == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41", theirs[0]

    ours = run_tool(args.tool, requests)
    failures = []
    for i, (req, a, b) in enumerate(zip(requests, ours, theirs)):
        diff = differences(req, a, b)
        if diff:
            failures.append((i, req, diff))

    # The harness can tell: the path given encoded (so encoded twice) must not match.
    twice = dict(requests[4], path=quote(requests[4]["path"], safe="/"))
    if run_tool(args.tool, [twice])[0]["signature"] == theirs[4]["signature"]:
        failures.append((4, twice, ["a doubly encoded path signed like the original: the comparison is blind"]))

    cov = coverage(requests)
    missing = [name for name, n in cov.items() if n == 0]
    print(f"botocore {botocore.__version__}, seed {args.seed}: {len(requests)} requests compared "
          f"({len(requests) - len(failures)} equal)")
    print("coverage: " + ", ".join(f"{name} {n}" for name, n in cov.items()))
    for i, req, diff in failures[:5]:
        print(f"\n--- request {i}: {json.dumps(req, ensure_ascii=False)}")
        for d in diff:
            print(d)
    if missing:
        print(f"\nthe random requests never exercised: {', '.join(missing)}")
    return 1 if failures or missing else 0


if __name__ == "__main__":
    sys.exit(main())
