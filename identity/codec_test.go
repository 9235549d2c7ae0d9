package identity

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLinkCodec(t *testing.T) {
	l := Link{Identifier: "anonymous_id:a:b", CanonicalID: "U", Previous: "D", At: time.UnixMilli(1234).UTC(), MessageID: "m1", Kind: KindAlias}
	b, err := EncodeLink(l)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"identifier":"anonymous_id:a:b","canonical_id":"U","previous_canonical_id":"D","at":"1970-01-01T00:00:01.234Z","message_id":"m1","kind":"alias"}`
	if string(b) != want {
		t.Fatalf("encoded %s\nwant    %s", b, want)
	}
	got, err := DecodeLink(b)
	if err != nil || !reflect.DeepEqual(got, l) {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	f := func(in, want string) {
		t.Helper()
		if _, err := DecodeLink([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: got %v, want %q", in, err, want)
		}
	}
	f(`{`, "cannot decode identity link")
	f(`{"identifier":"nokind","canonical_id":"U"}`, "want kind:value")
	f(`{"identifier":"user_id:U"}`, "no canonical_id")
}

func TestRequestAndProfileCodec(t *testing.T) {
	r := Request{From: Identifier{KindPrevious, "p"}, To: User("U"), Kind: KindAlias, At: time.UnixMilli(5).UTC(), MessageID: "m"}
	b, err := EncodeRequest(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRequest(b)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("request %+v, %v", got, err)
	}
	if _, err := DecodeRequest([]byte(`{"from":"a:1","to":"user_id:U","kind":"merge"}`)); err == nil || !strings.Contains(err.Error(), `unknown kind "merge"`) {
		t.Fatalf("bad kind: %v", err)
	}
	p := &Profile{Root: User("U"), Members: []Member{{ID: User("U"), At: time.UnixMilli(1).UTC(), MessageID: "m"}, {ID: Anonymous("A"), At: time.UnixMilli(2).UTC()}}}
	if b, err = EncodeProfile(p); err != nil {
		t.Fatal(err)
	}
	q, err := DecodeProfile(b)
	if err != nil || !reflect.DeepEqual(p, q) {
		t.Fatalf("profile %+v, %v", q, err)
	}
}
