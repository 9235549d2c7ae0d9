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
