#!/bin/sh
# Installs what tracer/tests/prometheus.rs needs: Debian's `prometheus` package (binaries
# prometheus and promtool). The test itself installs nothing. Run as root on Debian/Ubuntu.
#
# The package's service is not started here: the test runs its own Prometheus on a free
# loopback port. Where no policy-rc.d forbids it (a Docker image usually has one), a
# temporary one keeps dpkg from starting the system service during the install.
set -eu

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    echo "prometheus-setup: $(prometheus --version 2>&1 | head -n1)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "prometheus-setup: no apt-get; install prometheus and promtool another way" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    made_policy=1
fi
cleanup() { if [ -n "$made_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends prometheus

# systemd hosts: make sure the packaged service is not left running on :9090.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
echo "prometheus-setup: $(prometheus --version 2>&1 | head -n1)"
