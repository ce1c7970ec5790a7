#!/usr/bin/env python3
"""Copies into ROOT the ELF interpreter and every shared library BINARY needs (DT_NEEDED,
transitively, plus libtss2's dlopen'ed device TCTI), searched in DIRS; fails on one missing.
    libs.py ROOT BINARY GNU-TRIPLE DIR...
"""
import os
import re
import shutil
import subprocess
import sys

root, binary, gnu, dirs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]


def readelf(flag, path):
    return subprocess.run(["readelf", flag, "-W", path], check=True, capture_output=True, text=True).stdout


def find(name):
    for d in dirs:
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    sys.exit(f"libs.py: {name} not found in {dirs}")


interp = re.search(r"Requesting program interpreter: ([^\]]+)\]", readelf("-l", binary))
wanted = [os.path.basename(interp.group(1))] if interp else []
seen = set()
queue = [binary]
if any(n.startswith("libtss2") for n in re.findall(r"\[(.+?)\]", readelf("-d", binary))):
    queue.append(find("libtss2-tcti-device.so.0"))
    wanted.append("libtss2-tcti-device.so.0")
while queue:
    f = queue.pop()
    for n in re.findall(r"Shared library: \[(.+?)\]", readelf("-d", f)):
        if n not in seen:
            seen.add(n)
            wanted.append(n)
            queue.append(find(n))
for n in dict.fromkeys(wanted):
    src = os.path.realpath(find(n))
    dest = os.path.join(root, "lib", gnu, n)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copy2(src, dest)
if interp:
    p = interp.group(1)
    dest = os.path.join(root, p.lstrip("/"))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if not os.path.lexists(dest):
        # Relative, so it resolves inside the image wherever the root is unpacked.
        target = os.path.join(root, "lib", gnu, os.path.basename(p))
        os.symlink(os.path.relpath(target, os.path.dirname(dest)), dest)
print(f"libs.py: {len(dict.fromkeys(wanted))} libraries for {gnu}")
