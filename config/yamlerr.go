package config

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/agnivade/levenshtein"
	"gopkg.in/yaml.v3"
)

// The decoder's own problems (a value of the wrong type, an unknown key, a
// bad duration) name a line and Go's types; explain rewrites them to name
// the setting as the checks do (features[orders_7d].window) and say what
// it wants, and an unknown key gets the nearest known one.

var (
	typeErrRE    = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (.+)$")
	unknownKeyRE = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)
)

// explain fills p.Path and rewrites p.Msg for a decoder problem.
func (nl nodeLines) explain(p Problem) Problem {
	if p.Line == 0 || nl.doc == nil {
		return p
	}
	if m := unknownKeyRE.FindStringSubmatch(p.Msg); m != nil {
		segs, v := nl.at(p.Line, m[1], "", "")
		if v == nil {
			return p
		}
		p.Path, p.Msg = joinPath(segs), "unknown setting"
		if near := nearest(m[1], knownKeys(segs[:len(segs)-1])); near != "" {
			p.Msg += fmt.Sprintf(" (did you mean %s?)", near)
		}
		return p
	}
	if m := typeErrRE.FindStringSubmatch(p.Msg); m != nil {
		segs, v := nl.at(p.Line, "", m[1], m[2])
		if v == nil {
			return p
		}
		got := strconv.Quote(v.Value)
		switch {
		case v.Kind == yaml.ScalarNode:
		case m[1] == "seq":
			got = "a list"
		case m[1] == "map":
			got = "a mapping"
		default:
			got = "!!" + m[1]
		}
		p.Path, p.Msg = joinPath(segs), fmt.Sprintf("want %s, got %s", wantOf(m[3]), got)
		return p
	}
	// A value's own check (a duration, rfm.groups): the key on the line.
	if segs, v := nl.at(p.Line, "", "", ""); v != nil {
		if path := joinPath(segs); !strings.HasPrefix(p.Msg, path) {
			p.Path = path
		}
	}
	return p
}

// wantOf says what a Go type the decoder named wants, in a user's words.
func wantOf(goType string) string {
	switch {
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	default: // maps and the config's structs
		return "a mapping"
	}
}

// pathSeg is one step of a setting's path: a key, or a list item (by its
// name when it has one, else its index).
type pathSeg struct {
	key  string
	item string
	list bool
}

func joinPath(segs []pathSeg) string {
	var b strings.Builder
	for i, s := range segs {
		switch {
		case s.list:
			b.WriteString("[" + s.item + "]")
		case i > 0:
			b.WriteString("." + s.key)
		default:
			b.WriteString(s.key)
		}
	}
	return b.String()
}

// at finds the key on line that fits: named key, else (key "") the one
// whose value the decoder quoted (value, which it cuts to a prefix and
// "..." when long), else (both "") any. tag is the decoder's tag of the
// value (str, int, seq, map...): a list or mapping is matched by its line.
// It returns the key's path from the top of the file and its value (nil
// when no key fits).
func (nl nodeLines) at(line int, key, tag, value string) ([]pathSeg, *yaml.Node) {
	prefix, cut := strings.CutSuffix(value, "...")
	fits := func(k, v *yaml.Node) bool {
		switch {
		case key != "":
			return k.Value == key && k.Line == line
		case v.Line != line:
			return false
		case tag == "seq":
			return v.Kind == yaml.SequenceNode
		case tag == "map":
			return v.Kind == yaml.MappingNode
		case v.Kind != yaml.ScalarNode:
			return false
		case value == "":
			return true
		case cut:
			return strings.HasPrefix(v.Value, prefix)
		default:
			return v.Value == value
		}
	}
	var walk func(n *yaml.Node, path []pathSeg) ([]pathSeg, *yaml.Node)
	walk = func(n *yaml.Node, path []pathSeg) ([]pathSeg, *yaml.Node) {
		switch n.Kind {
		case yaml.MappingNode:
			for j := 0; j+1 < len(n.Content); j += 2 {
				k, v := n.Content[j], n.Content[j+1]
				here := append(path[:len(path):len(path)], pathSeg{key: k.Value})
				if fits(k, v) {
					return here, v
				}
				if found, fv := walk(v, here); fv != nil {
					return found, fv
				}
			}
		case yaml.SequenceNode:
			for i, item := range n.Content {
				seg := pathSeg{list: true, item: strconv.Itoa(i)}
				if item.Kind == yaml.MappingNode {
					for j := 0; j+1 < len(item.Content); j += 2 {
						if item.Content[j].Value == "name" && item.Content[j+1].Kind == yaml.ScalarNode && item.Content[j+1].Value != "" {
							seg.item = item.Content[j+1].Value
						}
					}
				}
				if found, fv := walk(item, append(path[:len(path):len(path)], seg)); fv != nil {
					return found, fv
				}
			}
		}
		return nil, nil
	}
	return walk(nl.doc, nil)
}

// knownKeys lists the YAML keys the config accepts under path (a mapping),
// from Config's struct tags, in field order.
func knownKeys(path []pathSeg) []string {
	t := reflect.TypeOf(Config{})
	for _, s := range path {
		switch t = deref(t); {
		case s.list && t.Kind() == reflect.Slice:
			t = t.Elem()
		case !s.list && t.Kind() == reflect.Struct:
			i := slices.IndexFunc(yamlFields(t), func(f yamlField) bool { return f.key == s.key })
			if i < 0 {
				return nil
			}
			t = yamlFields(t)[i].typ
		default:
			return nil
		}
	}
	if t = deref(t); t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for _, f := range yamlFields(t) {
		keys = append(keys, f.key)
	}
	return keys
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// yamlField is one key of a struct as yaml.v3 decodes it.
type yamlField struct {
	key string
	typ reflect.Type
}

// yamlFields lists struct t's YAML keys (an inline struct's in its place).
func yamlFields(t reflect.Type) []yamlField {
	var out []yamlField
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-" || !f.IsExported():
		case strings.Contains(","+opts+",", ",inline,"):
			if deref(f.Type).Kind() == reflect.Struct { // an inline map takes any key
				out = append(out, yamlFields(deref(f.Type))...)
			}
		case name == "":
			out = append(out, yamlField{strings.ToLower(f.Name), f.Type})
		default:
			out = append(out, yamlField{name, f.Type})
		}
	}
	return out
}

// nearest is the known key closest to key by edit distance, when it is
// close enough to be a typo (at most a third of its letters, and 3), else
// the one key starts (merge_known for merge_known_users).
func nearest(key string, known []string) string {
	key = strings.ToLower(key)
	best, bestD := "", min(3, max(1, len(key)/3))+1
	for _, k := range known {
		if d := levenshtein.ComputeDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" && len(key) >= 4 {
		for _, k := range known {
			if strings.HasPrefix(k, key) {
				if best != "" {
					return "" // more than one
				}
				best = k
			}
		}
	}
	return best
}
