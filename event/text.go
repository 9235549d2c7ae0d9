package event

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf8"

	json "github.com/goccy/go-json"
)

// Text and ids: what Pulse keeps of a client's strings and numeric ids is
// exactly what was sent. JSON decoders rewrite invalid UTF-8 and escaped
// lone surrogates (\ud800) to U+FFFD, so two different ids would become
// one; such input is refused instead, naming the field. A numeric id is
// kept as its decimal text: read as a float64, 9007199254740993 would
// become ...992.

// MaxIDLen bounds userId, anonymousId, previousId and groupId, in bytes:
// every id Pulse accepts fits, percent-escaped, in a URL the scorer reads
// (GET /v1/entities/{entity}/{id}).
const MaxIDLen = 256

// textReason is the reason given for a string that is not Unicode text.
const textReason = `is not valid Unicode text (invalid UTF-8, or a lone surrogate such as \ud800): send UTF-8`

// NumberID is the id a JSON number stands for: an integer is kept as its
// decimal text, whatever its size; a number with a fraction or an
// exponent is read as a float64 and written in its shortest decimal form
// (1.5e3 is "1500"), as before. ok is false for a number no float64 holds.
func NumberID(text []byte) (id string, ok bool) {
	if isIntegerText(text) {
		return string(text), true
	}
	x, err := strconv.ParseFloat(unsafeString(text), 64)
	if err != nil {
		return "", false
	}
	return strconv.FormatFloat(x, 'f', -1, 64), true
}

// isIntegerText reports whether the JSON number text has no fraction and
// no exponent.
func isIntegerText(text []byte) bool {
	return bytes.IndexByte(text, '.') < 0 && !bytes.ContainsAny(text, "eE")
}

// IsText reports whether s, the inside of a JSON string as sent (escapes
// and all), is Unicode text: valid UTF-8, every \u escape of a surrogate
// one half of a pair.
func IsText(s []byte) bool {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 < len(s) && s[i+1] == 'u' {
				n, ok := surrogateEscape(s, i)
				if !ok {
					return false
				}
				i += n
				continue
			}
			i += 2
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size <= 1 {
				return false
			}
			i += size
		default:
			i++
		}
	}
	return true
}

// surrogateEscape reads the \u escape at s[i]: n is its length, 12 for a
// surrogate pair; ok is false for a lone surrogate (or a malformed escape).
func surrogateEscape(s []byte, i int) (n int, ok bool) {
	r, ok := hex4(s, i+2)
	if !ok {
		return 0, false
	}
	switch {
	case r < 0xd800 || r > 0xdfff:
		return 6, true
	case r >= 0xdc00:
		return 0, false // a low half first
	}
	if i+8 > len(s) || s[i+6] != '\\' || s[i+7] != 'u' {
		return 0, false
	}
	lo, ok := hex4(s, i+8)
	if !ok || lo < 0xdc00 || lo > 0xdfff {
		return 0, false
	}
	return 12, true
}

func hex4(s []byte, at int) (rune, bool) {
	if at+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range s[at : at+4] {
		r <<= 4
		switch {
		case '0' <= c && c <= '9':
			r |= rune(c - '0')
		case 'a' <= c && c <= 'f':
			r |= rune(c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

// mayHoldBadText is a quick test that rules the walk out for nearly every
// input: valid UTF-8 with no escape of a surrogate is text.
func mayHoldBadText(b []byte) bool {
	if !utf8.Valid(b) {
		return true
	}
	for i := 0; ; {
		j := bytes.Index(b[i:], []byte(`\u`))
		if j < 0 || i+j+2 >= len(b) {
			return false
		}
		i += j + 2
		if b[i] == 'd' || b[i] == 'D' {
			return true
		}
	}
}

// badTextField returns the path of the first field of b, valid JSON,
// whose key or string value is not Unicode text ("properties.tags[2]"),
// or "" when every string is text. The value of the top-level member
// named skip is not looked at (a batch's items are checked one by one).
func badTextField(b []byte, skip string) (path string, bad bool) {
	if !mayHoldBadText(b) {
		return "", false
	}
	type level struct {
		obj bool
		key []byte // the current member's key, as sent
		idx int
	}
	var stack []level
	expectKey := false
	render := func(extraKey []byte) string {
		var sb strings.Builder
		name := func(k []byte) {
			var s string
			if json.Unmarshal(append(append([]byte{'"'}, k...), '"'), &s) != nil {
				s = string(k)
			}
			if sb.Len() > 0 {
				sb.WriteByte('.')
			}
			sb.WriteString(strings.ToValidUTF8(s, "\uFFFD"))
		}
		for _, l := range stack {
			if l.obj {
				if l.key != nil {
					name(l.key)
				}
			} else {
				sb.WriteString("[" + strconv.Itoa(l.idx) + "]")
			}
		}
		if extraKey != nil {
			name(extraKey)
		}
		return sb.String()
	}
	i := 0
	for i < len(b) {
		switch c := b[i]; c {
		case '{':
			stack = append(stack, level{obj: true})
			expectKey = true
			i++
		case '[':
			stack = append(stack, level{})
			i++
		case '}', ']':
			stack = stack[:len(stack)-1]
			i++
		case ',':
			if top := &stack[len(stack)-1]; top.obj {
				expectKey = true
			} else {
				top.idx++
			}
			i++
		case '"':
			start := i
			end := stringEnd(b, start)
			text := IsText(b[start+1 : end-1])
			i = end
			if expectKey {
				expectKey = false
				top := &stack[len(stack)-1]
				if !text {
					top.key = nil
					return render(b[start+1 : end-1]), true
				}
				top.key = b[start+1 : end-1]
				if len(stack) == 1 && skip != "" && strings.EqualFold(string(top.key), skip) {
					for i < len(b) && b[i] != ':' {
						i++
					}
					i = skipValue(b, i+1)
				}
				continue
			}
			if !text {
				return render(nil), true
			}
		default:
			i++
		}
	}
	return "", false
}

// skipValue returns the index after the value that starts at or after
// b[i], in valid JSON, whatever its strings hold.
func skipValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			i = stringEnd(b, i) - 1
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			if depth--; depth == 0 {
				return i + 1
			}
		case ',':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}

// stringEnd returns the index after the closing quote of the string
// starting at b[i], in valid JSON.
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// CheckText refuses JSON (valid JSON: check that first) holding a key or
// a string that is not Unicode text, naming the field as a dotted path
// ("features[2].id").
func CheckText(raw []byte) error {
	if path, bad := badTextField(raw, ""); bad {
		return fieldErr(path, textReason)
	}
	return nil
}
