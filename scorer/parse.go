package scorer

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/pulse-rt/pulse/event"
)

// The predict body is read by hand: with a general JSON decoder, building
// maps for every row was 60% of a request's time in the profile. The reader
// is strict JSON and names the problem and its byte offset.

// predictBody is a parsed POST /v1/predict.
type predictBody struct {
	apiKey   string
	model    string
	features bool // the features key was present
	rows     []row
	kv       []inlineKV // rows' inline features, each row a range
}

type row struct {
	entity []byte // the row's one key, aliasing the body
	id     string
	kv     [2]int // range in predictBody.kv
}

// inlineKV is one request-time feature; name aliases the request body.
type inlineKV struct {
	name  []byte
	value float64
}

// typeProblem marks a parseError about a value's type, whose path the
// caller fills in.
const typeProblem = -1

// parseError is a problem in the body, with its offset.
type parseError struct {
	at   int
	path string
	msg  string
}

func (e *parseError) Error() string {
	if e.path != "" {
		return e.path + ": " + e.msg
	}
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.at, e.msg)
}

// FieldReason is the path and the problem apart (httpapi.FieldProblem);
// no field for a body that is not JSON.
func (e *parseError) FieldReason() (field, reason string) {
	if e.path == "" {
		return "", ""
	}
	return e.path, e.msg
}

type reader struct {
	b   []byte
	i   int
	tmp []byte // unescaped strings
}

func (r *reader) fail(msg string) error { return &parseError{at: r.i, msg: msg} }

func (r *reader) ws() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (r *reader) peek() byte {
	r.ws()
	if r.i < len(r.b) {
		return r.b[r.i]
	}
	return 0
}

func (r *reader) expect(c byte) error {
	if r.peek() != c {
		if r.i >= len(r.b) {
			return r.fail(fmt.Sprintf("unexpected end of body, want %q", c))
		}
		return r.fail(fmt.Sprintf("unexpected %q, want %q", r.b[r.i], c))
	}
	r.i++
	return nil
}

// want checks the next value starts with c: at the end of the body that is
// a syntax error, otherwise a problem with the value at path.
func (r *reader) want(c byte, path, msg string) error {
	switch r.peek() {
	case c:
		return nil
	case 0:
		return r.fail("unexpected end of body")
	}
	return &parseError{path: path, msg: msg}
}

// str reads a string; the result aliases the body or r.tmp, valid until the
// next call.
func (r *reader) str() ([]byte, error) {
	if err := r.expect('"'); err != nil {
		return nil, err
	}
	start := r.i
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			s := r.b[start:r.i]
			r.i++
			return s, nil
		case c == '\\':
			return r.escaped(start)
		case c < 0x20:
			return nil, r.fail("control character in string")
		}
		r.i++
	}
	return nil, r.fail("unterminated string")
}

func (r *reader) escaped(start int) ([]byte, error) {
	out := append(r.tmp[:0], r.b[start:r.i]...)
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			r.i++
			r.tmp = out
			return out, nil
		case c < 0x20:
			return nil, r.fail("control character in string")
		case c != '\\':
			out = append(out, c)
			r.i++
			continue
		}
		if r.i+1 >= len(r.b) {
			return nil, r.fail("unterminated string")
		}
		e := r.b[r.i+1]
		r.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			c1, ok := r.hex4()
			if !ok {
				return nil, r.fail(`invalid \u escape`)
			}
			ru := rune(c1)
			if utf16.IsSurrogate(ru) {
				if r.i+1 < len(r.b) && r.b[r.i] == '\\' && r.b[r.i+1] == 'u' {
					r.i += 2
					c2, ok := r.hex4()
					if !ok {
						return nil, r.fail(`invalid \u escape`)
					}
					ru = utf16.DecodeRune(ru, rune(c2))
				} else {
					ru = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, ru)
		default:
			return nil, r.fail(fmt.Sprintf(`invalid escape \%c`, e))
		}
	}
	return nil, r.fail("unterminated string")
}

func (r *reader) hex4() (uint16, bool) {
	if r.i+4 > len(r.b) {
		return 0, false
	}
	var v uint16
	for _, c := range r.b[r.i : r.i+4] {
		v <<= 4
		switch {
		case c >= '0' && c <= '9':
			v |= uint16(c - '0')
		case c >= 'a' && c <= 'f':
			v |= uint16(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			v |= uint16(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	r.i += 4
	return v, true
}

// number reads a JSON number and returns its text.
func (r *reader) number() ([]byte, error) {
	r.ws()
	start := r.i
	if r.i < len(r.b) && r.b[r.i] == '-' {
		r.i++
	}
	digits := func() int {
		n := 0
		for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
			r.i++
			n++
		}
		return n
	}
	first := r.i
	if n := digits(); n == 0 || (n > 1 && r.b[first] == '0') {
		return nil, r.fail("invalid number")
	}
	if r.i < len(r.b) && r.b[r.i] == '.' {
		r.i++
		if digits() == 0 {
			return nil, r.fail("invalid number")
		}
	}
	if r.i < len(r.b) && (r.b[r.i] == 'e' || r.b[r.i] == 'E') {
		r.i++
		if r.i < len(r.b) && (r.b[r.i] == '+' || r.b[r.i] == '-') {
			r.i++
		}
		if digits() == 0 {
			return nil, r.fail("invalid number")
		}
	}
	return r.b[start:r.i], nil
}

func (r *reader) literal(word string) error {
	if len(r.b)-r.i < len(word) || string(r.b[r.i:r.i+len(word)]) != word {
		return r.fail("invalid literal")
	}
	r.i += len(word)
	return nil
}

// skip reads any value.
func (r *reader) skip(depth int) error {
	if depth > 64 {
		return r.fail("nested too deep")
	}
	switch c := r.peek(); {
	case c == '"':
		_, err := r.str()
		return err
	case c == '{':
		return r.object(func(key []byte) error { return r.skip(depth + 1) })
	case c == '[':
		return r.array(func(int) error { return r.skip(depth + 1) })
	case c == 't':
		return r.literal("true")
	case c == 'f':
		return r.literal("false")
	case c == 'n':
		return r.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := r.number()
		return err
	case c == 0:
		return r.fail("unexpected end of body")
	default:
		return r.fail(fmt.Sprintf("unexpected %q", c))
	}
}

// object reads {"k": v, ...}, calling each with the key (valid only during
// the call) positioned at its value.
func (r *reader) object(each func(key []byte) error) error {
	if err := r.expect('{'); err != nil {
		return err
	}
	if r.peek() == '}' {
		r.i++
		return nil
	}
	for {
		key, err := r.str()
		if err != nil {
			return err
		}
		if err := r.expect(':'); err != nil {
			return err
		}
		if err := each(key); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.i++
		case '}':
			r.i++
			return nil
		case 0:
			return r.fail("unexpected end of body")
		default:
			return r.fail("want ',' or '}' after an object member")
		}
	}
}

func (r *reader) array(each func(i int) error) error {
	if err := r.expect('['); err != nil {
		return err
	}
	if r.peek() == ']' {
		r.i++
		return nil
	}
	for n := 0; ; n++ {
		if err := each(n); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.i++
		case ']':
			r.i++
			return nil
		case 0:
			return r.fail("unexpected end of body")
		default:
			return r.fail("want ',' or ']' after an array element")
		}
	}
}

// errRows marks the row limit, answered 413.
var errRows = errors.New("too many rows")

// parsePredict reads a predict body into p, reusing its memory.
func parsePredict(body []byte, p *predictBody, maxRows int) error {
	*p = predictBody{rows: p.rows[:0], kv: p.kv[:0]}
	r := &reader{b: body}
	err := r.object(func(key []byte) error {
		switch string(key) {
		case "api_key":
			s, err := r.str()
			p.apiKey = string(s)
			return err
		case "model":
			s, err := r.str()
			p.model = string(s)
			return err
		case "features":
			p.features = true
			if r.peek() == 'n' {
				p.features = false
				return r.literal("null")
			}
			if err := r.want('[', "features", `want a list of rows like {"user": {"id": 612}}`); err != nil {
				return err
			}
			return r.array(func(i int) error {
				if i >= maxRows {
					return errRows
				}
				return p.row(r, i)
			})
		}
		return r.skip(0)
	})
	if err != nil {
		return err
	}
	if r.ws(); r.i < len(r.b) {
		return r.fail("data after the JSON object")
	}
	return nil
}

// row reads {"<entity>": {"id": ..., "<feature>": <number>, ...}}.
func (p *predictBody) row(r *reader, i int) error {
	if r.peek() != '{' { // the path is built only for the error
		return r.want('{', fmt.Sprintf("features[%d]", i), `want an object like {"user": {"id": 612}}`)
	}
	rw := row{kv: [2]int{len(p.kv), len(p.kv)}}
	keys := 0
	err := r.object(func(entity []byte) error {
		keys++
		if keys > 1 {
			return &parseError{path: fmt.Sprintf("features[%d]", i), msg: "want exactly one key, the entity type"}
		}
		// entity may alias r.tmp; the body holds it otherwise. Copy only then.
		if len(entity) > 0 && &entity[0] == unsafe.SliceData(r.tmp) {
			entity = append([]byte(nil), entity...)
		}
		rw.entity = entity
		if r.peek() != '{' {
			return r.want('{', fmt.Sprintf("features[%d].%s", i, entity), `want an object like {"id": 612}`)
		}
		return r.object(func(name []byte) error {
			if string(name) == "id" {
				switch c := r.peek(); {
				case c == '"':
					start := r.i
					s, err := r.str()
					if err != nil {
						return err
					}
					if len(s) == 0 {
						return &parseError{path: fmt.Sprintf("features[%d].%s.id", i, entity), msg: "want a non-empty string or a number"}
					}
					// As ingest: what is not text was never stored.
					if !event.IsText(r.b[start+1 : r.i-1]) {
						return &parseError{path: fmt.Sprintf("features[%d].%s.id", i, entity), msg: `is not valid Unicode text (invalid UTF-8, or a lone surrogate such as \ud800): send UTF-8`}
					}
					rw.id = string(s)
				case c == '-' || (c >= '0' && c <= '9'):
					s, err := r.number()
					if err != nil {
						return err
					}
					// The id ingest keeps for the same number: an
					// integer's digits, whatever its size.
					id, ok := event.NumberID(s)
					if !ok {
						return &parseError{path: fmt.Sprintf("features[%d].%s.id", i, entity), msg: fmt.Sprintf("number %s is out of range: send the id as a string", s)}
					}
					rw.id = id
				case c == 0:
					return r.fail("unexpected end of body")
				default:
					return &parseError{path: fmt.Sprintf("features[%d].%s.id", i, entity), msg: "want a non-empty string or a number"}
				}
				return nil
			}
			if len(name) > 0 && &name[0] == unsafe.SliceData(r.tmp) {
				name = append([]byte(nil), name...)
			}
			v, err := r.inlineValue()
			if err != nil {
				var pe *parseError
				if errors.As(err, &pe) && pe.at == typeProblem {
					pe.path = fmt.Sprintf("features[%d].%s.%s", i, entity, name)
				}
				return err
			}
			p.kv = append(p.kv, inlineKV{name: name, value: v})
			return nil
		})
	})
	if err != nil {
		return err
	}
	if keys == 0 {
		return &parseError{path: fmt.Sprintf("features[%d]", i), msg: "want exactly one key, the entity type"}
	}
	if rw.id == "" {
		return &parseError{path: fmt.Sprintf("features[%d].%s.id", i, rw.entity), msg: "required"}
	}
	rw.kv[1] = len(p.kv)
	p.rows = append(p.rows, rw)
	return nil
}

// inlineValue reads a request-time feature: a finite number, a boolean
// (1/0), null (missing) or a string holding a finite number. NaN and the
// infinities are refused, spelt as strings or overflowing (1e999): a
// model would take them for values.
func (r *reader) inlineValue() (float64, error) {
	switch c := r.peek(); {
	case c == '-' || (c >= '0' && c <= '9'):
		s, err := r.number()
		if err != nil {
			return 0, err
		}
		f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(s), len(s)), 64)
		if err != nil {
			return 0, &parseError{at: typeProblem, msg: fmt.Sprintf("want a finite number, got %s", s)}
		}
		return f, nil
	case c == 't':
		return 1, r.literal("true")
	case c == 'f':
		return 0, r.literal("false")
	case c == 'n':
		return math.NaN(), r.literal("null")
	case c == '"':
		s, err := r.str()
		if err != nil {
			return 0, err
		}
		if f, err := strconv.ParseFloat(string(s), 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return f, nil
		}
		return 0, &parseError{at: typeProblem, msg: fmt.Sprintf("want a number, got the string %q", s)}
	case c == '{':
		return 0, &parseError{at: typeProblem, msg: "want a number, got an object"}
	case c == '[':
		return 0, &parseError{at: typeProblem, msg: "want a number, got a list"}
	case c == 0:
		return 0, r.fail("unexpected end of body")
	}
	return 0, r.fail(fmt.Sprintf("unexpected %q", r.b[r.i]))
}
