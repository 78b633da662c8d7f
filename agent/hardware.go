package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/gbc-farm/gbc/protocol"
)

// hardware samples the machine for hello and heartbeats. Fields it cannot
// read (another OS, a restricted /proc) are left zero rather than failing.
func hardware(workDir string) protocol.Hardware {
	h := protocol.Hardware{Cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		h.MemoryBytes, _ = parseMemTotal(b)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		h.Load1, _ = parseLoad1(b)
	}
	h.FreeDiskBytes, _ = freeDisk(workDir)
	return h
}

// parseMemTotal reads "MemTotal:  16314788 kB" from /proc/meminfo.
func parseMemTotal(b []byte) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/meminfo MemTotal %q: %w", f[1], err)
			}
			if len(f) >= 3 && f[2] != "kB" {
				return 0, fmt.Errorf("/proc/meminfo MemTotal unit %q, want kB", f[2])
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/meminfo has no MemTotal line")
}

// parseLoad1 reads the first field of /proc/loadavg.
func parseLoad1(b []byte) (float64, error) {
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("/proc/loadavg is empty")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/loadavg field 1 %q: %w", f[0], err)
	}
	return v, nil
}
