// Package layers_test holds the tree's import rules: which package may not
// depend on which. The rules are a table; the test reads the imports of
// every package's non-test files (with their build constraints) and fails
// on a dependency a rule forbids, naming the chain of imports that makes it.
package layers_test

import (
	"bufio"
	"fmt"
	"go/build"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// rule forbids packages matching from to depend on packages matching to:
// directly when direct is set, otherwise through any chain of imports. A
// pattern is a package path relative to the module, or a path followed by
// "/..." for it and everything under it.
type rule struct {
	from, to []string
	direct   bool
	why      string
}

var formats = []string{"archive", "compression", "derivation", "nar", "narinfo", "nixhash", "protocol", "signing", "storepath", "storedaemon", "internal/..."}

func rules() []rule {
	return []rule{
		{
			from: []string{"sshd", "web"}, to: []string{"db/..."}, direct: true,
			why: "the SSH commands and the web interface talk to the coordinator, which owns the store and names the types its API uses (coordinator/types.go)",
		},
		{
			from: []string{"sshd", "web", "coordinator", "scheduler/...", "hooks", "cache", "agent/..."},
			to:   []string{"db/sqlstore", "db/sqlite", "db/postgres", "db/open", "db/migrate", "db/dbtest", "migrations"},
			why:  "only the program (cmd/gbc) chooses and opens a store; the rest sees the db.Store interface",
		},
		{
			from: []string{"agent/..."}, to: []string{"coordinator", "sshd", "db/...", "scheduler/...", "hooks", "cache"},
			why: "an agent is another machine: it shares the protocol with the coordinator, not its code",
		},
		{
			from: []string{"scheduler/..."}, to: []string{"db/...", "coordinator", "sshd", "hooks"},
			why: "the scheduler is the in-memory queue; the coordinator feeds it from the store",
		},
		{
			from: []string{"coordinator"}, to: []string{"sshd", "hooks", "agent/..."},
			why: "the coordinator is called by the SSH layer and calls no hook code; the built-in hooks are wired by the program",
		},
		{
			from: formats, to: []string{"coordinator", "sshd", "db/...", "agent/...", "scheduler/...", "hooks", "cache"},
			why: "formats and helpers sit below every layer",
		},
		{
			from: []string{"..."}, to: []string{"cmd/...", "bench/..."},
			why: "nothing depends on the program or the benchmarks",
		},
	}
}

func TestImportRules(t *testing.T) {
	root, module := moduleRoot(t)
	g := loadGraph(t, root, module)
	if len(g) < 20 {
		t.Fatalf("found %d packages under %s; the walk is broken", len(g), root)
	}
	for _, r := range rules() {
		for _, pats := range [][]string{r.from, r.to} {
			for _, p := range pats {
				if len(matching(g, p)) == 0 {
					t.Errorf("rule %q: pattern %q matches no package (renamed?)", r.why, p)
				}
			}
		}
	}
	for _, v := range violations(g, rules()) {
		t.Error(v)
	}
}

// TestViolationsReported checks the checker on a small graph: a forbidden
// chain is reported with its path, a direct rule ignores longer chains,
// and an allowed edge passes.
func TestViolationsReported(t *testing.T) {
	g := graph{
		"sshd":        {"coordinator"},
		"coordinator": {"db"},
		"db":          nil,
		"agent":       {"protocol"},
		"protocol":    nil,
		"nar":         {"coordinator"},
	}
	rs := []rule{
		{from: []string{"sshd"}, to: []string{"db/..."}, direct: true, why: "direct"},
		{from: []string{"nar"}, to: []string{"db/..."}, why: "transitive"},
		{from: []string{"agent"}, to: []string{"db"}, why: "clean"},
	}
	got := violations(g, rs)
	want := []string{"nar depends on db (nar → coordinator → db): transitive"}
	if !slices.Equal(got, want) {
		t.Fatalf("violations = %q, want %q", got, want)
	}
	g["sshd"] = append(g["sshd"], "db")
	got = violations(g, rs)
	want = []string{"sshd imports db: direct", "nar depends on db (nar → coordinator → db): transitive"}
	if !slices.Equal(got, want) {
		t.Fatalf("after sshd imports db: violations = %q, want %q", got, want)
	}
}

// graph maps a package (relative to the module) to the module's packages
// its non-test files import.
type graph map[string][]string

func match(pattern, pkg string) bool {
	if pattern == "..." {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pkg == pattern
}

func matchAny(patterns []string, pkg string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return match(p, pkg) })
}

func matching(g graph, pattern string) []string {
	var out []string
	for p := range g {
		if match(pattern, p) {
			out = append(out, p)
		}
	}
	return out
}

// violations lists, in rule order and then package order, each forbidden
// dependency once per (package, target) with the shortest import chain.
func violations(g graph, rs []rule) []string {
	pkgs := make([]string, 0, len(g))
	for p := range g {
		pkgs = append(pkgs, p)
	}
	slices.Sort(pkgs)
	var out []string
	for _, r := range rs {
		for _, p := range pkgs {
			// A package the rule forbids is not bound by it: bench/...
			// may import bench/internal/httpload.
			if !matchAny(r.from, p) || matchAny(r.to, p) {
				continue
			}
			if r.direct {
				deps := slices.Clone(g[p])
				slices.Sort(deps)
				for _, q := range deps {
					if matchAny(r.to, q) {
						out = append(out, fmt.Sprintf("%s imports %s: %s", p, q, r.why))
					}
				}
				continue
			}
			for _, chain := range forbiddenChains(g, p, r) {
				out = append(out, fmt.Sprintf("%s depends on %s (%s): %s", p, chain[len(chain)-1], strings.Join(chain, " → "), r.why))
			}
		}
	}
	return out
}

// forbiddenChains walks p's dependencies breadth first and returns, for
// each package the rule forbids, the shortest chain from p to it.
func forbiddenChains(g graph, p string, r rule) [][]string {
	prev := map[string]string{p: ""}
	queue := []string{p}
	var found [][]string
	for len(queue) > 0 {
		q := queue[0]
		queue = queue[1:]
		deps := slices.Clone(g[q])
		slices.Sort(deps)
		for _, d := range deps {
			if _, seen := prev[d]; seen {
				continue
			}
			prev[d] = q
			queue = append(queue, d)
			if matchAny(r.to, d) {
				chain := []string{d}
				for at := q; at != ""; at = prev[at] {
					chain = append([]string{at}, chain...)
				}
				found = append(found, chain)
			}
		}
	}
	return found
}

func moduleRoot(t *testing.T) (root, module string) {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		f, err := os.Open(filepath.Join(dir, "go.mod"))
		if err == nil {
			defer f.Close()
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if m, ok := strings.CutPrefix(sc.Text(), "module "); ok {
					return dir, strings.TrimSpace(m)
				}
			}
			t.Fatalf("%s/go.mod names no module", dir)
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = up
	}
}

// loadGraph reads the imports of every package under root: the files the
// current build constraints select, without _test.go files, skipping
// testdata and hidden directories as the go tool does.
func loadGraph(t *testing.T, root, module string) graph {
	t.Helper()
	g := graph{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		name := d.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		dir := filepath.Dir(path)
		if ok, err := build.Default.MatchFile(dir, name); err != nil {
			return fmt.Errorf("build constraints of %s: %w", path, err)
		} else if !ok {
			return nil
		}
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(rel)
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return fmt.Errorf("parse imports of %s: %w", path, err)
		}
		if _, ok := g[pkg]; !ok {
			g[pkg] = nil
		}
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return fmt.Errorf("%s: import %s: %w", path, imp.Path.Value, err)
			}
			if p == module {
				p = "."
			} else if local, ok := strings.CutPrefix(p, module+"/"); ok {
				p = local
			} else {
				continue
			}
			if !slices.Contains(g[pkg], p) {
				g[pkg] = append(g[pkg], p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}
