#!/usr/bin/env bash
# Regenerates model/testdata/golden (and the e-commerce demo model) with the
# real XGBoost, LightGBM and scikit-learn, so `go test ./model` checks the Go
# evaluators against them. Idempotent: the venv under $PULSE_CACHE is reused
# while the pins below are unchanged.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${PULSE_CACHE:-$HOME/.cache/pulse}
venv=$cache/venv
python=${PYTHON:-python3}

# xgboost-cpu is the CPU-only build of xgboost (same library, no CUDA
# download). 3.2.0 is the newest release for Python 3.10/3.11.
pins=(xgboost-cpu==3.2.0 lightgbm==4.7.0 scikit-learn==1.9.1 numpy==2.4.6)

if [[ ! -x $venv/bin/python ]]; then
	mkdir -p "$cache"
	"$python" -m venv "$venv"
fi
stamp=$venv/.pulse-golden-pins
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "${pins[*]}" ]]; then
	"$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
	echo "${pins[*]}" >"$stamp"
fi

exec "$venv/bin/python" "$root/scripts/golden/gen.py" \
	--out "$root/model/testdata/golden" \
	--demo "$root/examples/ecommerce/models/purchase_propensity.json"
