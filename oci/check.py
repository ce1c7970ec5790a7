#!/usr/bin/env python3
"""Checks the OCI layout: every blob matches its digest and size, TAG is an index whose
platforms match their images' configs, each image runs /usr/bin/peat-gateway serve as user
65532 with the data volume, and its layer holds that binary for the right machine, its ELF
interpreter and the CA roots."""
import hashlib
import io
import json
import os
import sys
import tarfile

out, tag = sys.argv[1], sys.argv[2]
MACHINE = {"amd64": 0x3E, "arm64": 0xB7, "arm": 0x28}


def blob(desc):
    algo, hexd = desc["digest"].split(":")
    data = open(os.path.join(out, "blobs", algo, hexd), "rb").read()
    assert hashlib.sha256(data).hexdigest() == hexd, f"{desc['digest']} does not match its content"
    assert len(data) == desc["size"], f"{desc['digest']} size {len(data)} != {desc['size']}"
    return data


layout = json.load(open(os.path.join(out, "oci-layout")))
assert layout["imageLayoutVersion"] == "1.0.0"
index = json.load(open(os.path.join(out, "index.json")))
top = [m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
assert len(top) == 1, f"no single {tag} in index.json"
multi = json.loads(blob(top[0]))
assert multi["mediaType"] == "application/vnd.oci.image.index.v1+json"
for child in multi["manifests"]:
    arch = child["platform"]["architecture"]
    man = json.loads(blob(child))
    cfg = json.loads(blob(man["config"]))
    assert cfg["architecture"] == arch and cfg["os"] == "linux", (arch, cfg["architecture"])
    c = cfg["config"]
    assert c["User"] == "65532:65532", c
    assert c["Entrypoint"] == ["/usr/bin/peat-gateway"] and c["Cmd"] == ["serve"], c
    assert "/var/lib/peat-gateway" in c["Volumes"], c
    files = {}
    for layer in man["layers"]:
        with tarfile.open(fileobj=io.BytesIO(blob(layer)), mode="r:*") as t:
            for m in t.getmembers():
                files[m.name.lstrip("./")] = (m, t.extractfile(m).read(20) if m.isfile() else None)
    m, head = files["usr/bin/peat-gateway"]
    assert head[:4] == b"\x7fELF", "not an ELF binary"
    machine = int.from_bytes(head[18:20], "little")
    assert machine == MACHINE[arch], f"{arch} image holds a binary for machine {machine:#x}"
    assert m.mode & 0o111, "the binary is not executable"
    assert "etc/ssl/certs/ca-certificates.crt" in files, "no CA roots"
    assert any(n.startswith("lib/") and "ld-linux" in n for n in files), "no ELF interpreter"
    data = files.get("var/lib/peat-gateway")
    assert data and data[0].isdir(), "no data directory"
    size = sum(l["size"] for l in man["layers"])
    print(f"check.py: {tag} {arch}: {len(files)} files, {size} bytes compressed")
print(f"check.py: {tag} holds {len(multi['manifests'])} platform(s)")
