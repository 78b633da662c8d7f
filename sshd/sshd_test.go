package sshd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/sqlite"
	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/internal/testagent"
	"github.com/gbc-farm/gbc/keys"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/protocol"
)

type env struct {
	t        *testing.T
	addr     string
	hostKey  gossh.PublicKey
	store    *sqlite.Store
	coord    *coordinator.Coordinator
	srv      *Server
	storeDir string
	seq      atomic.Int64

	admin, operator, reader gossh.Signer
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

func keyLine(s gossh.Signer, comment string) string {
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(s.PublicKey()))) + " " + comment
}

func newEnv(t *testing.T, maxLine int) *env {
	t.Helper()
	return newEnvWith(t, func(c *Config) {
		c.MaxLineBytes = maxLine
		c.MaxUploadBytes = 1 << 20
	})
}

// newEnvWith starts a server on 127.0.0.1 over a real SQLite store and
// coordinator; adjust sets the server options a test needs.
func newEnvWith(t *testing.T, adjust func(*Config)) *env {
	t.Helper()
	return newEnvCoord(t, nil, adjust)
}

// newEnvCoord is newEnvWith with coord (when not nil) also setting the
// coordinator's options; it is given the test's directory.
func newEnvCoord(t *testing.T, coord func(dir string, c *coordinator.Config), adjust func(*Config)) *env {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "gbc.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: st, storeDir: filepath.Join(dir, "store")}
	os.MkdirAll(e.storeDir, 0o755)
	ccfg := coordinator.Config{StateDir: filepath.Join(dir, "state"), Store: st, StoreDirs: []string{e.storeDir}}
	if coord != nil {
		coord(dir, &ccfg)
	}
	c, err := coordinator.New(ctx, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	e.coord = c
	host, err := keys.LoadOrCreateHostKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	e.hostKey = host.PublicKey()
	cfg := Config{Coordinator: c, HostKey: host}
	adjust(&cfg)
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().String()
	e.srv = srv
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		c.Close()
		st.Close()
	})
	e.admin, e.operator, e.reader = newSigner(t), newSigner(t), newSigner(t)
	for s, r := range map[gossh.Signer]db.Role{e.admin: db.RoleAdmin, e.operator: db.RoleOperator, e.reader: db.RoleReader} {
		e.putKey(s, r, "")
	}
	return e
}

func (e *env) putKey(s gossh.Signer, r db.Role, agentID string) {
	e.t.Helper()
	ak, err := keys.ParseAuthorizedKey(keyLine(s, string(r)))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.store.PutKey(context.Background(), db.Key{Fingerprint: ak.Fingerprint, AuthorizedKey: ak.Line, Role: r, AgentID: agentID}); err != nil {
		e.t.Fatal(err)
	}
}

// newAgent registers an agent with a fresh key.
func (e *env) newAgent() (string, gossh.Signer) {
	e.t.Helper()
	id := fmt.Sprintf("00000000-0000-0000-0000-%012d", e.seq.Add(1))
	if err := e.store.CreateAgent(context.Background(), db.Agent{ID: id, Name: id[len(id)-4:], Active: true}); err != nil {
		e.t.Fatal(err)
	}
	s := newSigner(e.t)
	e.putKey(s, db.RoleAgent, id)
	return id, s
}

func (e *env) dial(s gossh.Signer) (*gossh.Client, error) {
	return gossh.Dial("tcp", e.addr, &gossh.ClientConfig{
		User:            "anyone",
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(s)},
		HostKeyCallback: gossh.FixedHostKey(e.hostKey),
		Timeout:         5 * time.Second,
	})
}

type result struct {
	stdout, stderr string
	code           int
}

func (e *env) run(s gossh.Signer, cmd string) result {
	e.t.Helper()
	c, err := e.dial(s)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		e.t.Fatal(err)
	}
	defer sess.Close()
	var out, errb bytes.Buffer
	sess.Stdout, sess.Stderr = &out, &errb
	err = sess.Run(cmd)
	code := 0
	var ee *gossh.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitStatus()
	case err != nil:
		e.t.Fatalf("run %q: %v", cmd, err)
	}
	return result{out.String(), errb.String(), code}
}

func (e *env) storePath(name string) string {
	sum := sha256.Sum256([]byte(fmt.Sprint(name, e.seq.Add(1))))
	return e.storeDir + "/" + nixhash.Base32(sum[:20]) + "-" + name
}

func (e *env) drv(name string) string {
	e.t.Helper()
	out := e.storePath(name)
	d := &derivation.Derivation{
		Outputs: []derivation.Output{{Name: "out", Path: out}},
		System:  "x86_64-linux", Builder: "/bin/sh", Args: []string{"-c", "true"},
		Env: []derivation.EnvVar{{Key: "out", Value: out}},
	}
	p := e.storePath(name + ".drv")
	if err := os.WriteFile(p, d.Bytes(), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n$`)

func TestUnknownKeyRefusedAtAuth(t *testing.T) {
	e := newEnv(t, 0)
	if _, err := e.dial(newSigner(t)); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestCommandRoles(t *testing.T) {
	e := newEnv(t, 0)
	_, agentKey := e.newAgent()
	drv := e.drv("x")
	newKey := keyLine(newSigner(t), "new")
	tests := []struct {
		name string
		key  gossh.Signer
		cmd  string
		code int
		out  *regexp.Regexp
		err  string
	}{
		{"agent key cannot build", agentKey, "build " + drv, 1, nil, "agent keys may only"},
		{"agent key cannot list", agentKey, "builds", 1, nil, "permission denied"},
		{"reader cannot build", e.reader, "build " + drv, 1, nil, "needs role operator"},
		{"reader can list", e.reader, "builds", 0, nil, ""},
		{"operator can build", e.operator, "build --priority 3 --tag team=x " + drv, 0, uuidRE, ""},
		{"operator cannot add keys", e.operator, "key add --role reader '" + newKey + "'", 1, nil, "needs role admin"},
		{"reader cannot add keys", e.reader, "key add --role admin '" + newKey + "'", 1, nil, "needs role admin"},
		{"admin adds keys", e.admin, "key add --role reader '" + newKey + "'", 0, regexp.MustCompile(`^SHA256:\S+\n$`), ""},
		{"operator cannot create agents", e.operator, "agent new", 1, nil, "needs role admin"},
		{"admin creates agents", e.admin, "agent new --name n1", 0, uuidRE, ""},
		{"missing drv records nothing", e.operator, "build " + e.storePath("missing.drv"), 1, regexp.MustCompile(`^$`), "bad submission"},
		{"reader cannot check", e.reader, "check " + drv, 1, nil, "needs role operator"},
		{"operator can check", e.operator, "check --agents 2 " + drv, 0, uuidRE, ""},
		{"reader lists checks", e.reader, "checks --state pending", 0, regexp.MustCompile(`pending`), ""},
		{"reader summarises checks", e.reader, "checks summary --json", 0, regexp.MustCompile(`"pending": 1`), ""},
		{"check of one agent refused", e.operator, "check --agents 1 " + drv, 1, nil, "at least two NARs"},
		{"unknown check", e.reader, "check show 00000000-0000-4000-8000-000000000000", 1, nil, "no check"},
		{"unknown command", e.admin, "rm -rf /", 2, nil, "unknown command"},
		{"help per command", e.reader, "builds --help", 0, regexp.MustCompile(`(?s)usage: builds.*--state`), ""},
		{"bad flag", e.admin, "builds --bogus", 2, nil, "unknown flag"},
		{"unbalanced quote", e.admin, "key add --role reader 'ssh-ed25519", 2, nil, "split"},
		{"operator cannot collect the cache", e.operator, "cache gc --dry-run", 1, nil, "needs role admin"},
		{"reader cannot pin", e.reader, "cache pin /nix/store/x", 1, nil, "needs role operator"},
		{"reader lists pins", e.reader, "cache pins", 0, regexp.MustCompile(`^PATH\s+PINNED\s+BY\s+REASON\n$`), ""},
		{"reader cannot ask why", e.reader, "cache why /nix/store/x", 1, nil, "needs role operator"},
		{"operator cannot prune builds", e.operator, "builds prune --finished-before 2020-01-01", 1, nil, "needs role admin"},
		{"admin prunes nothing old", e.admin, "builds prune --finished-before 2020-01-01", 0, regexp.MustCompile(`^$`), "removed 0 build(s)"},
		{"prune needs a date", e.admin, "builds prune", 2, nil, "--finished-before is required"},
		{"operator cannot archive agents", e.operator, "agent x archive", 1, nil, "needs role admin"},
		{"operator cannot delete agents", e.operator, "agent x delete", 1, nil, "needs role admin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.run(tt.key, tt.cmd)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tt.code, r.stdout, r.stderr)
			}
			if tt.out != nil && !tt.out.MatchString(r.stdout) {
				t.Fatalf("stdout %q does not match %s", r.stdout, tt.out)
			}
			if !strings.Contains(r.stderr, tt.err) {
				t.Fatalf("stderr %q does not contain %q", r.stderr, tt.err)
			}
		})
	}
	// The build, and the check's two builds at the checks' priority.
	bs, _ := e.store.Builds(context.Background(), db.BuildFilter{})
	prios := map[int]int{}
	for _, b := range bs {
		prios[b.Priority]++
	}
	if len(bs) != 3 || prios[3] != 1 || prios[coordinator.DefaultCheckPriority] != 2 {
		t.Fatalf("builds recorded: %+v", bs)
	}
}

func TestKeyLineQuoting(t *testing.T) {
	e := newEnv(t, 0)
	s := newSigner(t)
	line := keyLine(s, "alice at laptop")
	r := e.run(e.admin, `key add --role reader '`+line+`'`)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	r = e.run(e.admin, "keys --json")
	var ks []keyJSON
	if err := json.Unmarshal([]byte(r.stdout), &ks); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range ks {
		if k.Fingerprint == keys.Fingerprint(s.PublicKey()) {
			found = k.Comment == "alice at laptop" && k.Role == "reader"
		}
	}
	if !found {
		t.Fatalf("key not stored with its comment: %+v", ks)
	}
	// The new key works, with reader rights.
	if r := e.run(s, "builds"); r.code != 0 {
		t.Fatalf("new reader key: %d %s", r.code, r.stderr)
	}
	// Double quotes and backslashes split like a shell, too.
	s2 := newSigner(t)
	r = e.run(e.admin, `key add --role=operator "`+keyLine(s2, `bob\'s key`)+`"`)
	if r.code != 0 {
		t.Fatalf("double-quoted: exit %d: %s", r.code, r.stderr)
	}
}

// agentConn is the shared test agent (internal/testagent) on a real SSH
// session, failing the test on any error and bounding each read.
type agentConn struct {
	t *testing.T
	*testagent.Agent
}

func (e *env) agentSession(s gossh.Signer) *agentConn {
	e.t.Helper()
	c, err := e.dial(s)
	if err != nil {
		e.t.Fatal(err)
	}
	a, err := testagent.Open(c)
	if err != nil {
		c.Close()
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { a.Close() })
	return &agentConn{t: e.t, Agent: a}
}

// hello says hello as one x86_64-linux slot, or with h when given.
func (a *agentConn) hello(h ...protocol.Hello) *protocol.Welcome {
	a.t.Helper()
	hello := protocol.Hello{Header: protocol.Header{ID: 1}, Systems: []string{"x86_64-linux"}, MaxParallelBuilds: 1, StoreDir: "/nix/store", Backend: "nix"}
	if len(h) > 0 {
		hello = h[0]
	}
	w, err := a.Hello(hello)
	if err != nil {
		a.t.Fatal(err)
	}
	return w
}

func (a *agentConn) read() protocol.Message {
	a.t.Helper()
	type res struct {
		m   protocol.Message
		err error
	}
	ch := make(chan res, 1)
	go func() {
		m, err := a.Read()
		ch <- res{m, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			a.t.Fatalf("read: %v", r.err)
		}
		return r.m
	case <-time.After(5 * time.Second):
		a.t.Fatal("no message from the coordinator")
	}
	return nil
}

func (a *agentConn) send(m protocol.Message) {
	a.t.Helper()
	if err := a.Send(m); err != nil {
		a.t.Fatal(err)
	}
}

func (a *agentConn) raw(line string) {
	a.t.Helper()
	if err := a.Raw(line); err != nil {
		a.t.Fatal(err)
	}
}

func (a *agentConn) expectError(id uint64, contains string) {
	a.t.Helper()
	m := a.read()
	er, ok := m.(*protocol.Error)
	if !ok || er.ID != id || !strings.Contains(er.Message, contains) {
		a.t.Fatalf("got %T %+v, want error id %d containing %q", m, m, id, contains)
	}
}

func (a *agentConn) expectAck(id uint64) {
	a.t.Helper()
	m := a.read()
	if ack, ok := m.(*protocol.Ack); !ok || ack.ID != id {
		a.t.Fatalf("got %T %+v, want ack %d", m, m, id)
	}
}

func TestAgentProtocolBadLinesKeepSession(t *testing.T) {
	e := newEnv(t, 512)
	_, key := e.newAgent()
	a := e.agentSession(key)
	w := a.hello()
	if w.AgentID == "" || w.UploadRoot != "/uploads" {
		t.Fatalf("welcome %+v", w)
	}
	id := strings.TrimSpace(e.run(e.operator, "build "+e.drv("p")).stdout)
	b, ok := a.read().(*protocol.Build)
	if !ok || b.Build != id || b.UploadDir != "/uploads/"+id {
		t.Fatalf("pushed build %+v", b)
	}
	a.send(&protocol.Ack{Header: protocol.Header{ID: b.ID}})

	a.raw("this is not json")
	a.expectError(0, "malformed")
	a.raw(`{"type":"launch-missiles","id":7}`)
	a.expectError(7, "unknown message type")
	a.raw(`{"type":"started","id":8,"build":"` + id + `","extra":1}`)
	a.expectError(8, "malformed")
	a.raw(`{"type":"heartbeat","hardware":{},"x":"` + strings.Repeat("a", 2000) + `"}`)
	a.expectError(0, "too long")
	a.send(&protocol.Welcome{Header: protocol.Header{ID: 9}})
	a.expectError(9, "unexpected message type")
	// The session still works.
	a.send(&protocol.Heartbeat{})
	a.send(&protocol.Started{Header: protocol.Header{ID: 10}, Build: id})
	a.expectAck(10)
	if got, _ := e.store.Build(context.Background(), id); got.State != db.StateStarted {
		t.Fatalf("state %s after started", got.State)
	}
	a.send(&protocol.Log{Build: id, Offset: 6, Data: []byte("world\n")})
	a.send(&protocol.Log{Header: protocol.Header{ID: 12}, Build: id, Offset: 0, Data: []byte("hello ")})
	a.expectAck(12)
	if r := e.run(e.reader, "log "+id); r.code != 0 || r.stdout != "hello world\n" {
		t.Fatalf("log: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	// Another agent's build cannot be reported on.
	a.send(&protocol.Failed{Header: protocol.Header{ID: 11}, Build: "00000000-0000-0000-0000-00000000dead", Reason: "build"})
	a.expectError(11, "not allocated to this agent")
}

func TestNonAgentKeysCannotOpenAgentSubsystems(t *testing.T) {
	e := newEnv(t, 0)
	for _, sub := range []string{protocol.Subsystem, "sftp"} {
		c, err := e.dial(e.admin)
		if err != nil {
			t.Fatal(err)
		}
		sess, _ := c.NewSession()
		errPipe, _ := sess.StderrPipe()
		out, _ := sess.StdoutPipe()
		if err := sess.RequestSubsystem(sub); err != nil {
			c.Close()
			continue // refused outright is fine too
		}
		io.Copy(io.Discard, out)
		errb, _ := io.ReadAll(errPipe)
		if !strings.Contains(string(errb), "permission denied") {
			t.Errorf("%s with an admin key: stderr %q", sub, errb)
		}
		c.Close()
	}
}

func (e *env) sftpClient(s gossh.Signer) *sftp.Client {
	e.t.Helper()
	c, err := e.dial(s)
	if err != nil {
		e.t.Fatal(err)
	}
	cl, err := sftp.NewClient(c)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cl.Close(); c.Close() })
	return cl
}

// allocate connects an agent and returns the build pushed to it.
func (e *env) allocate(key gossh.Signer) (*agentConn, *protocol.Build) {
	e.t.Helper()
	a := e.agentSession(key)
	a.hello()
	r := e.run(e.operator, "build "+e.drv("s"))
	if r.code != 0 {
		e.t.Fatalf("build: %s", r.stderr)
	}
	b, ok := a.read().(*protocol.Build)
	if !ok {
		e.t.Fatal("no build pushed")
	}
	return a, b
}

func TestSFTPConfinement(t *testing.T) {
	e := newEnv(t, 0)
	idA, keyA := e.newAgent()
	_, keyB := e.newAgent()
	_, bA := e.allocate(keyA)
	_, bB := e.allocate(keyB)
	cl := e.sftpClient(keyA)
	mine := "/uploads/" + bA.Build

	// Writes at offsets, resumable.
	f, err := cl.OpenFile(mine+"/out.nar.zst", os.O_WRONLY|os.O_CREATE)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("world"), 6); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("hello "), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, err := cl.Stat(mine + "/out.nar.zst"); err != nil || st.Size() != 11 {
		t.Fatalf("stat: %v %v", st, err)
	}
	real := filepath.Join(e.coord.UploadDir(idA, bA.Build), "out.nar.zst")
	if b, _ := os.ReadFile(real); string(b) != "hello world" {
		t.Fatalf("on disk: %q", b)
	}
	if ls, err := cl.ReadDir("/uploads"); err != nil || len(ls) != 1 || ls[0].Name() != bA.Build {
		t.Fatalf("list /uploads: %v %v", ls, err)
	}

	refused := map[string]func() error{
		"dotdot escape":       func() error { _, err := cl.Create(mine + "/../../../etc/x"); return err },
		"dotdot to sibling":   func() error { _, err := cl.Create(mine + "/../" + bB.Build + "/out.nar"); return err },
		"other agent's stat":  func() error { _, err := cl.Stat("/uploads/" + bB.Build); return err },
		"other agent's list":  func() error { _, err := cl.ReadDir("/uploads/" + bB.Build); return err },
		"other agent's write": func() error { _, err := cl.Create("/uploads/" + bB.Build + "/x"); return err },
		"absolute outside":    func() error { _, err := cl.Create("/etc/passwd"); return err },
		"nested dir":          func() error { _, err := cl.Create(mine + "/a/b"); return err },
		"read":                func() error { _, err := cl.Open(mine + "/out.nar.zst"); return err },
		"symlink":             func() error { return cl.Symlink("/etc/passwd", mine+"/link") },
		"rename":              func() error { return cl.Rename(mine+"/out.nar.zst", mine+"/y") },
		"rmdir":               func() error { return cl.RemoveDirectory(mine) },
		"over size limit": func() error {
			f, err := cl.OpenFile(mine+"/out.nar.zst", os.O_WRONLY)
			if err != nil {
				t.Fatalf("open own upload: %v", err)
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("x"), 1<<20)
			return err
		},
	}
	for name, f := range refused {
		if err := f(); err == nil {
			t.Errorf("%s: allowed", name)
		}
	}
	if _, err := os.Stat(filepath.Join(e.coord.UploadDir(idA, bA.Build), "..", bB.Build, "out.nar")); err == nil {
		t.Fatal("file created in the other agent's area")
	}
	if err := cl.Remove(mine + "/out.nar.zst"); err != nil {
		t.Fatalf("remove own file: %v", err)
	}
}

func TestUploadWithWrongHashIsRefused(t *testing.T) {
	e := newEnv(t, 0)
	_, key := e.newAgent()
	a, b := e.allocate(key)
	out, err := a.Upload(b, "output")
	if err != nil {
		t.Fatal(err)
	}

	a.send(&protocol.Started{Header: protocol.Header{ID: 2}, Build: b.Build})
	a.expectAck(2)
	out.NarHash = nixhash.NewSHA256(sha256.Sum256([]byte("not the nar"))).String()
	a.send(&protocol.Succeeded{Header: protocol.Header{ID: 3}, Build: b.Build, Outputs: []protocol.OutputResult{out}})
	// The requeued build may be pushed again before the reply arrives.
	for {
		m := a.read()
		if _, ok := m.(*protocol.Build); ok {
			continue
		}
		if er, ok := m.(*protocol.Error); !ok || er.ID != 3 || !strings.Contains(er.Message, "NAR hash") {
			t.Fatalf("got %T %+v, want error 3 about the NAR hash", m, m)
		}
		break
	}
	got, err := e.store.Build(context.Background(), b.Build)
	if err != nil {
		t.Fatal(err)
	}
	if got.State == db.StateSucceeded || len(got.Results) != 0 {
		t.Fatalf("recorded as %s with %d results", got.State, len(got.Results))
	}
	if last := got.Attempts[0]; last.Outcome != "requeued" || !strings.Contains(last.Reason, "verification") {
		t.Fatalf("attempt %+v", last)
	}
	r := e.run(e.reader, "builds --state succeeded --json")
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("succeeded builds: %s", r.stdout)
	}
}

func TestBuildWaitAndShow(t *testing.T) {
	e := newEnv(t, 0)
	agentID, key := e.newAgent()
	a := e.agentSession(key)
	a.hello()
	drv := e.drv("w")

	c, err := e.dial(e.operator)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, _ := c.NewSession()
	var out bytes.Buffer
	sess.Stdout = &out
	if err := sess.Start("build --wait " + drv); err != nil {
		t.Fatal(err)
	}
	b, ok := a.read().(*protocol.Build)
	if !ok {
		t.Fatal("no build")
	}
	a.send(&protocol.Failed{Header: protocol.Header{ID: 5}, Build: b.Build, Reason: protocol.ReasonBuild, ExitCode: 1, Message: "builder exited 1"})
	a.expectAck(5)
	err = sess.Wait()
	var ee *gossh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 1 {
		t.Fatalf("build --wait of a failing build: %v", err)
	}
	want := b.Build + "\nbuild " + b.Build + " failed (on agent " + agentID + ")\n"
	if out.String() != want {
		t.Fatalf("output %q, want %q", out.String(), want)
	}
	r := e.run(e.reader, "build show --json "+b.Build)
	var j map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	for _, k := range []string{"id", "derivation", "system", "priority", "state", "agent", "created_at", "started_at", "ended_at", "tags", "attempts", "failure_reason", "outputs"} {
		if _, ok := j[k]; !ok {
			t.Errorf("build show --json lacks %q", k)
		}
	}
	if j["state"] != "failed" || j["agent"] != agentID || j["derivation"] != drv {
		t.Fatalf("show: %v", j)
	}
}
