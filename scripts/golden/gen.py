#!/usr/bin/env python3
"""Golden files for Pulse's model/ package, made by the real libraries.

Trains small XGBoost, LightGBM and scikit-learn models on generated data with
missing values, saves them the way a user would (save_model("m.json"),
booster.save_model("m.txt"), a logistic JSON), and writes for each model:

    <out>/<name>/model.json|model.txt   the saved model
    <out>/<name>/meta.json              format, objective, num_class, features
    <out>/<name>/cases.csv              input rows, then the library's raw
                                        margins and predictions (repr, "nan")

It also writes models Pulse must refuse under <out>/refuse/, the benchmark
models (100 trees, depth 6, 20 features) and the e-commerce demo model.

It is also a worked example of training and exporting for Pulse: see
docs/models.md. Run it through scripts/golden.sh, which pins the versions.
"""

import argparse
import csv
import json
import os
import shutil
import zlib

import lightgbm as lgb
import numpy as np
import sklearn
import xgboost as xgb
from sklearn.linear_model import LogisticRegression

N_TRAIN = 3000
N_TEST = 1200
THREADS = 2


def make_data(rng, n, n_features, nan_rate=0.1, n_cat=0):
    """Features with NaNs, exact zeros and (optionally) categorical codes."""
    X = rng.normal(size=(n, n_features))
    # Some exact zeros, which LightGBM treats specially.
    X[rng.random(X.shape) < 0.05] = 0.0
    if n_features > 2:
        X[:, 2] = rng.integers(0, 5, n)  # a small integer feature
    for j in range(n_cat):
        X[:, n_features - 1 - j] = rng.integers(0, 12, n)
    X[rng.random(X.shape) < nan_rate] = np.nan
    return X


def signal(X):
    Z = np.nan_to_num(X)
    s = 1.2 * Z[:, 0] - 0.8 * Z[:, 1] + 0.5 * Z[:, 2] * (Z[:, 0] > 0)
    s += 0.7 * np.isnan(X[:, 1])  # missingness carries information
    if X.shape[1] > 4:
        s += np.sin(2 * Z[:, 3]) - 0.3 * Z[:, 4] ** 2
    return s


def cat_signal(X, j):
    c = np.nan_to_num(X[:, j], nan=-1).astype(int)
    return np.where(np.isin(c, [1, 4, 7, 9]), 1.5, np.where(np.isin(c, [2, 3]), -1.0, 0.0))


def edge_values(X, thresholds, rng, frac=0.15):
    """Put split thresholds themselves (and float32 neighbours of them) into
    the test rows, so `<` vs `<=` and float32 rounding are exercised."""
    X = X.copy()
    for j, ts in thresholds.items():
        ts = [t for t in ts if np.isfinite(t)]
        if not ts:
            continue
        mask = rng.random(X.shape[0]) < frac
        picks = rng.choice(ts, size=mask.sum())
        jitter = rng.integers(0, 4, size=mask.sum())
        vals = np.where(jitter == 0, picks,
                        np.where(jitter == 1, np.nextafter(picks, np.inf),
                                 np.where(jitter == 2, np.nextafter(picks, -np.inf), picks * (1 + 1e-9))))
        X[mask, j] = vals
    return X


def xgb_thresholds(booster):
    out = {}
    model = json.loads(booster.save_raw("json"))
    gb = model["learner"]["gradient_booster"]
    trees = (gb.get("gbtree") or gb)["model"]["trees"]
    for t in trees:
        for i, l in enumerate(t["left_children"]):
            if l != -1 and t["split_type"][i] == 0:
                out.setdefault(t["split_indices"][i], set()).add(float(np.float32(t["split_conditions"][i])))
    return {k: sorted(v) for k, v in out.items()}


def lgb_thresholds(booster):
    out = {}
    for t in booster.dump_model()["tree_info"]:
        stack = [t["tree_structure"]]
        while stack:
            n = stack.pop()
            if "split_feature" in n:
                if n["decision_type"] == "<=":
                    out.setdefault(n["split_feature"], set()).add(float(n["threshold"]))
                stack += [n["left_child"], n["right_child"]]
    return {k: sorted(v) for k, v in out.items()}


def write_case(out, name, fmt, model_file, objective, X, margin, pred, features, extra=None):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    margin = np.asarray(margin, dtype=np.float64).reshape(len(X), -1)
    pred = np.asarray(pred, dtype=np.float64).reshape(len(X), -1)
    meta = {
        "format": fmt,
        "model": model_file,
        "objective": objective,
        "num_class": margin.shape[1],
        "num_features": X.shape[1],
        "features": features,
        "rows": len(X),
    }
    meta.update(extra or {})
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    with open(os.path.join(d, "cases.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([f"x{j}" for j in range(X.shape[1])]
                   + [f"margin{k}" for k in range(margin.shape[1])]
                   + [f"pred{k}" for k in range(pred.shape[1])])
        for i in range(len(X)):
            w.writerow([repr(float(v)) for v in X[i]]
                       + [repr(float(v)) for v in margin[i]]
                       + [repr(float(v)) for v in pred[i]])
    return d


def rng_for(name):
    """Each case has its own seeded generator, so adding one changes no other."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def softmax(m):
    m = m - m.max(axis=1, keepdims=True)
    e = np.exp(m)
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- XGBoost

def xgb_case(out, name, params, rounds, n_features=8, n_cat=0, label="binary", num_class=1):
    rng = rng_for(name)
    X = make_data(rng, N_TRAIN + N_TEST, n_features, n_cat=n_cat)
    s = signal(X) + sum(cat_signal(X, n_features - 1 - j) for j in range(n_cat))
    s = s + rng.normal(scale=0.5, size=len(s))
    if label == "binary":
        y = (s > 0).astype(float)
    elif label == "prob":
        y = 1 / (1 + np.exp(-s))
    elif label == "count":
        y = rng.poisson(np.exp(0.4 * s.clip(-3, 3)))
    elif label == "multi":
        y = np.digitize(s, np.quantile(s, np.linspace(0, 1, num_class + 1)[1:-1]))
    else:
        y = s
    features = [f"f{j}" for j in range(n_features)]
    types = ["q"] * (n_features - n_cat) + ["c"] * n_cat
    dtrain = xgb.DMatrix(X[:N_TRAIN], y[:N_TRAIN], feature_names=features, feature_types=types,
                         enable_categorical=n_cat > 0)
    p = {"nthread": THREADS, "seed": 7, **params}
    booster = xgb.train(p, dtrain, rounds)
    Xt = edge_values(X[N_TRAIN:], xgb_thresholds(booster), rng)
    dtest = xgb.DMatrix(Xt, feature_names=features, feature_types=types, enable_categorical=n_cat > 0)
    margin = booster.predict(dtest, output_margin=True)
    pred = booster.predict(dtest)
    extra = {}
    obj = params["objective"]
    if obj == "multi:softmax":
        # XGBoost returns the class; Pulse returns probabilities. The
        # library's class must be their argmax.
        extra["library_classes"] = [int(c) for c in pred]
        pred = softmax(margin.reshape(len(Xt), -1))
    d = write_case(out, name, "xgboost", "model.json", obj, Xt, margin, pred, features, extra)
    booster.save_model(os.path.join(d, "model.json"))
    return booster


# ---------------------------------------------------------------- LightGBM

def lgb_case(out, name, params, rounds, n_features=8, n_cat=0, label="binary", num_class=1,
             nan_rate=0.1, dataset_params=None):
    rng = rng_for(name)
    X = make_data(rng, N_TRAIN + N_TEST, n_features, nan_rate=nan_rate, n_cat=n_cat)
    s = signal(X) + sum(cat_signal(X, n_features - 1 - j) for j in range(n_cat))
    s = s + rng.normal(scale=0.5, size=len(s))
    if label == "binary":
        y = (s > 0).astype(float)
    elif label == "multi":
        y = np.digitize(s, np.quantile(s, np.linspace(0, 1, num_class + 1)[1:-1]))
    elif label == "count":
        y = rng.poisson(np.exp(0.4 * s.clip(-3, 3)))
    else:
        y = s
    features = [f"f{j}" for j in range(n_features)]
    cats = list(range(n_features - n_cat, n_features))
    dtrain = lgb.Dataset(X[:N_TRAIN], y[:N_TRAIN], feature_name=features,
                         categorical_feature=cats or "auto", params=dataset_params or {})
    p = {"verbose": -1, "num_threads": THREADS, "seed": 7, "deterministic": True, **params}
    booster = lgb.train(p, dtrain, rounds)
    Xt = edge_values(X[N_TRAIN:], lgb_thresholds(booster), rng)
    if nan_rate == 0:
        # Trained without NaNs (missing type None): NaN at prediction is 0.
        Xt[rng.random(Xt.shape) < 0.1] = np.nan
    margin = booster.predict(Xt, raw_score=True)
    pred = booster.predict(Xt)
    obj = booster.dump_model()["objective"].split()[0]
    d = write_case(out, name, "lightgbm", "model.txt", obj, Xt, margin, pred, features)
    booster.save_model(os.path.join(d, "model.txt"))
    return booster


# ---------------------------------------------------------------- logistic

def logistic_case(out):
    rng = rng_for("logistic")
    n_features = 5
    X = rng.normal(size=(N_TRAIN + N_TEST, n_features))
    s = signal(X) + rng.normal(scale=0.5, size=len(X))
    y = (s > 0).astype(int)
    clf = LogisticRegression(max_iter=1000).fit(X[:N_TRAIN], y[:N_TRAIN])
    Xt = X[N_TRAIN:]
    features = ["orders_30d", "revenue_30d", "sessions_7d", "days_since_last_order", "cart_adds_24h"]
    margin = clf.decision_function(Xt)
    pred = clf.predict_proba(Xt)[:, 1]
    d = write_case(out, "logistic_sklearn", "logistic", "model.json", "logistic", Xt, margin, pred, features)
    # The shape scikit-learn's attributes export to directly.
    with open(os.path.join(d, "model.json"), "w") as f:
        json.dump({"intercept": clf.intercept_.tolist(), "coef": clf.coef_.tolist(), "features": features}, f, indent=2)
        f.write("\n")
    # The same model as an ordered name -> weight object.
    d2 = write_case(out, "logistic_weights", "logistic", "model.json", "logistic", Xt, margin, pred, features)
    with open(os.path.join(d2, "model.json"), "w") as f:
        json.dump({"intercept": float(clf.intercept_[0]),
                   "weights": {n: float(w) for n, w in zip(features, clf.coef_[0])}}, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------- refused

def refused(out):
    rng = rng_for("refuse")
    d = os.path.join(out, "refuse")
    os.makedirs(d, exist_ok=True)
    X = make_data(rng, 400, 4)
    Y = np.stack([signal(X), -signal(X)], axis=1)
    b = xgb.train({"tree_method": "hist", "multi_strategy": "multi_output_tree", "max_depth": 3,
                   "nthread": THREADS}, xgb.DMatrix(X, Y), 3)
    b.save_model(os.path.join(d, "xgb_multi_output.json"))
    b = xgb.train({"booster": "gblinear", "objective": "binary:logistic", "nthread": 1},  # shotgun is racy
                  xgb.DMatrix(X, (signal(X) > 0).astype(float)), 3)
    b.save_model(os.path.join(d, "xgb_gblinear.json"))
    b = xgb.train({"max_depth": 2, "nthread": THREADS}, xgb.DMatrix(X, signal(X)), 2)
    b.save_model(os.path.join(d, "xgb_model.ubj"))
    Xl = np.nan_to_num(X)
    b = lgb.train({"linear_tree": True, "verbose": -1, "num_threads": THREADS, "num_leaves": 4},
                  lgb.Dataset(Xl, signal(Xl)), 3)
    b.save_model(os.path.join(d, "lgb_linear_tree.txt"))


# ---------------------------------------------------------------- demo

DEMO_FEATURES = ["orders_30d", "revenue_30d", "sessions_7d", "days_since_last_order",
                 "products_viewed_24h", "cart_adds_24h"]


def demo(path):
    """purchase_propensity: will the user buy within the next 7 days?"""
    rng = rng_for("purchase_propensity")
    n = 20000
    engaged = rng.gamma(1.5, 1.0, n)  # latent shopper activity
    orders = rng.poisson(0.6 * engaged)
    revenue = np.where(orders > 0, orders * rng.lognormal(3.8, 0.6, n), 0.0).round(2)
    sessions = rng.poisson(1 + 2.5 * engaged)
    days = np.where(orders > 0, rng.integers(0, 30, n),
                    np.where(rng.random(n) < 0.5, -1, rng.integers(30, 365, n)))
    viewed = rng.poisson(0.3 + 3 * engaged * rng.random(n))
    carts = rng.poisson(0.1 + 0.6 * engaged * rng.random(n))
    recency = np.where(days < 0, -1.5, np.where(days <= 7, 0.8, np.where(days <= 30, 0.3, -0.5)))
    logit = (-3.0 + 0.45 * np.minimum(orders, 6) + 0.004 * np.minimum(revenue, 400) + 0.12 * np.minimum(sessions, 15)
             + recency + 0.08 * np.minimum(viewed, 20) + 0.9 * np.minimum(carts, 4))
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    X = np.stack([orders, revenue, sessions, days, viewed, carts], axis=1).astype(float)
    b = xgb.train({"objective": "binary:logistic", "max_depth": 4, "eta": 0.2, "nthread": THREADS, "seed": 7,
                   "monotone_constraints": "(1,1,1,0,1,1)"},
                  xgb.DMatrix(X, y, feature_names=DEMO_FEATURES), 30)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    b.save_model(path)
    return b


CHURN_FEATURES = ["orders_365d", "revenue_365d", "days_since_last_order", "sessions_7d"]


def churn(out, path):
    """churn_risk, the e-commerce example's predictive trait: will a buyer
    place no order in the next 90 days? Saved to path (the example) and as
    the golden case demo_churn_risk, whose rows Go must score as XGBoost does."""
    name = "demo_churn_risk"
    rng = rng_for(name)
    n = N_TRAIN + N_TEST
    loyalty = rng.gamma(1.2, 1.0, n)  # latent: how attached the buyer is
    orders = 1 + rng.poisson(2.0 * loyalty)
    revenue = (orders * rng.lognormal(3.8, 0.6, n)).round(2)
    days = np.minimum(rng.exponential(25 + 120 / (1 + loyalty)), 364).astype(int).astype(float)
    sessions = rng.poisson(0.5 + 2 * loyalty * np.exp(-days / 60)).astype(float)
    logit = (-0.8 - 0.35 * np.minimum(orders, 8) - 0.002 * np.minimum(revenue, 600) + 0.025 * np.minimum(days, 200)
             - 0.25 * np.minimum(sessions, 10))
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    X = np.stack([orders, revenue, days, sessions], axis=1).astype(float)
    X[rng.random(n) < 0.05, 3] = np.nan  # sessions unknown for a few
    dtrain = xgb.DMatrix(X[:N_TRAIN], y[:N_TRAIN], feature_names=CHURN_FEATURES)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4, "eta": 0.2, "nthread": THREADS, "seed": 7,
                         "monotone_constraints": "(-1,-1,1,-1)"}, dtrain, 30)
    Xt = edge_values(X[N_TRAIN:], xgb_thresholds(booster), rng)
    dtest = xgb.DMatrix(Xt, feature_names=CHURN_FEATURES)
    d = write_case(out, name, "xgboost", "model.json", "binary:logistic", Xt,
                   booster.predict(dtest, output_margin=True), booster.predict(dtest), CHURN_FEATURES)
    booster.save_model(os.path.join(d, "model.json"))
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(os.path.join(d, "model.json"), path)
    return booster


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="golden directory (model/testdata/golden)")
    ap.add_argument("--demo", help="where to write the e-commerce demo model")
    ap.add_argument("--churn", help="where to write the e-commerce churn_risk model (also golden case demo_churn_risk)")
    ap.add_argument("--old", action="store_true",
                    help="older libraries (XGBoost 2.x, LightGBM 3.x): write the old_* cases only")
    args = ap.parse_args()
    # Each run replaces only its own cases, so the two sets can be made by
    # two venvs into one directory.
    os.makedirs(args.out, exist_ok=True)
    for name in os.listdir(args.out):
        if name.startswith("old_") == args.old:
            p = os.path.join(args.out, name)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    if args.old:
        old_cases(args.out)
        return

    xgb_case(args.out, "xgb_binary", {"objective": "binary:logistic", "max_depth": 5, "eta": 0.3}, 40)
    xgb_case(args.out, "xgb_binary_exact", {"objective": "binary:logistic", "max_depth": 4,
                                                 "tree_method": "exact"}, 20)
    xgb_case(args.out, "xgb_logitraw", {"objective": "binary:logitraw", "max_depth": 3}, 10)
    xgb_case(args.out, "xgb_regression", {"objective": "reg:squarederror", "max_depth": 5}, 40, label="reg")
    xgb_case(args.out, "xgb_reg_logistic", {"objective": "reg:logistic", "max_depth": 4}, 30, label="prob")
    xgb_case(args.out, "xgb_poisson", {"objective": "count:poisson", "max_depth": 4}, 30, label="count")
    xgb_case(args.out, "xgb_softprob", {"objective": "multi:softprob", "num_class": 3, "max_depth": 4}, 20,
             label="multi", num_class=3)
    xgb_case(args.out, "xgb_softmax", {"objective": "multi:softmax", "num_class": 4, "max_depth": 4}, 15,
             label="multi", num_class=4)
    xgb_case(args.out, "xgb_dart", {"objective": "binary:logistic", "booster": "dart", "max_depth": 4,
                                         "rate_drop": 0.2, "skip_drop": 0.0}, 30)
    xgb_case(args.out, "xgb_rf", {"objective": "reg:squarederror", "num_parallel_tree": 4, "subsample": 0.7,
                                       "colsample_bynode": 0.7, "max_depth": 4}, 5, label="reg")
    xgb_case(args.out, "xgb_categorical", {"objective": "binary:logistic", "max_depth": 4,
                                                "tree_method": "hist", "max_cat_to_onehot": 1}, 30, n_cat=2)
    xgb_case(args.out, "xgb_categorical_onehot", {"objective": "reg:squarederror", "max_depth": 4,
                                                       "tree_method": "hist", "max_cat_to_onehot": 16}, 20,
             n_cat=1, label="reg")

    lgb_case(args.out, "lgb_binary", {"objective": "binary", "num_leaves": 31}, 40)
    lgb_case(args.out, "lgb_binary_sigmoid", {"objective": "binary", "sigmoid": 0.7, "num_leaves": 15}, 20)
    lgb_case(args.out, "lgb_regression", {"objective": "regression", "num_leaves": 31}, 40, label="reg")
    lgb_case(args.out, "lgb_regression_nonan", {"objective": "regression", "num_leaves": 15}, 20, label="reg",
             nan_rate=0.0)
    lgb_case(args.out, "lgb_zero_as_missing", {"objective": "regression", "num_leaves": 15,
                                                    "zero_as_missing": True}, 20, label="reg")
    lgb_case(args.out, "lgb_multiclass", {"objective": "multiclass", "num_class": 3, "num_leaves": 15}, 20,
             label="multi", num_class=3)
    lgb_case(args.out, "lgb_multiclassova", {"objective": "multiclassova", "num_class": 3,
                                                  "num_leaves": 7}, 10, label="multi", num_class=3)
    lgb_case(args.out, "lgb_categorical", {"objective": "binary", "num_leaves": 15, "min_data_per_group": 10,
                                                "cat_smooth": 1}, 30, n_cat=2)
    lgb_case(args.out, "lgb_rf", {"objective": "regression", "boosting": "rf", "bagging_fraction": 0.7,
                                       "bagging_freq": 1, "feature_fraction": 0.8, "num_leaves": 15}, 10, label="reg")
    lgb_case(args.out, "lgb_dart", {"objective": "binary", "boosting": "dart", "drop_rate": 0.2,
                                         "num_leaves": 15}, 20)
    lgb_case(args.out, "lgb_poisson", {"objective": "poisson", "num_leaves": 7}, 10, label="count")

    logistic_case(args.out)

    # Benchmark models: 100 trees of depth 6 over 20 features.
    xgb_case(args.out, "bench_xgb", {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1}, 100,
             n_features=20)
    lgb_case(args.out, "bench_lgb", {"objective": "binary", "max_depth": 6, "num_leaves": 64,
                                          "min_data_in_leaf": 5, "learning_rate": 0.1}, 100, n_features=20)

    refused(args.out)

    if args.demo:
        demo(args.demo)
    churn(args.out, args.churn)

    write_versions(os.path.join(args.out, "VERSIONS"))


def write_versions(path):
    with open(path, "w") as f:
        f.write(f"xgboost {xgb.__version__}\nlightgbm {lgb.__version__}\n"
                f"scikit-learn {sklearn.__version__}\nnumpy {np.__version__}\n")


def old_cases(out):
    """Models saved by older releases: XGBoost 2.x JSON (scalar base_score)
    and LightGBM 3.x text (version=v3)."""
    xgb_case(out, "old_xgb_binary", {"objective": "binary:logistic", "max_depth": 5}, 30)
    xgb_case(out, "old_xgb_softprob", {"objective": "multi:softprob", "num_class": 3, "max_depth": 4}, 15,
             label="multi", num_class=3)
    xgb_case(out, "old_xgb_dart", {"objective": "reg:squarederror", "booster": "dart", "max_depth": 4,
                                   "rate_drop": 0.2, "skip_drop": 0.0}, 20, label="reg")
    xgb_case(out, "old_xgb_categorical", {"objective": "binary:logistic", "max_depth": 4,
                                          "tree_method": "hist", "max_cat_to_onehot": 1}, 20, n_cat=2)
    lgb_case(out, "old_lgb_binary", {"objective": "binary", "num_leaves": 31}, 30)
    lgb_case(out, "old_lgb_multiclass", {"objective": "multiclass", "num_class": 3, "num_leaves": 15}, 15,
             label="multi", num_class=3)
    lgb_case(out, "old_lgb_zero_as_missing", {"objective": "regression", "num_leaves": 15,
                                              "zero_as_missing": True}, 20, label="reg")
    lgb_case(out, "old_lgb_categorical", {"objective": "binary", "num_leaves": 15, "min_data_per_group": 10,
                                          "cat_smooth": 1}, 20, n_cat=2)
    write_versions(os.path.join(out, "old_VERSIONS"))


if __name__ == "__main__":
    main()
