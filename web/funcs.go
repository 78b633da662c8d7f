package web

import (
	"fmt"
	"html/template"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/internal/text"
)

func (h *Handler) funcs() template.FuncMap {
	return template.FuncMap{
		"ts": timestamp,
		"hour": func(t time.Time) string {
			return t.UTC().Format("2006-01-02\u00a015:04") + "–" + t.Add(time.Hour).UTC().Format("15:04")
		},
		"ago":      func(t time.Time) string { return ago(h.clk.Now(), t) },
		"dur":      duration,
		"bytes":    humanBytes,
		"state":    stateClass,
		"drvName":  drvName,
		"clean":    text.Escape,
		"lines":    func(s string) string { return logText([]byte(s)) },
		"short":    shortID,
		"truncate": truncate,
		// href is a link to path with the query v (already encoded here,
		// so the template does not encode it again).
		"href": func(path string, v url.Values) template.URL { return template.URL(path + "?" + v.Encode()) },
		"add":  func(a, b int) int { return a + b },
		"cls":  func(s string) string { return strings.ReplaceAll(s, " ", "-") },
	}
}

// timestamp is t in UTC to the second; "–" for never.
func timestamp(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02\u00a015:04:05") // one line in a table cell
}

// ago says how long before now t was, roughly.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + roughDuration(-d)
	}
	return roughDuration(d) + " ago"
}

func roughDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
}

// duration is from a to b (b zero: still going, "–" when a is zero).
func duration(a, b time.Time) string {
	if a.IsZero() || b.IsZero() {
		return "–"
	}
	d := b.Sub(a)
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	default:
		return roughDuration(d)
	}
}

// humanBytes prints a size with a binary unit.
func humanBytes(n any) string {
	var v float64
	switch x := n.(type) {
	case int64:
		v = float64(x)
	case uint64:
		v = float64(x)
	case int:
		v = float64(x)
	default:
		return fmt.Sprint(n)
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", v)
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// stateClass is the CSS class of a build state's badge.
func stateClass(s coordinator.BuildState) string {
	switch s {
	case coordinator.StateSucceeded:
		return "ok"
	case coordinator.StateFailed, coordinator.StateFailedDependency:
		return "bad"
	case coordinator.StateAllocated, coordinator.StateStarted:
		return "run"
	case coordinator.StateCanceled:
		return "off"
	}
	return "wait"
}

// drvName is a derivation's name: its base name without the hash and
// ".drv" (what the builds page filters by).
func drvName(path string) string {
	base := path[strings.LastIndexByte(path, '/')+1:]
	base = strings.TrimSuffix(base, ".drv")
	if i := strings.IndexByte(base, '-'); i == 32 {
		return base[i+1:]
	}
	return base
}

// truncate shortens s to n runes, marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// shortID is the end of an id: build ids are UUIDv7, whose start is the
// submission time and is the same for a batch; the end tells them apart.
func shortID(id string) string {
	const keep = 12
	if utf8.RuneCountInString(id) <= keep+1 {
		return id
	}
	r := []rune(id)
	return "…" + string(r[len(r)-keep:])
}
