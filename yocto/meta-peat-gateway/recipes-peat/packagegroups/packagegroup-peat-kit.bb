SUMMARY = "What a Peat kit gateway image needs beside the mesh node"
DESCRIPTION = "peat-gateway with the TPM 2.0 stack it seals its key-encryption key in, and \
               the tools an operator uses on the box."
HOMEPAGE = "https://github.com/peat-mesh/peat-gateway"
BUGTRACKER = "https://github.com/peat-mesh/peat-gateway/issues"
SECTION = "net"
LICENSE = "MIT"

inherit packagegroup

RDEPENDS:${PN} = "ca-certificates \
                  libtss2-tcti-device \
                  peat-gateway \
                  tpm2-tools"
