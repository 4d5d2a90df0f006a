#!/usr/bin/env bash
# Installs what building and testing agentd needs on Debian/Ubuntu, only where missing:
# libsodium (through pkg-config), ngtcp2 0.12 + its GnuTLS crypto helper + GnuTLS (QUIC; through
# pkg-config), SQLite (GRDB's system library), openssl (key-file interop test),
# iproute2, iptables and conntrack (the NAT lab), and a Python venv in .venv with
# the pinned interop packages (requirements-test.txt). Safe to run again; fast when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
pkg-config --exists libsodium 2>/dev/null || need_apt+=(libsodium-dev pkg-config)
pkg-config --exists sqlite3 2>/dev/null || need_apt+=(libsqlite3-dev)
# QUIC (Sources/CQuic): Debian 12's ngtcp2 0.12.1 with its GnuTLS helper; checked again below.
pkg-config --exists libngtcp2 libngtcp2_crypto_gnutls gnutls 2>/dev/null ||
    need_apt+=(libngtcp2-dev libngtcp2-crypto-gnutls-dev libgnutls28-dev pkg-config)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# The NAT lab's tools (README, "The NAT lab"). Debian's iptables is the nft flavour (iptables-nft):
# it works inside network namespaces (rules, MASQUERADE --random-fully, conntrack match, counters),
# so the legacy flavour is not needed.
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have ip || need_apt+=(iproute2)
have iptables || need_apt+=(iptables)
have conntrack || need_apt+=(conntrack)
if [ ${#need_apt[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "install-deps: apt-get install ${need_apt[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Sources/CQuic is written for ngtcp2 0.12's API; 1.x (Debian 13 and later) changed it. The C
# source refuses to compile against another version too; this says so before a long build.
ngtcp2_version=$(pkg-config --modversion libngtcp2 2>/dev/null || echo none)
case "$ngtcp2_version" in
    0.12.*) ;;
    *)
        echo "install-deps: agentd's QUIC layer needs ngtcp2 0.12.x (Debian 12: libngtcp2-dev 0.12.1), found $ngtcp2_version." >&2
        echo "install-deps: ngtcp2 1.x changed its API; install 0.12 or port Sources/CQuic." >&2
        exit 1
        ;;
esac

if [ ! -x .venv/bin/python3 ] || ! cmp -s requirements-test.txt .venv/.requirements 2>/dev/null; then
    echo "install-deps: creating Python venv .venv (requirements-test.txt)" >&2
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt
    cp requirements-test.txt .venv/.requirements
fi
