#!/usr/bin/env bash
# The README's report screenshot: a synthetic month of the demo directory (Bình Thuận), its report,
# and a picture of it taken with headless Chromium (Debian package `chromium`, installed if missing).
#
#   bench/report_demo.sh [OUT.png]        default: docs/report.png
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/report.png}"
py=.venv/bin/python
[ -x "$py" ] || { python3 -m venv .venv && .venv/bin/pip install -q -e .; }

if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp gateway.yaml directory.yaml credentials.yaml "$work/"
cp -r policies "$work/"
mkdir -p "$work/var"

# 20,000 exchanges in March 2025 between the directory's agencies, citizens, businesses and partners.
"$py" bench/make_month.py --url "sqlite:///$work/var/mailgw.db" --month 2025-03 --count 20000 \
    --directory directory.yaml
.venv/bin/mailgw report --period 2025-03 --out "$work/report-2025-03.html" --config "$work/gateway.yaml"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1150,2200 \
    --screenshot="$out" "file://$work/report-2025-03.html" 2>/dev/null
echo "$out"
