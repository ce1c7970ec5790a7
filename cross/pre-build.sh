#!/usr/bin/env bash
# Run by `cross` inside each target image before building (Cross.toml): the `tpm` feature
# links libtss2, so the target architecture's -dev package is installed there.
set -euo pipefail
dpkg --add-architecture "$CROSS_DEB_ARCH"
apt-get update
apt-get install -y "libtss2-dev:$CROSS_DEB_ARCH" pkg-config
