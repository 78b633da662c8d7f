package hooks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/internal/text"
)

// maxHookOutput bounds what is kept of a hook program's output.
const maxHookOutput = 64 << 10

// Exec returns a handler that runs program with the event as one JSON
// object on stdin and GBC_EVENT (the type), GBC_EVENT_ID and GBC_BUILD_ID
// in its environment. Its output goes to logger, line by line; a non-zero
// exit is an error (retried by the runner). The try's timeout kills the
// program's whole process group.
func Exec(program string, logger *slog.Logger) Handler {
	return func(ctx context.Context, e db.Event) error {
		in, err := json.Marshal(e)
		if err != nil {
			return Permanent(fmt.Errorf("encode event %d: %w", e.ID, err))
		}
		cmd := exec.CommandContext(ctx, program)
		cmd.Stdin = bytes.NewReader(append(in, '\n'))
		cmd.Env = append(os.Environ(),
			"GBC_EVENT="+string(e.Type),
			"GBC_EVENT_ID="+strconv.FormatInt(e.ID, 10),
			"GBC_BUILD_ID="+e.Build,
			"GBC_AGENT_ID="+e.Agent,
		)
		out := &cappedBuffer{max: maxHookOutput}
		cmd.Stdout, cmd.Stderr = out, out
		setProcAttrs(cmd)
		cmd.Cancel = func() error {
			// The group: a shell script's children go too.
			return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		cmd.WaitDelay = 5 * time.Second
		start := time.Now()
		err = cmd.Run()
		sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
		for sc.Scan() {
			logger.Info("hook output", "program", program, "event", e.ID, "line", sc.Text())
		}
		if out.dropped > 0 {
			logger.Warn("hook output truncated", "program", program, "event", e.ID, "dropped_bytes", out.dropped)
		}
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: killed after %v: %w", program, time.Since(start).Round(time.Millisecond), ctx.Err())
			}
			return fmt.Errorf("%s: %w: %s", program, err, lastLine(out.Bytes()))
		}
		return nil
	}
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return text.Truncate(s, 500)
}

type cappedBuffer struct {
	bytes.Buffer
	max     int
	dropped int
}

// Write keeps what fits and reports everything written, so the program
// never sees a broken pipe because it is chatty.
func (c *cappedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	room := max(c.max-c.Len(), 0)
	if room < len(p) {
		c.dropped += len(p) - room
		p = p[:room]
	}
	c.Buffer.Write(p)
	return n, nil
}
