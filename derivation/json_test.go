package derivation

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The .json vectors are real `nix show-derivation` output; we match them
// byte for byte, and as parsed JSON.
func TestShowJSONVectors(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.json")
	if len(files) != 7 {
		t.Fatalf("found %d .json vectors, want 7", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			d, err := ReadFile(strings.TrimSuffix(f, ".json") + ".drv")
			if err != nil {
				t.Fatal(err)
			}
			key := "/nix/store/" + strings.TrimSuffix(filepath.Base(f), ".json") + ".drv"
			got := ShowJSON(map[string]*Derivation{key: d})
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("our JSON does not parse: %v\n%s", err, got)
			}
			if err := json.Unmarshal(want, &w); err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(g, w) {
				t.Fatalf("JSON differs:\n got %s\nwant %s", got, want)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("same JSON but different bytes:\n got %q\nwant %q", got, want)
			}
		})
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestShowJSONEdgeCases(t *testing.T) {
	d := &Derivation{
		Outputs: []Output{{Name: "out", HashAlgo: "r:sha256"}},
		Env:     []EnvVar{{"bad", "a\xffb"}, {"ctl", "\x00\x1f\x7f<>&"}},
	}
	got := ShowJSON(map[string]*Derivation{"/nix/store/00000000000000000000000000000000-x.drv": d})
	var v map[string]struct {
		Outputs map[string]map[string]string
		Env     map[string]string
	}
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatalf("%v\n%s", err, got)
	}
	x := v["/nix/store/00000000000000000000000000000000-x.drv"]
	if x.Env["bad"] != "a\uFFFDb" || x.Env["ctl"] != "\x00\x1f\x7f<>&" {
		t.Errorf("env = %q", x.Env)
	}
	if o := x.Outputs["out"]; o["hashAlgo"] != "r:sha256" || o["path"] != "" || len(o) != 1 {
		t.Errorf("floating output = %v", o)
	}
	if string(ShowJSON(nil)) != "{}\n" {
		t.Errorf("empty = %q", ShowJSON(nil))
	}
}
