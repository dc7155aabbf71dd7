#!/usr/bin/env python3
"""Validates vhostd's QEMU vhost-user backend descriptors, and what the binary they name prints
with --print-capabilities, against QEMU's own schema (docs/interop/vhost-user.json, a QAPI
schema), translated here to JSON Schema and checked with python3-jsonschema.

  descriptor_test.py SCHEMA DESCRIPTOR.json... [--root DIR]

--root: the descriptors' "binary" paths are inside DIR (a staged install).
Also shows that the check can fail: a descriptor with a wrong type, a missing member or an
unknown one must be rejected.
"""
import ast
import json
import os
import re
import subprocess
import sys

import jsonschema

args = sys.argv[1:]
root = ""
if "--root" in args:
    i = args.index("--root")
    root = args[i + 1]
    del args[i:i + 2]
schema_path, descriptors = args[0], args[1:]

# QAPI: comments start with '#'; expressions are Python-style dict literals one after another.
text = "\n".join(line for line in open(schema_path).read().splitlines() if not line.lstrip().startswith("#"))
exprs = ast.literal_eval("[" + re.sub(r"}\s*{", "},{", text.strip()) + "]")
defs = {}
for e in exprs:
    kind = next(k for k in ("enum", "struct", "union") if k in e)
    defs[e[kind]] = (kind, e)


def to_schema(t):
    if isinstance(t, list):
        return {"type": "array", "items": to_schema(t[0])}
    if t == "str":
        return {"type": "string"}
    kind, e = defs[t]
    if kind == "enum":
        return {"enum": list(e["data"])}
    if kind == "struct":
        return members(e["data"])
    raise SystemExit(f"unsupported QAPI type {t}")


def members(data):
    props, required = {}, []
    for name, t in data.items():
        opt = name.startswith("*")
        name = name.lstrip("*")
        props[name] = to_schema(t)
        if not opt:
            required.append(name)
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


descriptor_schema = to_schema("VhostUserBackend")


def caps_schema(backend_type):
    """VHostUserBackendCapabilities for one type: the union's base plus its branch. QEMU 7.2's
    union has no 'block' branch although the schema defines VHostUserBackendCapabilitiesBlock
    and vhost-user.rst requires block backends to print its features: use that struct."""
    _, u = defs["VHostUserBackendCapabilities"]
    data = dict(u["base"])
    branch = u["data"].get(backend_type)
    if branch is None and backend_type == "block":
        branch = "VHostUserBackendCapabilitiesBlock"
    if branch:
        data.update(defs[branch][1]["data"])
    return members(data)


bad = 0
for path in descriptors:
    d = json.load(open(path))
    try:
        jsonschema.validate(d, descriptor_schema)
    except jsonschema.ValidationError as e:
        print(f"descriptor_test: {path}: {e.message}", file=sys.stderr)
        bad += 1
        continue
    binary = root + d["binary"]
    if not os.access(binary, os.X_OK):
        print(f"descriptor_test: {path}: binary {binary} is not executable", file=sys.stderr)
        bad += 1
        continue
    caps = json.loads(subprocess.check_output([binary, "--print-capabilities"]))
    try:
        jsonschema.validate(caps, caps_schema(d["type"]))
        assert caps["type"] == d["type"], f"the binary says type {caps['type']}, the descriptor {d['type']}"
    except (jsonschema.ValidationError, AssertionError) as e:
        print(f"descriptor_test: {binary} --print-capabilities: {getattr(e, 'message', e)}", file=sys.stderr)
        bad += 1
        continue
    print(f"descriptor_test: {os.path.basename(path)} valid; {d['binary']} prints {json.dumps(caps)}")

# The check must be able to fail.
good = {"description": "x", "type": "block", "binary": "/usr/bin/x"}
for broken in ({**good, "type": "disk"}, {k: v for k, v in good.items() if k != "binary"}, {**good, "extra": 1},
               {**good, "tags": "not-a-list"}):
    try:
        jsonschema.validate(broken, descriptor_schema)
        print(f"descriptor_test: the schema accepted {broken}", file=sys.stderr)
        bad += 1
    except jsonschema.ValidationError:
        pass
try:
    jsonschema.validate({"type": "block", "features": ["write-only"]}, caps_schema("block"))
    print("descriptor_test: the capability schema accepted an unknown feature", file=sys.stderr)
    bad += 1
except jsonschema.ValidationError:
    pass
try:
    jsonschema.validate({"type": "net", "features": ["read-only"]}, caps_schema("net"))
    print("descriptor_test: the net capability schema accepted features it does not define", file=sys.stderr)
    bad += 1
except jsonschema.ValidationError:
    pass
sys.exit(1 if bad else 0)
