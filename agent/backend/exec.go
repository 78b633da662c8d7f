package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// tailBytes bounds how much of a command's stderr is kept for classifying
// its failure; the whole log goes to the caller's writer.
const tailBytes = 16 << 10

// maxStdout bounds a query command's stdout (reference lists are small).
const maxStdout = 16 << 20

// cmdResult is what one command run produced.
type cmdResult struct {
	stdout   []byte
	tail     string // last tailBytes of stderr
	exitCode int    // -1 when killed by a signal
}

// runCmd runs name with args and env, streaming stderr to log (if not nil).
// The command runs in its own process group so that cancelling ctx also
// stops the builder processes the store tool forked, and it gets SIGTERM
// from the kernel when the agent dies (even by SIGKILL), so that nothing
// the agent started keeps building without it: the store tool stops its
// builders on SIGTERM as on a cancel. It returns an error only when the
// command could not be started or ctx ended.
func runCmd(ctx context.Context, env []string, log io.Writer, name string, args ...string) (cmdResult, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.SysProcAttr = procAttr()
	cmd.Cancel = func() error {
		// SIGTERM lets nix-store/guix clean up their temporary roots and
		// build directories; WaitDelay below escalates to SIGKILL.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
	cmd.WaitDelay = 10 * time.Second
	var stdout limitedBuffer
	stdout.max = maxStdout
	tail := &tailBuffer{max: tailBytes}
	cmd.Stdout = &stdout
	if log != nil {
		cmd.Stderr = io.MultiWriter(tail, log)
	} else {
		cmd.Stderr = tail
	}
	err := cmd.Run()
	if ctx.Err() != nil {
		return cmdResult{}, fmt.Errorf("%s: %w", name, ctx.Err())
	}
	res := cmdResult{stdout: stdout.Bytes(), tail: tail.String()}
	if err == nil {
		return res, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		res.exitCode = ee.ExitCode()
		return res, nil
	}
	return res, fmt.Errorf("run %s %s: %w", name, strings.Join(args, " "), err)
}

// environ returns the process environment with extra appended to
// NIX_CONFIG-style variable key (newline-separated settings), so the
// operator's lines come after, and so override, what the agent inherited.
func environ(key, extra string) []string {
	env := os.Environ()
	if strings.TrimSpace(extra) == "" {
		return env
	}
	out := make([]string, 0, len(env)+1)
	cur := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			cur = v
			continue
		}
		out = append(out, kv)
	}
	if cur != "" && !strings.HasSuffix(cur, "\n") {
		cur += "\n"
	}
	return append(out, key+"="+cur+extra)
}

// limitedBuffer keeps at most max bytes and drops the rest, so a runaway
// command cannot exhaust memory.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		if len(p) > room {
			b.Buffer.Write(p[:room])
		} else {
			b.Buffer.Write(p)
		}
	}
	return len(p), nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// lines splits command output into its non-empty trimmed lines.
func lines(b []byte) []string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// lastErrorLine returns the last line starting with "error:" (Nix) or
// containing ": error:" (Guix), or else the last non-empty line.
func lastErrorLine(tail string) string {
	ls := lines([]byte(tail))
	for i := len(ls) - 1; i >= 0; i-- {
		if strings.HasPrefix(ls[i], "error:") || strings.Contains(ls[i], ": error:") {
			return ls[i]
		}
	}
	if len(ls) > 0 {
		return ls[len(ls)-1]
	}
	return ""
}

// indentedList returns the indented lines that follow a line for which
// isHeader is true, across every such block in text (e.g. Nix's
// "these 2 derivations will be built:" followed by "  /nix/store/…").
func indentedList(text string, isHeader func(string) bool) []string {
	var out []string
	in := false
	for _, l := range strings.Split(text, "\n") {
		if in && (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) {
			if p := strings.TrimSpace(l); p != "" {
				out = append(out, p)
			}
			continue
		}
		in = isHeader(strings.TrimSpace(l))
	}
	return out
}

func seconds(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return fmt.Sprint(s)
}
