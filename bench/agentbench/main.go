// Command agentbench measures what one build costs through gbc against
// Nix alone, on the same machine in the same run, every store empty at the
// start of each method (each process group in its own mount namespace with
// a fresh directory bind-mounted on /nix):
//
//   - nix-store: one `nix-store --realise DRV` process per derivation;
//   - ssh-ng: Nix remote builds, one `nix-store --realise --max-jobs 0`
//     per derivation with `builders = ssh-ng://root@127.0.0.1 …` to a
//     builder with as many slots as the agent, reached through an OpenSSH
//     server on a loopback port (its own config and host key) and an
//     OpenSSH ControlMaster started beforehand;
//   - gbc: `gbc coordinator` (its store holds only the .drv files) and one
//     `gbc agent`, submitted with `ssh coord build --wait …`.
//
// Scenarios: -n independent trivial derivations on one slot, then chains
// (each link reads the previous one's output) over -chain-slots slots. For
// gbc it also prints where the time of a build went, from the agent's
// "build finished" and the coordinator's "build succeeded" log lines.
//
// Run through bench/agent.sh, which builds gbc first; needs root (mount
// namespaces), nix-store, nix-instantiate, nix-daemon, ssh, ssh-keygen and
// sshd.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	gbc := flag.String("gbc", "bin/gbc", "gbc binary")
	n := flag.Int("n", 50, "independent derivations (one slot)")
	chains := flag.String("chains", "20,50", "chain lengths, comma-separated (empty: none)")
	chainSlots := flag.Int("chain-slots", 2, "build slots for the chains (agent and ssh-ng builder)")
	daemon := flag.String("daemon", "", "gbc agent --daemon `ADDR`, in the agent's mount namespace (empty: exec:nix-daemon --stdio)")
	agentArgs := flag.String("agent-args", "", "extra `ARGS` for gbc agent, space-separated")
	sshd := flag.String("sshd", "/usr/sbin/sshd", "OpenSSH server binary for the ssh-ng builder")
	keep := flag.Bool("keep", false, "keep the temporary directory (stores, logs) and print it")
	flag.Parse()
	b := &bench{gbc: *gbc, sshd: *sshd, agentArgs: strings.Fields(*agentArgs)}
	if *daemon != "" {
		b.agentArgs = append(b.agentArgs, "--daemon", *daemon)
	}
	scen := []scenario{{name: fmt.Sprintf("%d independent", *n), kind: "indep", n: *n, slots: 1}}
	for _, f := range strings.Split(*chains, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		l, err := strconv.Atoi(f)
		if err != nil || l < 1 {
			log.Fatalf("-chains: %q is not a length", f)
		}
		scen = append(scen, scenario{name: fmt.Sprintf("chain of %d", l), kind: "chain", n: l, slots: *chainSlots})
	}
	if err := b.run(scen, *keep); err != nil {
		log.Fatal(err)
	}
}

type scenario struct {
	name  string
	kind  string // indep or chain
	n     int
	slots int
}

type bench struct {
	gbc, sshd string
	agentArgs []string
	dir       string
	system    string
	seq       int
}

// result is one method's run of one scenario.
type result struct {
	wall   time.Duration
	phases *breakdown // gbc only
}

const bothTimeout = 10 * time.Minute

func (b *bench) run(scen []scenario, keep bool) error {
	if os.Geteuid() != 0 {
		return errors.New("agentbench needs root (mount namespaces, bind mounts on /nix)")
	}
	for _, tool := range []string{"unshare", "nix-store", "nix-instantiate", "nix-daemon", "ssh", "ssh-keygen", b.sshd, b.gbc} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (scripts/install-deps.sh bench installs what is missing): %w", tool, err)
		}
	}
	dir, err := os.MkdirTemp("", "gbc-agentbench-")
	if err != nil {
		return err
	}
	b.dir = dir
	if keep {
		fmt.Printf("keeping %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.nix"), []byte(benchNix), 0o644); err != nil {
		return err
	}
	out, err := exec.Command("nix-instantiate", "--eval", "--expr", "builtins.currentSystem").Output()
	if err != nil {
		return fmt.Errorf("nix-instantiate --eval builtins.currentSystem: %w", err)
	}
	b.system = strings.Trim(strings.TrimSpace(string(out)), `"`)

	agentDesc := "gbc agent"
	if len(b.agentArgs) > 0 {
		agentDesc += " " + strings.Join(b.agentArgs, " ")
	}
	fmt.Printf("one build through gbc vs Nix alone; %s, stores empty at the start, one run\n", b.system)
	fmt.Printf("nix-store: one nix-store --realise process per derivation; ssh-ng: the same with --max-jobs 0 and builders = ssh-ng://root@127.0.0.1 (sshd on loopback, ControlMaster); gbc: %s\n\n", agentDesc)
	type row struct {
		s   scenario
		res [3]result
	}
	var rows []row
	for _, s := range scen {
		nonce := fmt.Sprintf("%d-%s-%d", time.Now().UnixNano(), s.kind, s.n)
		var r row
		r.s = s
		if r.res[0], err = b.nixStore(s, nonce); err != nil {
			return fmt.Errorf("%s, nix-store: %w", s.name, err)
		}
		if r.res[1], err = b.sshNG(s, nonce); err != nil {
			return fmt.Errorf("%s, ssh-ng: %w", s.name, err)
		}
		if r.res[2], err = b.gbcFarm(s, nonce); err != nil {
			return fmt.Errorf("%s, gbc: %w", s.name, err)
		}
		rows = append(rows, r)
	}
	fmt.Printf("%-16s %5s %12s %12s %12s %14s %12s\n", "scenario", "slots", "nix-store ms", "ssh-ng ms", "gbc ms", "gbc/nix-store", "gbc/ssh-ng")
	for _, r := range rows {
		per := func(i int) float64 { return ms(r.res[i].wall) / float64(r.s.n) }
		fmt.Printf("%-16s %5d %12.1f %12.1f %12.1f %13.2fx %11.2fx\n", r.s.name, r.s.slots, per(0), per(1), per(2), per(2)/per(0), per(2)/per(1))
	}
	fmt.Printf("(per build: the run's wall time / its builds; goal for %d independent: gbc ≤ 0.5x nix-store and ≤ 0.25x ssh-ng)\n\n", scen[0].n)

	fmt.Println("where a gbc build's time goes, mean ms per build (agent: fetch = .drv closure and inputs from the caches, stale outputs deleted; coordinator: verify+publish+record; rest = wall per build − the agent's time − the coordinator's, i.e. allocation, messages, waiting)")
	fmt.Printf("%-16s %8s %8s %8s %8s %8s %8s %14s %8s\n", "scenario", "wall", "fetch", "build", "pack", "upload", "agent", "verify+publish", "rest")
	for _, r := range rows {
		p := r.res[2].phases
		wall := ms(r.res[2].wall) / float64(r.s.n)
		fmt.Printf("%-16s %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %14.1f %8.1f\n", r.s.name, wall,
			p.mean("fetch_ms"), p.mean("build_ms"), p.mean("pack_ms"), p.mean("upload_ms"),
			p.mean("total_ms"), p.coordMean(), wall-p.mean("total_ms")-p.coordMean())
	}
	return nil
}

// benchNix: n trivial derivations, independent or a chain. Builders run
// with no PATH: shell built-ins only.
const benchNix = `{ nonce, n, kind }:
let
  mk = name: script: derivation {
    inherit name nonce;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
  };
  indep = i: mk "bench-${toString i}" "echo ${toString i} > $out";
  link = i: if i == 0 then mk "bench-link-0" "echo 0 > $out"
    else mk "bench-link-${toString i}" "read x < ${link (i - 1)}; echo \"$x ${toString i}\" > $out";
in builtins.genList (if kind == "chain" then link else indep) n
`

// nsScript bind-mounts $0 on /nix (and keeps Nix's narinfo cache there)
// and runs the rest of the arguments.
const nsScript = `mount --bind "$0" /nix && export XDG_CACHE_HOME="$0/xdg-cache" && exec "$@"`

// ns is name args… in a new mount namespace whose /nix is nixDir.
func ns(ctx context.Context, nixDir, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"-m", "--propagation", "private", "sh", "-c", nsScript, nixDir, name}, args...)...)
	cmd.Env = nixEnv()
	return cmd
}

func nixEnv() []string {
	return append(os.Environ(), "NIX_CONFIG=build-users-group =\nsubstituters =\nsandbox = false")
}

// newStore is an empty directory for /nix.
func (b *bench) newStore(name string) (string, error) {
	b.seq++
	d := filepath.Join(b.dir, fmt.Sprintf("%02d-%s", b.seq, name))
	return d, os.MkdirAll(d, 0o755)
}

func output(cmd *exec.Cmd) (string, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, tail(stderr.String()))
	}
	return string(out), nil
}

func tail(s string) string {
	if len(s) > 4000 {
		return "…" + s[len(s)-4000:]
	}
	return s
}

// instantiate writes the scenario's .drv files into nixDir's store and
// returns them in build order.
func (b *bench) instantiate(ctx context.Context, nixDir string, s scenario, nonce string) ([]string, error) {
	out, err := output(ns(ctx, nixDir, "nix-instantiate", filepath.Join(b.dir, "bench.nix"),
		"--argstr", "nonce", nonce, "--arg", "n", strconv.Itoa(s.n), "--argstr", "kind", s.kind))
	if err != nil {
		return nil, err
	}
	drvs := strings.Fields(out)
	if len(drvs) != s.n {
		return nil, fmt.Errorf("nix-instantiate printed %d derivations, want %d", len(drvs), s.n)
	}
	return drvs, nil
}

func (b *bench) nixStore(s scenario, nonce string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bothTimeout)
	defer cancel()
	store, err := b.newStore("nix-store")
	if err != nil {
		return result{}, err
	}
	drvs, err := b.instantiate(ctx, store, s, nonce)
	if err != nil {
		return result{}, err
	}
	script := `for d in "$@"; do nix-store --realise "$d" >/dev/null || exit 1; done`
	cmd := ns(ctx, store, "sh", append([]string{"-c", script, "sh"}, drvs...)...)
	t0 := time.Now()
	if _, err := output(cmd); err != nil {
		return result{}, err
	}
	return result{wall: time.Since(t0)}, nil
}

// sshNG builds every derivation with Nix's remote builds on a builder
// behind an OpenSSH server whose /nix is an empty store.
func (b *bench) sshNG(s scenario, nonce string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bothTimeout)
	defer cancel()
	local, err := b.newStore("ssh-ng-local")
	if err != nil {
		return result{}, err
	}
	remote, err := b.newStore("ssh-ng-builder")
	if err != nil {
		return result{}, err
	}
	drvs, err := b.instantiate(ctx, local, s, nonce)
	if err != nil {
		return result{}, err
	}
	sshDir := filepath.Join(b.dir, fmt.Sprintf("%02d-sshd", b.seq))
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		return result{}, err
	}
	hostKey, err := keygen(sshDir, "host")
	if err != nil {
		return result{}, err
	}
	clientKey, err := keygen(sshDir, "client")
	if err != nil {
		return result{}, err
	}
	// The builder's side: the store daemon on stdio, as root (trusted),
	// with the builder's own settings; ssh-ng asks for exactly this.
	daemonSh := filepath.Join(sshDir, "daemon.sh")
	if err := os.WriteFile(daemonSh, []byte(fmt.Sprintf("#!/bin/sh\nexport NIX_CONFIG='build-users-group =\nsubstituters =\nsandbox = false\nmax-jobs = %d'\nexec nix-daemon --stdio\n", s.slots)), 0o755); err != nil {
		return result{}, err
	}
	clientPub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		return result{}, err
	}
	if err := os.WriteFile(filepath.Join(sshDir, "authorized_keys"),
		[]byte(fmt.Sprintf("command=%q,restrict %s", daemonSh, clientPub)), 0o600); err != nil {
		return result{}, err
	}
	port, err := freePort()
	if err != nil {
		return result{}, err
	}
	cfg := filepath.Join(sshDir, "sshd_config")
	if err := os.WriteFile(cfg, []byte(strings.Join([]string{
		"Port " + port, "ListenAddress 127.0.0.1", "HostKey " + hostKey,
		"AuthorizedKeysFile " + filepath.Join(sshDir, "authorized_keys"),
		"PidFile none", "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
		"PasswordAuthentication no", "KbdInteractiveAuthentication no",
		"MaxStartups 100", "MaxSessions 100", "LogLevel ERROR", "",
	}, "\n")), 0o600); err != nil {
		return result{}, err
	}
	// sshd checks for its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return result{}, err
	}
	sshd, err := startProc(ns(ctx, remote, b.sshd, "-D", "-e", "-f", cfg))
	if err != nil {
		return result{}, err
	}
	defer sshd.stop()
	if err := waitListen("127.0.0.1:"+port, 10*time.Second); err != nil {
		return result{}, fmt.Errorf("sshd: %w\n%s", err, sshd.log.String())
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		return result{}, err
	}
	knownHosts := filepath.Join(sshDir, "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(fmt.Sprintf("[127.0.0.1]:%s %s", port, hostPub)), 0o644); err != nil {
		return result{}, err
	}
	opts := []string{"-F", "/dev/null", "-p", port, "-i", clientKey, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile=" + knownHosts, "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
		"-o", "ControlMaster=auto", "-o", "ControlPath=" + filepath.Join(sshDir, "cm"), "-o", "ControlPersist=600"}
	master := exec.CommandContext(ctx, "ssh", append(slices(opts, "-M", "-N", "-f"), "root@127.0.0.1")...)
	if _, err := output(master); err != nil {
		return result{}, fmt.Errorf("ControlMaster: %w\nsshd:\n%s", err, sshd.log.String())
	}
	defer exec.Command("ssh", append(slices(opts, "-O", "exit"), "root@127.0.0.1")...).Run()

	// One nix-store per derivation, in order: one process for all of them
	// postpones every build the busy builder declines and polls for a
	// free slot every few seconds, which would measure Nix's poll interval.
	builders := fmt.Sprintf("ssh-ng://root@127.0.0.1 %s %s %d", b.system, clientKey, s.slots)
	script := `for d in "$@"; do nix-store --realise --max-jobs 0 --option builders "$0" --option builders-use-substitutes false "$d" >/dev/null || exit 1; done`
	cmd := ns(ctx, local, "sh", append([]string{"-c", script, builders}, drvs...)...)
	cmd.Env = append(cmd.Env, "NIX_SSHOPTS="+strings.Join(opts, " "))
	t0 := time.Now()
	if _, err := output(cmd); err != nil {
		return result{}, fmt.Errorf("%w\nsshd:\n%s", err, sshd.log.String())
	}
	wall := time.Since(t0)
	// Built there, not here: the builder's store holds the outputs.
	last := drvs[len(drvs)-1]
	outPath, err := output(ns(ctx, local, "nix-store", "--query", "--outputs", last))
	if err != nil {
		return result{}, err
	}
	if _, err := output(ns(ctx, remote, "nix-store", "--check-validity", strings.TrimSpace(outPath))); err != nil {
		return result{}, fmt.Errorf("the builder's store lacks %s: %w", outPath, err)
	}
	return result{wall: wall}, nil
}

func slices(a []string, more ...string) []string {
	return append(append([]string(nil), a...), more...)
}

func keygen(dir, name string) (string, error) {
	p := filepath.Join(dir, name)
	_, err := output(exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", p))
	return p, err
}

// freePort is a loopback port that was free a moment ago (sshd takes a
// port number, not a listener).
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, p, err := net.SplitHostPort(l.Addr().String())
	return p, err
}

func waitListen(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %v: %w", addr, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proc is a background process whose output is kept.
type proc struct {
	cmd  *exec.Cmd
	log  *logBuf
	done chan struct{}
}

type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func startProc(cmd *exec.Cmd) (*proc, error) {
	p := &proc{cmd: cmd, log: &logBuf{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", strings.Join(cmd.Args, " "), err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitFor polls the log until re matches.
func (p *proc) waitFor(re *regexp.Regexp, d time.Duration) ([]string, error) {
	deadline := time.Now().Add(d)
	for {
		if m := re.FindStringSubmatch(p.log.String()); m != nil {
			return m, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited before logging %q:\n%s", p.cmd.Args[0], re, tail(p.log.String()))
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no %q in the log after %v:\n%s", re, d, tail(p.log.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	addrRE      = regexp.MustCompile(`addr=(127\.0\.0\.1:(\d+))`)
	connectedRE = regexp.MustCompile(`msg="connected to coordinator"`)
)

// gbcFarm runs a coordinator whose store holds the .drv files and one
// agent with an empty store, and submits every derivation at once.
func (b *bench) gbcFarm(s scenario, nonce string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bothTimeout)
	defer cancel()
	coordStore, err := b.newStore("gbc-coordinator")
	if err != nil {
		return result{}, err
	}
	agentStore, err := b.newStore("gbc-agent")
	if err != nil {
		return result{}, err
	}
	drvs, err := b.instantiate(ctx, coordStore, s, nonce)
	if err != nil {
		return result{}, err
	}
	dir := filepath.Join(b.dir, fmt.Sprintf("%02d-gbc", b.seq))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return result{}, err
	}
	admin, err := keygen(dir, "admin")
	if err != nil {
		return result{}, err
	}
	agentKey, err := keygen(dir, "agent")
	if err != nil {
		return result{}, err
	}
	state := filepath.Join(dir, "state")
	coord, err := startProc(ns(ctx, coordStore, b.gbc, "coordinator", "--state-dir", state,
		"--listen", "127.0.0.1:0", "--admin-key", admin+".pub"))
	if err != nil {
		return result{}, err
	}
	defer coord.stop()
	m, err := coord.waitFor(addrRE, 30*time.Second)
	if err != nil {
		return result{}, err
	}
	addr, port := m[1], m[2]
	hostPub, err := os.ReadFile(filepath.Join(state, "ssh_host_ed25519_key.pub"))
	if err != nil {
		return result{}, err
	}
	knownHosts := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(fmt.Sprintf("[127.0.0.1]:%s %s", port, hostPub)), 0o644); err != nil {
		return result{}, err
	}
	sshCmd := func(command string) *exec.Cmd {
		return exec.CommandContext(ctx, "ssh", "-F", "/dev/null", "-p", port, "-i", admin, "-o", "IdentitiesOnly=yes",
			"-o", "BatchMode=yes", "-o", "UserKnownHostsFile="+knownHosts, "-o", "StrictHostKeyChecking=yes",
			"-o", "LogLevel=ERROR", "bench@127.0.0.1", command)
	}
	agentPub, err := os.ReadFile(agentKey + ".pub")
	if err != nil {
		return result{}, err
	}
	if _, err := output(sshCmd(fmt.Sprintf("agent new --name bench --key '%s'", strings.TrimSpace(string(agentPub))))); err != nil {
		return result{}, err
	}
	args := append([]string{"agent", "--coordinator", addr, "--identity", agentKey, "--known-hosts", knownHosts,
		"--backend", "nix", "--daemon", "exec:nix-daemon --stdio", "--name", "bench", "--max-parallel-builds", strconv.Itoa(s.slots),
		"--work-dir", filepath.Join(dir, "agent-work")}, b.agentArgs...)
	agent, err := startProc(ns(ctx, agentStore, b.gbc, args...))
	if err != nil {
		return result{}, err
	}
	defer agent.stop()
	if _, err := agent.waitFor(connectedRE, 30*time.Second); err != nil {
		return result{}, err
	}
	t0 := time.Now()
	out, err := output(sshCmd("build --wait " + strings.Join(drvs, " ")))
	wall := time.Since(t0)
	if err != nil {
		return result{}, fmt.Errorf("%w\nagent:\n%s", err, tail(agent.log.String()))
	}
	if got := strings.Count(out, " succeeded"); got != s.n {
		return result{}, fmt.Errorf("build --wait reported %d successes, want %d:\n%s", got, s.n, out)
	}
	// The coordinator logs a success just after recording it, and the
	// agent's lines precede its results: both are there or about to be.
	var br breakdown
	deadline := time.Now().Add(10 * time.Second)
	for {
		br = breakdown{agent: logLines(agent.log.String(), "build finished"), coord: logLines(coord.log.String(), "build succeeded")}
		if len(br.agent) >= s.n && len(br.coord) >= s.n {
			break
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("%d agent and %d coordinator timing lines for %d builds", len(br.agent), len(br.coord), s.n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, l := range br.agent {
		if _, ok := l["total_ms"]; !ok {
			return result{}, fmt.Errorf("the agent's \"build finished\" line has no timings (an older gbc?): %v", l)
		}
	}
	return result{wall: wall, phases: &br}, nil
}

// breakdown holds the timing fields of a run's log lines.
type breakdown struct {
	agent, coord []map[string]string
}

func (b *breakdown) mean(field string) float64 { return meanOf(b.agent, field) }

// coordMean is the coordinator's handling of one result, its lock and the
// dispatch it triggers.
func (b *breakdown) coordMean() float64 {
	sum := 0.0
	for _, f := range []string{"load_ms", "verify_ms", "publish_ms", "record_ms", "lock_ms", "dispatch_ms"} {
		sum += meanOf(b.coord, f)
	}
	return sum
}

func meanOf(lines []map[string]string, field string) float64 {
	if len(lines) == 0 {
		return 0
	}
	sum := 0.0
	for _, l := range lines {
		v, _ := strconv.ParseFloat(l[field], 64)
		sum += v
	}
	return sum / float64(len(lines))
}

var kvRE = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

// logLines parses the slog text lines whose msg is msg.
func logLines(text, msg string) []map[string]string {
	var out []map[string]string
	want := "msg=" + strconv.Quote(msg)
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, want+" ") && !strings.HasSuffix(line, want) {
			continue
		}
		kv := map[string]string{}
		for _, m := range kvRE.FindAllStringSubmatch(line, -1) {
			v := m[2]
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			kv[m[1]] = v
		}
		out = append(out, kv)
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
