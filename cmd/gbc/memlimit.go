package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// parseMemoryLimit reads a --memory-limit value in GOMEMLIMIT's syntax: a
// non-negative integer number of bytes with an optional unit B, KiB, MiB,
// GiB or TiB.
func parseMemoryLimit(v string) (int64, error) { return parseSize("memory limit", v) }

// parseSize reads a byte count with an optional unit B, KiB, MiB, GiB or
// TiB; what names the value in errors.
func parseSize(what, v string) (int64, error) {
	num, mult := v, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s %q: want a byte count such as 450MiB or 2GiB", what, v)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%s %q: too large", what, v)
	}
	return n * mult, nil
}
