#!/usr/bin/env bash
# Installs what building and testing agentd needs on Debian/Ubuntu, only where missing:
# libsodium (through pkg-config), SQLite (GRDB's system library), openssl (key-file interop test),
# iproute2, iptables and conntrack (the NAT lab), and a Python venv in .venv with
# the pinned interop packages (requirements-test.txt). Safe to run again; fast when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
pkg-config --exists libsodium 2>/dev/null || need_apt+=(libsodium-dev pkg-config)
pkg-config --exists sqlite3 2>/dev/null || need_apt+=(libsqlite3-dev)
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

if [ ! -x .venv/bin/python3 ] || ! cmp -s requirements-test.txt .venv/.requirements 2>/dev/null; then
    echo "install-deps: creating Python venv .venv (requirements-test.txt)" >&2
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt
    cp requirements-test.txt .venv/.requirements
fi
