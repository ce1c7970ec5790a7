#!/usr/bin/env python3
"""Adds to the layout's index.json one image index tagged TAG that lists each TAG-<arch>
manifest with its platform, so `skopeo copy --all` pushes a multi-arch image."""
import hashlib
import json
import os
import sys

out, tag = sys.argv[1], sys.argv[2]
variants = {"arm": "v7", "arm64": "v8"}
index_path = os.path.join(out, "index.json")
index = json.load(open(index_path))
children = []
for m in index["manifests"]:
    ref = m.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
    if not ref.startswith(tag + "-"):
        continue
    arch = ref[len(tag) + 1 :]
    platform = {"architecture": arch, "os": "linux"}
    if arch in variants:
        platform["variant"] = variants[arch]
    children.append({"mediaType": m["mediaType"], "digest": m["digest"], "size": m["size"], "platform": platform})
blob = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children}, separators=(",", ":")).encode()
digest = hashlib.sha256(blob).hexdigest()
with open(os.path.join(out, "blobs", "sha256", digest), "wb") as f:
    f.write(blob)
index["manifests"] = [m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
index["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": f"sha256:{digest}", "size": len(blob), "annotations": {"org.opencontainers.image.ref.name": tag}})
json.dump(index, open(index_path, "w"))
print(f"index.py: {tag} lists {', '.join(c['platform']['architecture'] for c in children)}")
