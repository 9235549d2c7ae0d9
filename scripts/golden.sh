#!/usr/bin/env bash
# Regenerates model/testdata/golden (and the e-commerce demo model) with the
# real XGBoost, LightGBM and scikit-learn, so `go test ./model` checks the Go
# evaluators against them. Idempotent: the venv under $PULSE_CACHE is reused
# while the pins below are unchanged.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${PULSE_CACHE:-$HOME/.cache/pulse}
python=${PYTHON:-python3}

# xgboost-cpu is the CPU-only build of xgboost (same library, no CUDA
# download). 3.2.0 is the newest release for Python 3.10/3.11. A second venv
# holds older releases, whose models must load too: XGBoost 2.x JSON (scalar
# base_score) and LightGBM 3.x text (version=v3).
pins=(xgboost-cpu==3.2.0 lightgbm==4.7.0 scikit-learn==1.9.1 numpy==2.4.6)
pins_old=(xgboost-cpu==2.1.4 lightgbm==3.3.5 scikit-learn==1.3.2 numpy==1.26.4)

# venv DIR PIN...: make DIR a venv holding exactly the pins, once.
venv() {
	local dir=$1
	shift
	if [[ ! -x $dir/bin/python ]]; then
		mkdir -p "$(dirname "$dir")"
		"$python" -m venv "$dir"
	fi
	local stamp=$dir/.pulse-golden-pins
	if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$*" ]]; then
		"$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
		echo "$*" >"$stamp"
	fi
}

venv "$cache/venv" "${pins[@]}"
venv "$cache/venv-old" "${pins_old[@]}"

out=$root/model/testdata/golden
"$cache/venv/bin/python" "$root/scripts/golden/gen.py" --out "$out" \
	--demo "$root/examples/ecommerce/models/purchase_propensity.json"
"$cache/venv-old/bin/python" "$root/scripts/golden/gen.py" --out "$out" --old
