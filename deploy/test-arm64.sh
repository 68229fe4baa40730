#!/usr/bin/env bash
# Check face-kiosk on 64-bit ARM Debian without a Pi: the Pi install, the door and its numbers.
#
#   sudo deploy/test-arm64.sh                 Trixie (Python 3.13), then Bookworm (Python 3.11)
#   sudo deploy/test-arm64.sh trixie          one release
#   options: --roots DIR    where the arm64 roots are built and kept (default /var/tmp/face-kiosk-arm64)
#            --rebuild      build the roots again instead of reusing them
#            --purge        uninstall face-kiosk in the root first, so the install starts from nothing
#
# For each release it builds (once, about 10 minutes) an arm64 Debian root with debootstrap and runs
# it under qemu-user emulation. In it, as on a Pi: deploy/install.sh for real (systemd does not run
# there: units are enabled, not reloaded or started), then checks of what it made (user, groups, folders,
# permissions, config, unit), 'kiosk demo', 'kiosk selftest --simulate --relay' on recorded frames,
# 'kiosk relay-off' (the unit's ExecStopPost) and 'kiosk bench'. Last it holds the int8 embeddings,
# landmarks and liveness scores of tests/fixtures to this machine's (python -m bench.arm64_parity):
# cosine >= 0.99 and the same decisions. The root runs on an emulated Cortex-A72 (a Pi 4's core), and the
# numbers are also recorded on a Cortex-A76 (a Pi 5's, with the int8 dot-product instructions XNNPACK
# uses there): QEMU's default CPU has SVE, which no Pi has, and numpy's SVE matrix code returns zeros
# under QEMU 7.2. Emulation is slow: about 20 minutes a release on 2 cores, more for a first install.
# Needs root, debootstrap, qemu-user-static and binfmt-support (apt-get install them), the network
# (apt and pip), and a Python with face-kiosk installed for the x86 reference ($PYTHON, default the
# checkout's .venv). Exits 1 when any check fails. Not part of .ci/run.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOTS=/var/tmp/face-kiosk-arm64
REBUILD=0
PURGE=0
RELEASES=()
while [ $# -gt 0 ]; do
    case "$1" in
        --roots) ROOTS="$2"; shift ;;
        --rebuild) REBUILD=1 ;;
        --purge) PURGE=1 ;;
        bookworm|trixie) RELEASES+=("$1") ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "test-arm64.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ ${#RELEASES[@]} -gt 0 ] || RELEASES=(trixie bookworm)
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
export QEMU_CPU=cortex-a72
PARITY_CPUS=(cortex-a72 cortex-a76)
MOUNTED=()
FAILED=0
SUMMARY=()

say() { echo "== $*"; }
fail() { echo "FAIL: $*"; FAILED=1; }
pass() { echo "ok:   $*"; }

need_tools() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "test-arm64.sh: run as root (debootstrap and chroot need it): sudo $0" >&2; exit 2
    fi
    for tool in debootstrap chroot update-binfmts; do
        command -v "$tool" >/dev/null || { echo "test-arm64.sh: $tool is missing: apt-get install -y qemu-user-static debootstrap binfmt-support" >&2; exit 2; }
    done
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64 || true
    fi
    if ! grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
        echo "test-arm64.sh: arm64 programs cannot run here (binfmt qemu-aarch64 not enabled): apt-get install -y qemu-user-static binfmt-support" >&2
        exit 2
    fi
    if ! "$PYTHON" -c 'import kiosk, cv2' 2>/dev/null; then
        echo "test-arm64.sh: $PYTHON cannot import face-kiosk (it makes the x86 reference): set PYTHON=/path/to/venv/bin/python" >&2
        exit 2
    fi
}

debian_mirror() {
    # The Debian archive this machine's apt uses (deb822 .sources files or the one-line format).
    local uri
    uri="$(awk '/^URIs:/ {uri=$2} /^Suites:/ && $0 !~ /security/ && uri {print uri; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
    if [ -z "$uri" ]; then
        uri="$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)"
    fi
    if [ -z "$uri" ]; then
        echo "test-arm64.sh: no Debian mirror found in this machine's apt sources" >&2; exit 2
    fi
    echo "$uri"
}

build_root() {
    local release="$1" root="$2"
    if [ -e "$root/.face-kiosk-root" ] && [ "$REBUILD" -eq 0 ]; then
        say "$release: reusing the arm64 root $root"
        return
    fi
    say "$release: building an arm64 root in $root (debootstrap under emulation, about 15 minutes)"
    rm -rf "$root" "$root.partial"
    mkdir -p "$ROOTS"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,passwd,systemd \
        "$release" "$root.partial" "$(debian_mirror)" > "$ROOTS/$release-debootstrap.log" 2>&1 \
        || { tail -20 "$ROOTS/$release-debootstrap.log"; echo "test-arm64.sh: debootstrap failed (log: $ROOTS/$release-debootstrap.log)" >&2; exit 1; }
    mv "$root.partial" "$root"
    touch "$root/.face-kiosk-root"
}

mount_root() {
    local root="$1"
    mount -t proc proc "$root/proc" && MOUNTED+=("$root/proc")
    mount --bind /sys "$root/sys" && MOUNTED+=("$root/sys")
    mount --bind /dev "$root/dev" && MOUNTED+=("$root/dev")
    mount --bind /dev/pts "$root/dev/pts" && MOUNTED+=("$root/dev/pts")
}

emulated_cpuinfo() {
    # /proc/cpuinfo as a Pi's kernel shows it for $QEMU_CPU, over this machine's x86 one: XNNPACK's cpuinfo
    # library reads it to pick its kernels by core (an x86 one makes it crash).
    local part features file="$ROOTS/cpuinfo-$QEMU_CPU" i
    case "$QEMU_CPU" in
        cortex-a72) part=0xd08; features="fp asimd evtstrm crc32 cpuid" ;;
        cortex-a76) part=0xd0b; features="fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
        *) echo "test-arm64.sh: no cpuinfo for $QEMU_CPU" >&2; exit 2 ;;
    esac
    : > "$file"
    for ((i = 0; i < $(nproc); i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 1\n\n' \
            "$i" "$features" "$part" >> "$file"
    done
    umount "$ROOT/proc/cpuinfo" 2>/dev/null || true
    mount --bind "$file" "$ROOT/proc/cpuinfo" && MOUNTED+=("$ROOT/proc/cpuinfo")
}

unmount_all() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTED[$i]}" 2>/dev/null || umount -l "${MOUNTED[$i]}" 2>/dev/null || true
    done
    MOUNTED=()
}
trap unmount_all EXIT

in_root() {
    # A command in the root, with a clean environment, this machine's CA bundle for pip, and $QEMU_CPU (exported).
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 QEMU_CPU="$QEMU_CPU" PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DEFAULT_TIMEOUT=180 PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"
}

prepare_root() {
    # DNS and CA settings for apt and pip; no service starts; what Pi OS has and Debian lacks, with a note.
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        mkdir -p "$ROOT/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
        in_root update-ca-certificates >/dev/null
    fi
    if [ -f /etc/pip.conf ]; then
        cp /etc/pip.conf "$ROOT/etc/pip.conf"
    fi
    printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
    chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
    # install.sh asks apt for Raspberry Pi OS packages; Debian lacks some: this apt-get skips those, saying so.
    cat > "$ROOT/usr/local/sbin/apt-get" <<'EOF'
#!/bin/sh
# test-arm64.sh: apt-get without the Raspberry Pi OS packages plain Debian does not have.
[ "$1" = install ] || exec /usr/bin/apt-get "$@"
kept=""
for arg in "$@"; do
    case "$arg" in
        -*|install) kept="$kept $arg" ;;
        *) if apt-cache show "$arg" >/dev/null 2>&1; then kept="$kept $arg"
           else echo "NOTE: $arg is not in Debian (Raspberry Pi OS only): skipped in this arm64 check" >&2; fi ;;
    esac
done
exec /usr/bin/apt-get $kept
EOF
    chmod 0755 "$ROOT/usr/local/sbin/apt-get"
    # No systemd runs in a chroot: enabling a unit works offline, reloading or starting one cannot.
    cat > "$ROOT/usr/local/sbin/systemctl" <<'EOF'
#!/bin/sh
# test-arm64.sh: systemctl in a root where systemd does not run.
case "$1" in
    daemon-reload|start|stop|restart|reload|try-restart)
        echo "NOTE: systemctl $* skipped: systemd does not run in this arm64 root" >&2 ;;
    enable|disable)
        command="$1"
        shift
        for arg in "$@"; do
            shift
            if [ "$arg" = --now ]; then echo "NOTE: systemctl $command --now: not started or stopped in this arm64 root" >&2
            else set -- "$@" "$arg"; fi
        done
        exec /usr/bin/systemctl "$command" "$@" ;;
    *) exec /usr/bin/systemctl "$@" ;;
esac
EOF
    chmod 0755 "$ROOT/usr/local/sbin/systemctl"
    if ! in_root getent group gpio >/dev/null; then
        in_root groupadd --system gpio
    fi
    echo "NOTE: the gpio group comes with Raspberry Pi OS (raspberrypi-sys-mods), not Debian: this root has one made for install.sh"
}

copy_checkout() {
    # The checkout as a user's clone would hold it (tracked and untracked files, nothing git ignores).
    rm -rf "$ROOT/root/face-kiosk"
    mkdir -p "$ROOT/root/face-kiosk"
    (cd "$REPO" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -C "$ROOT/root/face-kiosk" -xf -
}

check() {
    # check MESSAGE COMMAND...: pass or fail with MESSAGE (which shows what was found).
    local message="$1"
    shift
    if "$@"; then pass "$message"; else fail "$message"; fi
}

logged() {
    # logged FILE COMMAND...: run COMMAND with its output in FILE.
    local file="$1"
    shift
    "$@" > "$file" 2>&1
}

check_install() {
    # What install.sh must have made, as the README and deploy/kiosk.service expect it.
    local entry groups state config unit command
    entry="$(in_root getent passwd kiosk || true)"
    check "user kiosk: '$entry' (a system user, home /var/lib/kiosk, no login shell)" \
        test "$(echo "$entry" | cut -d: -f6-)" = /var/lib/kiosk:/usr/sbin/nologin -a "$(echo "$entry" | cut -d: -f3)" -lt 1000
    groups="$(in_root id -nG kiosk || true)"
    check "kiosk's groups: $groups (needs gpio and video)" grep -qwE 'gpio.*video|video.*gpio' <<< "$groups"
    # stat in the root: its user and group names, not this machine's, for the same numbers.
    state="$(in_root stat -c '%U:%G %a' /var/lib/kiosk)"
    check "/var/lib/kiosk: $state (needs kiosk:kiosk 700)" test "$state" = "kiosk:kiosk 700"
    config="$(in_root stat -c '%U:%G %a' /etc/kiosk/kiosk.toml)"
    check "/etc/kiosk/kiosk.toml: $config (needs group kiosk, 640)" test "${config#*:}" = "kiosk 640"
    unit="$(in_root stat -c '%a' /etc/systemd/system/kiosk.service)"
    check "/etc/systemd/system/kiosk.service: mode $unit (needs 644)" test "$unit" = 644
    check "/etc/systemd/system/kiosk.service is deploy/kiosk.service" cmp -s "$ROOT/etc/systemd/system/kiosk.service" "$REPO/deploy/kiosk.service"
    check "kiosk.service enabled (multi-user.target.wants)" \
        test "$(readlink "$ROOT/etc/systemd/system/multi-user.target.wants/kiosk.service")" = /etc/systemd/system/kiosk.service
    check "/opt/face-kiosk/.venv sees the system site-packages (apt's picamera2 and lgpio on a Pi)" \
        grep -q '^include-system-site-packages = true' "$ROOT/opt/face-kiosk/.venv/pyvenv.cfg"
    while read -r command; do
        check "the unit's $command is an executable file" test -x "$ROOT$command"
    done < <(grep -oE '^Exec[A-Za-z]+=[^ ]+' "$ROOT/etc/systemd/system/kiosk.service" | cut -d= -f2 | sort -u)
    check "systemd-analyze verify kiosk.service (log: $LOG/verify.log)" \
        logged "$LOG/verify.log" in_root systemd-analyze verify /etc/systemd/system/kiosk.service
}

as_kiosk() {
    # A command as the service's user, as the README runs it (sudo -u kiosk ...).
    in_root runuser -u kiosk -- "$@"
}

run_checks() {
    local release="$1" start seconds demo selftest parity python_version
    python_version="$(in_root python3 -c 'import platform; print(platform.python_version())')"
    say "$release: arm64 Debian, Python $python_version"
    if [ "$PURGE" -eq 1 ] && [ -d "$ROOT/opt/face-kiosk" ]; then
        in_root bash /root/face-kiosk/deploy/install.sh --uninstall --purge > "$LOG/uninstall.log" 2>&1 || true
    fi
    say "$release: deploy/install.sh (log: $LOG/install.log)"
    start=$(date +%s)
    if in_root bash /root/face-kiosk/deploy/install.sh > "$LOG/install.log" 2>&1; then
        seconds=$(( $(date +%s) - start ))
        pass "install.sh finished in $((seconds / 60)) min $((seconds % 60)) s"
        grep -E '^NOTE' "$LOG/install.log" | sort -u || true
    else
        seconds=$(( $(date +%s) - start ))
        tail -15 "$LOG/install.log"
        fail "install.sh failed after $seconds s"
        SUMMARY+=("$release (Python $python_version): install.sh FAILED after $seconds s, see $LOG/install.log")
        return
    fi
    grep -E 'Successfully installed' "$LOG/install.log" | tail -1 || true
    check_install

    say "$release: kiosk demo (as the kiosk user)"
    if as_kiosk /opt/face-kiosk/.venv/bin/kiosk demo > "$LOG/demo.log" 2>&1; then demo=passed; pass "kiosk demo: $(tail -1 "$LOG/demo.log")"
    else demo=FAILED; cat "$LOG/demo.log"; fail "kiosk demo"; fi
    grep -E 'GRANTED|DENIED|UNKNOWN|per-frame' "$LOG/demo.log" || true

    say "$release: kiosk selftest --simulate --relay on the recorded frames, and the unit's relay-off"
    if as_kiosk /opt/face-kiosk/.venv/bin/kiosk selftest --simulate --relay --camera /opt/face-kiosk/kiosk/demo_data/frames \
            > "$LOG/selftest.log" 2>&1; then selftest=passed; pass "selftest: $(tail -1 "$LOG/selftest.log")"
    else selftest=FAILED; cat "$LOG/selftest.log"; fail "kiosk selftest"; fi
    check "kiosk relay-off, mock pins" logged "$LOG/relay-off.log" as_kiosk /usr/bin/env GPIOZERO_PIN_FACTORY=mock \
        /opt/face-kiosk/.venv/bin/kiosk relay-off --config /etc/kiosk/kiosk.toml
    cat "$LOG/relay-off.log"

    say "$release: kiosk bench (emulated, so its times say nothing about a Pi)"
    check "kiosk bench --count 20" logged "$LOG/bench.log" as_kiosk /opt/face-kiosk/.venv/bin/kiosk bench --count 20
    cat "$LOG/bench.log"

    local cpu parity=""
    for cpu in "${PARITY_CPUS[@]}"; do
        say "$release: int8 embeddings, landmarks and liveness scores on $cpu against x86"
        QEMU_CPU="$cpu"
        emulated_cpuinfo
        rm -f "$ROOT/tmp/arm64-parity.json" "$LOG/$cpu-parity.json"
        in_root sh -c 'cd /opt/face-kiosk && .venv/bin/python -m bench.arm64_parity record --out /tmp/arm64-parity.json' \
            > "$LOG/$cpu-record.log" 2>&1 || { cat "$LOG/$cpu-record.log"; fail "recording the numbers on $cpu"; continue; }
        cp "$ROOT/tmp/arm64-parity.json" "$LOG/$cpu-parity.json"
        if (cd "$REPO" && "$PYTHON" -m bench.arm64_parity compare "$LOG/x86-parity.json" "$LOG/$cpu-parity.json") > "$LOG/$cpu-parity.log" 2>&1; then
            pass "parity on $cpu: $(grep '^embeddings' "$LOG/$cpu-parity.log")"
        else
            fail "parity on $cpu"
        fi
        cat "$LOG/$cpu-parity.log"
        parity+=", $cpu: $(grep -oE 'min cosine [0-9.]+' "$LOG/$cpu-parity.log" || echo 'no figure'), $(tail -1 "$LOG/$cpu-parity.log")"
    done
    QEMU_CPU=cortex-a72
    emulated_cpuinfo
    SUMMARY+=("$release (Python $python_version): install.sh $((seconds / 60)) min $((seconds % 60)) s, demo $demo, selftest $selftest$parity")
}

need_tools
mkdir -p "$ROOTS"
X86="$ROOTS/x86-parity.json"
say "x86 reference: $PYTHON -m bench.arm64_parity record"
(cd "$REPO" && "$PYTHON" -m bench.arm64_parity record --out "$X86")
for release in "${RELEASES[@]}"; do
    ROOT="$ROOTS/$release"
    LOG="$ROOTS/$release-logs"
    mkdir -p "$LOG"
    cp "$X86" "$LOG/x86-parity.json"
    build_root "$release" "$ROOT"
    mount_root "$ROOT"
    emulated_cpuinfo
    prepare_root
    copy_checkout
    run_checks "$release"
    unmount_all
done
say "summary"
printf '%s\n' "${SUMMARY[@]}"
if [ "$FAILED" -ne 0 ]; then
    echo "test-arm64.sh: some checks FAILED (see above and the logs in $ROOTS)"
    exit 1
fi
echo "test-arm64.sh: every check passed"
