#!/usr/bin/env bash
# Vendors the console's chart library into static/ from the npm registry, at the version package-lock.json
# pins, with its licence: `bash gateway/console/vendor.sh`. The copies are committed, so running the gateway
# needs neither node nor npm; this script is only for updating them.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --ignore-scripts --no-audit --no-fund
cp node_modules/chart.js/dist/chart.umd.min.js static/chart.umd.min.js
cp node_modules/chart.js/LICENSE.md static/chart.js.LICENSE.md
rm -rf node_modules
echo "vendored chart.js $(node -p "require('./package-lock.json').packages['node_modules/chart.js'].version")"
