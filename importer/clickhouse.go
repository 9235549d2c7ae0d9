package importer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"reflect"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/event"
	"github.com/twmb/franz-go/pkg/kgo"
)

// QuerySource names a query's rows in the report.
const QuerySource = "clickhouse"

// ImportQuery imports the rows of a ClickHouse query as Import imports a
// file's: the columns are mapped by o.Mapping (or o.Rows) by their names,
// their values keep their ClickHouse types (numbers, DateTime as ISO-8601,
// Nullable NULL as no value, Map and Array as JSON), bad rows go to the
// report (file "clickhouse", row its position in the result).
//
// A row with no messageId gets one derived from its content (every column
// name and value) and, for rows alike in every column, their count so far:
// the same rows give the same ids in any order, so running the same query
// again counts each row once, and rows the table gained since are new.
// That costs about 40 bytes a row for the run; a query whose mapping gives
// a messageId (an order id) costs nothing.
func ImportQuery(ctx context.Context, cl *kgo.Client, conn driver.Conn, query string, o Options) (Summary, error) {
	if o.Format == FormatAmplitude || o.Format == FormatPostHog {
		return Summary{}, fmt.Errorf("a query's rows are columns: map them (-mapping), there is no %s format for them", o.Format)
	}
	return execute(ctx, cl, o, func(im *run) error { return im.rowsOf(ctx, conn, query) })
}

func (im *run) rowsOf(ctx context.Context, conn driver.Conn, query string) error {
	im.query = true
	rs, err := conn.Query(ctx, query)
	if err != nil {
		return fmt.Errorf("cannot run the query: %w", err)
	}
	defer rs.Close()
	names := rs.Columns()
	m := im.o.Mapping
	if im.o.Rows != nil {
		if m, err = im.o.Rows.mapping(names); err != nil {
			return fmt.Errorf("the query's columns: %w", err)
		}
	}
	p, err := newPlan(m, names, true, false)
	if err != nil {
		return fmt.Errorf("the query's columns: %w", err)
	}
	for _, n := range p.unmapped {
		im.unmapped[n] = true
	}
	types := rs.ColumnTypes()
	ptrs := make([]any, len(types))
	for i, ct := range types {
		ptrs[i] = reflect.New(ct.ScanType()).Interface()
	}
	seen := map[[16]byte]uint32{}
	var n event.Normalizer
	row := 0
	for rs.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		row++
		if err := rs.Scan(ptrs...); err != nil {
			return fmt.Errorf("cannot read row %d of the query: %w", row, err)
		}
		vals := make([]any, len(ptrs))
		for i, ptr := range ptrs {
			vals[i] = chValue(reflect.ValueOf(ptr).Elem().Interface())
		}
		im.rows.Add(1)
		now := im.o.Now()
		h := rowHash(names, vals)
		seen[h]++
		id := fmt.Sprintf("import-%s-%d", hex.EncodeToString(h[:]), seen[h])
		v, key, re := p.record(&n, vals, id, now, im.o.Limits)
		if re != nil {
			re.Row = row
			im.refuse(ctx, QuerySource, id, names, vals, re, now)
			continue
		}
		im.produce(ctx, &kgo.Record{Topic: im.o.Events, Key: []byte(key), Value: v}, true)
	}
	if err := rs.Err(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("the query failed after %d rows: %w", row, err)
	}
	return nil
}

// maxExact is the largest integer a float64 holds exactly (2^53): an
// event's numbers are float64.
const maxExact = 1 << 53

// chValue is a scanned ClickHouse value as the mapping takes it: integers
// as JSON numbers, or as text beyond 2^53 (an event's numbers are float64,
// so a UInt64 id keeps its digits as text), floats, bools and strings as
// they are, times as ISO-8601 text, NULL as nil, and anything else (Map,
// Array, Tuple, Decimal, UUID) as its JSON.
func chValue(v any) any {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil
		}
		if b, ok := rv.Interface().(*big.Int); ok {
			if b.IsInt64() && b.Int64() >= -maxExact && b.Int64() <= maxExact {
				return json.Number(b.String())
			}
			return b.String()
		}
		rv = rv.Elem()
	}
	switch x := rv.Interface().(type) {
	case string, bool, float64:
		return x
	case float32:
		return float64(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case json.Number:
		return x
	case fmt.Stringer:
		if rv.Kind() == reflect.Struct || rv.Kind() == reflect.Array {
			// Decimal, UUID, IP: their text.
			return textNumber(x.String())
		}
	}
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n := rv.Int(); n >= -maxExact && n <= maxExact {
			return json.Number(strconv.FormatInt(n, 10))
		}
		return strconv.FormatInt(rv.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n := rv.Uint(); n <= maxExact {
			return json.Number(strconv.FormatUint(n, 10))
		}
		return strconv.FormatUint(rv.Uint(), 10)
	case reflect.Map, reflect.Slice, reflect.Array, reflect.Struct:
		b, err := json.Marshal(rv.Interface())
		if err != nil {
			return fmt.Sprint(rv.Interface())
		}
		var out any
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		if err := d.Decode(&out); err != nil {
			return string(b)
		}
		return out
	}
	return fmt.Sprint(rv.Interface())
}

// textNumber is s as a JSON number when it is one (a Decimal), else s.
func textNumber(s string) any {
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return json.Number(s)
	}
	return s
}

// rowHash is the first 16 bytes of the SHA-256 of a row's column names and
// values.
func rowHash(names []string, vals []any) [16]byte {
	h := sha256.New()
	var n [8]byte
	for i, name := range names {
		v := text(vals[i])
		if vals[i] == nil {
			v = "\x00null"
		}
		for _, s := range []string{name, v} {
			binary.BigEndian.PutUint64(n[:], uint64(len(s)))
			h.Write(n[:])
			h.Write([]byte(s))
		}
	}
	var out [16]byte
	copy(out[:], h.Sum(nil))
	return out
}
