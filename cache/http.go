package cache

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/storepath"
)

// Content types as Nix's own HTTP binary caches (and Hydra) serve them.
const (
	typeCacheInfo = "text/x-nix-cache-info"
	typeNarinfo   = "text/x-nix-narinfo"
	typeNar       = "application/x-nix-nar"
	typeLog       = "text/plain; charset=utf-8"
)

// Handler serves the cache read-only over HTTP: /nix-cache-info,
// /<hash>.narinfo, /nar/<file> (with Range) and /log/<drv basename>.
// Every other path is 404 — no listings, and names are matched against
// strict patterns, so neither ".." nor temp files can be reached. GET and
// HEAD only.
func (c *Cache) Handler() http.Handler {
	return http.HandlerFunc(c.serveHTTP)
}

func (c *Cache) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	switch {
	case p == "/nix-cache-info":
		w.Header().Set("Content-Type", typeCacheInfo)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(c.info))
	case strings.HasSuffix(p, ".narinfo") && isHashPart(p[1:len(p)-len(".narinfo")]) && strings.Count(p, "/") == 1:
		hashPart := p[1 : len(p)-len(".narinfo")]
		c.serveFile(w, r, p[1:], typeNarinfo, "", func() { c.recordAccess(hashPart) })
	case strings.HasPrefix(p, "/nar/") && isNarName(p[len("/nar/"):]):
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable") // named by content hash
		c.serveFile(w, r, p[1:], typeNar, "", nil)
	case strings.HasPrefix(p, "/log/"):
		sp, err := storepath.ParseBase(p[len("/log/"):])
		if err != nil || !sp.IsDerivation() {
			http.NotFound(w, r)
			return
		}
		c.serveFile(w, r, p[1:], typeLog, c.opts.Compression, nil)
	default:
		http.NotFound(w, r)
	}
}

// serveFile serves rel (already validated) with ServeContent, which
// handles HEAD, Range and conditional requests. found, if set, runs once
// the object is open and before a byte of it is sent, so whatever it
// records is in place by the time the client has the answer.
func (c *Cache) serveFile(w http.ResponseWriter, r *http.Request, rel, ctype, encoding string, found func()) {
	f, err := c.store.Open(r.Context(), rel)
	if isNotExist(err) {
		http.NotFound(w, r)
		return
	}
	if err != nil {
		c.log.WarnContext(r.Context(), "serve from the store", "key", rel, "err", err)
		http.Error(w, "cache store unavailable", http.StatusServiceUnavailable)
		return
	}
	defer f.Close()
	if found != nil {
		found()
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	if encoding != "" && encoding != "none" {
		h.Add("Vary", "Accept-Encoding")
		if !acceptsEncoding(r.Header.Values("Accept-Encoding"), encoding) {
			// A client that lists encodings without ours gets plain
			// text, decoded on the fly (no Range on that path).
			dr, err := compression.NewReader(f, encoding)
			if err != nil {
				http.Error(w, "cannot decode stored log", http.StatusInternalServerError)
				return
			}
			defer dr.Close()
			if r.Method != http.MethodHead {
				io.Copy(w, dr)
			}
			return
		}
		// Nix sends no Accept-Encoding and decodes by Content-Encoding;
		// "zstd" and "gzip" are also the HTTP names browsers know.
		h.Set("Content-Encoding", encoding)
	}
	http.ServeContent(w, r, "", f.Info().ModTime, f)
}

// acceptsEncoding applies RFC 9110 §12.5.3 loosely: no header means any
// coding is fine; otherwise enc (or *) must be listed without q=0.
func acceptsEncoding(values []string, enc string) bool {
	if len(values) == 0 {
		return true
	}
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			name = strings.ToLower(strings.TrimSpace(name))
			if name != enc && name != "*" {
				continue
			}
			q := strings.ReplaceAll(strings.ToLower(params), " ", "")
			if q == "q=0" || q == "q=0.0" || q == "q=0.00" || q == "q=0.000" {
				continue
			}
			return true
		}
	}
	return false
}

func isHashPart(s string) bool {
	return len(s) == storepath.HashLen && storepath.IsBase32(s)
}

// isNarName accepts <52 base32>.nar plus a known compression suffix.
func isNarName(s string) bool {
	const n = 52
	if len(s) < n+4 || !storepath.IsBase32(s[:n]) || s[n:n+4] != ".nar" {
		return false
	}
	suffix := s[n+4:]
	if suffix == "" {
		return true
	}
	for _, name := range compression.Names() {
		if name != "none" && compression.Suffix(name) == suffix {
			return true
		}
	}
	return false
}
