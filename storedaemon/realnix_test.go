package storedaemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/nar"
)

// scratchStore is an empty Nix store of its own for one test, served by
// a real nix-daemon --stdio (as root: the daemon opens the store itself
// and the client is trusted).
type scratchStore struct {
	dir string // the store directory
	env []string
}

func newScratchStore(t *testing.T) *scratchStore {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: nix-daemon --stdio opens a scratch store itself")
	}
	for _, tool := range []string{"nix-daemon", "nix-instantiate", "nix-store"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (scripts/install-deps.sh installs Nix): %v", tool, err)
		}
	}
	root := t.TempDir()
	s := &scratchStore{dir: filepath.Join(root, "store")}
	vars := map[string]string{
		"NIX_STORE_DIR": s.dir,
		"NIX_STATE_DIR": filepath.Join(root, "state"),
		"NIX_LOG_DIR":   filepath.Join(root, "log"),
		"NIX_CONFIG":    "build-users-group =\nsubstituters =\nsandbox = false",
	}
	for k, v := range vars {
		t.Setenv(k, v)
		s.env = append(s.env, k+"="+v)
	}
	return s
}

func (s *scratchStore) dial(t *testing.T) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Dial(ctx, Address{Command: []string{"nix-daemon", "--stdio"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// instantiate writes a derivation running script with /bin/sh and
// returns its .drv path and output path.
func (s *scratchStore) instantiate(t *testing.T, name, script string) (drv, out string) {
	t.Helper()
	expr := fmt.Sprintf(`derivation { name = %q; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" %q ]; }`, name, script)
	cmd := exec.Command("nix-instantiate", "--expr", expr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v\n%s", err, stderr.String())
	}
	drv = strings.TrimSpace(string(b))
	q, err := exec.Command("nix-store", "--query", "--outputs", drv).Output()
	if err != nil {
		t.Fatalf("nix-store --query --outputs %s: %v", drv, err)
	}
	return drv, strings.TrimSpace(string(q))
}

func TestRealNixDaemon(t *testing.T) {
	s := newScratchStore(t)
	c := s.dial(t)
	ctx := context.Background()
	if c.Dialect() != Nix || c.ProtocolVersion() != 0x122 || c.DaemonVersion() == "" {
		t.Fatalf("handshake: dialect %v, version %#x, daemon %q", c.Dialect(), c.ProtocolVersion(), c.DaemonVersion())
	}
	if err := c.SetOptions(ctx, Options{MaxBuildJobs: 1}); err != nil {
		t.Fatal(err)
	}
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)

	drv, out := s.instantiate(t, "ok-"+nonce, `echo building-`+nonce+`; echo to-stderr >&2; echo hi > $out`)
	if ok, err := c.IsValidPath(ctx, drv); err != nil || !ok {
		t.Fatalf("IsValidPath(%s) = %v, %v", drv, ok, err)
	}
	if ok, err := c.IsValidPath(ctx, out); err != nil || ok {
		t.Fatalf("IsValidPath(%s) before the build = %v, %v", out, ok, err)
	}
	var log bytes.Buffer
	res, err := c.Build(ctx, drv, []string{"out"}, BuildNormal, &log)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != Built || !res.Status.Success() {
		t.Fatalf("Build: %+v", res)
	}
	if !strings.Contains(log.String(), "building-"+nonce+"\n") || !strings.Contains(log.String(), "to-stderr\n") {
		t.Errorf("build log %q lacks the builder's output", log.String())
	}
	info, err := c.QueryPathInfo(ctx, out)
	if err != nil || info == nil {
		t.Fatalf("QueryPathInfo(%s) = %v, %v", out, info, err)
	}
	h, size, err := nar.HashPath(out)
	if err != nil {
		t.Fatal(err)
	}
	if !info.NarHash.Equal(h) || info.NarSize != uint64(size) || info.Deriver != drv || len(info.References) != 0 || !info.Ultimate {
		t.Errorf("QueryPathInfo(%s) = %+v; want hash %v size %d deriver %s", out, info, h, size, drv)
	}
	if info, err := c.QueryPathInfo(ctx, out+"-missing"); err != nil || info != nil {
		t.Errorf("QueryPathInfo(invalid) = %+v, %v; want nil, nil", info, err)
	}
	valid, err := c.QueryValidPaths(ctx, []string{out, out + "-missing", drv})
	if err != nil || len(valid) != 2 {
		t.Errorf("QueryValidPaths = %v, %v", valid, err)
	}

	// Built again: already valid.
	if res, err := c.Build(ctx, drv, nil, BuildNormal, nil); err != nil || res.Status != AlreadyValid {
		t.Errorf("second Build = %+v, %v; want AlreadyValid", res, err)
	}

	// The daemon holds what a connection built as temporary roots until
	// the connection closes: delete it on a new one, then import it back
	// from its NAR (unsigned: the client is trusted), as the agent does
	// with what it fetched.
	if err := c.DeletePath(ctx, out); !errors.As(err, new(*Error)) {
		t.Fatalf("DeletePath of a path built on the same connection: %v; want *Error", err)
	}
	c.Close()
	c = s.dial(t)
	var narBuf bytes.Buffer
	if err := nar.Dump(&narBuf, out); err != nil {
		t.Fatal(err)
	}
	if err := c.DeletePath(ctx, out); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.IsValidPath(ctx, out); ok {
		t.Fatal("still valid after DeletePath")
	}
	imp := &PathInfo{Path: out, Deriver: drv, NarHash: h, NarSize: uint64(size)}
	if err := c.AddToStoreNar(ctx, imp, bytes.NewReader(narBuf.Bytes()), true); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.IsValidPath(ctx, out); !ok {
		t.Fatal("not valid after AddToStoreNar")
	}
	// A NAR that does not match its hash is refused; the connection
	// survives a refusal.
	c.Close()
	c = s.dial(t)
	if err := c.DeletePath(ctx, out); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(narBuf.Bytes(), []byte("hi\n"), []byte("ho\n"), 1)
	var de *Error
	if err := c.AddToStoreNar(ctx, imp, bytes.NewReader(bad), true); !errors.As(err, &de) {
		t.Fatalf("AddToStoreNar with a wrong hash: %v; want *Error", err)
	}
	if ok, err := c.IsValidPath(ctx, out); err != nil || ok {
		t.Fatalf("after a refused import: valid %v, %v", ok, err)
	}
	// The export stream encoder, through ImportPaths.
	var stream bytes.Buffer
	if err := WriteExport(&stream, []ExportRecord{{Path: out, Deriver: drv, NAR: bytes.NewReader(narBuf.Bytes())}}, nil); err != nil {
		t.Fatal(err)
	}
	paths, err := c.ImportPaths(ctx, &stream)
	if err != nil || len(paths) != 1 || paths[0] != out {
		t.Fatalf("ImportPaths = %v, %v", paths, err)
	}

	// A temporary root cannot be deleted.
	if err := c.AddTempRoot(ctx, out); err != nil {
		t.Fatal(err)
	}
	if err := c.DeletePath(ctx, out); !errors.As(err, &de) {
		t.Fatalf("DeletePath of a temp root: %v; want *Error", err)
	}

	// Daemon errors keep their message and leave the connection usable.
	if _, err := c.IsValidPath(ctx, "/tmp/not-a-store-path"); !errors.As(err, &de) || !strings.Contains(de.Message, "not in the Nix store") {
		t.Fatalf("IsValidPath(outside): %v", err)
	}
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

func TestRealNixDaemonBuildStatus(t *testing.T) {
	s := newScratchStore(t)
	c := s.dial(t)
	ctx := context.Background()
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	for _, tc := range []struct {
		name, script string
		opts         Options
		want         BuildStatus
	}{
		{"fail", "echo failing; exit 3", Options{}, PermanentFailure},
		{"timeout", "while :; do echo tick; /bin/sleep 1; done", Options{Timeout: time.Second}, TimedOut},
		{"silent", "/bin/sleep 30", Options{MaxSilentTime: time.Second}, TimedOut},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.SetOptions(ctx, tc.opts); err != nil {
				t.Fatal(err)
			}
			drv, out := s.instantiate(t, tc.name+"-"+nonce, tc.script)
			res, err := c.Build(ctx, drv, nil, BuildNormal, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tc.want || res.Status.Success() {
				t.Errorf("Build = %+v; want %v", res, tc.want)
			}
			if ok, _ := c.IsValidPath(ctx, out); ok {
				t.Errorf("%s valid after a failed build", out)
			}
		})
	}
}

// TestRealNixDaemonCancel: canceling a build closes the connection, and
// the daemon kills the builder.
func TestRealNixDaemonCancel(t *testing.T) {
	s := newScratchStore(t)
	c := s.dial(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	drv, _ := s.instantiate(t, "cancel-"+strconv.FormatInt(time.Now().UnixNano(), 36),
		`echo $$ > `+pidFile+`; echo started; while :; do /bin/sleep 1; done`)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	lw := &notifyWriter{on: "started", ch: started}
	done := make(chan error, 1)
	go func() {
		_, err := c.Build(ctx, drv, nil, BuildNormal, lw)
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("build ended before it started: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("builder never started")
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	var ce *ConnError
	if err := <-done; !errors.As(err, &ce) || !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Build: %v; want a *ConnError for the cancellation", err)
	}
	if _, err := c.IsValidPath(context.Background(), drv); !errors.As(err, &ce) {
		t.Fatalf("after cancel: %v; want *ConnError", err)
	}
	c.Close() // waits for the daemon to exit
	// The daemon killed its builder before exiting; a zombie would have
	// been reaped by the daemon.
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("builder %d still running after the connection closed", pid)
	}
}

type notifyWriter struct {
	buf bytes.Buffer
	on  string
	ch  chan struct{}
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if w.ch != nil && strings.Contains(w.buf.String(), w.on) {
		close(w.ch)
		w.ch = nil
	}
	return len(p), nil
}

// TestRealNixDaemonSocket: the same client through the daemon's socket
// (nix-daemon serving a scratch store, the socket under its state dir).
func TestRealNixDaemonSocket(t *testing.T) {
	s := newScratchStore(t)
	state := os.Getenv("NIX_STATE_DIR")
	d := exec.Command("nix-daemon")
	var stderr bytes.Buffer
	d.Stderr = &stderr
	d.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-d.Process.Pid, syscall.SIGTERM)
		d.Wait()
	})
	sock := filepath.Join(state, "daemon-socket", "socket")
	ctx := context.Background()
	var c *Conn
	for deadline := time.Now().Add(time.Minute); ; {
		var err error
		if c, err = Dial(ctx, Address{Socket: sock}, nil); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial %s: %v\n%s", sock, err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer c.Close()
	if c.Dialect() != Nix || c.ProtocolVersion() != 0x122 {
		t.Fatalf("dialect %v version %#x", c.Dialect(), c.ProtocolVersion())
	}
	drv, out := s.instantiate(t, "sock-"+strconv.FormatInt(time.Now().UnixNano(), 36), "echo via-socket; echo x > $out")
	var log bytes.Buffer
	res, err := c.Build(ctx, drv, nil, BuildNormal, &log)
	if err != nil || res.Status != Built || !strings.Contains(log.String(), "via-socket") {
		t.Fatalf("Build = %+v, %v; log %q", res, err, log.String())
	}
	if ok, err := c.IsValidPath(ctx, out); err != nil || !ok {
		t.Fatalf("IsValidPath(%s) = %v, %v", out, ok, err)
	}
}
