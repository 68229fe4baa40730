#!/usr/bin/env bash
# Install face-kiosk as a systemd service on Raspberry Pi OS (Bookworm / Trixie, 64-bit).
#
#   sudo deploy/install.sh              install or update (safe to run again)
#   sudo deploy/install.sh --dry-run    print every step, change nothing
#   sudo deploy/install.sh --uninstall  remove the service, the code and the user; keep the gallery
#   sudo deploy/install.sh --uninstall --purge   ... and delete the gallery and config too
set -euo pipefail

PREFIX=/opt/face-kiosk
STATE=/var/lib/kiosk
CONFIG_DIR=/etc/kiosk
UNIT=/etc/systemd/system/kiosk.service
SERVICE_USER=kiosk
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

DRY_RUN=0
UNINSTALL=0
PURGE=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) PURGE=1 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done

step() {
    # Print a step; run it unless this is a dry run.
    echo "+ $*"
    if [ "$DRY_RUN" -eq 0 ]; then
        "$@"
    fi
}

need_root() {
    if [ "$DRY_RUN" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
        echo "install.sh: run as root (sudo $0 $*)" >&2
        exit 1
    fi
}

python_for_this_os() {
    # Bookworm ships Python 3.11, Trixie 3.13; both work (Trixie uses ai-edge-litert only).
    local version
    version="$(python3 -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')"
    case "$version" in
        3.11|3.12|3.13) echo "python3" ;;
        *) echo "install.sh: Python $version is not supported (need 3.11 to 3.13)" >&2; exit 1 ;;
    esac
}

copy_source() {
    # The checkout without its venv, git history, training cache or runs.
    tar -C "$SOURCE" --exclude=./.venv --exclude=./.git --exclude=./cache --exclude=./runs -cf - . | tar -C "$PREFIX" -xf -
}

uninstall() {
    need_root "$@"
    if systemctl list-unit-files kiosk.service >/dev/null 2>&1; then
        step systemctl disable --now kiosk.service
    fi
    step rm -f "$UNIT"
    step systemctl daemon-reload
    step rm -rf "$PREFIX"
    if id "$SERVICE_USER" >/dev/null 2>&1; then
        step userdel "$SERVICE_USER"
    fi
    if [ "$PURGE" -eq 1 ]; then
        step rm -rf "$STATE" "$CONFIG_DIR"
    elif [ "$DRY_RUN" -eq 1 ]; then
        echo "would keep the gallery in $STATE and the config in $CONFIG_DIR (add --purge to delete them)"
    else
        echo "kept the gallery in $STATE and the config in $CONFIG_DIR (add --purge to delete them)"
    fi
}

install_kiosk() {
    # Not named install: "step install -m ..." below must run the install command, not call this again.
    need_root "$@"
    local python
    python="$(python_for_this_os)"
    step apt-get update
    step apt-get install -y --no-install-recommends python3-venv python3-picamera2 python3-lgpio python3-libcamera libgl1
    if ! id "$SERVICE_USER" >/dev/null 2>&1; then
        step useradd --system --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
    fi
    # Pi OS has a gpio group (udev gives it /dev/gpiochip*); plain Debian does not, and usermod would stop here.
    if ! getent group gpio >/dev/null; then
        step groupadd --system gpio
    fi
    step usermod -a -G gpio,video "$SERVICE_USER"
    # The admin who installs may use the running door's local API (kiosk status, enroll --camera) without sudo.
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        step usermod -a -G "$SERVICE_USER" "$SUDO_USER"
    fi
    step mkdir -p "$PREFIX" "$CONFIG_DIR" "$STATE"
    step copy_source
    # picamera2 and lgpio come from apt, so the venv sees the system site-packages.
    step "$python" -m venv --system-site-packages "$PREFIX/.venv"
    step "$PREFIX/.venv/bin/pip" install --upgrade pip
    step "$PREFIX/.venv/bin/pip" install -e "$PREFIX"
    if [ ! -e "$CONFIG_DIR/kiosk.toml" ]; then
        step install -m 0640 -g "$SERVICE_USER" "$SOURCE/deploy/kiosk.toml" "$CONFIG_DIR/kiosk.toml"
    else
        echo "kept the existing $CONFIG_DIR/kiosk.toml"
    fi
    step chown -R "$SERVICE_USER:$SERVICE_USER" "$STATE"
    step chmod 0700 "$STATE"
    step install -m 0644 "$SOURCE/deploy/kiosk.service" "$UNIT"
    step systemctl daemon-reload
    step systemctl enable kiosk.service
    step systemctl restart kiosk.service
    if [ "$DRY_RUN" -eq 0 ]; then
        echo "face-kiosk is installed. Check it with: systemctl status kiosk; sudo -u kiosk $PREFIX/.venv/bin/kiosk selftest"
    fi
}

if [ "$UNINSTALL" -eq 1 ]; then
    uninstall "$@"
else
    install_kiosk "$@"
fi
if [ "$DRY_RUN" -eq 1 ]; then
    # Nothing was installed or removed: say so rather than end on a claim that it was.
    echo "dry run: nothing was changed; run it again without --dry-run to carry out the steps above (+)"
fi
