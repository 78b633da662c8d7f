package storedaemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/google/shlex"
)

// Default daemon sockets.
const (
	NixSocket  = "/nix/var/nix/daemon-socket/socket"
	GuixSocket = "/var/guix/daemon-socket/socket"
)

// Address says how to reach a daemon: "unix:PATH" (its socket) or
// "exec:COMMAND ARGS…" (a command speaking the protocol on its stdin and
// stdout, e.g. "exec:nix-daemon --stdio"; words split as by a POSIX
// shell, without expansion).
type Address struct {
	Socket  string   // for unix:
	Command []string // for exec:
	// Env are extra "KEY=value" variables for an exec: command, on top
	// of this process's environment.
	Env []string
}

func (a Address) String() string {
	if a.Socket != "" {
		return "unix:" + a.Socket
	}
	return "exec:" + strings.Join(a.Command, " ")
}

// ParseAddress parses "unix:PATH" or "exec:COMMAND ARGS…".
func ParseAddress(s string) (Address, error) {
	scheme, rest, ok := strings.Cut(s, ":")
	switch {
	case !ok:
	case scheme == "unix":
		if rest == "" || rest[0] != '/' {
			return Address{}, fmt.Errorf("daemon address %q: unix: needs an absolute socket path", s)
		}
		return Address{Socket: rest}, nil
	case scheme == "exec":
		words, err := shlex.Split(rest)
		if err != nil {
			return Address{}, fmt.Errorf("daemon address %q: %w", s, err)
		}
		if len(words) == 0 {
			return Address{}, fmt.Errorf("daemon address %q: exec: needs a command", s)
		}
		return Address{Command: words}, nil
	}
	return Address{}, fmt.Errorf("daemon address %q: want unix:PATH or exec:COMMAND ARGS…", s)
}

// Dial connects to the daemon at addr and performs the handshake. For
// exec: it starts the command in its own process group, tied to this
// process's life (it is killed if this process dies), and logs what the
// command writes to its stderr. Closing the Conn ends the command.
func Dial(ctx context.Context, addr Address, log *slog.Logger) (*Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var rwc io.ReadWriteCloser
	switch {
	case addr.Socket != "":
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", addr.Socket)
		if err != nil {
			return nil, &ConnError{Op: "dial " + addr.String(), Err: err}
		}
		rwc = c
	case len(addr.Command) > 0:
		p, err := startDaemon(addr, log)
		if err != nil {
			return nil, &ConnError{Op: "dial " + addr.String(), Err: err}
		}
		rwc = p
	default:
		return nil, errors.New("dial store daemon: empty address")
	}
	return Handshake(ctx, rwc, log.With("daemon", addr.String()))
}

// daemonProcess is a daemon started for one connection; its stdin and
// stdout carry the protocol.
type daemonProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.ReadCloser
	done   chan struct{}
	log    *slog.Logger
}

// stopGrace is how long a daemon gets to end its build and exit after its
// stdin closes, before it is sent SIGTERM and later SIGKILL.
const stopGrace = 5 * time.Second

func startDaemon(addr Address, log *slog.Logger) (*daemonProcess, error) {
	cmd := exec.Command(addr.Command[0], addr.Command[1:]...)
	cmd.SysProcAttr = daemonProcAttr()
	if len(addr.Env) > 0 {
		cmd.Env = append(os.Environ(), addr.Env...)
	}
	// Pipes of our own: exec's would be closed by Wait while the
	// connection may still read, turning a daemon's death into "file
	// already closed" instead of an end of file.
	inR, stdin, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	stdout, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		stdin.Close()
		return nil, err
	}
	cmd.Stdin, cmd.Stdout = inR, outW
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		stdin.Close()
		stdout.Close()
		return nil, fmt.Errorf("start %s: %w", addr, err)
	}
	p := &daemonProcess{cmd: cmd, stdin: stdin, stdout: stdout, done: make(chan struct{}), log: log}
	go func() {
		// Bounded lines: a daemon cannot make the agent buffer without end.
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 4096), 64<<10)
		for sc.Scan() {
			log.Info("store daemon stderr", "daemon", addr.String(), "line", sc.Text())
		}
		io.Copy(io.Discard, stderr) //nolint:errcheck // drain after an overlong line
		err := cmd.Wait()
		log.Debug("store daemon exited", "daemon", addr.String(), "err", err)
		close(p.done)
	}()
	return p, nil
}

func (p *daemonProcess) Read(b []byte) (int, error)  { return p.stdout.Read(b) }
func (p *daemonProcess) Write(b []byte) (int, error) { return p.stdin.Write(b) }

// Close closes the daemon's stdin, which makes it stop its work (killing
// a running builder) and exit; a daemon that does not is terminated.
func (p *daemonProcess) Close() error {
	p.stdin.Close()
	defer p.stdout.Close()
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
	}
	pid := p.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGTERM) //nolint:errcheck // may be gone already
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
	}
	syscall.Kill(-pid, syscall.SIGKILL) //nolint:errcheck
	<-p.done
	return nil
}
