SUMMARY = "Durable change capture and formation authority beside a Peat mesh node"
DESCRIPTION = "peat-gateway captures a Peat mesh node's document changes, keeps them on local \
               flash while the backhaul is down and forwards them to enterprise sinks when the \
               link returns; it is also the mesh's formation authority, with keys sealed under \
               a TPM 2.0, enrollment and an admin API with an operator web UI."
HOMEPAGE = "https://github.com/peat-mesh/peat-gateway"
BUGTRACKER = "https://github.com/peat-mesh/peat-gateway/issues"
SECTION = "net"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=7;endline=7;md5=2507bd5f0713f05419cd2f22fa06fe62"

DEPENDS += "tpm2-tss"

# Set PEAT_GATEWAY_SRC_URI and SRCREV (a release commit, for reproducible images) in local.conf
# or a distro config; AUTOREV follows the branch for development images.
PV .= "+git"
PEAT_GATEWAY_SRC_URI ?= "git://github.com/peat-mesh/peat-gateway.git;protocol=https;branch=main"
SRC_URI = "${PEAT_GATEWAY_SRC_URI}"
SRCREV ?= "${AUTOREV}"

# scarthgap has no UNPACKDIR yet: its sources unpack into WORKDIR.
UNPACKDIR ??= "${WORKDIR}"
S = "${UNPACKDIR}/git"

inherit cargo cargo-update-recipe-crates pkgconfig systemd useradd

# Every crate of Cargo.lock, fetched by the cargo class (regenerate with yocto/gen-crates-inc).
require ${BPN}-crates.inc

# The image names the build.
export PEAT_GATEWAY_BUILD_ID = "yocto-${PV}"

FILES:${PN} += "${systemd_system_unitdir}/peat-gateway.service.d \
                ${nonarch_libdir}/sysusers.d/peat-gateway.conf \
                ${nonarch_libdir}/tmpfiles.d/peat-gateway.conf"
RDEPENDS:${PN} += "libtss2-tcti-device"

SYSTEMD_SERVICE:${PN} = "peat-gateway.service"
SYSTEMD_AUTO_ENABLE = "enable"

USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system peat-gateway; --system tss"
USERADD_PARAM:${PN} = "--system --gid peat-gateway --groups tss --home-dir ${localstatedir}/lib/peat-gateway --no-create-home --shell /sbin/nologin peat-gateway"

do_install:append() {
    install -d ${D}${systemd_system_unitdir} ${D}${systemd_system_unitdir}/peat-gateway.service.d
    install -m 0644 ${S}/systemd/peat-gateway.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/systemd/peat-gateway.service.d/10-credentials.conf \
        ${D}${systemd_system_unitdir}/peat-gateway.service.d/10-credentials.conf.example
    install -d ${D}${nonarch_libdir}/sysusers.d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/systemd/peat-gateway.sysusers ${D}${nonarch_libdir}/sysusers.d/peat-gateway.conf
    install -m 0644 ${S}/systemd/peat-gateway.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/peat-gateway.conf
    install -d ${D}${datadir}/peat-gateway
    install -m 0644 ${S}/monitoring/peat-gateway.dashboard.json ${S}/monitoring/peat-gateway.rules.yml \
        ${D}${datadir}/peat-gateway/
    install -d ${D}${docdir}/peat-gateway
    install -m 0644 ${S}/docs/deployment.md ${D}${docdir}/peat-gateway/
}

