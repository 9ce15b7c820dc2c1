#!/usr/bin/env bash
# What the web page's browser test (tests/tests/e2e/web_page.rs) needs: Debian's Chromium at
# /usr/bin/chromium and playwright-core (pinned in tests/browser/package-lock.json; it downloads no
# browser of its own). Needs apt (Debian) when Chromium is missing, Node.js >= 20 with npm, and the
# npm registry when the pinned packages are not installed yet.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-browser.sh: /usr/bin/chromium is missing and there is no apt-get to install Debian's chromium" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "setup-browser.sh: npm is missing (install Node.js >= 20 with npm)" >&2
  exit 1
fi
cd tests/browser
# `npm ci` wipes node_modules: run it only when the installed packages differ from the lock file.
if ! cmp -s package-lock.json node_modules/.package-lock.json 2>/dev/null \
  && ! node -e 'const a = require("./package-lock.json").packages, b = require("./node_modules/.package-lock.json").packages;
               process.exit(Object.keys(a).filter((k) => k).every((k) => b[k] && b[k].version === a[k].version) ? 0 : 1)' 2>/dev/null; then
  npm ci --no-audit --no-fund
fi
