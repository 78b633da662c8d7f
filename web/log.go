package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/internal/text"
)

// maxLogPage bounds the log text a page shows (its end); the raw log
// (?raw=1) has all of it.
const maxLogPage = 512 << 10

type logData struct {
	B       coordinator.Build
	Attempt int
	Text    string
	Skipped int64 // bytes before the part shown
	Offset  int64 // bytes read so far: where the live stream continues
	Live    bool
	Missing string
}

// logPage shows an attempt's log (?attempt=N, default the latest); while
// the attempt runs the page follows it with server-sent events from the
// same URL (Accept: text/event-stream), and ?raw=1 is the whole log as
// text.
func (h *Handler) logPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	b, err := h.coord.Build(ctx, r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	n, err := intParam(r, "attempt")
	if err != nil || n > int64(len(b.Attempts)) {
		badRequest(w, "attempt must be a number from 1 to %d", len(b.Attempts))
		return
	}
	attempt := int(n)
	if attempt == 0 {
		attempt = len(b.Attempts)
	}
	if strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		h.logStream(w, r, b.ID, attempt)
		return
	}
	if r.URL.Query().Get("raw") != "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := h.coord.CopyLog(ctx, w, b.ID, attempt, false); err != nil && !errors.Is(err, coordinator.ErrNoLog) {
			h.log.Warn("web: raw log", "build", b.ID, "err", err)
		}
		return
	}
	d := logData{B: b, Attempt: attempt}
	if attempt > 0 {
		tail := &tailWriter{max: maxLogPage}
		err := h.coord.CopyLog(ctx, tail, b.ID, attempt, false)
		switch {
		case errors.Is(err, coordinator.ErrNoLog):
			d.Missing = "no log has arrived for this attempt yet"
		case err != nil:
			h.fail(w, r, err)
			return
		}
		d.Text, d.Skipped, d.Offset = logText(tail.bytes()), tail.total-int64(len(tail.buf)), tail.total
		d.Live = b.Attempts[attempt-1].EndedAt.IsZero()
	} else {
		d.Missing = "the build has not run yet"
		d.Live = !b.State.Terminal()
	}
	h.render(w, r, http.StatusOK, "log", "Log of build "+b.ID, "builds", d)
}

// logStream sends the attempt's log from ?from= on as server-sent events
// (one "log" event per chunk, its data a JSON string of cleaned text) until
// the attempt ends, then an "end" event.
func (h *Handler) logStream(w http.ResponseWriter, r *http.Request, buildID string, attempt int) {
	from, err := intParam(r, "from")
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported here", http.StatusNotImplemented)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	sw := &sseWriter{w: w, fl: fl, skip: from}
	err = h.coord.CopyLog(r.Context(), sw, buildID, attempt, true)
	if err != nil && !errors.Is(err, coordinator.ErrNoLog) {
		h.log.Info("web: log stream ended", "build", buildID, "attempt", attempt, "err", err)
	}
	fmt.Fprint(w, "event: end\ndata: {}\n\n")
	fl.Flush()
}

// sseWriter turns log writes into events, after skipping what the page
// already showed. A UTF-8 sequence cut at a write's end waits for the next.
type sseWriter struct {
	w    http.ResponseWriter
	fl   http.Flusher
	skip int64
	part []byte
}

func (s *sseWriter) Write(p []byte) (int, error) {
	n := len(p)
	if s.skip > 0 {
		k := min(int64(len(p)), s.skip)
		p, s.skip = p[k:], s.skip-k
	}
	if len(p) == 0 {
		return n, nil
	}
	buf := append(s.part, p...)
	cut := len(buf)
	for i := 1; i <= 3 && i <= len(buf); i++ {
		if c := buf[len(buf)-i]; c >= 0xc0 {
			if !utf8.FullRune(buf[len(buf)-i:]) {
				cut = len(buf) - i
			}
			break
		} else if c < 0x80 {
			break
		}
	}
	s.part = append([]byte(nil), buf[cut:]...)
	data, err := json.Marshal(logText(buf[:cut]))
	if err != nil {
		return 0, err
	}
	if _, err := fmt.Fprintf(s.w, "event: log\ndata: %s\n\n", data); err != nil {
		return 0, err
	}
	s.fl.Flush()
	return n, nil
}

// tailWriter keeps the last max bytes written and counts them all.
type tailWriter struct {
	max   int
	buf   []byte
	total int64
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.total += int64(len(p))
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailWriter) bytes() []byte { return t.buf }

// logText makes builder output safe to show as text: newlines and tabs
// stay, terminal escape sequences (colours, cursor moves) are dropped, a
// carriage return before a newline goes, and other control characters and
// bytes that are not UTF-8 are written as escapes (internal/text).
func logText(p []byte) string {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); {
		c := p[i]
		switch {
		case c == 0x1b && i+1 < len(p) && p[i+1] == '[':
			j := i + 2
			for j < len(p) && (p[j] < 0x40 || p[j] > 0x7e) {
				j++
			}
			i = j + 1
			continue
		case c == '\r' && i+1 < len(p) && p[i+1] == '\n':
			i++
			continue
		case c == '\n' || c == '\t':
			b.WriteByte(c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(p[i:])
		if r == utf8.RuneError && size <= 1 || r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			b.WriteString(text.Escape(string(p[i : i+size])))
		} else {
			b.Write(p[i : i+size])
		}
		i += size
	}
	return b.String()
}
