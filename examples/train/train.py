#!/usr/bin/env python3
"""Train an XGBoost model on Pulse's history and register it for the scorer.

The analyst's loop, end to end:

 1. `pulse backfill training-set` turns a labels CSV (entity_id,timestamp,label)
    into a point-in-time training set: each row gets the features as of its
    timestamp, computed by the same code that serves them online.
 2. XGBoost trains on it (binary:logistic; missing values stay NaN, as the
    scorer sends them).
 3. The model is saved as JSON (booster.save_model("....json")), the format
    Pulse's scorer reads, with the feature names in the config's order.
 4. It is registered: the `models:` entry is printed, and with --register it
    is added to the config file (the scorer picks it up on reload).

It also writes predictions.csv: every training row with Python's
predict(DMatrix) output, so you (and Pulse's test) can check that the Go
scorer gives the same numbers.

Needs numpy and xgboost (any version from 2.0; scripts/golden.sh builds a venv
with both). Example:

    python examples/train/train.py --config pulse.yaml --labels labels.csv \\
        --features orders_30d,revenue_30d,sessions_7d --name churn --register
"""

import argparse
import csv
import math
import os
import random
import re
import subprocess
import sys

import numpy as np
import xgboost as xgb


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="Pulse config (pulse.yaml): features, ClickHouse, models")
    p.add_argument("--labels", required=True, help="labels CSV with the header entity_id,timestamp,label")
    p.add_argument("--features", required=True, help="comma-separated feature names, in model input order")
    p.add_argument("--name", default="model", help="the model's name in the config (default model)")
    p.add_argument("--pulse", default=os.environ.get("PULSE", "pulse"), help="the pulse binary (default $PULSE or pulse on PATH)")
    p.add_argument("--out", default=".", help="directory for training_set.csv, predictions.csv (default .)")
    p.add_argument("--model-path", help="where to save the model (default models/NAME.json next to the config)")
    p.add_argument("--positive", help="the label value of the positive class (default: 1, true or yes, else the larger of the two values)")
    p.add_argument("--register", action="store_true", help="add the models: entry to the config file")
    p.add_argument("--rounds", type=int, default=60, help="boosting rounds (default 60)")
    p.add_argument("--max-depth", type=int, default=4, help="tree depth (default 4)")
    p.add_argument("--eta", type=float, default=0.2, help="learning rate (default 0.2)")
    p.add_argument("--threads", type=int, default=2, help="XGBoost threads (default 2)")
    p.add_argument("--seed", type=int, default=1, help="random seed for the train/test split (default 1)")
    return p.parse_args(argv)


def build_training_set(args, features, path):
    """Runs `pulse backfill training-set`; its progress goes to our stderr."""
    cmd = [args.pulse, "backfill", "training-set", "-config", args.config, "-labels", args.labels,
           "-features", ",".join(features), "-out", path]
    print("$ " + " ".join(cmd), file=sys.stderr)
    try:
        subprocess.run(cmd, check=True)
    except FileNotFoundError:
        sys.exit(f"train.py: cannot run {args.pulse!r}: build it with `go build -o bin/pulse ./cmd/pulse` and pass --pulse bin/pulse")
    except subprocess.CalledProcessError as e:
        sys.exit(f"train.py: pulse backfill training-set failed (exit status {e.returncode})")


def read_training_set(path, features):
    """The rows as (keys, labels, X): X is float64 with NaN for empty cells."""
    with open(path, newline="") as f:
        r = csv.reader(f)
        head = next(r)
        want = ["entity_id", "timestamp", "label"] + features
        if head != want:
            sys.exit(f"train.py: {path}: header is {head}, want {want}")
        keys, labels, X = [], [], []
        for line, rec in enumerate(r, start=2):
            row = []
            for name, cell in zip(features, rec[3:]):
                if cell == "":
                    row.append(math.nan)
                    continue
                try:
                    row.append(float(cell))
                except ValueError:
                    sys.exit(f"train.py: {path} line {line}: feature {name} is {cell!r}, not a number: "
                             "train on numeric features only")
            keys.append((rec[0], rec[1]))
            labels.append(rec[2])
            X.append(row)
    return keys, labels, np.array(X, dtype=np.float64).reshape(len(X), len(features))


def binary_labels(labels, positive):
    """0/1 targets and the [negative, positive] label names for the config."""
    values = sorted(set(labels))
    if len(values) != 2:
        sys.exit(f"train.py: a binary model needs exactly two label values, the labels have {len(values)}: {values[:10]}")
    if positive is None:
        for v in values:
            if v.lower() in ("1", "true", "yes"):
                positive = v
        if positive is None:
            positive = values[1]
    if positive not in values:
        sys.exit(f"train.py: --positive {positive!r} is not one of the labels {values}")
    negative = values[0] if values[1] == positive else values[1]
    y = np.array([1.0 if l == positive else 0.0 for l in labels])
    return y, [negative, positive]


def yaml_str(s):
    """A YAML scalar for s: plain when that reads back as the same string."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", s) and s.lower() not in ("yes", "no", "true", "false", "on", "off", "null", "y", "n"):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def model_entry(name, path, features, label_names, indent):
    pad = " " * indent
    return (f"{pad}- name: {yaml_str(name)}\n"
            f"{pad}  path: {yaml_str(path)}\n"
            f"{pad}  format: xgboost\n"
            f"{pad}  entity: user\n"
            f"{pad}  features: [{', '.join(yaml_str(f) for f in features)}]\n"
            f"{pad}  labels: [{', '.join(yaml_str(l) for l in label_names)}]\n"
            f"{pad}  default: {yaml_str(label_names[0])}\n")


def register(config, name, path, features, label_names):
    """Adds the entry under the config's top-level models: (made if missing).

    A line-level edit keeps the file's comments and layout; the config
    loader (`pulse validate`) is the judge of the result.
    """
    with open(config) as f:
        lines = f.read().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    at = next((i for i, l in enumerate(lines) if re.match(r"models:\s*(#.*)?$", l)), None)
    if at is None:
        lines += ["\nmodels:\n", model_entry(name, path, features, label_names, 2)]
    else:
        if re.search(r"^\s*-\s*name:\s*[\"']?" + re.escape(name) + r"[\"']?\s*$", "".join(lines[at + 1:]), re.M):
            sys.exit(f"train.py: {config} already has a model named {name!r}: pick another --name or remove it")
        # Match the indentation of the entries already there.
        indent = 2
        for l in lines[at + 1:]:
            if l.strip() and not l.lstrip().startswith("#"):
                m = re.match(r"( *)- ", l)
                if m:
                    indent = len(m.group(1))
                break
        lines.insert(at + 1, model_entry(name, path, features, label_names, indent))
    with open(config, "w") as f:
        f.writelines(lines)


def main(argv):
    args = parse_args(argv)
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    os.makedirs(args.out, exist_ok=True)
    config_dir = os.path.dirname(os.path.abspath(args.config))

    # 1. The training set, point in time, from ClickHouse.
    ts_path = os.path.join(args.out, "training_set.csv")
    build_training_set(args, features, ts_path)
    keys, labels, X = read_training_set(ts_path, features)
    if len(keys) < 10:
        sys.exit(f"train.py: {len(keys)} training rows is too few to train on")
    y, label_names = binary_labels(labels, args.positive)

    # 2. Train, holding out a fifth of the rows to report the fit.
    idx = list(range(len(keys)))
    random.Random(args.seed).shuffle(idx)
    test, train = sorted(idx[: len(idx) // 5]), sorted(idx[len(idx) // 5:])
    dtrain = xgb.DMatrix(X[train], label=y[train], missing=np.nan, feature_names=features)
    dtest = xgb.DMatrix(X[test], label=y[test], missing=np.nan, feature_names=features)
    params = {"objective": "binary:logistic", "eval_metric": ["logloss", "auc"], "max_depth": args.max_depth,
              "eta": args.eta, "nthread": args.threads, "seed": args.seed}
    booster = xgb.train(params, dtrain, num_boost_round=args.rounds)
    print(f"trained on {len(train)} rows, held out {len(test)}: {booster.eval(dtest, 'test')}", file=sys.stderr)

    # 3. Save as JSON: the format the scorer reads.
    model_path = args.model_path or os.path.join(config_dir, "models", args.name + ".json")
    os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
    booster.save_model(model_path)

    # Python's predictions for every row, to compare with Pulse's.
    preds = booster.predict(xgb.DMatrix(X, missing=np.nan, feature_names=features))
    with open(os.path.join(args.out, "predictions.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["entity_id", "timestamp"] + features + ["prediction"])
        for (entity, ts), row, p in zip(keys, X, preds):
            w.writerow([entity, ts] + ["" if math.isnan(v) else repr(float(v)) for v in row] + [repr(float(p))])

    # 4. Register: relative to the config file, as the config resolves paths.
    rel = os.path.relpath(os.path.abspath(model_path), config_dir)
    entry = model_entry(args.name, rel, features, label_names, 2)
    if args.register:
        register(args.config, args.name, rel, features, label_names)
        print(f"registered model {args.name} in {args.config}; check it with `pulse validate -config {args.config}`"
              " and reload the scorer", file=sys.stderr)
    else:
        print(f"saved {model_path}; add this to {args.config} (or run again with --register):", file=sys.stderr)
    print("models:\n" + entry, end="")


if __name__ == "__main__":
    main(sys.argv[1:])
