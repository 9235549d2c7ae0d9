#!/usr/bin/env bash
# Trains and scores the golden models with the real XGBoost, LightGBM and
# scikit-learn, and checks the Go evaluators against them.
#
#   scripts/golden.sh           generate a fresh set into a scratch directory
#                               and run the model package's golden tests on
#                               it; the tracked files are left as they are
#   scripts/golden.sh --update  rewrite the tracked goldens under
#                               model/testdata/golden and the e-commerce demo
#                               model (commit them after)
#
# Training is multi-threaded, so a fresh set may differ from the tracked one
# in the last digits; each is checked as it stands, which is why `make test`
# generates into scratch and leaves the tree as it found it. The venvs under
# $PULSE_CACHE are reused while the pins below are unchanged.
set -euo pipefail

update=0
case "${1:-}" in
--update) update=1 ;;
"") ;;
*)
	echo "usage: scripts/golden.sh [--update]" >&2
	exit 2
	;;
esac

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

if ((update)); then
	out=$root/model/testdata/golden
	demo=$root/examples/ecommerce/models/purchase_propensity.json
	churn=$root/examples/ecommerce/models/churn_risk.json
else
	scratch=$(mktemp -d "${TMPDIR:-/tmp}/pulse-golden.XXXXXX")
	trap 'rm -rf "$scratch"' EXIT
	out=$scratch/golden
	demo=$scratch/purchase_propensity.json
	churn=$scratch/churn_risk.json
fi
"$cache/venv/bin/python" "$root/scripts/golden/gen.py" --out "$out" --demo "$demo" --churn "$churn"
"$cache/venv-old/bin/python" "$root/scripts/golden/gen.py" --out "$out" --old
if ((!update)); then
	echo "golden: checking the Go evaluators against a fresh set in $out"
	cd "$root"
	PULSE_GOLDEN_DIR=$out PULSE_DEMO_MODEL=$demo PULSE_CHURN_MODEL=$churn ${GO:-go} test -count=1 -run 'TestGolden|TestDemoModel|TestChurnModel|TestPredictAllocs|FuzzParse' ./model
fi
