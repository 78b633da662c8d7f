// Package retention decides what the binary cache keeps: given the
// published paths with their references, pins, builds with their tags and
// ages, last accesses and the builds still queued or running, it returns
// the kept set with a reason for every kept path and the paths to delete,
// in an order that deletes a path only after every path that refers to
// it. It is pure: no I/O, no clock; the coordinator feeds it and does the
// deletions (coordinator/gc.go).
package retention

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Forever is the duration of a rule that keeps for ever.
const Forever time.Duration = -1

// Rule keeps the outputs of builds with tag Key=Value (Value "*": any
// value) for Keep after the build was submitted (Forever: for ever).
type Rule struct {
	Key, Value string
	Keep       time.Duration
}

func (r Rule) String() string {
	return r.Key + "=" + r.Value + ":" + FormatDuration(r.Keep)
}

// matches reports whether the tag matches the rule.
func (r Rule) matches(key, value string) bool {
	return key == r.Key && (r.Value == "*" || r.Value == value)
}

// ParseRule reads TAG=VALUE:DURATION, e.g. branch=master:forever or
// branch=*:30d.
func ParseRule(s string) (Rule, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Rule{}, fmt.Errorf("keep rule %q: want TAG=VALUE:DURATION", s)
	}
	kv, dur := s[:i], s[i+1:]
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" || v == "" {
		return Rule{}, fmt.Errorf("keep rule %q: want TAG=VALUE:DURATION (VALUE may be *)", s)
	}
	d, err := ParseDuration(dur)
	if err != nil {
		return Rule{}, fmt.Errorf("keep rule %q: %w", s, err)
	}
	return Rule{Key: k, Value: v, Keep: d}, nil
}

// ParseDuration reads "forever", Nd (days), Nw (weeks) or a Go duration
// (12h, 90m).
func ParseDuration(s string) (time.Duration, error) {
	if s == "forever" {
		return Forever, nil
	}
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseUint(n, 10, 31)
			if err != nil {
				return 0, fmt.Errorf("duration %q: want N%s", s, suffix)
			}
			return time.Duration(v) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("duration %q: want forever, Nd, Nw or a duration such as 12h", s)
	}
	return d, nil
}

// FormatDuration is the inverse of ParseDuration for whole days.
func FormatDuration(d time.Duration) string {
	switch {
	case d == Forever:
		return "forever"
	case d > 0 && d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}

// ParseSize reads a byte count with an optional K, M, G, T suffix (powers
// of 1024; KiB, MiB … and KB, MB … read the same).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(s), "B"), "I")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with K, M, G or T", s)
	}
	return n * mult, nil
}
