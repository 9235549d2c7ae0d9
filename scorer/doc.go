// Package scorer is Pulse's serving API: the last step of the flow, where an
// app asks about one of its users and hears back within a millisecond.
//
// It reads the online store (package featurestore) that the stream
// processors keep current, and answers:
//
//	POST /v1/predict                         predictions from the configured models (Mage's shape)
//	GET  /v1/entities/{entity}/{id}          an entity's live features and segments
//	GET  /v1/segments                        segments with their member counts (?history=1h: and the last hour's)
//	GET  /v1/segments/{name}                 one segment
//	GET  /v1/segments/{name}/members         member ids, cursor-paginated
//	GET  /v1/segments/live                   Server-Sent Events of enters and exits (a LiveHandler)
//	GET  /v1/rfm                             the RFM grid, boundaries and last hour's moves (an RFMView)
//	GET  /v1/rfm/cells/{r}/{f}/members       one cell's customers, cursor-paginated (RFMCellMembers)
//	POST /v1/admin/reload                    re-read the model files (admin key)
//	GET  /                                   the dashboard (package web)
//	GET  /healthz, /readyz, /metrics
//
// A prediction reads each row's encoded vector (featurestore.RawGetter) and
// picks the model's inputs out of it (featurestore.Picker), decoding none of
// the other features; inputs derived from `now` (days since the last
// order) are recomputed as of the request by an aggregate.Refresher that
// runs only their expressions. Per model and config, that plan is built
// once, on the first request after a reload.
//
// Models are evaluated in process by package model. Every prediction is
// logged to the predictions topic by a background producer fed through a
// bounded queue: the request never waits on Kafka, and when the queue is
// full the record is shed and counted (pulse_scorer_prediction_log_shed_total).
//
// A Server is safe for concurrent use; models and keys are swapped
// atomically on reload, so requests in flight finish on the version they
// started with.
package scorer
