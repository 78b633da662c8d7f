package main

import (
	"testing"
	"time"
)

func TestDaysDurationFlag(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
		show string
	}{
		{"30d", 30 * 24 * time.Hour, true, "30d"},
		{"0", 0, true, "0s"},
		{"0d", 0, true, "0s"},
		{"36h", 36 * time.Hour, true, "36h0m0s"},
		{"48h", 48 * time.Hour, true, "2d"},
		{"-1d", 0, false, ""},
		{"-5m", 0, false, ""},
		{"1.5d", 0, false, ""},
		{"d", 0, false, ""},
		{"forever", 0, false, ""},
	} {
		var d daysDuration
		err := d.Set(c.in)
		if (err == nil) != c.ok {
			t.Errorf("Set(%q): err %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if c.ok && (time.Duration(d) != c.want || d.String() != c.show) {
			t.Errorf("Set(%q) = %v (%s), want %v (%s)", c.in, time.Duration(d), d.String(), c.want, c.show)
		}
	}
}
