package web

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/sqlite"
)

const queuedID = "01a23746-71a6-7b48-b045-c32f42067237"

// newHandler is the web interface of a real coordinator on an empty
// SQLite farm.
func newHandler(t *testing.T) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(dir, "gbc.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	// One queued build, which no agent can take (there is none).
	if err := store.CreateBuilds(ctx, []db.NewBuild{{ID: queuedID, Derivation: "/nix/store/qmjlh9rwz1nji7m5aasfvv5jmvp3skha-hello-2.12.drv",
		System: "x86_64-linux", Outputs: []db.DerivationOutput{{Name: "out", Path: "/nix/store/pf90cis4fby2fik2a274yhizqh6p15d2-hello-2.12"}},
		InputDerivations: []string{}}}); err != nil {
		t.Fatal(err)
	}
	c, err := coordinator.New(ctx, coordinator.Config{StateDir: dir, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	h, err := New(Config{Coordinator: c})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, method, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestPagesOfAQueuedFarm: every page renders on a farm with one queued
// build and no agent, with the security headers; unknown ids are 404 pages, bad filters
// 400, and nothing but GET and HEAD is served.
func TestPagesOfAQueuedFarm(t *testing.T) {
	srv := newHandler(t)
	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/", 200, `<svg id="activity"`},
		{"/builds", 200, `href="/builds/` + queuedID + `"`},
		{"/builds?name=hello-2.12&system=x86_64-linux&state=scheduled", 200, `href="/builds/` + queuedID + `"`},
		{"/builds/" + queuedID, 200, `id="noagent"`},
		{"/builds/" + queuedID + "/log", 200, "the build has not run yet"},
		{"/builds/" + queuedID + "/log?attempt=3", 400, "attempt"},
		{"/builds?state=failed&system=x86_64-linux&name=hello&tag=jobset%3Dmain&agent=a", 200, "No build matches these filters"},
		{"/agents", 200, "No agent is registered"},
		{"/events", 200, `ev submitted">submitted`},
		{"/static/style.css", 200, "--queue"},
		{"/static/log.js", 200, "EventSource"},
		{"/builds/nope", 404, "no build"},
		{"/builds/nope/log", 404, "no build"},
		{"/agents/nope", 404, "Not found"},
		{"/nothing-here", 404, ""},
		{"/builds?state=lost", 400, "not a build state"},
		{"/builds?tag=novalue", 400, "KEY=VALUE"},
		{"/builds?before=-1", 400, "non-negative"},
		{"/builds?limit=100000", 400, "limit"},
		{"/builds?name=" + strings.Repeat("x", 2000), 400, "longer than"},
		{"/events?before=x", 400, "non-negative"},
	} {
		resp, body := get(t, http.MethodGet, srv.URL+tc.path)
		if resp.StatusCode != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s: %d, want %d with %q:\n%s", truncate(tc.path, 60), resp.StatusCode, tc.code, tc.want, truncate(body, 400))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", truncate(tc.path, 60), csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: headers %v", truncate(tc.path, 60), resp.Header)
		}
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		if resp, _ := get(t, m, srv.URL+"/builds"); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s /builds: %d, want 405", m, resp.StatusCode)
		}
	}
}

func TestLogText(t *testing.T) {
	for in, want := range map[string]string{
		"plain\nlines\tand tabs\n":              "plain\nlines\tand tabs\n",
		"\x1b[31mred\x1b[0m and \x1b[1;32mbold": "red and bold",
		"crlf\r\nline":                          "crlf\nline",
		"bell\a and \x00 nul":                   `bell\x07 and \x00 nul`,
		"bad \xff byte":                         `bad \xff byte`,
		"<script>x</script>":                    "<script>x</script>", // the template escapes it
		"ünïcödé ✓":                             "ünïcödé ✓",
	} {
		if got := logText([]byte(in)); got != want {
			t.Errorf("logText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDrvName(t *testing.T) {
	for in, want := range map[string]string{
		"/nix/store/qmjlh9rwz1nji7m5aasfvv5jmvp3skha-gbc-demo-top.drv": "gbc-demo-top",
		"/gnu/store/qmjlh9rwz1nji7m5aasfvv5jmvp3skha-hello-2.12.drv":   "hello-2.12",
		"/nix/store/short-x.drv": "short-x",
	} {
		if got := drvName(in); got != want {
			t.Errorf("drvName(%q) = %q, want %q", in, got, want)
		}
	}
}
