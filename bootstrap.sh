#!/bin/sh
# Installs everything tracer, its kernel probe and its lab need on a Debian 12 machine.
# Idempotent: what is already there is skipped. Run as root.
set -eu

say() { printf '==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap.sh installs Debian packages: run it as root (sudo ./bootstrap.sh)" >&2
    exit 1
fi

# What tracer and its lab use, by purpose:
#  build:      libpcap-dev pkg-config gcc
#  eBPF build: rustc-web rust-web-src cargo-web (Debian's compiler ships the core source
#              the bpfel target needs) and llvm-22-dev (bpf-linker links against it)
#  lab:        iproute2 tcpdump tshark + the real proxies and upstreams; curl (HTTPS and
#              HTTP/2 clients), openssl (a certificate per TLS run)
#  benchmarks: wrk (bench-capture), tshark (bench-analyze's baseline)
#  dashboards: prometheus (prometheus and promtool: the rules' unit tests, and a real
#              Prometheus that evaluates every panel query; tests start their own on a free port)
#  deploy/:    python3-venv (kubernetes-validate, below)
#  HTML report: chromium fonts-dejavu-core (headless screenshots of every scenario's page)
PACKAGES="
  ca-certificates pkg-config gcc libc6-dev libpcap-dev
  rustc-web rust-web-src cargo-web llvm-22-dev
  iproute2 tcpdump tshark
  nginx haproxy caddy uwsgi uwsgi-plugin-python3 gunicorn python3 nodejs wrk curl openssl
  prometheus
  python3-venv
  chromium fonts-dejavu-core
"
missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    say "installing Debian packages:$missing"
    # an install cut short earlier (a killed apt) blocks every later one until finished
    dpkg --configure -a
    apt-get update -qq
    # tshark asks whether non-root users may capture; the answer does not matter here.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    # The packaged servers must not start as services while installing (nginx and caddy
    # would both want port 80 and fail the install): the lab runs its own instances.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # The package enables a Prometheus service on port 9090 (policy-rc.d kept it from starting
    # now): the tests run their own, so keep it from starting at the next boot too.
    case " $missing " in
        *" prometheus "*) systemctl disable prometheus >/dev/null 2>&1 || true ;;
    esac
else
    say "Debian packages: all present"
fi

# The packaged servers must not hold the lab's ports or run as services: the lab starts
# its own instances inside network namespaces.
for svc in nginx haproxy caddy uwsgi; do
    if systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" >/dev/null 2>&1 || true
    fi
done

# A Rust toolchain: the machine's rustup when present, else Debian's cargo.
if ! command -v cargo >/dev/null 2>&1; then
    say "no rustup toolchain found: tracer builds with Debian's cargo (/usr/bin/cargo)"
fi
CARGO=$(command -v cargo || echo /usr/bin/cargo)

# bpf-linker links the kernel probe; built against Debian's LLVM 22, which matches rustc-web.
BPF_LINKER_VERSION=0.13.0
if command -v bpf-linker >/dev/null 2>&1 || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/bpf-linker" ]; then
    say "bpf-linker: present"
else
    say "building bpf-linker $BPF_LINKER_VERSION against LLVM 22 (about a minute)"
    LLVM_PREFIX=/usr/lib/llvm-22 "$CARGO" install --quiet "bpf-linker@$BPF_LINKER_VERSION" \
        --no-default-features --features llvm-22 --locked
fi

# The Kubernetes manifests in deploy/ are validated offline against the API's schemas by
# kubernetes-validate (PyPI; the schemas ship inside it), in a virtualenv under the build
# directory rather than on the machine (agent/tests/deploy_manifests.rs finds it there).
K8S_VALIDATE_VERSION=1.37.0
K8S_VENV="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")" && pwd)/target}/tools/kubernetes-validate"
if [ "$("$K8S_VENV/bin/kubernetes-validate" --version 2>/dev/null)" = "$K8S_VALIDATE_VERSION" ]; then
    say "kubernetes-validate: present"
else
    say "installing kubernetes-validate $K8S_VALIDATE_VERSION into $K8S_VENV"
    rm -rf "$K8S_VENV"
    /usr/bin/python3 -m venv "$K8S_VENV"
    "$K8S_VENV/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$K8S_VALIDATE_VERSION"
fi

# Classic tracepoints need tracefs.
if [ ! -d /sys/kernel/tracing/events ]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi

# The probe's code generation depends on these: print them, so that a test failing on one
# machine and not another can be traced to a toolchain that drifted.
say "versions in use:"
for v in rustc-web llvm-22-dev; do
    printf '    %-12s %s\n' "$v" "$(dpkg-query -W -f='${Version}' "$v" 2>/dev/null || echo 'not installed')"
done
printf '    %-12s %s\n' "host rust" "$("$CARGO" --version 2>/dev/null | head -n1); $(rustc --version 2>/dev/null)"
LINKER=$(command -v bpf-linker || echo "${CARGO_HOME:-$HOME/.cargo}/bin/bpf-linker")
printf '    %-12s %s\n' "bpf-linker" "$("$LINKER" --version 2>/dev/null || echo 'not found')"
printf '    %-12s %s\n' "kernel" "$(uname -r)"

say "bootstrap done"
