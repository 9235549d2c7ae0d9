package importer

import (
	"regexp"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/event"
)

// Guess is a mapping guessed from a CSV's header and first rows, as the
// dashboard's Import page shows it to be fixed: field -> column, or a
// quoted constant ("\"Order Completed\""), and the timestamp format.
type Guess struct {
	Fields     map[string]string `json:"mapping"`
	TimeFormat string            `json:"timestampFormat"`
}

// Mapping is g as a Mapping, its entries checked as -map flags are.
func (g Guess) Mapping() (Mapping, error) {
	var m Mapping
	for f, v := range g.Fields {
		if strings.TrimSpace(v) == "" {
			continue
		}
		if err := m.Set(f + "=" + v); err != nil {
			return m, err
		}
	}
	if g.TimeFormat != "" {
		if err := m.Set(timeFormatKey + "=" + g.TimeFormat); err != nil {
			return m, err
		}
	}
	return m, nil
}

// guessNames are column names (lower case, without _ - and spaces) taken
// for an event field, most likely first.
var guessNames = []struct {
	field string
	names []string
}{
	{"userId", []string{"userid", "customerid", "customer", "user", "clientid", "memberid", "accountid"}},
	{"anonymousId", []string{"anonymousid", "anonid", "deviceid", "visitorid", "cookieid"}},
	{"event", []string{"event", "eventname", "eventtype", "action"}},
	{"messageId", []string{"messageid", "eventid", "insertid"}},
	{"timestamp", []string{"timestamp", "createdat", "created", "occurredat", "eventtime", "orderdate", "date", "time", "datetime", "ts"}},
	{"traits.email", []string{"email", "emailaddress", "customeremail"}},
}

var notWord = regexp.MustCompile(`[^a-z0-9]+`)

// GuessMapping guesses where a CSV's columns go: columns named as event
// fields map themselves, user/customer ids to userId, an event name to
// event (else the constant "Imported"), a date to timestamp with its
// format, an email to traits.email, and every other column to
// properties.<name>.
func GuessMapping(header []string, rows [][]string) Guess {
	g := Guess{Fields: map[string]string{}}
	used := map[int]bool{}
	for i, h := range header {
		if isField(h) {
			g.Fields[h] = h
			used[i] = true
		}
	}
	for _, gn := range guessNames {
		if _, ok := g.Fields[gn.field]; ok {
			continue
		}
	names:
		for _, want := range gn.names {
			for i, h := range header {
				if !used[i] && notWord.ReplaceAllString(strings.ToLower(h), "") == want {
					g.Fields[gn.field] = h
					used[i] = true
					break names
				}
			}
		}
	}
	if _, ok := g.Fields["event"]; !ok {
		if _, ok := g.Fields["type"]; !ok {
			g.Fields["event"] = `"Imported"`
		}
	}
	for i, h := range header {
		if used[i] || h == "" {
			continue
		}
		name := strings.Trim(notWord.ReplaceAllString(strings.ToLower(h), "_"), "_")
		if name == "" {
			continue
		}
		g.Fields["properties."+name] = h
	}
	if col, ok := g.Fields["timestamp"]; ok {
		for i, h := range header {
			if h == col {
				g.TimeFormat = guessTimeFormat(rows, i)
			}
		}
	}
	return g
}

// timeGuesses are the layouts tried on a date column, after ISO-8601.
var timeGuesses = []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006/01/02 15:04:05", "2006/01/02",
	"01/02/2006 15:04:05", "01/02/2006", "02.01.2006 15:04:05", "02.01.2006"}

// guessTimeFormat is the format every non-empty value of column i fits:
// "" (ISO-8601), unix, unix_ms or a layout; "" when none fits all.
func guessTimeFormat(rows [][]string, i int) string {
	var vals []string
	for _, r := range rows {
		if i < len(r) && strings.TrimSpace(r[i]) != "" {
			vals = append(vals, strings.TrimSpace(r[i]))
		}
	}
	fits := func(ok func(string) bool) bool {
		for _, v := range vals {
			if !ok(v) {
				return false
			}
		}
		return len(vals) > 0
	}
	digits := func(n int) func(string) bool {
		return func(s string) bool {
			return len(s) == n && strings.Trim(s, "0123456789") == ""
		}
	}
	switch {
	case fits(func(s string) bool { _, err := event.ParseTime(s); return err == nil }):
		return ""
	case fits(digits(10)):
		return "unix"
	case fits(digits(13)):
		return "unix_ms"
	}
	for _, l := range timeGuesses {
		if fits(func(s string) bool { _, err := time.Parse(l, s); return err == nil }) {
			return l
		}
	}
	return ""
}
