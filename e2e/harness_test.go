// Package e2e runs gbc as its users do: real processes in a temp dir, the
// real OpenSSH ssh and sftp clients, real nix-store. Nothing is mocked.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// gbcBin is built once in TestMain.
var gbcBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	for _, tool := range []string{"ssh", "ssh-keygen", "sftp", "nix-store", "nix-instantiate", "nix-hash"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s not found (run scripts/install-deps.sh): %v\n", tool, err)
			return 1
		}
	}
	dir, err := os.MkdirTemp("", "gbc-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	gbcBin = filepath.Join(dir, "gbc")
	build := exec.Command("go", "build", "-o", gbcBin, "./cmd/gbc")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building gbc: %v\n", err)
		return 1
	}
	return m.Run()
}

// nixEnv is the environment every nix command here runs with: root without
// build users, no sandbox, and no substituters (the machine is offline).
func nixEnv() []string {
	return append(os.Environ(), "NIX_CONFIG=build-users-group =\nsubstituters =\nsandbox = false")
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = nixEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// instantiate returns the .drv of one attribute of examples/graph.nix; the
// nonce keeps tests from sharing outputs.
func instantiate(t *testing.T, nonce, attr string, extra ...string) string {
	t.Helper()
	args := append([]string{"../examples/graph.nix", "--argstr", "nonce", nonce, "-A", attr}, extra...)
	return run(t, "nix-instantiate", args...)
}

// logFile collects a process's stderr and lets tests wait for a pattern.
type logFile struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logFile) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitFor polls the log until re matches, for at most d.
func (l *logFile) waitFor(t *testing.T, re *regexp.Regexp, d time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(l.String()); m != nil {
			return m
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %q in log:\n%s", d, re, l.String())
	return nil
}

type proc struct {
	cmd  *exec.Cmd
	log  *logFile
	done chan error
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{log: &logFile{}, done: make(chan error, 1)}
	p.cmd = exec.Command(name, args...)
	p.cmd.Env = nixEnv()
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("log of %s %s:\n%s", filepath.Base(name), strings.Join(args, " "), p.log.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits; it returns the exit error, if any.
func (p *proc) stop(t *testing.T) error {
	if p.cmd.ProcessState != nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		err := <-p.done
		p.done <- err
		t.Errorf("process %s did not stop within 15s of SIGTERM", p.cmd.Path)
		return err
	}
}

// exited waits up to d for the process to end on its own.
func (p *proc) exited(d time.Duration) (error, bool) {
	select {
	case err := <-p.done:
		p.done <- err
		return err, true
	case <-time.After(d):
		return nil, false
	}
}

type sshKey struct {
	Path string // private key
	Pub  string // authorized_keys line
}

func newKey(t *testing.T, dir, name string) sshKey {
	t.Helper()
	path := filepath.Join(dir, name)
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path)
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return sshKey{Path: path, Pub: strings.TrimSpace(string(pub))}
}

// farm is one coordinator in a temp dir plus the keys to talk to it.
type farm struct {
	t          *testing.T
	dir        string
	state      string
	addr       string
	port       string
	knownHosts string
	admin      sshKey
	coord      *proc
}

var addrRE = regexp.MustCompile(`addr=(127\.0\.0\.1:(\d+))`)

func newFarm(t *testing.T) *farm {
	t.Helper()
	f := &farm{t: t, dir: t.TempDir()}
	f.state = filepath.Join(f.dir, "state")
	f.admin = newKey(t, f.dir, "admin")
	f.startCoordinator()
	return f
}

func (f *farm) startCoordinator(extra ...string) {
	t := f.t
	t.Helper()
	args := append([]string{"coordinator", "--state-dir", f.state, "--listen", "127.0.0.1:0",
		"--admin-key", f.admin.Path + ".pub"}, extra...)
	f.coord = start(t, gbcBin, args...)
	m := f.coord.log.waitFor(t, addrRE, 30*time.Second)
	f.addr, f.port = m[1], m[2]
	hostPub, err := os.ReadFile(filepath.Join(f.state, "ssh_host_ed25519_key.pub"))
	if err != nil {
		t.Fatalf("host key: %v", err)
	}
	f.knownHosts = filepath.Join(f.dir, "known_hosts")
	line := fmt.Sprintf("[127.0.0.1]:%s %s\n", f.port, strings.TrimSpace(string(hostPub)))
	if err := os.WriteFile(f.knownHosts, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
}

type result struct {
	Stdout, Stderr string
	Code           int
}

// ssh runs one command on the coordinator with the real OpenSSH client.
// The remote command is passed as one string, as a user's shell would.
func (f *farm) ssh(key sshKey, command string) result {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-p", f.port, "-i", key.Path,
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile="+f.knownHosts, "-o", "StrictHostKeyChecking=yes",
		"-o", "LogLevel=ERROR", "-F", "/dev/null",
		"someone@127.0.0.1", command)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		f.t.Fatalf("ssh %s: %v", command, err)
	}
	return result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// mustSSH runs an admin command that has to succeed.
func (f *farm) mustSSH(command string) string {
	f.t.Helper()
	r := f.ssh(f.admin, command)
	if r.Code != 0 {
		f.t.Fatalf("ssh %q: exit %d\nstdout: %s\nstderr: %s", command, r.Code, r.Stdout, r.Stderr)
	}
	return strings.TrimSpace(r.Stdout)
}

type agentProc struct {
	ID  string
	Key sshKey
	*proc
}

// addAgent registers an agent over ssh and starts `gbc agent` for it.
func (f *farm) addAgent(name string, extra ...string) agentProc {
	f.t.Helper()
	key := newKey(f.t, f.dir, name)
	id := f.mustSSH(fmt.Sprintf("agent new --name %s --key '%s'", name, key.Pub))
	if !regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString(id) {
		f.t.Fatalf("agent new printed %q, want one UUID", id)
	}
	a := agentProc{ID: id, Key: key}
	a.proc = f.startAgent(key, name, extra...)
	return a
}

func (f *farm) startAgent(key sshKey, name string, extra ...string) *proc {
	args := append([]string{"agent", "--coordinator", f.addr, "--identity", key.Path,
		"--known-hosts", f.knownHosts, "--backend", "nix", "--daemon", "exec:nix-daemon --stdio", "--name", name,
		"--work-dir", filepath.Join(f.dir, name+"-work")}, extra...)
	return start(f.t, gbcBin, args...)
}

// lines splits command output into non-empty lines.
func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}
