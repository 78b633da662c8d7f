package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gssh "github.com/gliderlabs/ssh"
	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/gbc-farm/gbc/agent/backend"
	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/storedaemon"
)

// testNixConfig is what running Nix as root in a container needs.
const testNixConfig = "build-users-group =\nsubstituters =\nsandbox = false"

// fakeCoordinator speaks gbc-agent-v1 and SFTP the way the coordinator
// does, on 127.0.0.1:0, with the upload tree on the real disk under root.
type fakeCoordinator struct {
	t        *testing.T
	addr     string
	hostKey  gossh.Signer
	agentKey gossh.Signer
	root     string

	sessions chan *coordSession
	autoAck  atomic.Bool
	// cutSFTPAfter > 0: the first SFTP session that receives more bytes
	// than this drops the whole SSH connection (and it is reset to 0).
	cutSFTPAfter atomic.Int64
	// refuseKey: the agent's key is refused at authentication, as after
	// `agent ID deactivate` or `key remove`.
	refuseKey atomic.Bool

	mu         sync.Mutex
	sftpRx     []*atomic.Int64 // bytes received per SFTP session
	hellos     []*protocol.Hello
	hbReceived atomic.Int64
	lastHB     atomic.Pointer[protocol.Heartbeat]
}

// coordSession is one accepted agent channel.
type coordSession struct {
	hello *protocol.Hello
	w     *protocol.Writer
	msgs  chan protocol.Message // everything but heartbeats
	drop  func()                // closes the SSH connection
	// seen lists, in arrival order, the phase reports expect passed
	// over and the types it returned ("started", "succeeded", …).
	seen []string
}

func newSigner(t *testing.T) gossh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func startCoordinator(t *testing.T) *fakeCoordinator {
	t.Helper()
	f := &fakeCoordinator{t: t, hostKey: newSigner(t), agentKey: newSigner(t), root: t.TempDir(), sessions: make(chan *coordSession, 16)}
	f.autoAck.Store(true)
	srv := &gssh.Server{
		Handler: func(s gssh.Session) { s.Exit(1) },
		PublicKeyHandler: func(ctx gssh.Context, key gssh.PublicKey) bool {
			return !f.refuseKey.Load() && gssh.KeysEqual(key, f.agentKey.PublicKey())
		},
		SubsystemHandlers: map[string]gssh.SubsystemHandler{
			protocol.Subsystem: f.agentChannel,
			"sftp":             f.sftpChannel,
		},
		// OpenSSH keepalives are global requests; answer them.
		RequestHandlers: map[string]gssh.RequestHandler{
			"keepalive@openssh.com": func(ctx gssh.Context, srv *gssh.Server, req *gossh.Request) (bool, []byte) { return true, nil },
		},
	}
	srv.AddHostKey(f.hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f
}

func dropConn(ctx gssh.Context) func() {
	return func() { ctx.Value(gssh.ContextKeyConn).(gossh.Conn).Close() }
}

func (f *fakeCoordinator) agentChannel(s gssh.Session) {
	r := protocol.NewReader(s, 0)
	w := protocol.NewWriter(s, 0)
	m, err := r.Read()
	if err != nil {
		return
	}
	hello, ok := m.(*protocol.Hello)
	if !ok || hello.ID != 1 || hello.ProtocolVersion != protocol.Version {
		w.Write(&protocol.Error{Header: protocol.Header{ID: protocol.IDOf(m)}, Message: "want hello"})
		return
	}
	f.mu.Lock()
	f.hellos = append(f.hellos, hello)
	f.mu.Unlock()
	if err := w.Write(&protocol.Welcome{Header: protocol.Header{ID: hello.ID}, ProtocolVersion: protocol.Version,
		AgentID: "agent-1", MaxLineBytes: protocol.DefaultMaxLineBytes, HeartbeatSeconds: 1, UploadRoot: f.root, Continue: hello.Running}); err != nil {
		return
	}
	cs := &coordSession{hello: hello, w: w, msgs: make(chan protocol.Message, 1024), drop: dropConn(s.Context())}
	f.sessions <- cs
	defer close(cs.msgs)
	for {
		m, err := r.Read()
		if err != nil {
			return
		}
		if hb, ok := m.(*protocol.Heartbeat); ok {
			f.lastHB.Store(hb)
			f.hbReceived.Add(1)
			continue
		}
		switch m.(type) {
		case *protocol.Succeeded, *protocol.Failed, *protocol.SetupFailure:
			if f.autoAck.Load() {
				w.Write(&protocol.Ack{Header: protocol.Header{ID: protocol.IDOf(m)}})
			}
		}
		cs.msgs <- m
	}
}

type countingRWC struct {
	io.ReadWriteCloser
	n     *atomic.Int64
	limit *atomic.Int64 // read at each Read: the test arms it after connecting
	cut   func()
}

func (c *countingRWC) Read(p []byte) (int, error) {
	n, err := c.ReadWriteCloser.Read(p)
	total := c.n.Add(int64(n))
	if l := c.limit.Load(); l > 0 && total > l && c.limit.CompareAndSwap(l, 0) {
		c.cut()
		return 0, io.ErrClosedPipe
	}
	return n, err
}

func (f *fakeCoordinator) sftpChannel(s gssh.Session) {
	rx := &atomic.Int64{}
	f.mu.Lock()
	f.sftpRx = append(f.sftpRx, rx)
	f.mu.Unlock()
	rwc := &countingRWC{ReadWriteCloser: s, n: rx, limit: &f.cutSFTPAfter, cut: dropConn(s.Context())}
	srv, err := sftp.NewServer(rwc)
	if err != nil {
		return
	}
	srv.Serve()
	srv.Close()
}

// nextSession waits for the agent's next accepted channel.
func (f *fakeCoordinator) nextSession(t *testing.T) *coordSession {
	t.Helper()
	select {
	case cs := <-f.sessions:
		return cs
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not connect")
		return nil
	}
}

// expect returns the next non-log message, which must have type T.
func expect[T protocol.Message](t *testing.T, cs *coordSession, logs *bytes.Buffer) T {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m, ok := <-cs.msgs:
			if !ok {
				var zero T
				t.Fatalf("session closed while waiting for %T", zero)
			}
			if l, ok := m.(*protocol.Log); ok {
				if logs != nil && int64(logs.Len()) == l.Offset {
					logs.Write(l.Data)
				}
				continue
			}
			if p, ok := m.(*protocol.Phase); ok {
				cs.seen = append(cs.seen, p.Build+":"+p.Phase)
				continue
			}
			cs.seen = append(cs.seen, m.MessageType())
			got, ok := m.(T)
			if !ok {
				var zero T
				t.Fatalf("got %#v, want %T", m, zero)
			}
			return got
		case <-timeout:
			var zero T
			t.Fatalf("timed out waiting for %T", zero)
		}
	}
}

func (f *fakeCoordinator) knownHosts(t *testing.T, key gossh.PublicKey) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(f.addr)}, key)
	if err := os.WriteFile(p, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newTestAgent(t *testing.T, f *fakeCoordinator, knownHostsFile string) *Agent {
	t.Helper()
	a, err := New(Config{
		Dialer: &Dialer{Address: f.addr, Identity: f.agentKey, KnownHosts: knownHostsFile, HandshakeTimeout: 5 * time.Second},
		Backend: backend.NewDaemon(backend.DaemonConfig{Kind: "nix", StoreDir: "/nix/store", Address: storedaemon.Address{
			Command: []string{"nix-daemon", "--stdio"}, Env: []string{"NIX_CONFIG=" + testNixConfig}}}),
		Name:              "test-agent",
		Systems:           []string{"x86_64-linux"},
		MaxParallelBuilds: 2,
		WorkDir:           t.TempDir(),
		MinBackoff:        20 * time.Millisecond,
		MaxBackoff:        200 * time.Millisecond,
		Log:               slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// runAgent runs a until the test ends and returns Run's result channel.
func runAgent(t *testing.T, a *Agent) <-chan error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	stopped := make(chan struct{})
	go func() { done <- a.Run(ctx); close(stopped) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-stopped:
		case <-time.After(20 * time.Second):
			t.Error("agent did not stop")
		}
	})
	return done
}

func nixEnv() []string { return append(os.Environ(), "NIX_CONFIG="+testNixConfig) }

// instantiate writes a /bin/sh derivation and returns its .drv and output
// paths; a nonce makes each test build afresh.
func instantiate(t *testing.T, script string) (drv, out string) {
	t.Helper()
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		t.Skip("nix-instantiate not installed")
	}
	expr := fmt.Sprintf(`derivation { name = "gbc-agent-test"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" %q ]; nonce = "%d"; }`,
		script, time.Now().UnixNano())
	f := filepath.Join(t.TempDir(), "t.nix")
	if err := os.WriteFile(f, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nix-instantiate", f)
	cmd.Env = nixEnv()
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v", err)
	}
	drv = strings.TrimSpace(string(b))
	cmd = exec.Command("nix-store", "--query", "--outputs", drv)
	cmd.Env = nixEnv()
	if b, err = cmd.Output(); err != nil {
		t.Fatalf("nix-store --query --outputs: %v", err)
	}
	return drv, strings.TrimSpace(string(b))
}

func (f *fakeCoordinator) sendBuild(t *testing.T, cs *coordSession, id uint64, build, drv, out string) {
	t.Helper()
	dir := filepath.Join(f.root, "uploads", build)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := cs.w.Write(&protocol.Build{Header: protocol.Header{ID: id}, Build: build, Derivation: drv, System: "x86_64-linux",
		Outputs: []protocol.OutputRef{{Name: "out", Path: out}}, MaxSilentTimeSeconds: 60, UploadDir: dir}); err != nil {
		t.Fatal(err)
	}
}

// checkUpload verifies an uploaded output against the report and Nix.
func (f *fakeCoordinator) checkUpload(t *testing.T, build string, o protocol.OutputResult) {
	t.Helper()
	file := filepath.Join(f.root, "uploads", build, o.Upload)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if o.Upload != "out.nar.zst" || o.Compression != "zstd" {
		t.Errorf("upload %q compression %q", o.Upload, o.Compression)
	}
	fh := nar.NewHashingWriter()
	fh.Write(data)
	if fh.Sum().String() != o.FileHash || int64(len(data)) != o.FileSize {
		t.Errorf("file %s/%d, reported %s/%d", fh.Sum(), len(data), o.FileHash, o.FileSize)
	}
	zr, err := compression.NewReader(bytes.NewReader(data), "zstd")
	if err != nil {
		t.Fatal(err)
	}
	h, n, err := nar.Validate(zr)
	if err != nil {
		t.Fatalf("uploaded file is not a zstd NAR: %v", err)
	}
	want, err := exec.Command("nix-hash", "--type", "sha256", "--base32", o.Path).Output()
	if err != nil {
		t.Fatal(err)
	}
	if h.String() != "sha256:"+strings.TrimSpace(string(want)) {
		t.Errorf("uploaded NAR hash %s, nix-hash says sha256:%s", h, strings.TrimSpace(string(want)))
	}
	if h.String() != o.NarHash || n != o.NarSize {
		t.Errorf("uploaded NAR %s/%d, reported %s/%d", h, n, o.NarHash, o.NarSize)
	}
	cmd := exec.Command("nix-store", "--query", "--references", o.Path)
	cmd.Env = nixEnv()
	refs, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := o.References, lines(string(refs)); !reflect.DeepEqual(got, want) {
		t.Errorf("references %q, nix-store says %q", got, want)
	}
}

func lines(s string) []string {
	out := []string{}
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func TestBuildSucceedsAndUploads(t *testing.T) {
	f := startCoordinator(t)
	a := newTestAgent(t, f, f.knownHosts(t, f.hostKey.PublicKey()))
	runAgent(t, a)
	cs := f.nextSession(t)
	if h := cs.hello; h.Name != "test-agent" || h.Backend != "nix" || !strings.HasPrefix(h.BackendVersion, "nix-daemon ") ||
		h.MaxParallelBuilds != 2 || h.StoreDir != "/nix/store" || h.Hardware.Cores == 0 || len(h.Running) != 0 {
		t.Errorf("hello %+v", h)
	}
	script := "echo building the thing; echo data > $out"
	if _, err := os.Stat("/bin/mkdir"); err == nil { // no sandbox here, so host tools work
		script = "echo building the thing; /bin/mkdir -p $out/bin; echo '#!/bin/sh' > $out/bin/x; echo data > $out/data"
	}
	drv, out := instantiate(t, script)
	f.sendBuild(t, cs, 100, "b1", drv, out)
	if ack := expect[*protocol.Ack](t, cs, nil); ack.ID != 100 {
		t.Fatalf("ack id %d, want 100", ack.ID)
	}
	var logs bytes.Buffer
	if s := expect[*protocol.Started](t, cs, &logs); s.Build != "b1" || s.ID == 0 {
		t.Fatalf("started %+v", s)
	}
	s := expect[*protocol.Succeeded](t, cs, &logs)
	if s.Build != "b1" || len(s.Outputs) != 1 || s.Outputs[0].Name != "out" || s.Outputs[0].Path != out {
		t.Fatalf("succeeded %+v", s)
	}
	f.checkUpload(t, "b1", s.Outputs[0])
	// Phases come in order: preparing before the start, uploading after
	// the build and before the result.
	if want := []string{"ack", "b1:preparing", "started", "b1:uploading", "succeeded"}; !slices.Equal(cs.seen, want) {
		t.Errorf("messages %q, want %q", cs.seen, want)
	}
	if !strings.Contains(logs.String(), "building the thing") {
		t.Errorf("log lacks the builder's output: %q", logs.String())
	}
	// The ack settles the build: its spool directory goes away.
	waitFor(t, "build directory removed", func() bool {
		_, err := os.Stat(filepath.Join(a.cfg.WorkDir, "builds", "b1"))
		return errors.Is(err, os.ErrNotExist)
	})
	waitFor(t, "a heartbeat", func() bool { return f.hbReceived.Load() > 0 })
}

func TestBuildFails(t *testing.T) {
	f := startCoordinator(t)
	a := newTestAgent(t, f, f.knownHosts(t, f.hostKey.PublicKey()))
	runAgent(t, a)
	cs := f.nextSession(t)
	drv, out := instantiate(t, "echo about to fail; exit 1")
	f.sendBuild(t, cs, 7, "bf", drv, out)
	expect[*protocol.Ack](t, cs, nil)
	var logs bytes.Buffer
	expect[*protocol.Started](t, cs, &logs)
	fl := expect[*protocol.Failed](t, cs, &logs)
	if fl.Build != "bf" || fl.Reason != protocol.ReasonBuild || fl.ExitCode != 100 || !strings.Contains(fl.Message, "failed with exit code 1") {
		t.Fatalf("failed %+v", fl)
	}
	if !strings.Contains(logs.String(), "about to fail") {
		t.Errorf("log %q", logs.String())
	}
	if ents, _ := os.ReadDir(filepath.Join(f.root, "uploads", "bf")); len(ents) != 0 {
		t.Errorf("a failed build uploaded %v", ents)
	}
}

func TestMissingDerivationIsSetupFailure(t *testing.T) {
	f := startCoordinator(t)
	a := newTestAgent(t, f, f.knownHosts(t, f.hostKey.PublicKey()))
	runAgent(t, a)
	cs := f.nextSession(t)
	bogus := "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-gbc-missing.drv"
	f.sendBuild(t, cs, 8, "bm", bogus, "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-gbc-missing")
	expect[*protocol.Ack](t, cs, nil)
	sf := expect[*protocol.SetupFailure](t, cs, nil)
	if sf.Build != "bm" || !reflect.DeepEqual(sf.Missing, []string{bogus}) {
		t.Fatalf("setup-failure %+v", sf)
	}
}

func TestHostKeyRefused(t *testing.T) {
	f := startCoordinator(t)
	tests := []struct {
		name, knownHosts, want string
	}{
		{"unknown", func() string {
			p := filepath.Join(t.TempDir(), "known_hosts")
			os.WriteFile(p, []byte(knownhosts.Line([]string{"[127.0.0.1]:1"}, f.hostKey.PublicKey())+"\n"), 0o600)
			return p
		}(), "is not in"},
		{"changed", f.knownHosts(t, newSigner(t).PublicKey()), "changed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAgent(t, f, tt.knownHosts)
			select {
			case err := <-runAgent(t, a):
				var hk *HostKeyError
				if !errors.As(err, &hk) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.knownHosts) {
					t.Fatalf("got %v, want a host key error saying %q", err, tt.want)
				}
				t.Log(err)
			case <-time.After(10 * time.Second):
				t.Fatal("agent kept retrying with a refused host key")
			}
		})
	}
}

// An unregistered key is refused for good: Run returns at once with an
// *AuthRefusedError; a coordinator that is not there yet is retried.
func TestUnregisteredKeyStops(t *testing.T) {
	f := startCoordinator(t)
	a := newTestAgent(t, f, f.knownHosts(t, f.hostKey.PublicKey()))
	a.cfg.Dialer.Identity = newSigner(t)
	select {
	case err := <-runAgent(t, a):
		var ar *AuthRefusedError
		if !errors.As(err, &ar) || !strings.Contains(err.Error(), "not registered") || !strings.Contains(err.Error(), "agent new") {
			t.Fatalf("got %v, want an AuthRefusedError saying how to register the key", err)
		}
		t.Log(err)
	case <-time.After(10 * time.Second):
		t.Fatal("agent kept retrying with a refused key")
	}

	// Nothing listens: a network error, retried until the agent is stopped.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	b := newTestAgent(t, f, f.knownHosts(t, f.hostKey.PublicKey()))
	b.cfg.Dialer.Address = closed
	select {
	case err := <-runAgent(t, b):
		t.Fatalf("agent stopped on a network error: %v", err)
	case <-time.After(time.Second):
	}
}

func TestInterruptedUploadResumes(t *testing.T) {
	if _, err := os.Stat("/usr/bin/head"); err != nil {
		t.Skip("needs /usr/bin/head for an incompressible output")
	}
	f := startCoordinator(t)
	a := newTestAgent(t, f, f.knownHosts(t, f.hostKey.PublicKey()))
	runAgent(t, a)
	cs := f.nextSession(t)
	// Random bytes do not compress, so the upload is about 24 MB: the
	// cut comes well past the resume margin (one window of concurrent
	// writes, ~4 MiB), so resuming has something to skip.
	drv, out := instantiate(t, "/usr/bin/head -c 24000000 /dev/urandom > $out")
	const cutAt = 16 << 20
	f.cutSFTPAfter.Store(cutAt)
	f.sendBuild(t, cs, 9, "bu", drv, out)
	expect[*protocol.Ack](t, cs, nil)
	expect[*protocol.Started](t, cs, nil)
	// The connection drops mid-upload; the agent reconnects and resumes.
	cs2 := f.nextSession(t)
	s := expect[*protocol.Succeeded](t, cs2, nil)
	f.checkUpload(t, "bu", s.Outputs[0])
	f.mu.Lock()
	rx := f.sftpRx
	f.mu.Unlock()
	if len(rx) != 2 {
		t.Fatalf("%d sftp sessions, want 2", len(rx))
	}
	first, second := rx[0].Load(), rx[1].Load()
	size := s.Outputs[0].FileSize
	t.Logf("file %d bytes; first session received %d, second %d", size, first, second)
	if first < cutAt || second >= size-cutAt/2 {
		t.Fatalf("second session received %d bytes of a %d byte file after %d had arrived: not resumed", second, size, first)
	}
}

func TestResultsResentAfterReconnect(t *testing.T) {
	f := startCoordinator(t)
	f.autoAck.Store(false)
	a := newTestAgent(t, f, f.knownHosts(t, f.hostKey.PublicKey()))
	runAgent(t, a)
	cs := f.nextSession(t)
	// Busy for a moment with output, so the drop lands mid-build.
	drv, out := instantiate(t, "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo done > $out")
	f.sendBuild(t, cs, 11, "br", drv, out)
	expect[*protocol.Ack](t, cs, nil)
	expect[*protocol.Started](t, cs, nil)
	cs.drop()

	cs2 := f.nextSession(t)
	if !reflect.DeepEqual(cs2.hello.Running, []string{"br"}) {
		t.Errorf("hello after reconnect lists running %q, want [br]", cs2.hello.Running)
	}
	s := expect[*protocol.Succeeded](t, cs2, nil)
	cs2.drop() // without acking

	cs3 := f.nextSession(t)
	if len(cs3.hello.Running) != 0 {
		t.Errorf("finished build still listed as running: %q", cs3.hello.Running)
	}
	if !reflect.DeepEqual(cs3.hello.Results, []string{"br"}) {
		t.Errorf("hello with an unacked result lists results %q, want [br]", cs3.hello.Results)
	}
	s2 := expect[*protocol.Succeeded](t, cs3, nil)
	if s2.Build != "br" || !reflect.DeepEqual(s2.Outputs, s.Outputs) {
		t.Fatalf("resent %+v, first %+v", s2, s)
	}
	f.checkUpload(t, "br", s2.Outputs[0])
	cs3.w.Write(&protocol.Ack{Header: protocol.Header{ID: s2.ID}})
	waitFor(t, "result settled", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.pending) == 0 && len(a.runs) == 0
	})
}

func TestCancel(t *testing.T) {
	f := startCoordinator(t)
	a := newTestAgent(t, f, f.knownHosts(t, f.hostKey.PublicKey()))
	runAgent(t, a)
	cs := f.nextSession(t)
	pidFile := filepath.Join(t.TempDir(), "builder.pid")
	drv, out := instantiate(t, "echo $$ > "+pidFile+"; echo spinning; while :; do :; done")
	f.sendBuild(t, cs, 12, "bc", drv, out)
	expect[*protocol.Ack](t, cs, nil)
	expect[*protocol.Started](t, cs, nil)
	var pid int
	waitFor(t, "builder pid", func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil || !bytes.HasSuffix(b, []byte("\n")) {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	cs.w.Write(&protocol.Cancel{Header: protocol.Header{ID: 13}, Build: "bc"})
	if ack := expect[*protocol.Ack](t, cs, nil); ack.ID != 13 {
		t.Fatalf("ack %d, want 13", ack.ID)
	}
	waitFor(t, "build gone", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.runs) == 0
	})
	// Closing the build's daemon connection made the daemon kill the
	// builder.
	waitFor(t, "builder gone", func() bool { return syscall.Kill(pid, 0) != nil })
	// Nothing more is reported for it.
	select {
	case m := <-cs.msgs:
		if _, ok := m.(*protocol.Log); !ok {
			t.Fatalf("after cancel got %#v", m)
		}
	case <-time.After(500 * time.Millisecond):
	}
}

// An agent whose key is refused when it reconnects while a build runs
// stops at once: it cancels the build (the daemon kills the builder when
// its connection closes) and Run returns the refusal instead of waiting
// for the build to end on its own.
func TestKeyRefusedMidBuildStopsBuilds(t *testing.T) {
	f := startCoordinator(t)
	a := newTestAgent(t, f, f.knownHosts(t, f.hostKey.PublicKey()))
	done := runAgent(t, a)
	cs := f.nextSession(t)
	pidFile := filepath.Join(t.TempDir(), "builder.pid")
	drv, out := instantiate(t, "echo $$ > "+pidFile+"; while :; do :; done")
	f.sendBuild(t, cs, 12, "br", drv, out)
	expect[*protocol.Ack](t, cs, nil)
	expect[*protocol.Started](t, cs, nil)
	var pid int
	waitFor(t, "builder pid", func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil || !bytes.HasSuffix(b, []byte("\n")) {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) }) // whatever happens, the spinner ends

	f.refuseKey.Store(true)
	cs.drop()
	select {
	case err := <-done:
		var ar *AuthRefusedError
		if !errors.As(err, &ar) {
			t.Fatalf("Run returned %v, want the AuthRefusedError", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent still running 30s after its key was refused, with a build that never ends")
	}
	waitFor(t, "builder gone", func() bool { return syscall.Kill(pid, 0) != nil })
	if ids := a.runningIDs(); len(ids) != 0 {
		t.Fatalf("builds still running after Run returned: %v", ids)
	}
}

// A build canceled and given again at once (a welcome's abort followed by
// the same build from the dispatcher) is a new attempt, not a duplicate:
// the agent acks it, stops the old run, builds it again and reports it;
// heartbeats list it as running once the push was handled.
func TestBuildGivenAgainAfterCancel(t *testing.T) {
	f := startCoordinator(t)
	a := newTestAgent(t, f, f.knownHosts(t, f.hostKey.PublicKey()))
	runAgent(t, a)
	cs := f.nextSession(t)
	release := filepath.Join(t.TempDir(), "release")
	drv, out := instantiate(t, fmt.Sprintf("echo waiting; while [ ! -e %s ]; do /bin/sleep 0.05; done; echo done > $out", release))
	f.sendBuild(t, cs, 12, "bx", drv, out)
	expect[*protocol.Ack](t, cs, nil)
	expect[*protocol.Started](t, cs, nil)
	cs.w.Write(&protocol.Cancel{Header: protocol.Header{ID: 13}, Build: "bx"})
	f.sendBuild(t, cs, 14, "bx", drv, out)
	if ack := expect[*protocol.Ack](t, cs, nil); ack.ID != 13 {
		t.Fatalf("ack %d, want 13", ack.ID)
	}
	if ack := expect[*protocol.Ack](t, cs, nil); ack.ID != 14 {
		t.Fatalf("ack %d, want 14", ack.ID)
	}
	expect[*protocol.Started](t, cs, nil)
	waitFor(t, "a heartbeat listing the new run", func() bool {
		hb := f.lastHB.Load()
		return hb != nil && hb.Handled == 14 && reflect.DeepEqual(hb.Running, []string{"bx"}) && len(hb.Results) == 0
	})
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s := expect[*protocol.Succeeded](t, cs, nil)
	if s.Build != "bx" {
		t.Fatalf("succeeded %+v", s)
	}
	f.checkUpload(t, "bx", s.Outputs[0])
	waitFor(t, "result settled", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.pending) == 0 && len(a.runs) == 0
	})
}

func TestBadCoordinatorMessages(t *testing.T) {
	f := startCoordinator(t)
	a := newTestAgent(t, f, f.knownHosts(t, f.hostKey.PublicKey()))
	runAgent(t, a)
	cs := f.nextSession(t)
	cs.w.Write(&protocol.Started{Header: protocol.Header{ID: 20}, Build: "x"})
	if e := expect[*protocol.Error](t, cs, nil); e.ID != 20 {
		t.Fatalf("error id %d", e.ID)
	}
	cs.w.Write(&protocol.Build{Header: protocol.Header{ID: 21}, Build: "../etc", Derivation: "/nix/store/x.drv", UploadDir: "/u"})
	if e := expect[*protocol.Error](t, cs, nil); e.ID != 21 || !strings.Contains(e.Message, "../etc") {
		t.Fatalf("error %+v", e)
	}
	cs.w.Write(&protocol.Build{Header: protocol.Header{ID: 22}, Build: "ok", Derivation: "/etc/passwd", UploadDir: "/u"})
	if e := expect[*protocol.Error](t, cs, nil); e.ID != 22 {
		t.Fatalf("error %+v", e)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDirectUploadFallsBackToSFTP: an agent with direct uploads on asks
// for a URL per output; when the PUT fails (here the store's port is
// closed) or the coordinator refuses the request (direct uploads off, an
// older coordinator), the output goes over SFTP and is reported without
// a token.
func TestDirectUploadFallsBackToSFTP(t *testing.T) {
	f := startCoordinator(t)
	a := newTestAgent(t, f, f.knownHosts(t, f.hostKey.PublicKey()))
	a.cfg.DirectUpload = true
	runAgent(t, a)
	cs := f.nextSession(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	for i, answer := range []func(u *protocol.UploadURL) protocol.Message{
		func(u *protocol.UploadURL) protocol.Message {
			return &protocol.UploadTarget{Header: protocol.Header{ID: u.ID}, Build: u.Build, Upload: u.Upload,
				URL: "http://" + closed + "/bucket/_gbc-uploads/direct/x?X-Amz-Signature=0", Direct: strings.Repeat("a", 32), ExpiresSeconds: 900}
		},
		func(u *protocol.UploadURL) protocol.Message {
			return &protocol.UploadTarget{Header: protocol.Header{ID: u.ID}, Build: u.Build, Upload: u.Upload, Refused: "a check side"}
		},
		func(u *protocol.UploadURL) protocol.Message {
			return &protocol.Error{Header: protocol.Header{ID: u.ID}, Message: "direct uploads are off"}
		},
	} {
		build := fmt.Sprintf("b%d", i)
		drv, out := instantiate(t, fmt.Sprintf("echo data %d > $out", i))
		f.sendBuild(t, cs, uint64(100+i), build, drv, out)
		expect[*protocol.Ack](t, cs, nil)
		expect[*protocol.Started](t, cs, nil)
		u := expect[*protocol.UploadURL](t, cs, nil)
		if u.Build != build || u.Upload != "out.nar.zst" || u.Size <= 0 || u.ID == 0 {
			t.Fatalf("upload-url %+v", u)
		}
		if err := cs.w.Write(answer(u)); err != nil {
			t.Fatal(err)
		}
		s := expect[*protocol.Succeeded](t, cs, nil)
		if len(s.Outputs) != 1 || s.Outputs[0].Direct != "" || s.Outputs[0].FileSize != u.Size {
			t.Fatalf("succeeded %+v after a failed direct upload", s)
		}
		f.checkUpload(t, build, s.Outputs[0])
	}
	// After the error, the agent asks no more on this connection.
	drv, out := instantiate(t, "echo data 9 > $out")
	f.sendBuild(t, cs, 109, "b9", drv, out)
	expect[*protocol.Ack](t, cs, nil)
	expect[*protocol.Started](t, cs, nil)
	s := expect[*protocol.Succeeded](t, cs, nil)
	if len(s.Outputs) != 1 || s.Outputs[0].Direct != "" {
		t.Fatalf("succeeded %+v", s)
	}
	f.checkUpload(t, "b9", s.Outputs[0])
}
