package derivation

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// vector is a .drv from testdata with the store path it has (or should have).
type vector struct {
	file, storePath string
	raw             []byte
}

func vectors(t testing.TB) []vector {
	t.Helper()
	files, err := filepath.Glob("testdata/*.drv*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors: %v", err)
	}
	var vs []vector
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		base := filepath.Base(f)
		var sp string
		switch {
		case base == "py-made.drv-contents":
			// The daemon accepted it at this path (session4 transcript).
			sp = "/nix/store/asw8rxqpn4y1iya11wwxnq2m112dvivf-py-made.drv"
		case base == "guix-minimal.drv-contents":
			sp = "/gnu/store/w9krgvil6919s2ghqgx443zb9krx75s6-minimal.drv"
		case strings.HasSuffix(base, "-hello-gnu.drv"):
			sp = "/gnu/store/" + base
		default:
			sp = "/nix/store/" + base
		}
		vs = append(vs, vector{file: f, storePath: sp, raw: b})
	}
	return vs
}

func TestRoundTripAndDrvPath(t *testing.T) {
	for _, v := range vectors(t) {
		t.Run(filepath.Base(v.file), func(t *testing.T) {
			d, err := Parse(v.raw)
			if err != nil {
				t.Fatal(err)
			}
			if got := d.Bytes(); !bytes.Equal(got, v.raw) {
				t.Fatalf("print(parse(x)) differs:\n got %q\nwant %q", got, v.raw)
			}
			p, err := d.DrvPath()
			if err != nil {
				t.Fatal(err)
			}
			if p != v.storePath {
				t.Fatalf("DrvPath = %s, want %s", p, v.storePath)
			}
		})
	}
}

// closure maps every vector's store path to its parse, so inputs resolve.
func closure(t testing.TB) map[string]*Derivation {
	t.Helper()
	m := map[string]*Derivation{}
	for _, v := range vectors(t) {
		d, err := Parse(v.raw)
		if err != nil {
			t.Fatal(err)
		}
		m[v.storePath] = d
	}
	return m
}

func TestOutputPathsRecompute(t *testing.T) {
	c := closure(t)
	res := Resolver(c)
	for p, d := range c {
		t.Run(filepath.Base(p), func(t *testing.T) {
			if err := d.VerifyOutputs(res); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestHashModuloFODInput(t *testing.T) {
	c := closure(t)
	fod := c["/nix/store/fl0vfqaxxp70ns8ylxagksmk7k33jbf1-fod-flat.txt.drv"]
	// A FOD's hash ignores masking, builder and env: only the output counts.
	a, _ := HashModulo(fod, false, nil)
	b, _ := HashModulo(fod, true, nil)
	changed := *fod
	changed.Builder = "/bin/other"
	cHash, _ := HashModulo(&changed, false, nil)
	if !bytes.Equal(a, b) || !bytes.Equal(a, cHash) {
		t.Fatalf("FOD hash depends on masking or builder: %x %x %x", a, b, cHash)
	}
	// uses-fod's outputs only recompute if FOD inputs use the fixed form.
	u := c["/nix/store/i62jjqn5hz0k8r79dwj7vag37yx3b5rh-uses-fod.drv"]
	if err := u.VerifyOutputs(Resolver(c)); err != nil {
		t.Fatal(err)
	}
	_, err := HashModulo(u, true, func(string) ([]byte, error) { return nil, errors.New("boom") })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("resolver error not propagated: %v", err)
	}
}

func TestResolverCycleAndMissing(t *testing.T) {
	c := closure(t)
	multi := "/nix/store/8mw0g9pf9bk0iaxmykh5in4x672fpqv0-multi.drv"
	simple := "/nix/store/fddm4k6zgckh82rck3n31awvwvh86p98-simple.drv"
	cyc := *c[simple]
	cyc.InputDrvs = []InputDrv{{Path: multi, Outputs: []string{"out"}}}
	c[simple] = &cyc
	if _, err := Resolver(c)(multi); !errors.Is(err, errCycle) {
		t.Fatalf("cycle: got %v", err)
	}
	delete(c, simple)
	if _, err := Resolver(c)(multi); err == nil || !strings.Contains(err.Error(), "not in closure") {
		t.Fatalf("missing: got %v", err)
	}
}

func TestReadClosure(t *testing.T) {
	root := t.TempDir()
	store := filepath.Join(root, "nix", "store")
	if err := os.MkdirAll(store, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range vectors(t) {
		if strings.HasPrefix(v.storePath, "/nix/store/") {
			if err := os.WriteFile(filepath.Join(root, v.storePath), v.raw, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	multi := "/nix/store/8mw0g9pf9bk0iaxmykh5in4x672fpqv0-multi.drv"
	c, err := ReadClosure(root, multi)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range c {
		keys = append(keys, filepath.Base(k))
	}
	slices.Sort(keys)
	want := []string{"8mw0g9pf9bk0iaxmykh5in4x672fpqv0-multi.drv", "dzz8i63ljh2cdafy8vgqh0mp92nsq45j-escapes.drv", "fddm4k6zgckh82rck3n31awvwvh86p98-simple.drv"}
	if !reflect.DeepEqual(keys, want) {
		t.Fatalf("closure = %v, want %v", keys, want)
	}
	if err := c[multi].VerifyOutputs(Resolver(c)); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(root, "/nix/store/fddm4k6zgckh82rck3n31awvwvh86p98-simple.drv"))
	if _, err := ReadClosure(root, multi); err == nil || !strings.Contains(err.Error(), "simple.drv") {
		t.Fatalf("missing input: %v", err)
	}
	if _, err := ReadClosure(root, "/nix/store/not-a-path"); err == nil {
		t.Fatal("bad root path accepted")
	}
}

func TestAccessors(t *testing.T) {
	c := closure(t)
	multi := c["/nix/store/8mw0g9pf9bk0iaxmykh5in4x672fpqv0-multi.drv"]
	if v, ok := multi.Getenv("outputs"); !ok || v != "out dev lib" {
		t.Errorf("Getenv(outputs) = %q %v", v, ok)
	}
	if _, ok := multi.Getenv("nope"); ok {
		t.Error("Getenv(nope) found")
	}
	if o, ok := multi.Output("dev"); !ok || o.Path != "/nix/store/9gv3rn872rkacw2cx8rby0pr2fzz955a-multi-dev" || o.IsFixed() {
		t.Errorf("Output(dev) = %+v %v", o, ok)
	}
	if multi.Name() != "multi" || multi.StoreDir() != "/nix/store" {
		t.Errorf("Name/StoreDir = %q %q", multi.Name(), multi.StoreDir())
	}
	g := c["/gnu/store/w9krgvil6919s2ghqgx443zb9krx75s6-minimal.drv"]
	if g.Name() != "minimal" || g.StoreDir() != "/gnu/store" {
		t.Errorf("guix Name/StoreDir = %q %q", g.Name(), g.StoreDir())
	}
	fod := c["/nix/store/q78zwwpr40n8a1j2zr34wlx5bpsradfv-fod-rec.drv"]
	if !fod.IsFixedOutput() || !fod.Outputs[0].IsFixed() {
		t.Error("fod-rec not fixed")
	}
	// Only a "dev" output with a path: name comes from stripping "-dev".
	onlyDev := &Derivation{Outputs: []Output{{Name: "dev", Path: "/nix/store/9gv3rn872rkacw2cx8rby0pr2fzz955a-multi-dev"}}}
	if onlyDev.Name() != "multi" {
		t.Errorf("onlyDev name %q", onlyDev.Name())
	}
	st := c["/nix/store/dapid0hrb2jhxglycwd3pnyn822hk4ri-structured.drv"]
	if st.Name() != "structured" {
		t.Errorf("structured name %q", st.Name())
	}
	floating := &Derivation{Outputs: []Output{{Name: "out", HashAlgo: "r:sha256"}}, Env: []EnvVar{{"name", "ca"}}}
	if floating.Name() != "ca" || floating.StoreDir() != "" {
		t.Errorf("floating Name/StoreDir = %q %q", floating.Name(), floating.StoreDir())
	}
}

func TestRequiredSystemFeatures(t *testing.T) {
	tests := []struct {
		name string
		env  []EnvVar
		want []string
	}{
		{"none", nil, nil},
		{"plain", []EnvVar{{"requiredSystemFeatures", " kvm\tbig-parallel\n"}}, []string{"kvm", "big-parallel"}},
		{"structured", []EnvVar{{"__json", `{"requiredSystemFeatures":["kvm","nixos-test"]}`}, {"requiredSystemFeatures", "ignored"}}, []string{"kvm", "nixos-test"}},
		{"bad json", []EnvVar{{"__json", `{`}}, nil},
	}
	for _, tc := range tests {
		d := &Derivation{Env: tc.env}
		if got := d.RequiredSystemFeatures(); !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Bytes sorts what a caller built by hand, so hashes match Nix's.
func TestBytesSorts(t *testing.T) {
	c := closure(t)
	orig := c["/nix/store/8mw0g9pf9bk0iaxmykh5in4x672fpqv0-multi.drv"]
	want := orig.Bytes()
	d := *orig
	d.Outputs = slices.Clone(orig.Outputs)
	slices.Reverse(d.Outputs)
	d.InputDrvs = slices.Clone(orig.InputDrvs)
	slices.Reverse(d.InputDrvs)
	d.Env = slices.Clone(orig.Env)
	slices.Reverse(d.Env)
	if got := d.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("unsorted derivation printed as\n%s\nwant\n%s", got, want)
	}
	if !slices.IsSortedFunc(orig.Env, cmpEnv) {
		t.Fatal("Bytes modified the original")
	}
}

func TestParseErrors(t *testing.T) {
	c := closure(t)
	good := string(c["/nix/store/czia972qp0vp2385vx5jk7y24jpdlpg1-wire-fail.drv"].Bytes())
	const out = `("out","/nix/store/wcsd771xpsm22fi3r9cyr2w9y19vpl0s-wire-fail","","")`
	const rest = `,[],[],"x86_64-linux","/bin/sh",[],[])`
	fod := func(algo, hash string) string {
		return `Derive([("out","/nix/store/z14qj669mh19b3xwlhzri8hrprd2dz09-fod-flat.txt","` + algo + `","` + hash + `")]` + rest
	}
	const h = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
	tests := []struct {
		name, in string
		off      int
		msg      string
	}{
		{"empty", "", 0, `expected "Derive("`},
		{"truncated", good[:100], 100, "end of input"},
		{"trailing newline", good + "\n", len(good), "trailing data"},
		{"whitespace", "Derive( [" + out + "]" + rest, 7, `expected "["`},
		{"no outputs", "Derive([]" + rest, 7, "no outputs"},
		{"bad escape", `Derive([` + out + `],[],[],"x86\a","/bin/sh",[],[])`, 89, `escape \a`},
		{"unterminated string", `Derive([("out`, 9, "unterminated string"},
		{"escape at end", `Derive([("out\`, 13, "unterminated escape"},
		{"bad output path", `Derive([("out","/nix/store/x-y","","")]` + rest, 15, "output path of out"},
		{"relative path", `Derive([("out","nix/store/wcsd771xpsm22fi3r9cyr2w9y19vpl0s-wire-fail","","")]` + rest, 15, "not absolute"},
		{"unsorted outputs", `Derive([("out","/nix/store/wcsd771xpsm22fi3r9cyr2w9y19vpl0s-wire-fail","",""),("dev","/nix/store/wcsd771xpsm22fi3r9cyr2w9y19vpl0s-wire-fail-dev","","")]` + rest, 79, "out of order"},
		{"duplicate outputs", `Derive([` + out + `,` + out + `]` + rest, 79, "duplicate output"},
		{"bad output name", `Derive([("a b","/nix/store/wcsd771xpsm22fi3r9cyr2w9y19vpl0s-wire-fail","","")]` + rest, 9, "output name"},
		{"mixed stores", `Derive([` + out + `],[],["/gnu/store/jsm6g4dvrnwhy98w27qxy17p1kqrzhr6-src.txt"],"","",[],[])`, 83, "earlier paths are in"},
		{"unsorted srcs", `Derive([` + out + `],[],["/nix/store/zzm6g4dvrnwhy98w27qxy17p1kqrzhr6-b","/nix/store/jsm6g4dvrnwhy98w27qxy17p1kqrzhr6-a"],"","",[],[])`, 131, "out of order"},
		{"input not drv", `Derive([` + out + `],[("/nix/store/jsm6g4dvrnwhy98w27qxy17p1kqrzhr6-src.txt",["out"])],[],"","",[],[])`, 81, "does not end in .drv"},
		{"unsorted input outputs", `Derive([` + out + `],[("/nix/store/jsm6g4dvrnwhy98w27qxy17p1kqrzhr6-a.drv",["out","dev"])],[],"","",[],[])`, 140, "out of order"},
		{"duplicate env", `Derive([` + out + `],[],[],"","",[],[("a","1"),("a","2")])`, 106, "duplicate env var"},
		{"missing comma", `Derive([` + out + `][],[],"","",[],[])`, 78, `expected ","`},
		{"list separator", `Derive([` + out + `;`, 77, "expected ',' or ']'"},
		{"fod unknown algo", fod("sha3", h), 74, "unknown hash algorithm"},
		{"fod short hash", fod("sha256", h[:10]), 83, "hex digits"},
		{"fod upper hex", fod("sha256", strings.ToUpper(h)), 83, "lowercase hex"},
		{"fod hash no algo", fod("", h), 77, "no hash algorithm"},
		{"fixed on two outputs", `Derive([("dev","/nix/store/z14qj669mh19b3xwlhzri8hrprd2dz09-x-dev","",""),("out","/nix/store/z14qj669mh19b3xwlhzri8hrprd2dz09-x","sha256","` + h + `")]` + rest, 138, "single output"},
		{"fixed without path", `Derive([("out","","sha256","` + h + `")]` + rest, 15, "no path"},
		{"floating with path", fod("r:sha256", ""), 15, "has a path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a ParseError", err)
			}
			if pe.Offset != tc.off || !strings.Contains(pe.Msg, tc.msg) {
				t.Fatalf("got offset %d %q (at %q), want offset %d containing %q", pe.Offset, pe.Msg, tc.in[pe.Offset:min(len(tc.in), pe.Offset+12)], tc.off, tc.msg)
			}
		})
	}
	if _, err := Parse(make([]byte, MaxSize+1)); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("oversize: %v", err)
	}
}

func TestAcceptsCAForms(t *testing.T) {
	const rest = `,[],[],"x86_64-linux","/bin/sh",[],[("out","")])`
	for _, in := range []string{
		`Derive([("out","","r:sha256","")]` + rest,       // floating CA
		`Derive([("out","","","")]` + rest,               // deferred
		`Derive([("out","","r:sha256","impure")]` + rest, // impure
	} {
		d, err := Parse([]byte(in))
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if string(d.Bytes()) != in {
			t.Errorf("round trip %s", in)
		}
		if d.IsFixedOutput() {
			t.Errorf("%s: counted as fixed", in)
		}
	}
}

func TestMaskedHashDiffers(t *testing.T) {
	c := closure(t)
	d := c["/nix/store/czia972qp0vp2385vx5jk7y24jpdlpg1-wire-fail.drv"]
	a, _ := HashModulo(d, false, nil)
	b, _ := HashModulo(d, true, nil)
	if bytes.Equal(a, b) {
		t.Fatal("masking changed nothing")
	}
	if len(hex.EncodeToString(b)) != 64 {
		t.Fatal("not sha256")
	}
}

// The writer always escapes CR, LF and TAB; accepting them raw would break
// print(parse(x)) == x (found by FuzzParse).
func TestRejectsRawEscapedControls(t *testing.T) {
	for _, c := range []string{"\r", "\n", "\t"} {
		in := `Derive([("out","","","")],[],[],"","",[],[("a","x` + c + `")])`
		_, err := Parse([]byte(in))
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Offset != strings.Index(in, c) {
			t.Errorf("raw %q: err = %v", c, err)
		}
	}
}
