// Package web is the coordinator's read-only web interface: server-rendered
// pages (html/template) of the farm's queue, builds, logs, agents and
// events, with their CSS and one small script embedded, nothing fetched
// from elsewhere. It reads everything through the coordinator's API, never
// the store, and every listing is a page of an index-backed query, so the
// pages cost about the same with a million builds (bench/web.sh).
//
// The handler is served two ways by the program: on --web-listen (plain
// HTTP, for a reverse proxy) and inside the SSH port at web.gbc:80 (sshd's
// virtual hosts, reader role and above).
package web

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/coordinator"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// securityHeaders go on every response: nothing but this origin may
// supply scripts, styles, images or connections, no page may frame these,
// and nothing is sent to other sites.
var securityHeaders = [][2]string{
	{"Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"},
	{"X-Content-Type-Options", "nosniff"},
	{"X-Frame-Options", "DENY"},
	{"Referrer-Policy", "no-referrer"},
	{"Cross-Origin-Opener-Policy", "same-origin"},
}

// Config wires the web interface.
type Config struct {
	Coordinator *coordinator.Coordinator
	// Cache, when set, is the binary cache's handler, served under
	// /cache/ so a build page's narinfo and NAR links work whichever way
	// the interface is reached.
	Cache  http.Handler
	Logger *slog.Logger
	Clock  clock.Clock
	// Title names the farm in every page's title (default "gbc").
	Title string
}

// Handler serves the pages.
type Handler struct {
	cfg   Config
	coord *coordinator.Coordinator
	log   *slog.Logger
	clk   clock.Clock
	pages map[string]*template.Template
	mux   *http.ServeMux
}

// New parses the templates and returns the handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Coordinator == nil {
		return nil, errors.New("web: no coordinator")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Title == "" {
		cfg.Title = "gbc"
	}
	h := &Handler{cfg: cfg, coord: cfg.Coordinator, log: cfg.Logger, clk: cfg.Clock, pages: map[string]*template.Template{}}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("web: list templates: %w", err)
	}
	for _, n := range names {
		page := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if page == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(h.funcs()).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("web: parse %s: %w", n, err)
		}
		h.pages[page] = t
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("web: static files: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.overview)
	mux.HandleFunc("GET /builds", h.builds)
	mux.HandleFunc("GET /builds/{id}", h.build)
	mux.HandleFunc("GET /builds/{id}/log", h.logPage)
	mux.HandleFunc("GET /agents", h.agents)
	mux.HandleFunc("GET /agents/{id}", h.agent)
	mux.HandleFunc("GET /events", h.events)
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	if cfg.Cache != nil {
		mux.Handle("GET /cache/", http.StripPrefix("/cache", cfg.Cache))
	}
	h.mux = mux
	return h, nil
}

// ServeHTTP serves GET and HEAD only (nothing here changes anything), with
// the security headers on every answer.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, kv := range securityHeaders {
		w.Header().Set(kv[0], kv[1])
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "the web interface is read-only", http.StatusMethodNotAllowed)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// page is what every template gets: the layout's fields and the page's own.
type page struct {
	Title string
	Farm  string
	Nav   string // which menu entry is current
	Now   time.Time
	Data  any
}

// render executes a page into memory first, so a template error is a 500
// and not half a page.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name, title, nav string, data any) {
	t, ok := h.pages[name]
	if !ok {
		h.fail(w, r, fmt.Errorf("no template %q", name))
		return
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, page{Title: title, Farm: h.cfg.Title, Nav: nav, Now: h.clk.Now(), Data: data}); err != nil {
		h.fail(w, r, fmt.Errorf("render %s: %w", name, err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes()) //nolint:errcheck // the client went away
}

// fail answers 404 for what does not exist and 500 for the rest (logged).
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, coordinator.ErrNotFound) {
		h.notFound(w, r, err.Error())
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	h.log.Error("web page failed", "path", r.URL.Path, "err", err)
	http.Error(w, "internal error (the coordinator's log says more)", http.StatusInternalServerError)
}

func (h *Handler) notFound(w http.ResponseWriter, r *http.Request, msg string) {
	h.render(w, r, http.StatusNotFound, "notfound", "Not found", "", msg)
}

// badRequest answers 400 with what was wrong.
func badRequest(w http.ResponseWriter, format string, a ...any) {
	http.Error(w, fmt.Sprintf(format, a...), http.StatusBadRequest)
}

// intParam reads a non-negative integer query parameter (0 when absent).
func intParam(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s=%q is not a non-negative integer", name, truncate(v, 40))
	}
	return n, nil
}
