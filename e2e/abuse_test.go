package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/protocol"
)

// TestAbuse replays the attacks docs/security.md defends against, against
// one real coordinator, with the real ssh and sftp clients (and the Go SSH
// client where the attack is a protocol message no real agent sends), and
// prints a table: attack, what must happen, what happened. Any attack
// that is not refused as expected fails the test. The attacks also have
// regression tests of their own (in this package and next to the code);
// this replay re-runs the whole list in one place after a change: scripts/abuse.sh
// (make abuse) sets GBC_ABUSE=1. Bounded: every step waits at most a
// minute, the flood is 200 connections.
func TestAbuse(t *testing.T) {
	if os.Getenv("GBC_ABUSE") == "" {
		t.Skip("set GBC_ABUSE=1 (scripts/abuse.sh, make abuse) to replay the abuse list")
	}
	const budget = 4 << 20
	f := newFarmWith(t, "--max-unauthenticated-per-source", "8", "--max-agent-upload-bytes", fmt.Sprint(budget))
	system := strings.Trim(run(t, "nix-instantiate", "--eval", "--expr", "builtins.currentSystem"), `"`)
	reader, operator := newKey(t, f.dir, "reader"), newKey(t, f.dir, "operator")
	f.mustSSH("key add --role reader '" + reader.Pub + "'")
	f.mustSSH("key add --role operator '" + operator.Pub + "'")
	stranger := newKey(t, f.dir, "stranger")
	keyA, keyB := newKey(t, f.dir, "agent-a"), newKey(t, f.dir, "agent-b")
	idA := f.mustSSH(fmt.Sprintf("agent new --name agent-a --key '%s'", keyA.Pub))
	f.mustSSH(fmt.Sprintf("agent new --name agent-b --key '%s'", keyB.Pub))

	var rows [][3]string
	failed := false
	try := func(attack, expected string, fn func() (string, error)) {
		got, err := fn()
		if err != nil {
			failed = true
			got = "REGRESSION: " + err.Error()
			t.Errorf("%s: %v", attack, err)
		}
		rows = append(rows, [3]string{attack, expected, got})
	}
	defer func() {
		w := 0
		for _, r := range rows {
			w = max(w, len(r[0]))
		}
		var b strings.Builder
		fmt.Fprintf(&b, "\n%-*s  %-44s  %s\n", w, "attack", "expected", "result")
		for _, r := range rows {
			fmt.Fprintf(&b, "%-*s  %-44s  %s\n", w, r[0], r[1], strings.ReplaceAll(r[2], "\n", " "))
		}
		verdict := "every attack refused as expected"
		if failed {
			verdict = "REGRESSIONS above"
		}
		fmt.Fprintf(&b, "%d attacks: %s\n", len(rows), verdict)
		fmt.Print(b.String())
	}()

	// Operators' side.
	try("unknown key runs status", "refused at authentication (ssh exit 255)", func() (string, error) {
		r := f.ssh(stranger, "status")
		if r.Code != 255 || !strings.Contains(r.Stderr, "Permission denied") {
			return "", fmt.Errorf("exit %d, stderr %q", r.Code, r.Stderr)
		}
		return "refused: Permission denied (publickey)", nil
	})
	try("every command × admin, operator, reader, agent key", "allowed exactly as help says", func() (string, error) {
		return roleMatrix(f, map[string]sshKey{"admin": f.admin, "operator": operator, "reader": reader, "agent": keyA})
	})
	try("command line over 192 KiB", "refused, exit 2, says what to do", func() (string, error) {
		// Many words: one argument that long is over the kernel's limit for
		// ssh's own argv; ssh joins them into one command line.
		args := []string{"-p", f.port, "-i", f.admin.Path, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
			"-o", "UserKnownHostsFile=" + f.knownHosts, "-o", "StrictHostKeyChecking=yes", "-F", "/dev/null", "someone@127.0.0.1", "build"}
		for range 200 << 10 / 64 {
			args = append(args, "/nix/store/"+strings.Repeat("x", 52))
		}
		var stderr bytes.Buffer
		cmd := exec.Command("ssh", args...)
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(stderr.String(), "limit") {
			return "", fmt.Errorf("%v, stderr %q", err, text200(stderr.String()))
		}
		return "refused: " + text200(firstLine(stderr.String())), nil
	})
	try("forward to the coordinator's own port (ssh -W)", "channel refused, nothing connected", func() (string, error) {
		return forwardRefused(f, f.admin, "-W", "127.0.0.1:"+f.port)
	})
	try("forward to another host (ssh -W example.com:80)", "channel refused, nothing connected", func() (string, error) {
		return forwardRefused(f, reader, "-W", "example.com:80")
	})
	try("remote forward (ssh -R)", "refused", func() (string, error) {
		return forwardRefused(f, f.admin, "-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9")
	})
	try("agent key forwards to the coordinator's port", "channel refused", func() (string, error) {
		return forwardRefused(f, keyA, "-W", "127.0.0.1:"+f.port)
	})

	// Agents' side.
	try("hello with terminal escapes in the name", "refused, error names the field", func() (string, error) {
		a, err := dialRaw(f, keyA)
		if err != nil {
			return "", err
		}
		defer a.c.Close()
		m, err := a.hello(system, "x\x1b[2J\r\nfake-agent")
		if e, ok := m.(*protocol.Error); err != nil || !ok || !strings.Contains(e.Message, "hello: name") {
			return "", fmt.Errorf("got %T %+v, %v", m, m, err)
		}
		return "refused: " + text200(m.(*protocol.Error).Message), nil
	})

	a, err := dialRaw(f, keyA)
	if err != nil {
		t.Fatal(err)
	}
	defer a.c.Close()
	if m, err := a.hello(system, "agent-a"); err != nil || m.MessageType() != protocol.TypeWelcome {
		t.Fatalf("agent a's hello: %T %+v, %v", m, m, err)
	}
	nonce := fmt.Sprint(time.Now().UnixNano())
	build1 := f.mustSSH("build " + instantiate(t, nonce+"-1", "base"))
	push1, err := a.nextBuild()
	if err != nil || push1.Build != build1 {
		t.Fatalf("build %s not pushed to agent a: %+v, %v", build1, push1, err)
	}
	b, err := dialRaw(f, keyB)
	if err != nil {
		t.Fatal(err)
	}
	defer b.c.Close()
	if m, err := b.hello(system, "agent-b"); err != nil || m.MessageType() != protocol.TypeWelcome {
		t.Fatalf("agent b's hello: %T %+v, %v", m, m, err)
	}
	build2 := f.mustSSH("build " + instantiate(t, nonce+"-2", "base"))
	if push2, err := b.nextBuild(); err != nil || push2.Build != build2 {
		t.Fatalf("build %s not pushed to agent b: %+v, %v", build2, push2, err)
	}

	try("protocol line of 2 MB", "error reply, session goes on", func() (string, error) {
		if _, err := a.in.Write(append(bytes.Repeat([]byte("x"), 2<<20), '\n')); err != nil {
			return "", err
		}
		m, err := a.next()
		if e, ok := m.(*protocol.Error); err != nil || !ok || !strings.Contains(e.Message, "too long") {
			return "", fmt.Errorf("got %T %+v, %v", m, m, err)
		}
		return "refused: " + text200(m.(*protocol.Error).Message) + "; " + a.alive(build1), nil
	})
	try("JSON nested 200,000 deep", "error reply, session goes on", func() (string, error) {
		line := `{"type":"heartbeat","id":7,"running":` + strings.Repeat("[", 200000) + strings.Repeat("]", 200000) + "}\n"
		if _, err := io.WriteString(a.in, line); err != nil {
			return "", err
		}
		m, err := a.next()
		if e, ok := m.(*protocol.Error); err != nil || !ok || !strings.Contains(e.Message, "malformed") {
			return "", fmt.Errorf("got %T %+v, %v", m, m, err)
		}
		return "refused: " + text200(m.(*protocol.Error).Message) + "; " + a.alive(build1), nil
	})
	try("result for another agent's build", "refused, that build untouched", func() (string, error) {
		m, err := a.send(&protocol.Failed{Header: protocol.Header{ID: 40}, Build: build2, Reason: protocol.ReasonBuild, Message: "mine now"})
		if e, ok := m.(*protocol.Error); err != nil || !ok || !strings.Contains(e.Message, "not allocated to this agent") {
			return "", fmt.Errorf("got %T %+v, %v", m, m, err)
		}
		if st := f.show(build2).State; st == "failed" {
			return "", fmt.Errorf("build %s is %s", build2, st)
		}
		return "refused: " + text200(m.(*protocol.Error).Message), nil
	})
	try("result for a build that does not exist", "refused", func() (string, error) {
		m, err := a.send(&protocol.Started{Header: protocol.Header{ID: 41}, Build: "00000000-0000-0000-0000-000000000000"})
		if _, ok := m.(*protocol.Error); err != nil || !ok {
			return "", fmt.Errorf("got %T %+v, %v", m, m, err)
		}
		return "refused: " + text200(m.(*protocol.Error).Message), nil
	})

	// SFTP, with the real client and agent a's key.
	sftpCases := []struct{ attack, cmd string }{
		{"sftp: read a file outside the tree", "get /etc/passwd " + filepath.Join(f.dir, "stolen")},
		{"sftp: read the database by traversal", "get /uploads/../../gbc.db " + filepath.Join(f.dir, "stolen")},
		{"sftp: write outside the tree by traversal", "put " + f.admin.Path + ".pub /uploads/../escape"},
		{"sftp: symlink to the signing key", "symlink /signing-key.sec /uploads/" + build1 + "/out.nar"},
		{"sftp: rename into another build", "rename /uploads/" + build1 + "/out.nar /uploads/" + build2 + "/out.nar"},
		{"sftp: list another agent's build", "ls /uploads/" + build2},
		{"sftp: upload a file no output produces", "put " + f.admin.Path + ".pub /uploads/" + build1 + "/evil.txt"},
	}
	for _, c := range sftpCases {
		try(c.attack, "refused", func() (string, error) {
			out, err := sftpBatch(f, keyA, c.cmd)
			if err == nil {
				return "", fmt.Errorf("sftp %q succeeded:\n%s", c.cmd, out)
			}
			for _, p := range []string{filepath.Join(f.dir, "stolen"), filepath.Join(f.state, "escape"), filepath.Join(f.state, "uploads", "escape")} {
				if _, err := os.Stat(p); err == nil {
					return "", fmt.Errorf("sftp %q made %s", c.cmd, p)
				}
			}
			return "refused: " + text200(lastLine(out)), nil
		})
	}

	sc, err := sftp.NewClient(a.c)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	try(fmt.Sprintf("upload over the agent's budget (%d MiB)", budget>>20), "write refused, says why", func() (string, error) {
		w, err := sc.Create("/uploads/" + build1 + "/out.nar")
		if err != nil {
			return "", err
		}
		_, werr := w.Write(make([]byte, budget+1))
		w.Close()
		sc.Remove("/uploads/" + build1 + "/out.nar")
		if werr == nil {
			return "", errors.New("a write past the budget was accepted")
		}
		return "refused: " + text200(werr.Error()), nil
	})
	try("output with a reference outside its closure", "result refused, nothing signed", func() (string, error) {
		res, err := uploadNAR(t, sc, build1, push1.Outputs[0])
		if err != nil {
			return "", err
		}
		res.References = []string{"/nix/store/00000000000000000000000000000000-not-an-input"}
		m, err := a.send(&protocol.Succeeded{Header: protocol.Header{ID: 42}, Build: build1, Outputs: []protocol.OutputResult{res}})
		if e, ok := m.(*protocol.Error); err != nil || !ok || !strings.Contains(e.Message, "reference") {
			return "", fmt.Errorf("got %T %+v, %v", m, m, err)
		}
		hash := strings.SplitN(filepath.Base(res.Path), "-", 2)[0]
		if _, err := os.Stat(filepath.Join(f.state, "cache", hash+".narinfo")); err == nil {
			return "", errors.New("a narinfo was published")
		}
		return "refused: " + text200(m.(*protocol.Error).Message), nil
	})

	// Files a submission makes the coordinator open, in a farm of their own
	// store directory.
	try("build of a FIFO and of a symlink to /dev/zero", "refused at once, says what the file is", func() (string, error) {
		return specialFiles(t)
	})
	try("unauthenticated flood: 200 idle TCP connections", "8 (the per-source cap) greeted, status answers", func() (string, error) {
		return flood(f, 200)
	})

	// Revocation.
	try("removed key's live events --follow", "ends at once; key refused after", func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := f.sshCmd(ctx, reader, "events --follow")
		var out syncBuf
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			return "", err
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if _, err := waitLog(f.coord.log, regexp.MustCompile(`msg=command command=events[^\n]*role=reader`), 30*time.Second); err != nil {
			return "", err
		}
		if r := f.ssh(f.admin, "key remove "+fingerprint(t, reader)); r.Code != 0 {
			return "", fmt.Errorf("key remove: %s", r.Stderr)
		}
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			return "", errors.New("events --follow still running 30 s after key remove")
		}
		if r := f.ssh(reader, "status"); r.Code != 255 {
			return "", fmt.Errorf("removed key: status exit %d", r.Code)
		}
		return "session closed; key refused at authentication", nil
	})
	try("deactivated agent's live session", "closed at once; reconnect refused", func() (string, error) {
		if r := f.ssh(f.admin, "agent "+idA+" deactivate"); r.Code != 0 {
			return "", fmt.Errorf("deactivate: %s", r.Stderr)
		}
		for {
			m, err := a.next()
			if errors.Is(err, errNoMessage) {
				return "", errors.New("the session is still open a minute after deactivate")
			}
			if err != nil {
				break // the session ended
			}
			_ = m // pushed before the deactivation (a requeued build1 may come back)
		}
		if b := f.show(build1); b.Agent == idA && (b.State == "allocated" || b.State == "started") {
			return "", fmt.Errorf("build %s is still %s on the deactivated agent", build1, b.State)
		}
		if _, err := dialRaw(f, keyA); err == nil {
			return "", errors.New("a deactivated agent's key authenticated")
		}
		return "session closed, its build requeued; key refused at authentication", nil
	})
}

// rawAgent is a gbc-agent-v1 session with its raw stdin, for lines a
// protocol.Writer would not write.
type rawAgent struct {
	c  *gossh.Client
	in io.Writer
	w  *protocol.Writer
	// msgs carries what the coordinator sent, in order, then the error
	// that ended the stream.
	msgs chan readResult
	err  error // the stream's end, once next has seen it
}

type readResult struct {
	m   protocol.Message
	err error
}

func dialRaw(f *farm, key sshKey) (*rawAgent, error) {
	pem, err := os.ReadFile(key.Path)
	if err != nil {
		return nil, err
	}
	signer, err := gossh.ParsePrivateKey(pem)
	if err != nil {
		return nil, err
	}
	c, err := gossh.Dial("tcp", f.addr, &gossh.ClientConfig{User: "agent", Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: func(string, net.Addr, gossh.PublicKey) error { return nil }, Timeout: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	s, err := c.NewSession()
	if err != nil {
		c.Close()
		return nil, err
	}
	in, _ := s.StdinPipe()
	out, _ := s.StdoutPipe()
	if err := s.RequestSubsystem(protocol.Subsystem); err != nil {
		c.Close()
		return nil, err
	}
	a := &rawAgent{c: c, in: in, w: protocol.NewWriter(in, 0), msgs: make(chan readResult, 64)}
	go func() {
		r := protocol.NewReader(out, 0)
		for {
			m, err := r.Read()
			if err != nil {
				a.msgs <- readResult{err: err}
				return
			}
			if m.MessageType() == protocol.TypeAck && protocol.IDOf(m) == 0 {
				continue
			}
			a.msgs <- readResult{m: m}
		}
	}()
	return a, nil
}

// next is the next message from the coordinator, within a minute.
func (a *rawAgent) next() (protocol.Message, error) {
	if a.err != nil {
		return nil, a.err
	}
	select {
	case r := <-a.msgs:
		a.err = r.err
		return r.m, r.err
	case <-time.After(time.Minute):
		return nil, errNoMessage
	}
}

var errNoMessage = errors.New("no message from the coordinator within a minute")

// send writes m and returns the coordinator's reply to it (an ack or
// error with m's id), skipping what else arrives meanwhile.
func (a *rawAgent) send(m protocol.Message) (protocol.Message, error) {
	if err := a.w.Write(m); err != nil {
		return nil, err
	}
	id := protocol.IDOf(m)
	for {
		r, err := a.next()
		if err != nil {
			return nil, err
		}
		if t := r.MessageType(); protocol.IDOf(r) == id && (t == protocol.TypeAck || t == protocol.TypeError || t == protocol.TypeWelcome) {
			return r, nil
		}
	}
}

func (a *rawAgent) hello(system, name string) (protocol.Message, error) {
	return a.send(&protocol.Hello{Header: protocol.Header{ID: 1}, ProtocolVersion: protocol.Version, Name: name,
		Systems: []string{system}, MaxParallelBuilds: 1, StoreDir: "/nix/store", Backend: "nix"})
}

// nextBuild skips heartbeat acks and the like until a build is pushed.
func (a *rawAgent) nextBuild() (*protocol.Build, error) {
	for {
		m, err := a.next()
		if err != nil {
			return nil, err
		}
		if b, ok := m.(*protocol.Build); ok {
			if err := a.w.Write(&protocol.Ack{Header: protocol.Header{ID: b.ID}}); err != nil {
				return nil, err
			}
			return b, nil
		}
	}
}

// alive checks that the session still answers: a heartbeat with an id is
// acknowledged.
func (a *rawAgent) alive(running ...string) string {
	m, err := a.send(&protocol.Heartbeat{Header: protocol.Header{ID: 99}, Running: running})
	if err != nil || m.MessageType() != protocol.TypeAck {
		return fmt.Sprintf("session broken (%T %v)", m, err)
	}
	return "session still answers"
}

// uploadNAR uploads a small valid NAR as the output's file and returns a
// report that matches it.
func uploadNAR(t *testing.T, sc *sftp.Client, build string, o protocol.OutputRef) (protocol.OutputResult, error) {
	file := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(file, []byte("not what the builder makes\n"), 0o644); err != nil {
		return protocol.OutputResult{}, err
	}
	var buf bytes.Buffer
	if err := nar.Dump(&buf, file); err != nil {
		return protocol.OutputResult{}, err
	}
	w, err := sc.Create("/uploads/" + build + "/" + o.Name + ".nar")
	if err != nil {
		return protocol.OutputResult{}, err
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		w.Close()
		return protocol.OutputResult{}, err
	}
	if err := w.Close(); err != nil {
		return protocol.OutputResult{}, err
	}
	sum := sha256.Sum256(buf.Bytes())
	h := nixhash.NewSHA256(sum).String()
	n := int64(buf.Len())
	return protocol.OutputResult{Name: o.Name, Path: o.Path, NarHash: h, NarSize: n, FileHash: h, FileSize: n,
		Compression: "none", Upload: o.Name + ".nar"}, nil
}

// roleMatrix runs every command of help with --help under each role and
// compares the answer with the role help names.
func roleMatrix(f *farm, keys map[string]sshKey) (string, error) {
	r := f.ssh(f.admin, "help")
	if r.Code != 0 {
		return "", fmt.Errorf("help: exit %d", r.Code)
	}
	rank := map[string]int{"reader": 1, "operator": 2, "admin": 3}
	line := regexp.MustCompile(`^  (\S.*?)\s{2,}.*\[(reader|operator|admin)\]$`)
	cases, bad := 0, []string{}
	for _, l := range strings.Split(r.Stdout, "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		var words []string
		for i, w := range strings.Fields(m[1]) {
			if strings.ToLower(w) == w {
				words = append(words, w)
			} else if i > 0 && strings.HasSuffix(w, "-ID") && strings.Contains(m[1], w+" ") {
				words = append(words, "00000000-0000-0000-0000-000000000000") // a parameter inside the path
			} else {
				break
			}
		}
		cmd := strings.Join(words, " ") + " --help"
		for role, key := range keys {
			cases++
			got := f.ssh(key, cmd)
			want := 0
			if rank[role] < rank[m[2]] {
				want = 1
			}
			if got.Code != want || (want == 1 && !strings.Contains(got.Stderr, "permission denied")) {
				bad = append(bad, fmt.Sprintf("%s as %s: exit %d (want %d) %q", cmd, role, got.Code, want, text200(got.Stderr)))
			}
		}
	}
	if cases < 40 || len(bad) > 0 {
		return "", fmt.Errorf("%d cases, wrong: %s", cases, strings.Join(bad, "; "))
	}
	return fmt.Sprintf("%d command × role cases as help says", cases), nil
}

// forwardRefused runs ssh with forwarding arguments and checks it fails
// with a refusal.
func forwardRefused(f *farm, key sshKey, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	all := append([]string{"-p", f.port, "-i", key.Path, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile=" + f.knownHosts, "-o", "StrictHostKeyChecking=yes", "-F", "/dev/null"}, args...)
	cmd := exec.CommandContext(ctx, "ssh", append(all, "someone@127.0.0.1")...)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err == nil {
		return "", fmt.Errorf("ssh %s succeeded: %s", strings.Join(args, " "), out)
	}
	s := string(out)
	if !strings.Contains(s, "prohibited") && !strings.Contains(s, "forwarding failed") && !strings.Contains(s, "open failed") {
		return "", fmt.Errorf("ssh %s failed without a refusal: %v %s", strings.Join(args, " "), err, s)
	}
	return "refused: " + text200(lastLine(s)), nil
}

// sftpBatch runs one sftp command with the real client; an error means
// the command failed.
func sftpBatch(f *farm, key sshKey, command string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sftp", "-b", "-", "-P", f.port, "-i", key.Path,
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-F", "/dev/null",
		"-o", "UserKnownHostsFile="+f.knownHosts, "-o", "StrictHostKeyChecking=yes", "agent@127.0.0.1")
	cmd.Stdin = strings.NewReader(command + "\n")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// specialFiles submits a FIFO and a symlink to /dev/zero as .drv files to
// a coordinator whose store directory holds them.
func specialFiles(t *testing.T) (string, error) {
	store := filepath.Join(t.TempDir(), "store")
	if err := os.Mkdir(store, 0o755); err != nil {
		return "", err
	}
	fifo := store + "/22222222222222222222222222222222-fifo.drv"
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		return "", err
	}
	zero := store + "/44444444444444444444444444444444-zero.drv"
	if err := os.Symlink("/dev/zero", zero); err != nil {
		return "", err
	}
	g := newFarmWith(t, "--store-dir", store)
	var said []string
	for _, c := range []struct{ path, want string }{{fifo, "named pipe"}, {zero, "not in the store"}} {
		r := g.ssh(g.admin, "build "+c.path)
		if r.Code == 0 || !strings.Contains(r.Stderr, c.want) {
			return "", fmt.Errorf("build %s: exit %d, stderr %q", c.path, r.Code, r.Stderr)
		}
		said = append(said, c.want)
	}
	if r := g.ssh(g.admin, "status"); r.Code != 0 {
		return "", fmt.Errorf("status after the refusals: exit %d", r.Code)
	}
	return "refused: " + strings.Join(said, ", ") + "; coordinator answers", nil
}

// flood opens n TCP connections from 127.0.0.2 that never start SSH, then
// checks that status still answers.
func flood(f *farm, n int) (string, error) {
	admitted := 0
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := d.Dial("tcp", f.addr)
		if err != nil {
			return "", fmt.Errorf("flood dial: %w", err)
		}
		conns = append(conns, c)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if l, err := bufio.NewReader(c).ReadString('\n'); err == nil && strings.HasPrefix(l, "SSH-2.0-") {
			admitted++
		}
	}
	if admitted != 8 {
		return "", fmt.Errorf("%d of %d got an SSH greeting, want 8", admitted, n)
	}
	if r := f.ssh(f.admin, "status"); r.Code != 0 {
		return "", fmt.Errorf("status during the flood: exit %d %s", r.Code, r.Stderr)
	}
	return fmt.Sprintf("%d of %d greeted; status answers during the flood", admitted, n), nil
}

// waitLog is logFile.waitFor without failing the test.
func waitLog(l *logFile, re *regexp.Regexp, d time.Duration) ([]string, error) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(l.String()); m != nil {
			return m, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("no %q in the log within %v", re, d)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// text200 keeps table cells short.
func text200(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
