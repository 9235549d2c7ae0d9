package importer

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestRows reads files of each format and prints what next returns, one
// line a row: the row number, then name=value pairs, or the row error.
func TestRows(t *testing.T) {
	f := func(name, content string, gz bool, want string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), name)
		b := []byte(content)
		if gz {
			var buf bytes.Buffer
			w := gzip.NewWriter(&buf)
			w.Write(b)
			w.Close()
			b = buf.Bytes()
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		fl, err := openFile(path)
		if err != nil {
			t.Fatal(err)
		}
		defer fl.close()
		rs, err := newRows(fl)
		if err != nil {
			if got := "error: " + err.Error(); !strings.Contains(got, want) {
				t.Fatalf("%s: %s, want %s", name, got, want)
			}
			return
		}
		var out []string
		for {
			row, names, vals, err := rs.next()
			if err == io.EOF {
				break
			}
			if re, ok := err.(*RowError); ok {
				out = append(out, fmt.Sprintf("%d! %s", row, re.Reason))
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			var kv []string
			for i, n := range names {
				kv = append(kv, fmt.Sprintf("%s=%v", n, vals[i]))
			}
			sort.Strings(kv)
			out = append(out, fmt.Sprintf("%d %s", row, strings.Join(kv, " ")))
		}
		if got := strings.Join(out, "\n"); got != want {
			t.Fatalf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
	csvIn := "\ufeffuserId, event ,properties.note\nu1,Signed Up,\"a, b\"\nu2,x\nu3,Paid,\"\"\n"
	csvWant := "1 event=Signed Up properties.note=a, b userId=u1\n2! has 2 columns, the header has 3\n3 event=Paid properties.note= userId=u3"
	f("a.csv", csvIn, false, csvWant)
	f("a.csv.gz", csvIn, true, csvWant)
	f("export", csvIn, true, csvWant) // no extension: sniffed
	f("a.tsv", "userId\tevent\nu1\tx\n", false, "1 event=x userId=u1")
	f("a.csv", "", false, "a.csv is empty")
	f("a.csv", "userId,userId\n", false, "names userId more than once")
	f("a.csv", "userId,event\nu1,\"bad\"quote\nu2,y\n", false, "1! cannot read the row (line 2): extraneous or missing \" in quoted-field\n2 event=y userId=u2")
	jsonIn := "{\"userId\":\"u1\",\"properties\":{\"revenue\":42,\"items\":[1,2]},\"context\":{\"page\":{\"url\":\"/x\"}}}\n\n[1]\n{\"userId\":123456789012345678901}\nnot json\n"
	jsonWant := "1 context.page.url=/x properties.items=[1 2] properties.revenue=42 userId=u1\n3! not a JSON object\n4 userId=123456789012345678901\n5! not a JSON object"
	f("a.jsonl", jsonIn, false, jsonWant)
	f("a.ndjson.gz", jsonIn, true, jsonWant)
	f("-export", jsonIn, false, jsonWant) // sniffed: starts with {
	arrayIn := "[{\"userId\":\"u1\"}, 7,\n {\"userId\":\"u2\",\"properties\":{\"n\":1}}]"
	arrayWant := "1 userId=u1\n2! not a JSON object\n3 properties.n=1 userId=u2"
	f("a.json", arrayIn, false, arrayWant)
	f("events-export", " "+arrayIn, true, arrayWant)           // sniffed: starts with [
	f("a.json", "{\"userId\":\"u1\"}\n", false, "1 userId=u1") // .json of one object a line
}

// TestBrokenArray: a JSON array cut short or broken stops the import
// (nothing after the break is a row) with the element it broke at.
func TestBrokenArray(t *testing.T) {
	for in, want := range map[string]string{
		`[{"userId":"u1"},`:          "cut short in element 2",
		`[{"userId":"u1"} {"x":1}]`:  "element 2 of the JSON array: expected comma",
		`[{"userId":"u1"}, {"x":1 ]`: "element 2 of the JSON array",
		`[`:                          "ends after 0 element(s)",
	} {
		a, err := newArrayRows(strings.NewReader(in), "a.json")
		if err != nil {
			t.Fatal(err)
		}
		for err == nil {
			_, _, _, err = a.next()
		}
		if err == io.EOF || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %s", in, err, want)
		}
	}
}

// TestFileID: the derived messageIds depend on the file's bytes, not its
// name.
func TestFileID(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := openFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f.close()
		return f.messageID(7)
	}
	a := write("a.csv", "userId\nu1\n")
	if b := write("copy.csv", "userId\nu1\n"); a != b {
		t.Fatalf("same bytes, other name: %s != %s", a, b)
	}
	if c := write("a.csv", "userId\nu2\n"); a == c {
		t.Fatalf("other bytes, same name and size: both %s", a)
	}
	if !strings.HasPrefix(a, "import-") || !strings.HasSuffix(a, "-7") || len(a) > 100 {
		t.Fatalf("messageId %q: want import-<hash>-<row>, at most 100 characters", a)
	}
}
