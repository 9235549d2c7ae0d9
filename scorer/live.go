package scorer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	json "github.com/goccy/go-json"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/httpapi"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/segment"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
)

// Live serves GET /v1/segments/live: the enter and exit records of the
// segments topic as Server-Sent Events, the moment the stream writes them.
//
// It reads every partition of the topic (read_committed, no consumer group:
// each scorer sees everything) and keeps the most recent records in a ring
// buffer that every subscriber reads at its own pace.
//
// An event's id is where the reader stands in Kafka after that event:
// "0:124,1:88,2:0,3:5" is partition:next offset for every partition. Because
// it names Kafka positions rather than anything held in this process, a
// client that reconnects with Last-Event-ID resumes without gaps or
// duplicates even after the scorer restarted: records still in the buffer
// are sent from it, older ones are read again from Kafka.
//
// Live is safe for concurrent use. Run it once; ServeSSE answers requests
// from any number of goroutines.
type Live struct {
	cfg   *config.Config
	topic string
	log   *slog.Logger
	opts  LiveOptions
	auth  atomic.Pointer[liveAuth] // swapped by Reload
	keys  *httpapi.Auth

	mu    sync.Mutex
	ring  []liveRecord // circular; ring[(start+i)%len] for i < count
	start uint64       // sequence number of the oldest buffered record
	count int
	parts []int32         // the topic's partitions, sorted
	next  map[int32]int64 // per partition: the offset after the last record read
	first map[int32]int64 // per partition: every visible record in [first, next) is buffered
	wake  chan struct{}   // closed and replaced whenever records are appended

	ready chan struct{} // closed once the partitions and start offsets are known
	done  chan struct{} // closed when Run returns
	// catchups bounds the Kafka clients re-reading for streams behind the
	// buffer, so a crowd reconnecting after a restart does not open a
	// client each at once.
	catchups chan struct{}
}

// LiveOptions tune Live; zero values take the defaults.
type LiveOptions struct {
	// Buffer is how many recent records are kept for reconnecting and new
	// clients, overriding the default 10000.
	Buffer int
	// Backfill is how many records before the end of the topic are read at
	// start, so the buffer (and a dashboard asking for ?history=) is not
	// empty after a restart, overriding the default 1000. -1 reads none.
	Backfill int
	// Heartbeat is how often an idle stream gets a comment (and its latest
	// position as an id), overriding the default 15s.
	Heartbeat time.Duration
	// WriteTimeout bounds one write to a client, overriding the default 30s.
	WriteTimeout time.Duration
	// Log overrides slog.Default().
	Log *slog.Logger
}

// liveAuth is what a reload changes: the keys and the segment names.
type liveAuth struct {
	segments map[string]bool
}

func newLiveAuth(cfg *config.Config) *liveAuth {
	a := &liveAuth{segments: map[string]bool{}}
	for _, s := range cfg.Segments {
		a.segments[s.Name] = true
	}
	return a
}

// Reload takes the keys and segment names of a new config; streams already
// open keep their filter. Kafka settings are not reloaded.
func (l *Live) Reload(cfg *config.Config) {
	l.keys.Reload(cfg.Keys)
	l.auth.Store(newLiveAuth(cfg))
}

// liveRecord is one buffered record: its position, what filters see, and
// the JSON sent as the event's data.
type liveRecord struct {
	part    int32
	offset  int64
	segment string
	change  string
	data    []byte // single-line JSON
}

var (
	liveSubscribers = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "pulse_scorer_live_subscribers",
		Help: "Open Server-Sent Event streams of segment changes.",
	})
	liveRecords = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_scorer_live_records_total",
		Help: "Segment records read from Kafka into the live buffer.",
	})
	liveInvalid = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_scorer_live_invalid_records_total",
		Help: "Records on the segments topic that are not segment records (skipped).",
	})
	liveCatchups = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_scorer_live_catchups_total",
		Help: "Times a stream re-read Kafka because the records it needed had left the buffer.",
	})
	liveSent = promauto.NewCounter(prometheus.CounterOpts{
		Name: "pulse_scorer_live_events_sent_total",
		Help: "Server-Sent Events written to clients.",
	})
)

// NewLive prepares the live feed for cfg's segments topic. Clients are
// built from cfg.Kafka when Run starts.
func NewLive(cfg *config.Config, opts LiveOptions) *Live {
	if opts.Buffer <= 0 {
		opts.Buffer = 10000
	}
	if opts.Backfill == 0 {
		opts.Backfill = 1000
	}
	opts.Backfill = min(opts.Backfill, opts.Buffer)
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 15 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	l := &Live{
		cfg:   cfg,
		topic: cfg.Kafka.Topics.Segments,
		log:   opts.Log.With("component", "live"),
		opts:  opts,
		ring:  make([]liveRecord, opts.Buffer),
		next:  map[int32]int64{},
		first: map[int32]int64{},
		wake:  make(chan struct{}),
		ready: make(chan struct{}),
		done:  make(chan struct{}),

		catchups: make(chan struct{}, 8),
		keys:     httpapi.NewAuth(cfg.Keys),
	}
	l.Reload(cfg)
	return l
}

// Ready reports whether Run has found the topic and started reading it.
func (l *Live) Ready() bool {
	select {
	case <-l.ready:
		return true
	default:
		return false
	}
}

// Run reads the segments topic into the buffer until ctx ends. It waits
// for the topic to exist.
func (l *Live) Run(ctx context.Context) error {
	defer close(l.done)
	admin, err := kafka.NewClient(l.cfg.Kafka)
	if err != nil {
		return err
	}
	ends, err := l.endOffsets(ctx, kadm.NewClient(admin))
	admin.Close()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	from := map[int32]kgo.Offset{}
	l.mu.Lock()
	for p, end := range ends {
		l.parts = append(l.parts, p)
		at := max(0, end-int64(max(0, l.opts.Backfill)/len(ends)))
		l.next[p], l.first[p] = at, at
		from[p] = kgo.NewOffset().At(at)
	}
	slices.Sort(l.parts)
	l.mu.Unlock()

	cl, err := kafka.NewClient(l.cfg.Kafka,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{l.topic: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	l.log.Info("live segment feed reading", "topic", l.topic, "partitions", len(ends))
	// Streams start once the backfill is read, so ?history= gets the
	// records that were there at start (or after 10s, whatever is read).
	started, ready := time.Now(), false
	for {
		if !ready && (l.reached(ends) || time.Since(started) > 10*time.Second) {
			close(l.ready)
			ready = true
		}
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if !ready {
			pctx, cancel = context.WithTimeout(ctx, time.Second)
		}
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				l.log.Warn("live feed fetch failed", "topic", t, "partition", p, "err", err)
			}
		})
		l.append(fs.Records())
	}
}

// reached reports whether every partition was read up to ends.
func (l *Live) reached(ends map[int32]int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, end := range ends {
		if l.next[p] < end {
			return false
		}
	}
	return true
}

// endOffsets lists the last stable offset of every partition, waiting for
// the topic to be created.
func (l *Live) endOffsets(ctx context.Context, adm *kadm.Client) (map[int32]int64, error) {
	warned := false
	for {
		listed, err := adm.ListCommittedOffsets(ctx, l.topic)
		if err == nil {
			ends := map[int32]int64{}
			var perr error
			listed.Each(func(o kadm.ListedOffset) {
				if o.Partition < 0 || o.Err != nil {
					perr = o.Err
					return
				}
				ends[o.Partition] = o.Offset
			})
			if len(ends) > 0 {
				return ends, nil
			}
			err = perr
		}
		if !warned {
			l.log.Info("live feed waiting for the segments topic", "topic", l.topic, "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// decodeLive reads a record's value into a buffered record. ok is false for
// control records and values that are not segment records: they advance
// positions but are never sent.
func decodeLive(r *kgo.Record) (liveRecord, bool) {
	lr := liveRecord{part: r.Partition, offset: r.Offset}
	if r.Attrs.IsControl() {
		return lr, false
	}
	head, _, err := segment.DecodeRecordRaw(r.Value)
	if err != nil || head.Segment == "" || head.Change == "" {
		liveInvalid.Inc()
		return lr, false
	}
	lr.segment, lr.change, lr.data = head.Segment, head.Change, r.Value
	if bytes.ContainsAny(r.Value, "\r\n") {
		// One SSE data line per event keeps clients' parsing trivial.
		var b bytes.Buffer
		if json.Compact(&b, r.Value) != nil {
			liveInvalid.Inc()
			return lr, false
		}
		lr.data = b.Bytes()
	}
	return lr, true
}

func (l *Live) append(recs []*kgo.Record) {
	if len(recs) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range recs {
		if _, known := l.next[r.Partition]; !known || r.Offset < l.next[r.Partition] {
			continue
		}
		l.next[r.Partition] = r.Offset + 1
		lr, ok := decodeLive(r)
		if !ok {
			continue
		}
		liveRecords.Inc()
		n := uint64(len(l.ring))
		if l.count == len(l.ring) {
			old := &l.ring[l.start%n]
			l.first[old.part] = old.offset + 1
			l.start++
			l.count--
		}
		l.ring[(l.start+uint64(l.count))%n] = lr
		l.count++
	}
	close(l.wake)
	l.wake = make(chan struct{})
}

// LivePosition is where a client stands: per partition, the next offset it
// has not seen. It is what SSE ids carry.
type LivePosition map[int32]int64

// String formats p as an SSE id: "0:124,1:88" in partition order.
func (p LivePosition) String() string {
	parts := make([]int32, 0, len(p))
	for k := range p {
		parts = append(parts, k)
	}
	slices.Sort(parts)
	b := make([]byte, 0, 12*len(parts))
	for i, k := range parts {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(k), 10)
		b = append(b, ':')
		b = strconv.AppendInt(b, p[k], 10)
	}
	return string(b)
}

// ParseLivePosition reads an SSE id made by LivePosition.String.
func ParseLivePosition(s string) (LivePosition, error) {
	p := LivePosition{}
	for item := range strings.SplitSeq(strings.TrimSpace(s), ",") {
		ps, os, ok := strings.Cut(item, ":")
		part, err1 := strconv.ParseInt(ps, 10, 32)
		off, err2 := strconv.ParseInt(os, 10, 64)
		if !ok || err1 != nil || err2 != nil || part < 0 || off < 0 {
			return nil, fmt.Errorf("invalid position %q: want partition:offset pairs such as 0:124,1:88", s)
		}
		p[int32(part)] = off
	}
	return p, nil
}

// liveSubscription is one client's stream: what it wants and where it is.
type liveSubscription struct {
	filter  map[string]bool // nil = every segment
	pos     LivePosition    // nil until the feed is ready, for a fresh client
	history int             // records from the buffer a fresh client wants first
	cursor  uint64          // buffer sequence up to which every record was considered
}

// ServeSSE answers GET /v1/segments/live[?segment=a,b][&history=N].
// The key comes from the Authorization header or, since EventSource cannot
// set headers, ?api_key=. Last-Event-ID (header, or ?last_event_id=)
// resumes a stream; history=N starts a fresh one with up to N recent
// records.
func (l *Live) ServeSSE(ctx *fasthttp.RequestCtx) {
	if _, ok := l.keys.Authorize(ctx, httpapi.KeyFromHeaders(ctx), config.ScopeRead); !ok {
		return
	}
	auth := l.auth.Load()
	sub := &liveSubscription{}
	if s := strings.TrimSpace(string(ctx.QueryArgs().Peek("segment"))); s != "" {
		sub.filter = map[string]bool{}
		var unknown []string
		for name := range strings.SplitSeq(s, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			if !auth.segments[name] {
				unknown = append(unknown, name)
			}
			sub.filter[name] = true
		}
		if len(unknown) > 0 {
			httpapi.WriteError(ctx, fasthttp.StatusBadRequest, "unknown segment: "+strings.Join(unknown, ", "))
			return
		}
	}
	last := string(ctx.Request.Header.Peek("Last-Event-ID"))
	if last == "" {
		last = string(ctx.QueryArgs().Peek("last_event_id"))
	}
	if last != "" {
		pos, err := ParseLivePosition(last)
		if err != nil {
			httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "Last-Event-ID", err.Error())
			return
		}
		sub.pos = pos
	} else if h := ctx.QueryArgs().Peek("history"); len(h) > 0 {
		n, err := strconv.Atoi(string(h))
		if err != nil || n < 0 {
			httpapi.WriteFieldError(ctx, fasthttp.StatusBadRequest, "history", "must be a count of records")
			return
		}
		sub.history = n
	}

	ctx.SetContentType("text/event-stream; charset=utf-8")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.Header.Set("X-Accel-Buffering", "no") // nginx: do not hold events back
	// The stream outlives the handler: keep only the connection (for write
	// deadlines, so the server's WriteTimeout does not end a long stream).
	conn := ctx.Conn()
	// The connection ends with the stream, so that nothing but watchGone
	// reads it meanwhile.
	ctx.SetConnectionClose()
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		liveSubscribers.Inc()
		defer liveSubscribers.Dec()
		gone := watchGone(conn)
		if err := l.stream(w, conn, sub, gone); err != nil && !errors.Is(err, errLiveClosed) && !errors.Is(err, errClientGone) {
			l.log.Debug("live stream ended", "err", err)
		}
	})
}

var (
	errLiveClosed = errors.New("live feed stopped")
	errClientGone = errors.New("the client closed the connection")
)

// watchGone returns a channel closed when the client closes conn. fasthttp
// tells a streaming handler nothing when its client leaves, and a write
// fails only at the next heartbeat: until then a closed stream would hold
// its goroutines (two per client). A read on the connection, which no one
// else reads while the stream lasts, hears the close at once. The reader
// ends when the connection closes, whoever closes it.
func watchGone(conn net.Conn) <-chan struct{} {
	gone := make(chan struct{})
	if conn == nil {
		return gone
	}
	go func() {
		defer close(gone)
		// The deadline fasthttp set for reading the request is over.
		conn.SetReadDeadline(time.Time{})
		var buf [64]byte
		for {
			if _, err := conn.Read(buf[:]); err != nil {
				return
			}
		}
	}()
	return gone
}

// stream writes sub's events to w until the client goes (gone) or Live
// stops.
func (l *Live) stream(w *bufio.Writer, conn net.Conn, sub *liveSubscription, gone <-chan struct{}) error {
	flush := func() error {
		if conn != nil {
			conn.SetWriteDeadline(time.Now().Add(l.opts.WriteTimeout))
		}
		return w.Flush()
	}
	heartbeat := time.NewTicker(l.opts.Heartbeat)
	defer heartbeat.Stop()
	for waiting := true; waiting; {
		select {
		case <-l.ready:
			waiting = false
		case <-l.done:
			return errLiveClosed
		case <-gone:
			return errClientGone
		case <-heartbeat.C:
			w.WriteString(": waiting for the segments topic\n\n")
			if err := flush(); err != nil {
				return err
			}
		}
	}
	// Place a new stream before the client sees the response start, so
	// everything written after it has connected reaches it.
	l.begin(sub)
	fmt.Fprintf(w, "retry: 2000\n: pulse live segments\n\n")
	if err := flush(); err != nil {
		return err
	}
	sent := ""
	for {
		batch, wake, need := l.take(sub)
		if need != nil {
			liveCatchups.Inc()
			if err := l.catchUp(w, flush, sub, need, gone); err != nil {
				return err
			}
			continue
		}
		for i := range batch {
			r := &batch[i]
			if r.offset < sub.pos[r.part] {
				continue
			}
			sub.pos[r.part] = r.offset + 1
			if sub.filter != nil && !sub.filter[r.segment] {
				continue
			}
			sent = sub.pos.String()
			writeLiveEvent(w, sent, r)
		}
		if len(batch) > 0 {
			if err := flush(); err != nil {
				return err
			}
		}
		select {
		case <-wake:
		case <-l.done:
			return errLiveClosed
		case <-gone:
			return errClientGone
		case <-heartbeat.C:
			// The id moves a filtered client's position past records it
			// did not want, so a reconnect does not read them again.
			if id := sub.pos.String(); id != sent {
				fmt.Fprintf(w, ": heartbeat\nid: %s\n\n", id)
				sent = id
			} else {
				w.WriteString(": heartbeat\n\n")
			}
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

func writeLiveEvent(w *bufio.Writer, id string, r *liveRecord) {
	w.WriteString("id: ")
	w.WriteString(id)
	w.WriteString("\nevent: ")
	w.WriteString(r.change)
	w.WriteString("\ndata: ")
	w.Write(r.data)
	w.WriteString("\n\n")
	liveSent.Inc()
}

// take returns the buffered records sub has not considered yet, and the
// channel closed when there are more. need is set instead when sub is
// behind the buffer: the offsets to read from Kafka, per partition, up to
// (excluding) the buffer's first.
func (l *Live) take(sub *liveSubscription) (batch []liveRecord, wake chan struct{}, need map[int32][2]int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.parts {
		if sub.pos[p] < l.first[p] {
			if need == nil {
				need = map[int32][2]int64{}
			}
			need[p] = [2]int64{sub.pos[p], l.first[p]}
		}
	}
	if need != nil {
		return nil, nil, need
	}
	end := l.start + uint64(l.count)
	sub.cursor = max(sub.cursor, l.start)
	n := uint64(len(l.ring))
	for seq := sub.cursor; seq < end; seq++ {
		batch = append(batch, l.ring[seq%n])
	}
	sub.cursor = end
	return batch, l.wake, nil
}

// begin places sub in the feed: at its Last-Event-ID, or at the end of the
// buffer (less history).
func (l *Live) begin(sub *liveSubscription) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case sub.pos != nil:
		// Resuming: partitions the client never heard of start at 0.
		for _, p := range l.parts {
			if _, ok := sub.pos[p]; !ok {
				sub.pos[p] = 0
			}
		}
		sub.cursor = l.start
	default:
		sub.pos = LivePosition{}
		for _, p := range l.parts {
			sub.pos[p] = l.next[p]
		}
		sub.cursor = l.start + uint64(l.count)
		if sub.history > 0 {
			sub.cursor = l.historyStart(sub)
		}
	}
}

// historyStart positions a fresh sub so that it first gets the last
// sub.history buffered records of the segments it wants.
func (l *Live) historyStart(sub *liveSubscription) uint64 {
	n := uint64(len(l.ring))
	seq, left := l.start+uint64(l.count), sub.history
	for seq > l.start && left > 0 {
		r := &l.ring[(seq-1)%n]
		seq--
		sub.pos[r.part] = r.offset
		if sub.filter == nil || sub.filter[r.segment] {
			left--
		}
	}
	return seq
}

// catchUp reads need's ranges from Kafka and writes them to the client:
// the records it missed that the buffer no longer holds.
func (l *Live) catchUp(w *bufio.Writer, flush func() error, sub *liveSubscription, need map[int32][2]int64, gone <-chan struct{}) error {
	select {
	case l.catchups <- struct{}{}:
		defer func() { <-l.catchups }()
	case <-l.done:
		return errLiveClosed
	case <-gone:
		return errClientGone
	}
	from := map[int32]kgo.Offset{}
	for p, r := range need {
		from[p] = kgo.NewOffset().At(r[0])
	}
	cl, err := kafka.NewClient(l.cfg.Kafka,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{l.topic: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-l.done:
			cancel()
		case <-gone:
			cancel()
		case <-ctx.Done():
		}
	}()
	heartbeat := time.NewTicker(l.opts.Heartbeat)
	defer heartbeat.Stop()
	// The offset just before a range's end is always a record (the buffer's
	// first, or the one before the position Run started at, or a control
	// record), so seeing it means the range is done. An aborted transaction
	// still open at the end is the exception the idle limit covers.
	idle := time.Now()
	for len(need) > 0 {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		pcancel()
		if ctx.Err() != nil {
			select {
			case <-gone:
				return errClientGone
			default:
				return errLiveClosed
			}
		}
		wrote := false
		fs.EachRecord(func(r *kgo.Record) {
			rng, ok := need[r.Partition]
			if !ok || r.Offset < sub.pos[r.Partition] {
				return
			}
			idle = time.Now()
			if r.Offset >= rng[1]-1 {
				delete(need, r.Partition)
				cl.PauseFetchPartitions(map[string][]int32{l.topic: {r.Partition}})
			}
			if r.Offset >= rng[1] {
				sub.pos[r.Partition] = max(sub.pos[r.Partition], rng[1])
				return // the buffer has it
			}
			sub.pos[r.Partition] = r.Offset + 1
			lr, ok := decodeLive(r)
			if !ok || (sub.filter != nil && !sub.filter[lr.segment]) {
				return
			}
			writeLiveEvent(w, sub.pos.String(), &lr)
			wrote = true
		})
		if time.Since(idle) > 10*time.Second {
			l.log.Warn("live catch-up gave up waiting for records; continuing from the buffer", "missing", need)
			for p, rng := range need {
				sub.pos[p] = rng[1]
			}
			return nil
		}
		select {
		case <-heartbeat.C:
			w.WriteString(": catching up\n\n")
			wrote = true
		default:
		}
		if wrote {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return nil
}
