package history

import (
	"bytes"
	"fmt"
	"strconv"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/model"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DerivedMessageID is the id of an event record that carries no messageId
// (apps may produce to pulse.events directly): its position in the log, so
// a replay of the record gets the same id and collapses.
func DerivedMessageID(topic string, partition int32, offset int64) string {
	return topic + "/" + strconv.FormatInt(int64(partition), 10) + "/" + strconv.FormatInt(offset, 10)
}

// batch is one table's rows, held column by column in the
// table's order (schema.go), ready for insertColumns. Each batch below is
// typed columns of its own plus the two shapes every table shares: times
// and origin.
type batch interface {
	len() int
	columns() []any
	reset()
}

// times is a DateTime column and its _ms twin (DateTime keeps whole
// seconds; the twin keeps milliseconds, 0 for a zero time).
type times struct {
	at []time.Time
	ms []int64
}

func (c *times) add(t time.Time) {
	c.at = append(c.at, t)
	c.ms = append(c.ms, millisOrZero(t))
}

// origin is the last columns of every table, kafka_partition and
// kafka_offset: where each row's record sat. A batch has one origin per row,
// so it also counts the rows.
type origin struct {
	partition []int32
	offset    []int64
}

func (o *origin) add(rec *kgo.Record) {
	o.partition = append(o.partition, rec.Partition)
	o.offset = append(o.offset, rec.Offset)
}

func (o *origin) len() int { return len(o.offset) }

// idOr is id, or the record's position when its producer gave none.
func idOr(id string, rec *kgo.Record) string {
	if id == "" {
		return DerivedMessageID(rec.Topic, rec.Partition, rec.Offset)
	}
	return id
}

// timeOr is t, or the record's timestamp when its producer gave none.
func timeOr(t time.Time, rec *kgo.Record) time.Time {
	if t.IsZero() {
		return rec.Timestamp
	}
	return t
}

// eventRows is a batch of events rows.
type eventRows struct {
	forgot                                                                        *forgetMemory // rows of people deleted before them are not kept; nil: none
	messageID, typ, evt, name, userID, anonymousID, entityID, previousID, groupID []string
	timestamp, receivedAt                                                         times
	sentAtMs, originalMs                                                          []int64
	properties, traits, context, integrations, featureSet                         []string
	revenue, total                                                                []*float64
	orderID, productID                                                            []string
	origin
}

func (r *eventRows) columns() []any {
	return []any{r.messageID, r.typ, r.evt, r.name, r.userID, r.anonymousID, r.entityID, r.previousID, r.groupID,
		r.timestamp.at, r.timestamp.ms, r.receivedAt.at, r.receivedAt.ms, r.sentAtMs, r.originalMs,
		r.properties, r.traits, r.context, r.integrations, r.featureSet,
		r.revenue, r.total, r.orderID, r.productID, r.partition, r.offset}
}

func (r *eventRows) reset() { *r = eventRows{forgot: r.forgot} }

// ecommerce are the Segment ecommerce properties kept as columns.
type ecommerce struct {
	Revenue   any `json:"revenue"`
	Total     any `json:"total"`
	OrderID   any `json:"order_id"`
	ProductID any `json:"product_id"`
}

// addEvent appends one pulse.events record. It accepts exactly what
// event.Unmarshal accepts (event.UnmarshalRaw, which keeps the maps raw);
// anything else is returned as an error for the caller to keep in
// invalid_events.
func (r *eventRows) addEvent(rec *kgo.Record) error {
	w, err := event.UnmarshalRaw(rec.Value)
	if err != nil {
		return err
	}
	if recv := timeOr(w.ReceivedAt, rec); r.forgot.before(w.UserID, recv) || r.forgot.before(w.AnonymousID, recv) {
		return nil
	}
	entity := w.EntityID()
	var ec ecommerce
	if p := w.Properties; len(p) > 2 && mentionsEcommerce(p) {
		_ = json.Unmarshal(p, &ec) // properties is a valid object here; odd value types just stay unset
	}
	r.messageID = append(r.messageID, idOr(w.MessageID, rec))
	r.typ = append(r.typ, string(w.Type))
	r.evt = append(r.evt, w.Event)
	r.name = append(r.name, w.Name)
	r.userID = append(r.userID, w.UserID)
	r.anonymousID = append(r.anonymousID, w.AnonymousID)
	r.entityID = append(r.entityID, entity)
	r.previousID = append(r.previousID, w.PreviousID)
	r.groupID = append(r.groupID, w.GroupID)
	r.timestamp.add(w.Timestamp)
	r.receivedAt.add(w.ReceivedAt)
	r.sentAtMs = append(r.sentAtMs, millisOrZero(w.SentAt))
	r.originalMs = append(r.originalMs, millisOrZero(w.OriginalTimestamp))
	r.properties = append(r.properties, object(w.Properties))
	r.traits = append(r.traits, object(w.Traits))
	r.context = append(r.context, object(w.Context))
	r.integrations = append(r.integrations, object(w.Integrations))
	r.featureSet = append(r.featureSet, w.FeatureSet)
	r.revenue = append(r.revenue, number(ec.Revenue))
	r.total = append(r.total, number(ec.Total))
	r.orderID = append(r.orderID, text(ec.OrderID))
	r.productID = append(r.productID, text(ec.ProductID))
	r.origin.add(rec)
	return nil
}

// ecommerceKeys are the property names of ecommerce's columns, quoted as in
// JSON: properties that mention none skip the second decode.
var ecommerceKeys = [...][]byte{[]byte(`"revenue"`), []byte(`"total"`), []byte(`"order_id"`), []byte(`"product_id"`)}

func mentionsEcommerce(properties []byte) bool {
	for _, k := range ecommerceKeys {
		if bytes.Contains(properties, k) {
			return true
		}
	}
	return false
}

func millisOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// absent says whether a raw JSON value is missing or null.
func absent(m json.RawMessage) bool { return len(m) == 0 || bytes.Equal(m, []byte("null")) }

// object is a raw JSON object as stored: "{}" when absent.
func object(m json.RawMessage) string {
	if absent(m) {
		return "{}"
	}
	return string(m)
}

func number(v any) *float64 {
	if v == nil {
		return nil
	}
	f, ok := event.Number(v)
	if !ok {
		return nil
	}
	return &f
}

func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

// invalidRows is a batch of invalid_events rows.
type invalidRows struct {
	messageID, errText, field []string
	index                     []int32
	source, reason, keyName   []string
	receivedAt                times
	event                     []string
	inputTopic                []string
	inputPartition            []int32
	inputOffset               []int64
	topic                     []string
	origin
}

func (r *invalidRows) columns() []any {
	return []any{r.messageID, r.errText, r.field, r.index, r.source, r.reason, r.keyName, r.receivedAt.at, r.receivedAt.ms,
		r.event, r.inputTopic, r.inputPartition, r.inputOffset, r.topic, r.partition, r.offset}
}

func (r *invalidRows) reset() { *r = invalidRows{} }

func (r *invalidRows) addDeadLetter(rec *kgo.Record) error {
	d, err := event.DecodeDeadLetter(rec.Value)
	if err != nil {
		return err
	}
	r.add(&d, rec)
	return nil
}

// addUnreadable keeps a record of any topic that the writer could not
// decode, so that nothing on the topics is lost without trace: a dead
// letter of history's own, whose input position is the record's.
func (r *invalidRows) addUnreadable(rec *kgo.Record, err error) {
	// %v, not %w: the row names the record's problem in its error text
	// and leaves field empty.
	d := event.NewDeadLetter("history", event.ReasonUnreadable, rec.Value,
		fmt.Errorf("history: cannot read %s record: %v", rec.Topic, err), rec.Timestamp)
	d.Topic, d.Partition, d.Offset = rec.Topic, rec.Partition, rec.Offset
	r.add(&d, rec)
}

// add appends a dead letter; one without an id or a time takes its record's.
func (r *invalidRows) add(d *event.DeadLetter, rec *kgo.Record) {
	r.messageID = append(r.messageID, idOr(d.MessageID, rec))
	r.errText = append(r.errText, d.Error)
	r.field = append(r.field, d.Field)
	r.index = append(r.index, int32(d.Index))
	r.source = append(r.source, d.Source)
	r.reason = append(r.reason, d.Reason)
	r.keyName = append(r.keyName, d.KeyName)
	r.receivedAt.add(timeOr(d.ReceivedAt, rec))
	r.event = append(r.event, string(d.Event))
	r.inputTopic = append(r.inputTopic, d.Topic)
	r.inputPartition = append(r.inputPartition, d.Partition)
	r.inputOffset = append(r.inputOffset, d.Offset)
	r.topic = append(r.topic, rec.Topic)
	r.origin.add(rec)
}

// segmentRows is a batch of segment_changes rows.
type segmentRows struct {
	forgot                                      *forgetMemory // rows of people deleted before them are not kept; nil: none
	changeID, segment, entity, entityID, change []string
	at                                          times
	features                                    []string
	origin
}

func (r *segmentRows) columns() []any {
	return []any{r.changeID, r.segment, r.entity, r.entityID, r.change, r.at.at, r.at.ms, r.features, r.partition, r.offset}
}

func (r *segmentRows) reset() { *r = segmentRows{forgot: r.forgot} }

// addChange appends one pulse.segments record (segment.Record), its
// features kept as the JSON they came in. The exits of a person deleted
// on request are not kept: the deletion removes its rows (Forget).
func (r *segmentRows) addChange(rec *kgo.Record) error {
	c, features, err := segment.DecodeRecordRaw(rec.Value)
	if err != nil {
		return err
	}
	if c.Segment == "" || c.EntityID == "" {
		return fmt.Errorf("segment change without segment or id")
	}
	if c.Reason == segment.ReasonDeleted || r.forgot.before(c.EntityID, rec.Timestamp) {
		return nil
	}
	r.changeID = append(r.changeID, idOr(c.ID, rec))
	r.segment = append(r.segment, c.Segment)
	r.entity = append(r.entity, c.Entity)
	r.entityID = append(r.entityID, c.EntityID)
	r.change = append(r.change, c.Change)
	r.at.add(timeOr(c.At, rec))
	r.features = append(r.features, object(features))
	r.origin.add(rec)
	return nil
}

// predictionRows is a batch of predictions rows.
type predictionRows struct {
	forgot                                           *forgetMemory // rows of people deleted before them are not kept; nil: none
	uuid, model, version, entity, entityID, features []string
	score                                            []*float64
	scores, prediction                               []string
	modelUsed                                        []uint8
	at                                               times
	origin
}

func (r *predictionRows) columns() []any {
	return []any{r.uuid, r.model, r.version, r.entity, r.entityID, r.features, r.score, r.scores, r.prediction,
		r.modelUsed, r.at.at, r.at.ms, r.partition, r.offset}
}

func (r *predictionRows) reset() { *r = predictionRows{forgot: r.forgot} }

// addPrediction appends one pulse.predictions record (model.PredictionRecord,
// read tolerantly), its features, score and prediction kept as sent.
func (r *predictionRows) addPrediction(rec *kgo.Record) error {
	p, raw, err := model.DecodePredictionRaw(rec.Value)
	if err != nil {
		return err
	}
	if r.forgot.before(p.ID, rec.Timestamp) {
		return nil
	}
	used := uint8(0)
	if p.ModelUsed {
		used = 1
	}
	r.uuid = append(r.uuid, idOr(p.UUID, rec))
	r.model = append(r.model, p.Model)
	r.version = append(r.version, p.Version)
	r.entity = append(r.entity, p.Entity)
	r.entityID = append(r.entityID, p.ID)
	r.features = append(r.features, object(raw.Features))
	r.score = append(r.score, p.Score)
	r.scores = append(r.scores, string(raw.Score))
	r.prediction = append(r.prediction, raw.PredictionText())
	r.modelUsed = append(r.modelUsed, used)
	r.at.add(timeOr(p.At, rec))
	r.origin.add(rec)
	return nil
}

// linkRows is a batch of identity_links rows.
type linkRows struct {
	identifier, canonical, previous, kind, messageID []string
	at                                               times
	origin
}

func (r *linkRows) columns() []any {
	return []any{r.identifier, r.canonical, r.previous, r.kind, r.messageID, r.at.at, r.at.ms, r.partition, r.offset}
}

func (r *linkRows) reset() { *r = linkRows{} }

// addLink appends one pulse.identity record (identity.Link). A tombstone
// (no value) and the linker's own records (fences, its offset) are
// skipped: they are not links.
func (r *linkRows) addLink(rec *kgo.Record) error {
	if rec.Value == nil || !identity.IsLink(rec.Key) {
		return nil
	}
	l, err := identity.DecodeLink(rec.Value)
	if err != nil {
		return err
	}
	r.identifier = append(r.identifier, l.Identifier)
	r.canonical = append(r.canonical, l.CanonicalID)
	r.previous = append(r.previous, l.Previous)
	r.kind = append(r.kind, string(l.Kind))
	r.messageID = append(r.messageID, l.MessageID)
	r.at.add(timeOr(l.At, rec))
	r.origin.add(rec)
	return nil
}

// traitScoreRows is a batch of trait_scores rows.
type traitScoreRows struct {
	forgot                                            *forgetMemory // rows of people deleted before them are not kept; nil: none
	changeID, trait, model, version, entity, entityID []string
	score                                             []*float64
	at                                                times
	origin
}

func (r *traitScoreRows) columns() []any {
	return []any{r.changeID, r.trait, r.model, r.version, r.entity, r.entityID, r.score, r.at.at, r.at.ms, r.partition, r.offset}
}

func (r *traitScoreRows) reset() { *r = traitScoreRows{forgot: r.forgot} }

// addTraitScore appends one pulse.traits record (model.TraitScore).
func (r *traitScoreRows) addTraitScore(rec *kgo.Record) error {
	ts, err := model.DecodeTraitScore(rec.Value)
	if err != nil {
		return err
	}
	if r.forgot.before(ts.ID, rec.Timestamp) {
		return nil
	}
	r.changeID = append(r.changeID, idOr(ts.ChangeID, rec))
	r.trait = append(r.trait, ts.Trait)
	r.model = append(r.model, ts.Model)
	r.version = append(r.version, ts.Version)
	r.entity = append(r.entity, ts.Entity)
	r.entityID = append(r.entityID, ts.ID)
	r.score = append(r.score, ts.Score)
	r.at.add(timeOr(ts.At, rec))
	r.origin.add(rec)
	return nil
}
