// Package model evaluates trained models in pure Go: XGBoost JSON, LightGBM
// text and a small logistic-regression JSON.
//
// It sits between the feature store and the answer: the scorer looks up an
// entity's feature vector, orders it as the model config says, and calls
// [Model.Predict]. Training happens elsewhere (Python, see docs/models.md and
// scripts/golden/gen.py); this package only reads what the real libraries
// save and scores one row at a time with zero allocations.
//
// No maintained pure-Go library reads current XGBoost JSON (2.x/3.x, with
// vector base_score, categorical splits and dart) or LightGBM v4 text models,
// so the evaluators are written here and checked against the libraries
// themselves: testdata/golden holds models, inputs and the margins and
// predictions XGBoost and LightGBM computed for them, and the tests require
// agreement within 1e-5 on margins and 1e-6 on probabilities.
//
// Parse takes bytes; reading files is the caller's job. A model layout the
// evaluators do not implement (XGBoost gblinear, multi-output trees, UBJSON;
// LightGBM linear trees; unknown objectives) is refused by Parse with an error
// that says so, never scored wrongly.
//
// Trees of a model live in one contiguous slice of small fixed-size nodes
// (children are indexes into the same slice, a leaf is its own child and
// holds its value in the threshold slot). Each step of a walk reads every
// field of one node, so a node is one record (one cache line per step) rather
// than separate per-field arrays. Trees are walked four at a time, a fixed
// number of steps, with the direction computed without data-dependent
// branches: a 100-tree depth-6 model scores in about 2 µs.
//
// A *Model is immutable after Parse and safe for concurrent use.
package model
