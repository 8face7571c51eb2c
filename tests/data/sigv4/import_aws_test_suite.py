#!/usr/bin/env python3
"""Builds aws-test-suite.json from the AWS SigV4 test suite.

Source: awslabs/aws-c-auth, tests/aws-signing-test-suite/v4 (Apache-2.0). Only the
header-signing figures (header-*.txt) are carried; presigned URLs are not used here.

    python3 import_aws_test_suite.py <path to .../v4> > aws-test-suite.json

A case "applies to S3" when its context says "normalize": false, or when its expected
canonical path is the path URI-encoded once with '/' kept (what S3 signs). The
"*-normalized" cases whose canonical path differs go to "normalized": the tests assert
that we do NOT produce them. Cases that need a signer behaviour S3 never uses go to
"excluded" with the reason.
"""
import json
import os
import sys
from urllib.parse import quote, unquote


def read(case_dir, name):
    with open(os.path.join(case_dir, name), "rb") as f:
        return f.read().decode("utf-8")


def parse_request(text):
    """request.txt -> method, decoded path, decoded query pairs, host, other headers, body."""
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    request_line = lines[0]
    # The target may contain spaces ("GET /example space/ HTTP/1.1").
    method, _, rest = request_line.partition(" ")
    target = rest.rsplit(" ", 1)[0]
    raw_path, _, raw_query = target.partition("?")
    query = []
    if raw_query:
        for pair in raw_query.split("&"):
            name, _, value = pair.partition("=")
            query.append([unquote(name), unquote(value)])
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        if line[:1] in (" ", "\t") and headers:
            # obs-fold: a continuation line. HTTP replaces the fold with a space
            # before the value is used (RFC 9110, 5.5); a signer never sees a line break.
            headers[-1][1] += " " + line
            continue
        name, _, value = line.partition(":")
        headers.append([name, value])
    host = None
    others = []
    for name, value in headers:
        if name.lower() == "host":
            host = value.strip()
        else:
            others.append([name, value])
    return method, unquote(raw_path), query, host, others, body


def main():
    root = sys.argv[1]
    applies, normalized, excluded = [], [], []
    for name in sorted(os.listdir(root)):
        case_dir = os.path.join(root, name)
        if not os.path.isdir(case_dir):
            continue
        context = json.loads(read(case_dir, "context.json"))
        request_txt = read(case_dir, "request.txt")
        method, path, query, host, headers, body = parse_request(request_txt)
        creq = read(case_dir, "header-canonical-request.txt")
        case = {
            "name": name,
            "request_txt": request_txt,
            "method": method,
            "host": host,
            "path": path,
            "query": query,
            "headers": headers,
            "payload": body,
            "access_key_id": context["credentials"]["access_key_id"],
            "secret_access_key": context["credentials"]["secret_access_key"],
            "session_token": context["credentials"].get("token", ""),
            "region": context["region"],
            "service": context["service"],
            "timestamp": context["timestamp"],
            "normalize": context["normalize"],
            "sign_body": context["sign_body"],
            "canonical_request": creq,
            "string_to_sign": read(case_dir, "header-string-to-sign.txt"),
            "signature": read(case_dir, "header-signature.txt").strip(),
        }
        expected_path = creq.split("\n")[1]
        s3_path = quote(path, safe="/")
        if context.get("omit_session_token"):
            case["reason"] = ("the session token is added after signing and left unsigned "
                              "(omit_session_token); S3 signers sign x-amz-security-token")
            excluded.append(case)
        elif not context["normalize"] or expected_path == s3_path:
            applies.append(case)
        else:
            normalized.append(case)
    json.dump({
        "source": "awslabs/aws-c-auth tests/aws-signing-test-suite/v4 (Apache-2.0), header signing",
        "generated_by": "tests/data/sigv4/import_aws_test_suite.py",
        "cases": applies,
        "normalized": normalized,
        "excluded": excluded,
    }, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
