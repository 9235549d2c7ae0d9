package importer

import (
	"fmt"
	"strings"
)

// FeatureRows reads files as feature rows, what POST /v1/stream takes (in
// Mage's shape): each row is an identify of the user in column ID whose
// traits are the row's other columns, tagged with FeatureSet, so that
// features such as `agg: last, field: traits.age` pick them up. CSV values
// are typed by content as in any import.
type FeatureRows struct {
	FeatureSet string
	ID         string // the column of the user id; default "id"
}

// Validate reports a feature set or id column that cannot be used.
func (r *FeatureRows) Validate() error {
	if strings.TrimSpace(r.FeatureSet) == "" {
		return fmt.Errorf("feature rows need a feature set: -feature-set NAME, e.g. user/profile_attributes/5")
	}
	if r.ID == "" {
		r.ID = "id"
	}
	return nil
}

// mapping is the mapping of one header (a CSV file's, a JSON row's) as
// feature rows. A missing id column is an error naming the columns there
// are.
func (r *FeatureRows) mapping(names []string) (Mapping, error) {
	m := Mapping{Fields: make(map[string]Source, len(names)+3)}
	found := false
	for i, n := range names {
		switch {
		case n == r.ID:
			found = true
			m.Fields["userId"] = Source{Column: n}
		case n == "":
			return m, fmt.Errorf("column %d has no name", i+1)
		default:
			m.Fields["traits."+n] = Source{Column: n}
		}
	}
	if !found {
		return m, fmt.Errorf("no id column %q (the columns are %s): name it with -id COLUMN", r.ID, strings.Join(names, ", "))
	}
	m.Fields["type"] = Source{Constant: "identify", IsConst: true}
	m.Fields["featureSet"] = Source{Constant: r.FeatureSet, IsConst: true}
	return m, nil
}
