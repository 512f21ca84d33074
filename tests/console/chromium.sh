#!/usr/bin/env bash
# chromium.sh — what the console tests need: Debian's Chromium and npm's playwright-core
# (copied from the team's recipe; ./test runs `bash tests/console/chromium.sh install`).
#
#   bash chromium.sh install     # chromium (Debian), node/npm if absent, playwright-core in $PW_DIR
#
# $PW_DIR (default ${TMPDIR:-/tmp}/microseg-playwright) holds node_modules/playwright-core.
# playwright-core never downloads a browser (unlike "playwright"/"npx playwright install",
# which fail offline); we point it at /usr/bin/chromium instead.
# Safe to run twice: each install step is skipped when already done.
set -euo pipefail

MODE=${1:-install}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PW_DIR=${PW_DIR:-${TMPDIR:-/tmp}/microseg-playwright}
log() { echo "chromium.sh: $*" >&2; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  [[ -n ${APT_UPDATED:-} ]] || { apt-get update -qq; APT_UPDATED=1; }
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_all() {
  # ~124 MB of .debs (25 packages on this image), ~11 s. No recommends needed: fonts come
  # with fontconfig's dependency (fonts-dejavu-core).
  [[ -x /usr/bin/chromium ]] || { log "installing chromium"; apt_install chromium; }
  # The machine image ships Node 20 (+ npm). Debian's own nodejs is 18, which
  # playwright-core >= 1.62 does not support (engines: node >= 20), so pin 1.61.1 there.
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then log "installing nodejs npm"; apt_install nodejs npm; fi
  local major; major=$(node -p 'process.versions.node.split(".")[0]')
  local ver=${PLAYWRIGHT_CORE_VERSION:-$([[ $major -ge 20 ]] && echo 1.65.1 || echo 1.61.1)}
  if [[ $(node -p "try{require('$PW_DIR/node_modules/playwright-core/package.json').version}catch(e){''}") != "$ver" ]]; then
    log "installing playwright-core@$ver into $PW_DIR"
    mkdir -p "$PW_DIR"
    [[ -f $PW_DIR/package.json ]] || echo '{"private":true,"type":"module"}' >"$PW_DIR/package.json"
    # A machine behind a TLS-inspecting proxy trusts it through the system's CA bundle,
    # which Node (and so npm's downloads) reads only when told to.
    if [[ -z ${NODE_EXTRA_CA_CERTS:-} && -f /etc/ssl/certs/ca-certificates.crt ]]; then
      export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
    fi
    npm install --prefix "$PW_DIR" --save-exact --no-audit --no-fund --loglevel=error "playwright-core@$ver" >/dev/null
  fi
}

case $MODE in
  install) install_all ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac
