#!/usr/bin/env python3
"""Offline check of the Zarf package's Kubernetes manifests against the API models of the
`kubernetes` Python client: every field must be one the object's type has, with the right
shape, and the required ones present. (kubeconform is not packaged where CI runs.)"""
import sys

import kubernetes
import yaml

MODELS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "Secret"): "V1Secret",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
}
PRIMITIVE = {"str", "int", "bool", "float", "object", "datetime", "date"}


def check(value, typ, path, errors):
    typ = typ.replace("List[", "list[").replace("Dict[", "dict(")
    if typ.startswith("dict(") and typ.endswith("]"):
        typ = typ[:-1] + ")"
    if typ.startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: a list was expected")
            return
        for i, v in enumerate(value):
            check(v, typ[5:-1], f"{path}[{i}]", errors)
        return
    if typ.startswith("dict("):
        if not isinstance(value, dict):
            errors.append(f"{path}: a map was expected")
            return
        inner = typ[typ.index(",") + 1 : -1].strip()
        for k, v in value.items():
            check(v, inner, f"{path}.{k}", errors)
        return
    if typ in PRIMITIVE:
        ok = {
            "str": isinstance(value, (str, int)),  # int-or-string fields are typed str
            "int": isinstance(value, int) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "float": isinstance(value, (int, float)),
        }.get(typ, True)
        if not ok:
            errors.append(f"{path}: {typ} expected, got {value!r}")
        return
    model = getattr(kubernetes.client.models, typ)
    if not isinstance(value, dict):
        errors.append(f"{path}: an object ({typ}) was expected")
        return
    by_json = {j: a for a, j in model.attribute_map.items()}
    for k, v in value.items():
        if k not in by_json:
            errors.append(f"{path}.{k}: {typ} has no field {k!r}")
            continue
        check(v, model.openapi_types[by_json[k]], f"{path}.{k}", errors)
    # The client's own constructor enforces required fields.
    try:
        kubernetes.client.ApiClient()._ApiClient__deserialize(value, typ)
    except (ValueError, TypeError) as e:
        errors.append(f"{path}: {e}")


errors = []
count = 0
for f in sys.argv[1:]:
    for i, doc in enumerate(yaml.safe_load_all(open(f))):
        if doc is None:
            continue
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in MODELS:
            errors.append(f"{f}#{i}: no model for {key}")
            continue
        check(doc, MODELS[key], f"{f}#{i}:{key[1]}", errors)
        count += 1
for e in errors:
    print(e, file=sys.stderr)
if errors:
    sys.exit(1)
print(f"check-manifests: {count} objects valid")
