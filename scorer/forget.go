package scorer

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/deletion"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

// WithDeletions serves DELETE /v1/profiles/{entity}/{id} (a person deleted
// on request: GDPR's erasure, CCPA's deletion) by writing an
// identity.KindForget request through client, a producer built by
// kafka.NewClient with kafka.ProducerOpts, to the identity requests topic,
// where the stream's linker carries it out (docs/identity.md, "Deleting a
// person"). The server does not close client. Without it the path answers
// 503.
func WithDeletions(client *kgo.Client) Option {
	return func(s *Server) { s.forgetClient = client }
}

// Deletion is the answer of DELETE /v1/profiles/{entity}/{id}: the request
// is in Kafka, durable; the stream carries it out within moments and the
// history's rows go as ClickHouse runs the mutations (GET StatusURL
// follows it).
type Deletion struct {
	Accepted bool `json:"accepted"`
	// RequestID is the deletion's id: the cause of its segment exits
	// ("forget/...") and the linker's log line.
	RequestID string `json:"request_id"`
	// StatusURL is the path of the deletion's progress on this server
	// (GET /v1/deletions/{request_id}).
	StatusURL string `json:"status_url"`
	// Identifier is the typed identifier the deletion names.
	Identifier string `json:"identifier"`
	// Suppressed: the person's entity ids are suppressed too (?suppress=
	// true): ingest drops their later events.
	Suppressed bool `json:"suppressed"`
	// Identifiers are the person's identifiers the scorer knows now (its
	// copy of the identity table): what the deletion will remove with it;
	// Identifier alone when it was never linked.
	Identifiers []string `json:"identifiers"`
}

// forgetWait bounds the wait for the broker's ack of a deletion request.
const forgetWait = 10 * time.Second

// forget answers DELETE /v1/profiles/{entity}/{id}; rest is
// "{entity}/{id}". ?kind= names the identifier's kind (user_id, the
// default, which the linker also tries as the anonymousId of the same
// value; anonymous_id; or a trait identifier's, such as email).
func (s *Server) forget(ctx *fasthttp.RequestCtx, rest string) {
	key, ok := s.authorizeKey(ctx, config.ScopeAdmin, "")
	if !ok {
		return
	}
	subject, ok := s.subject(ctx, rest, "DELETE /v1/profiles")
	if !ok {
		return
	}
	id := subject.Value
	cfg := s.cfgNow.Load()
	if !cfg.Identity.On() {
		httpapi.WriteError(ctx, fasthttp.StatusConflict, "identity.enabled: a deletion is carried out by the identity linker: set identity.enabled: true")
		return
	}
	if s.forgetClient == nil {
		httpapi.WriteError(ctx, fasthttp.StatusServiceUnavailable, "deletions are not served by this scorer (it writes no Kafka records)")
		return
	}
	var suppress bool
	switch q := string(ctx.QueryArgs().Peek("suppress")); q {
	case "", "false":
	case "true":
		suppress = true
	default:
		httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "suppress", "want true or false, got "+strconv.Quote(q))
		return
	}
	req := identity.Forget(subject, s.now().UTC(), "delete-"+uuid.NewString())
	req.Suppress = suppress
	v, err := identity.EncodeRequest(req)
	if err != nil {
		httpapi.WriteError(ctx, fasthttp.StatusInternalServerError, err.Error())
		return
	}
	ans := Deletion{Accepted: true, RequestID: req.MessageID, StatusURL: "/v1/deletions/" + req.MessageID, Identifier: subject.String(), Suppressed: suppress, Identifiers: []string{}}
	// The person as the linker will find it, read before the request (the
	// linker soon tombstones what this table holds).
	if _, links := s.personOf(subject); len(links) > 0 {
		for _, l := range links {
			ans.Identifiers = append(ans.Identifiers, l.Identifier)
		}
	} else {
		ans.Identifiers = append(ans.Identifiers, subject.String()) // never linked: itself alone
	}
	pctx, cancel := context.WithTimeout(context.Background(), forgetWait)
	defer cancel()
	rec := &kgo.Record{Topic: cfg.Kafka.Topics.IdentityRequests, Key: []byte(id), Value: v}
	if err := s.forgetClient.ProduceSync(pctx, rec).FirstErr(); err != nil {
		httpapi.WriteError(ctx, fasthttp.StatusServiceUnavailable, "cannot write the deletion request to Kafka: "+err.Error()+"; nothing was deleted, send it again")
		return
	}
	// Its progress's first record, after the request (a failed request
	// leaves no deletion pending for ever); the linker's record repeats
	// what it says, so one lost here loses only the status's first moments.
	asked := deletion.Record{Request: req.MessageID, Stage: deletion.Requested, At: req.At, RequestedAt: req.At, Kind: subject.Kind, Suppress: suppress}
	if topic := cfg.Kafka.Topics.Deletions; topic != "" {
		if err := s.forgetClient.ProduceSync(pctx, &kgo.Record{Topic: topic, Key: asked.Key(), Value: asked.Encode()}).FirstErr(); err != nil {
			s.log.Warn("cannot record a deletion request's progress; the linker records it when it carries it out", "request", req.MessageID, "err", err)
		}
	}
	s.log.Info("deletion requested", "identifier", subject.String(), "request", req.MessageID, "suppress", suppress, "key", keyName(key))
	writeJSONStatus(ctx, fasthttp.StatusAccepted, ans)
}

// subject reads the identifier a person's request names: rest is
// "{entity}/{id}", ?kind= the identifier's kind (user_id by default;
// anonymous_id; a trait identifier's, such as email). It answers the
// errors itself (404 naming the path's form or the entity, 400 naming
// kind); what is the path's method and name, for the error.
func (s *Server) subject(ctx *fasthttp.RequestCtx, rest, what string) (identity.Identifier, bool) {
	kind, id, ok := strings.Cut(rest, "/")
	if !ok || kind == "" || id == "" {
		path := what[strings.IndexByte(what, ' ')+1:]
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "use "+what+"/{entity}/{id}, e.g. "+path+"/user/612")
		return identity.Identifier{}, false
	}
	if !s.knownEntity(kind) {
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "unknown entity type "+strconv.Quote(kind)+": no feature is defined for it")
		return identity.Identifier{}, false
	}
	subject := identity.User(id)
	if k := string(ctx.QueryArgs().Peek("kind")); k != "" {
		o := identity.FromConfig(s.cfgNow.Load().Identity)
		if kinds := o.Kinds(); !slices.Contains(kinds, k) {
			httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "kind", "unknown identifier kind "+strconv.Quote(k)+" (want "+strings.Join(kinds, ", ")+")")
			return identity.Identifier{}, false
		}
		subject = identity.Identifier{Kind: k, Value: id}
	}
	return subject, true
}

// personOf is the person subject is in, as the scorer's identity table
// has it: its canonical id and its identifiers' links; none when subject
// is linked to no one. A userId in no profile is tried as the anonymousId
// of the same value, as the linker does.
func (s *Server) personOf(subject identity.Identifier) (string, []identity.Link) {
	canon, ok := s.identities.CanonicalOf(subject.String())
	if !ok && subject.Kind == identity.KindUser {
		canon, ok = s.identities.CanonicalOf(identity.Anonymous(subject.Value).String())
	}
	if !ok {
		return "", nil
	}
	return canon, s.identities.Links(canon)
}

// unsuppress answers DELETE /v1/suppressions/{id}: the entity id is no
// longer suppressed (a tombstone on the suppressions topic), and ingest
// takes its events again.
func (s *Server) unsuppress(ctx *fasthttp.RequestCtx, id string) {
	key, ok := s.authorizeKey(ctx, config.ScopeAdmin, "")
	if !ok {
		return
	}
	if id == "" {
		httpapi.WriteError(ctx, fasthttp.StatusNotFound, "use DELETE /v1/suppressions/{id}, e.g. /v1/suppressions/612")
		return
	}
	cfg := s.cfgNow.Load()
	if s.forgetClient == nil || cfg.Kafka.Topics.Suppressions == "" {
		httpapi.WriteError(ctx, fasthttp.StatusServiceUnavailable, "suppressions are not served by this scorer (it writes no Kafka records)")
		return
	}
	pctx, cancel := context.WithTimeout(context.Background(), forgetWait)
	defer cancel()
	if err := s.forgetClient.ProduceSync(pctx, &kgo.Record{Topic: cfg.Kafka.Topics.Suppressions, Key: []byte(id)}).FirstErr(); err != nil {
		httpapi.WriteError(ctx, fasthttp.StatusServiceUnavailable, "cannot write to Kafka: "+err.Error()+"; send it again")
		return
	}
	s.log.Info("suppression lifted", "id", id, "key", keyName(key))
	writeJSONStatus(ctx, fasthttp.StatusOK, map[string]any{"success": true, "id": id})
}
