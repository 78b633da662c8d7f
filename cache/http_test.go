package cache

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/compression"
)

func readLog(t *testing.T, c *Cache, drv string) string {
	t.Helper()
	f, err := os.Open(filepath.Join(c.Dir(), "log", filepath.Base(drv)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := compression.NewReader(f, c.opts.Compression)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHandler(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, t.TempDir(), Options{})
	e, file := fakeUpload(t, strings.Repeat("nar contents ", 100))
	e.StorePath = pathA
	if err := c.Publish(ctx, e, file); err != nil {
		t.Fatal(err)
	}
	ni, _ := c.Lookup(pathA)
	narBytes, _ := os.ReadFile(filepath.Join(c.Dir(), ni.URL))
	drv := "/nix/store/0hm2f1psjpcwg8fijsmr4wwxrx59s092-bar.drv"
	if err := c.WriteLog(ctx, drv, strings.NewReader("hello log\n")); err != nil {
		t.Fatal(err)
	}
	// Files the handler must never expose.
	os.WriteFile(filepath.Join(c.Dir(), "nar", tmpPrefix+"spool-1"), []byte("partial"), 0o644)
	os.WriteFile(filepath.Join(c.spoolDirs[0], tmpPrefix+"1"), []byte("partial"), 0o644)
	os.WriteFile(filepath.Join(c.Dir(), "secret"), []byte("x"), 0o644)
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()

	type want struct {
		status   int
		ctype    string
		encoding string
		body     string
	}
	hashPart := filepath.Base(pathA)[:32]
	tests := []struct {
		method, path, rng string
		want              want
	}{
		{"GET", "/nix-cache-info", "", want{200, "text/x-nix-cache-info", "", "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"}},
		{"GET", "/" + hashPart + ".narinfo", "", want{200, "text/x-nix-narinfo", "", "StorePath: " + pathA + "\n"}},
		{"HEAD", "/" + hashPart + ".narinfo", "", want{200, "text/x-nix-narinfo", "", ""}},
		{"GET", "/" + ni.URL, "", want{200, "application/x-nix-nar", "", string(narBytes)}},
		{"GET", "/" + ni.URL, "bytes=3-9", want{206, "application/x-nix-nar", "", string(narBytes[3:10])}},
		{"HEAD", "/" + ni.URL, "", want{200, "application/x-nix-nar", "", ""}},
		{"GET", "/log/" + filepath.Base(drv), "", want{200, "text/plain; charset=utf-8", "zstd", ""}},
		{"GET", "/log/" + filepath.Base(pathA), "", want{404, "", "", ""}},
		{"GET", "/log/" + filepath.Base(drv), "gzip", want{200, "text/plain; charset=utf-8", "", "hello log\n"}},
		{"GET", "/0000000000000000000000000000000a.narinfo", "", want{404, "", "", ""}},
		{"GET", "/", "", want{404, "", "", ""}},
		{"GET", "/nar/", "", want{404, "", "", ""}},
		{"GET", "/log/", "", want{404, "", "", ""}},
		{"GET", "/nar", "", want{404, "", "", ""}},
		{"GET", "/secret", "", want{404, "", "", ""}},
		{"GET", "/nar/" + tmpPrefix + "spool-1", "", want{404, "", "", ""}},
		{"GET", "/nar/" + filepath.Base(c.spoolDirs[0]) + "/" + tmpPrefix + "1", "", want{404, "", "", ""}},
		{"GET", "/nar/" + filepath.Base(c.spoolDirs[0]), "", want{404, "", "", ""}},
		{"GET", "/nar/../secret", "", want{404, "", "", ""}},
		{"GET", "/nar/..%2fsecret", "", want{404, "", "", ""}},
		{"GET", "/log/..%2f..%2fetc%2fpasswd", "", want{404, "", "", ""}},
		{"GET", "/nar/" + strings.TrimPrefix(ni.URL, "nar/") + ".bak", "", want{404, "", "", ""}},
		{"GET", "/x/" + hashPart + ".narinfo", "", want{404, "", "", ""}},
		{"POST", "/nix-cache-info", "", want{405, "", "", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path+" "+tt.rng, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			req.URL.RawPath = "" // keep %2f as sent
			req.URL.Opaque = "//" + strings.TrimPrefix(srv.URL, "http://") + tt.path
			switch {
			case strings.HasPrefix(tt.path, "/log/") && tt.rng != "":
				req.Header.Set("Accept-Encoding", tt.rng)
			case tt.rng != "":
				req.Header.Set("Range", tt.rng)
			}
			if req.Header.Get("Accept-Encoding") == "" {
				// Go's client would otherwise ask for gzip itself.
				req.Header.Set("Accept-Encoding", "zstd, identity")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.want.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.want.status, body)
			}
			if tt.want.status >= 300 {
				return
			}
			if got := resp.Header.Get("Content-Type"); got != tt.want.ctype {
				t.Errorf("content type %q, want %q", got, tt.want.ctype)
			}
			if got := resp.Header.Get("Content-Encoding"); got != tt.want.encoding {
				t.Errorf("content encoding %q, want %q", got, tt.want.encoding)
			}
			if tt.method == "HEAD" {
				if len(body) != 0 || resp.ContentLength <= 0 {
					t.Errorf("HEAD: body %d bytes, length %d", len(body), resp.ContentLength)
				}
				return
			}
			if tt.want.body != "" && !strings.HasPrefix(string(body), tt.want.body) {
				t.Errorf("body %q, want prefix %q", body, tt.want.body)
			}
		})
	}
}

// Directory requests and dot segments never reach the filesystem, even
// when sent raw (no client-side cleaning).
func TestHandlerRawPaths(t *testing.T) {
	c := openCache(t, t.TempDir(), Options{})
	for _, p := range []string{"/nar/../nix-cache-info", "/log/../../etc/passwd", "/./nix-cache-info/", "//nix-cache-info", "/nar/./"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "http://x"+p, nil)
		req.URL.Path = p
		c.Handler().ServeHTTP(rec, req)
		if rec.Code != 404 {
			t.Errorf("%s: status %d", p, rec.Code)
		}
	}
}
