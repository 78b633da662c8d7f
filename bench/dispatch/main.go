// Command dispatch measures the coordinator through its real product paths:
// a `gbc coordinator` process (SQLite, or PostgreSQL with -database; signed
// cache, SSH server) on a loopback port, operators submitting over SSH (golang.org/x/crypto/ssh and
// OpenSSH), and simulated agents speaking gbc-agent-v1 over SSH with SFTP
// uploads. It prints a table:
//
//   - submit rate of a fan-in graph (every 100th derivation is a "library"
//     the next 99 depend on), one .drv per command and many per command;
//   - dispatch latency with a large queue: the time from an agent sending
//     `succeeded` for a prerequisite (a real, verified upload) to the
//     dependent's `build` message arriving, p50/p99;
//   - the coordinator's VmRSS/VmHWM from /proc at that size.
//
// Isolating dispatch: every agent declares x86_64-linux plus its own system
// probe-<i>. The queue is x86_64-linux (priority 0) and keeps every agent's
// single slot busy. A probe round on agent i submits P (probe-<i>) and D
// (probe-<i>, input P), both priority 1000; the agent then fails the
// background build it holds (its 99 dependents become failed-dependency),
// receives P, uploads P's output and reports success (t0), and receives D
// (t1). D is timed t1-t0; nothing else can take that slot, so the figure is
// the coordinator's verify + record + release + dispatch path.
package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/postgres"
	"github.com/gbc-farm/gbc/db/sqlite"
	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/internal/testagent"
	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/storepath"
)

type config struct {
	gbc       string
	submit    int
	one       int
	oneConc   int
	openssh   int
	batch     int
	queue     int
	agents    int
	rounds    int
	probeConc []int
	noStarted bool
	noPhases  bool
	keep      bool
	noInputs  bool
	coordArgs string
	pprofDir  string
	database  string
}

func main() {
	var cfg config
	flag.StringVar(&cfg.gbc, "gbc", "bin/gbc", "gbc binary")
	flag.IntVar(&cfg.submit, "submit", 100000, "derivations in the submit-rate graph")
	flag.IntVar(&cfg.one, "one", 3000, "of those, submitted one .drv per command (x/crypto/ssh), sequentially and again with -one-conc commands in flight")
	flag.IntVar(&cfg.oneConc, "one-conc", 8, "commands in flight for the concurrent one-per-command row")
	flag.IntVar(&cfg.openssh, "openssh", 200, "of those, submitted one per ssh(1) process; then -batch in one ssh(1) call (0: skip OpenSSH)")
	flag.IntVar(&cfg.batch, "batch", 1000, "derivations per command for the rest of the graph (an SSH exec request must fit in one 256 KiB packet: ~3,000 paths)")
	flag.IntVar(&cfg.queue, "queue", 1000000, "builds queued for the dispatch measurement")
	flag.IntVar(&cfg.agents, "agents", 50, "simulated agents")
	flag.IntVar(&cfg.rounds, "rounds", 1000, "probe rounds (dispatch latency samples)")
	flag.Var(intList{&cfg.probeConc}, "probe-conc", "agents running probe rounds at once; a comma-separated list runs -rounds rounds at each (default 1,10: one success at a time, then ten)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work directory")
	flag.StringVar(&cfg.coordArgs, "coordinator-args", "", "extra `ARGS` for gbc coordinator, space-separated (e.g. \"--memory-limit 450MiB\")")
	flag.BoolVar(&cfg.noInputs, "no-inputs", false, "record the queue without input derivations, as builds from before migration 0004 (the coordinator re-reads each .drv at start)")
	flag.StringVar(&cfg.pprofDir, "pprof", "", "write coordinator CPU profiles of the batch submit and the probe rounds into `DIR`")
	flag.StringVar(&cfg.database, "database", "", "run the coordinator on PostgreSQL: a postgres:// `URL` whose role has CREATEDB; each coordinator run gets a fresh database gbc_bench_<random> on that server (same user, password and parameters, e.g. ?synchronous_commit=off), dropped at the end unless -keep (default: SQLite in the state directory)")
	flag.BoolVar(&cfg.noPhases, "no-phases", false, "probe agents report no phases (preparing, uploading), as agents did before phases existed")
	flag.BoolVar(&cfg.noStarted, "no-started", false, "probe agents report success without a prior started (as this bench did before 2026-11-28; the coordinator then records the start with the success)")
	flag.Parse()
	if len(cfg.probeConc) == 0 {
		cfg.probeConc = []int{1, 10}
	}
	if err := run(context.Background(), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "dispatch bench:", err)
		os.Exit(1)
	}
}

type row struct{ what, n, time, rate, note string }

type bench struct {
	cfg         *config
	dir         string
	storeDir    string
	addr        string
	coord       *exec.Cmd
	pprof       string // coordinator's pprof address
	admin       *ssh.Client
	adminKey    string // OpenSSH private key file
	adminSigner ssh.Signer
	rows        []row
	pgDBs       []*pgDatabase // created for this run, dropped at the end
}

func run(ctx context.Context, cfg *config) error {
	dir, err := os.MkdirTemp("", "gbc-dispatch-")
	if err != nil {
		return err
	}
	if !cfg.keep {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintln(os.Stderr, "work dir:", dir)
	}
	if err := checkDatabaseFlag(cfg.database); err != nil {
		return err
	}
	b := &bench{cfg: cfg, dir: dir, storeDir: filepath.Join(dir, "store")}
	if err := os.MkdirAll(b.storeDir, 0o755); err != nil {
		return err
	}
	// Deferred first so it runs last, after the coordinator has stopped.
	defer b.dropDatabases()
	defer b.stopCoordinator()
	if cfg.submit > 0 {
		dbURL, err := b.newDatabase(ctx)
		if err != nil {
			return err
		}
		if err := b.startCoordinator(ctx, filepath.Join(dir, "state-submit"), dbURL); err != nil {
			return err
		}
		if err := b.submitRate(ctx); err != nil {
			return fmt.Errorf("submit rate: %w", err)
		}
		b.stopCoordinator()
	}
	if cfg.queue > 0 && cfg.agents > 0 {
		if err := b.dispatch(ctx); err != nil {
			return fmt.Errorf("dispatch: %w", err)
		}
	}
	b.print()
	return nil
}

// newDatabase returns the --database URL for a fresh coordinator: "" (SQLite
// in its state directory) or a new PostgreSQL database on -database's server.
func (b *bench) newDatabase(ctx context.Context) (string, error) {
	if b.cfg.database == "" {
		return "", nil
	}
	p, err := createPGDatabase(ctx, b.cfg.database)
	if err != nil {
		return "", err
	}
	b.pgDBs = append(b.pgDBs, p)
	fmt.Fprintln(os.Stderr, "created database", postgres.Redact(p.url))
	return p.url, nil
}

func (b *bench) dropDatabases() {
	for _, p := range b.pgDBs {
		if b.cfg.keep {
			fmt.Fprintln(os.Stderr, "kept database", postgres.Redact(p.url))
			p.server.Close()
			continue
		}
		if err := p.drop(); err != nil {
			fmt.Fprintln(os.Stderr, "dispatch bench:", err)
		}
	}
}

func (b *bench) add(what string, n int, d time.Duration, note string) {
	r := row{what: what, n: strconv.Itoa(n), time: d.Round(time.Millisecond).String(), note: note}
	if d > 0 && n > 0 {
		r.rate = fmt.Sprintf("%.0f/s", float64(n)/d.Seconds())
	}
	b.rows = append(b.rows, r)
	fmt.Fprintf(os.Stderr, "  %s: %s in %s %s %s\n", what, r.n, r.time, r.rate, note)
}

func (b *bench) print() {
	w := []int{4, 1, 4, 4, 4}
	cells := func(r row) []string { return []string{r.what, r.n, r.time, r.rate, r.note} }
	for _, r := range b.rows {
		for i, c := range cells(r) {
			w[i] = max(w[i], len([]rune(c)))
		}
	}
	line := func(c []string) {
		fmt.Printf("| %-*s | %*s | %*s | %*s | %-*s |\n", w[0], c[0], w[1], c[1], w[2], c[2], w[3], c[3], w[4], c[4])
	}
	line([]string{"what", "n", "time", "rate", "note"})
	fmt.Printf("|%s|%s:|%s:|%s:|%s|\n", strings.Repeat("-", w[0]+2), strings.Repeat("-", w[1]+1),
		strings.Repeat("-", w[2]+1), strings.Repeat("-", w[3]+1), strings.Repeat("-", w[4]+2))
	for _, r := range b.rows {
		line(cells(r))
	}
}

// ---- coordinator process and SSH clients ----

func newKey(dir, name string) (ssh.Signer, string, string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", "", err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, "", "", err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, "", "", err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + name
	blk, err := ssh.MarshalPrivateKey(priv, name)
	if err != nil {
		return nil, "", "", err
	}
	keyFile := filepath.Join(dir, name)
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, "", "", err
	}
	if err := os.WriteFile(keyFile+".pub", []byte(line+"\n"), 0o644); err != nil {
		return nil, "", "", err
	}
	return signer, line, keyFile, nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (b *bench) dial(signer ssh.Signer) (*ssh.Client, error) {
	return ssh.Dial("tcp", b.addr, &ssh.ClientConfig{
		User: "gbc", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		// A throwaway coordinator on loopback started by this program.
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
}

// startCoordinator starts `gbc coordinator` on state; dbURL is its
// --database ("" for its default, SQLite in the state directory).
func (b *bench) startCoordinator(ctx context.Context, state, dbURL string) error {
	if b.adminSigner == nil {
		signer, _, keyFile, err := newKey(b.dir, "admin")
		if err != nil {
			return err
		}
		b.adminKey, b.adminSigner = keyFile, signer
	}
	signer, keyFile := b.adminSigner, b.adminKey
	var err error
	if b.addr, err = freePort(); err != nil {
		return err
	}
	logf, err := os.Create(state + ".log")
	if err != nil {
		return err
	}
	b.coord = exec.CommandContext(ctx, b.cfg.gbc, "coordinator", "--state-dir", state,
		"--listen", b.addr, "--admin-key", keyFile+".pub", "--store-dir", b.storeDir,
		"--heartbeat", "1h", "--disconnect-grace", "1h")
	if dbURL != "" {
		b.coord.Args = append(b.coord.Args, "--database", dbURL)
	}
	b.coord.Args = append(b.coord.Args, strings.Fields(b.cfg.coordArgs)...)
	if b.cfg.pprofDir != "" {
		if b.pprof, err = freePort(); err != nil {
			return err
		}
		b.coord.Args = append(b.coord.Args, "--pprof-listen", b.pprof)
	}
	b.coord.Stdout, b.coord.Stderr = logf, logf
	if err := b.coord.Start(); err != nil {
		return fmt.Errorf("start %s coordinator: %w", b.cfg.gbc, err)
	}
	// The coordinator rebuilds its queue before it listens: allow for
	// that (about 25,000 builds/s) on top of the start itself.
	deadline := time.Now().Add(30*time.Second + time.Duration(b.cfg.queue)*time.Second/5000)
	for {
		if b.admin, err = b.dial(signer); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("coordinator did not come up on %s (see %s): %w", b.addr, logf.Name(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *bench) stopCoordinator() {
	if b.admin != nil {
		b.admin.Close()
	}
	if b.coord != nil && b.coord.Process != nil {
		b.coord.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { b.coord.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			b.coord.Process.Kill()
		}
	}
	b.admin, b.coord = nil, nil
}

// profile records a CPU profile of the coordinator while f runs.
func (b *bench) profile(name string, f func() error) error {
	if b.pprof == "" {
		return f()
	}
	done := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		// The profile endpoint has no stop; take 1 s slices until f returns.
		for i := 0; ; i++ {
			resp, err := http.Get("http://" + b.pprof + "/debug/pprof/profile?seconds=2")
			if err != nil {
				done <- err
				return
			}
			data, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				done <- err
				return
			}
			os.WriteFile(filepath.Join(b.cfg.pprofDir, fmt.Sprintf("%s-%03d.pprof", name, i)), data, 0o644)
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
		}
	}()
	err := f()
	close(stop)
	return errors.Join(err, <-done)
}

// command runs one command line on the coordinator and returns stdout.
func command(c *ssh.Client, line string) (string, error) {
	s, err := c.NewSession()
	if err != nil {
		return "", fmt.Errorf("new session: %w", err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	if err := s.Run(line); err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", text.Truncate(line, 80), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (b *bench) submit(c *ssh.Client, flags string, drvs []string) ([]string, error) {
	out, err := command(c, "build "+flags+strings.Join(drvs, " "))
	if err != nil {
		return nil, err
	}
	ids := strings.Fields(out)
	if len(ids) != len(drvs) {
		return nil, fmt.Errorf("submitted %d derivations, got %d ids", len(drvs), len(ids))
	}
	return ids, nil
}

func (b *bench) rss() (rss, hwm string) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.coord.Process.Pid))
	if err != nil {
		return "?", "?"
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 {
			kb, _ := strconv.Atoi(f[1])
			v := fmt.Sprintf("%.0f MB", float64(kb)/1024)
			switch f[0] {
			case "VmRSS:":
				rss = v
			case "VmHWM:":
				hwm = v
			}
		}
	}
	return rss, hwm
}

// ---- derivations ----

// writeDrv writes a real derivation (output path from hashDerivationModulo,
// .drv path its text path) with the derivation package. inputs maps each
// input .drv path to its unmasked HashModulo. It returns the .drv path and
// the derivation's own unmasked HashModulo.
func (b *bench) writeDrv(name, system string, inputs map[string][]byte) (string, []byte, error) {
	p, h, _, err := b.writeDrvOut(name, system, inputs)
	return p, h, err
}

func (b *bench) writeDrvOut(name, system string, inputs map[string][]byte) (string, []byte, string, error) {
	d := &derivation.Derivation{
		Outputs: []derivation.Output{{Name: "out"}},
		System:  system,
		Builder: "/bin/sh",
		Args:    []string{"-c", "echo " + name + " > $out"},
		Env: []derivation.EnvVar{{Key: "builder", Value: "/bin/sh"}, {Key: "name", Value: name},
			{Key: "out", Value: ""}, {Key: "system", Value: system}},
	}
	for in := range inputs {
		d.InputDrvs = append(d.InputDrvs, derivation.InputDrv{Path: in, Outputs: []string{"out"}})
	}
	resolve := func(p string) ([]byte, error) {
		if h, ok := inputs[p]; ok {
			return h, nil
		}
		return nil, fmt.Errorf("unknown input %s", p)
	}
	masked, err := derivation.HashModulo(d, true, resolve)
	if err != nil {
		return "", nil, "", err
	}
	out := storepath.MakeOutputPath(b.storeDir, "out", name, masked)
	d.Outputs[0].Path = out
	d.Env[2].Value = out
	p, err := d.DrvPath()
	if err != nil {
		return "", nil, "", err
	}
	h, err := derivation.HashModulo(d, false, resolve)
	if err != nil {
		return "", nil, "", err
	}
	if err := os.WriteFile(p, d.Bytes(), 0o444); err != nil {
		return "", nil, "", err
	}
	return p, h, out, nil
}

// graph writes n derivations, a fan-in package set: every 100th is a
// library the next 99 depend on; each library precedes its dependents.
func (b *bench) graph(prefix string, n int) ([]string, time.Duration, error) {
	drvs, _, d, err := b.graphOut(prefix, n)
	return drvs, d, err
}

// graphOut is graph that also returns each derivation's output path.
func (b *bench) graphOut(prefix string, n int) ([]string, []string, time.Duration, error) {
	start := time.Now()
	drvs := make([]string, n)
	outs := make([]string, n)
	groups := (n + 99) / 100
	err := parallel(4, groups, func(g int) error {
		var lib map[string][]byte
		for i := g * 100; i < min(n, (g+1)*100); i++ {
			if i%100 == 0 {
				p, h, o, err := b.writeDrvOut(fmt.Sprintf("%s-lib-%d", prefix, i), "x86_64-linux", nil)
				if err != nil {
					return err
				}
				drvs[i], outs[i], lib = p, o, map[string][]byte{p: h}
				continue
			}
			p, _, o, err := b.writeDrvOut(fmt.Sprintf("%s-pkg-%d", prefix, i), "x86_64-linux", lib)
			if err != nil {
				return err
			}
			drvs[i], outs[i] = p, o
		}
		return nil
	})
	return drvs, outs, time.Since(start), err
}

// ---- submit rate ----

func (b *bench) submitRate(ctx context.Context) error {
	cfg := b.cfg
	fmt.Fprintf(os.Stderr, "writing %d .drv files\n", cfg.submit)
	drvs, d, err := b.graph("s", cfg.submit)
	if err != nil {
		return err
	}
	b.add("write .drv files (derivation package)", len(drvs), d, "fan-in: 1 library per 100")
	rest := drvs

	take := func(n int) []string {
		n = min(n, len(rest))
		t := rest[:n]
		rest = rest[n:]
		return t
	}
	if part := take(cfg.one); len(part) > 0 {
		start := time.Now()
		for _, p := range part {
			if _, err := b.submit(b.admin, "", []string{p}); err != nil {
				return err
			}
		}
		b.add("submit, 1 .drv per command, x/crypto/ssh, sequential", len(part), time.Since(start), "one session each, one connection")
	}
	if part := take(cfg.one); len(part) > 0 {
		start := time.Now()
		if err := parallel(cfg.oneConc, len(part), func(i int) error {
			_, err := b.submit(b.admin, "", part[i:i+1])
			return err
		}); err != nil {
			return err
		}
		b.add(fmt.Sprintf("submit, 1 .drv per command, x/crypto/ssh, %d in flight", cfg.oneConc), len(part), time.Since(start), "one connection")
	}
	if cfg.openssh > 0 {
		if _, err := exec.LookPath("ssh"); err != nil {
			fmt.Fprintln(os.Stderr, "ssh(1) not found; skipping the OpenSSH rows")
		} else {
			host, port, _ := net.SplitHostPort(b.addr)
			sshArgs := []string{"-i", b.adminKey, "-p", port, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
				"-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "gbc@" + host}
			sshRun := func(drvs []string) error {
				cmd := exec.CommandContext(ctx, "ssh", append(sshArgs, append([]string{"build"}, drvs...)...)...)
				out, err := cmd.Output()
				if err != nil {
					var ee *exec.ExitError
					if errors.As(err, &ee) {
						return fmt.Errorf("ssh build: %w: %s", err, ee.Stderr)
					}
					return fmt.Errorf("ssh build: %w", err)
				}
				if n := len(strings.Fields(string(out))); n != len(drvs) {
					return fmt.Errorf("ssh build: %d ids for %d derivations", n, len(drvs))
				}
				return nil
			}
			if part := take(cfg.openssh); len(part) > 0 {
				start := time.Now()
				for _, p := range part {
					if err := sshRun([]string{p}); err != nil {
						return err
					}
				}
				b.add("submit, 1 .drv per command, OpenSSH ssh(1)", len(part), time.Since(start), "new process + connection each")
			}
			if part := take(cfg.batch); len(part) > 0 {
				start := time.Now()
				if err := sshRun(part); err != nil {
					return err
				}
				b.add(fmt.Sprintf("submit, %d .drv per command, OpenSSH ssh(1)", len(part)), len(part), time.Since(start), "one process")
			}
		}
	}
	if len(rest) > 0 {
		n := len(rest)
		var elapsed time.Duration
		if err := b.profile("submit-batch", func() error {
			// Timed inside: profile returns only when its current
			// 2 s slice ends, which would round the figure up.
			start := time.Now()
			defer func() { elapsed = time.Since(start) }()
			for len(rest) > 0 {
				if _, err := b.submit(b.admin, "", take(cfg.batch)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
		b.add(fmt.Sprintf("submit, %d .drv per command, x/crypto/ssh, sequential", cfg.batch), n, elapsed, "")
	}
	return nil
}

func parallel(conc, n int, f func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, conc)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ---- dispatch latency ----

type probe struct {
	p, d         string // derivations
	dID          string
	succeededAt  time.Time
	gotD         chan time.Time
	gotP         chan *protocol.Build
	freedAt      time.Time
	pLatency     time.Duration
	dispatchWait time.Duration
}

// agent is the shared test agent (internal/testagent) with what a probe
// round needs to know of the builds pushed to it.
type agent struct {
	*testagent.Agent
	b  *bench
	i  int
	id string

	mu     sync.Mutex
	held   []string // background builds
	gotBG  chan struct{}
	probes map[string]*probe // by derivation
	errs   atomic.Int64
}

func (a *agent) send(m protocol.Message) error { return a.Send(m) }

func (a *agent) hdr() protocol.Header { return a.Header() }

func (b *bench) connectAgent(i int) (*agent, error) {
	signer, line, _, err := newKey(b.dir, fmt.Sprintf("agent-%d", i))
	if err != nil {
		return nil, err
	}
	out, err := command(b.admin, fmt.Sprintf("agent new --name bench-%d --key '%s'", i, line))
	if err != nil {
		return nil, err
	}
	client, err := b.dial(signer)
	if err != nil {
		return nil, err
	}
	ta, err := testagent.Open(client)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("agent %d: %w", i, err)
	}
	a := &agent{Agent: ta, b: b, i: i, id: strings.TrimSpace(out), gotBG: make(chan struct{}, 1), probes: map[string]*probe{}}
	if _, err := a.Hello(protocol.Hello{Name: fmt.Sprintf("bench-%d", i),
		Systems: []string{"x86_64-linux", fmt.Sprintf("probe-%d", i)}, MaxParallelBuilds: 1,
		StoreDir: b.storeDir, Backend: "bench"}); err != nil {
		return nil, fmt.Errorf("agent %d: %w", i, err)
	}
	go a.readLoop()
	return a, nil
}

func (a *agent) readLoop() {
	for {
		m, err := a.Read()
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *protocol.Build:
			now := time.Now()
			a.send(&protocol.Ack{Header: protocol.Header{ID: m.ID}})
			a.mu.Lock()
			pr := a.probes[m.Derivation]
			a.mu.Unlock()
			switch {
			case pr == nil:
				a.mu.Lock()
				a.held = append(a.held, m.Build)
				a.mu.Unlock()
				select {
				case a.gotBG <- struct{}{}:
				default:
				}
			case m.Derivation == pr.p:
				pr.gotP <- m
			default:
				pr.gotD <- now
			}
		case *protocol.Error:
			a.errs.Add(1)
			fmt.Fprintf(os.Stderr, "agent %d: error reply: %s\n", a.i, m.Message)
		}
	}
}

// waitHeld waits until the agent holds a background build.
func (a *agent) waitHeld() error {
	for {
		a.mu.Lock()
		n := len(a.held)
		a.mu.Unlock()
		if n > 0 {
			return nil
		}
		select {
		case <-a.gotBG:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("agent %d holds no background build", a.i)
		}
	}
}

// round runs one probe on the agent (see the package comment).
func (a *agent) round(pr *probe) error {
	b := a.b
	a.mu.Lock()
	a.probes[pr.p], a.probes[pr.d] = pr, pr
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.probes, pr.p)
		delete(a.probes, pr.d)
		a.mu.Unlock()
	}()
	ids, err := b.submit(b.admin, "--priority 1000 ", []string{pr.p, pr.d})
	if err != nil {
		return err
	}
	pr.dID = ids[1]
	// Free the slot: fail the background build this agent holds.
	if err := a.waitHeld(); err != nil {
		return err
	}
	a.mu.Lock()
	bg := a.held[0]
	a.held = a.held[1:]
	a.mu.Unlock()
	pr.freedAt = time.Now()
	if err := a.send(&protocol.Failed{Header: a.hdr(), Build: bg, Reason: protocol.ReasonBuild, ExitCode: 1}); err != nil {
		return err
	}
	var pm *protocol.Build
	select {
	case pm = <-pr.gotP:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("agent %d: prerequisite not received", a.i)
	}
	pr.pLatency = time.Since(pr.freedAt)
	// As the real agent does before it builds (agent/runner.go).
	if !a.b.cfg.noPhases {
		if err := a.send(&protocol.Phase{Build: pm.Build, Phase: protocol.PhasePreparing}); err != nil {
			return err
		}
	}
	if !a.b.cfg.noStarted {
		if err := a.send(&protocol.Started{Header: a.hdr(), Build: pm.Build}); err != nil {
			return err
		}
	}
	if !a.b.cfg.noPhases {
		if err := a.send(&protocol.Phase{Build: pm.Build, Phase: protocol.PhaseUploading}); err != nil {
			return err
		}
	}
	out, err := a.Upload(pm, pr.p)
	if err != nil {
		return err
	}
	pr.succeededAt = time.Now()
	if err := a.send(&protocol.Succeeded{Header: a.hdr(), Build: pm.Build, Outputs: []protocol.OutputResult{out}}); err != nil {
		return err
	}
	select {
	case t := <-pr.gotD:
		pr.dispatchWait = t.Sub(pr.succeededAt)
	case <-time.After(30 * time.Second):
		return fmt.Errorf("agent %d: dependent not received", a.i)
	}
	// Give the slot back to the queue and wait for the background build
	// that refills it, so the next round's P cannot take it instead.
	if err := a.send(&protocol.Failed{Header: a.hdr(), Build: pr.dID, Reason: protocol.ReasonBuild, ExitCode: 1}); err != nil {
		return err
	}
	return a.waitHeld()
}

// probeRounds runs cfg.rounds probe rounds with conc agents probing at
// once and adds their latency rows.
func (b *bench) probeRounds(phase, conc int, agents []*agent) error {
	cfg := b.cfg
	// Probe derivations, written before the clock starts.
	probes := make([]*probe, cfg.rounds)
	for i := range probes {
		sys := fmt.Sprintf("probe-%d", i%conc)
		p, ph, err := b.writeDrv(fmt.Sprintf("probe-%d-p-%d", phase, i), sys, nil)
		if err != nil {
			return err
		}
		d, _, err := b.writeDrv(fmt.Sprintf("probe-%d-d-%d", phase, i), sys, map[string][]byte{p: ph})
		if err != nil {
			return err
		}
		probes[i] = &probe{p: p, d: d, gotD: make(chan time.Time, 1), gotP: make(chan *protocol.Build, 1)}
	}
	fmt.Fprintf(os.Stderr, "running %d probe rounds on %d agents at once\n", cfg.rounds, conc)
	var elapsed time.Duration
	if err := b.profile(fmt.Sprintf("probes-conc%d", conc), func() error {
		start := time.Now() // inside: see the submit-batch profile
		defer func() { elapsed = time.Since(start) }()
		var wg sync.WaitGroup
		errs := make([]error, conc)
		for w := range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < len(probes); i += conc {
					if err := agents[w].round(probes[i]); err != nil {
						errs[w] = err
						return
					}
				}
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}); err != nil {
		return err
	}
	var dl, pl []time.Duration
	for _, p := range probes {
		dl = append(dl, p.dispatchWait)
		pl = append(pl, p.pLatency)
	}
	b.add(fmt.Sprintf("dispatch: prerequisite succeeded → dependent received (%d agents, %d probing)", cfg.agents, conc),
		len(dl), elapsed, pcts(dl)+"; verify + publish + record + dispatch")
	b.add(fmt.Sprintf("dispatch: background build failed (99 dependents failed-dependency) → next build received (%d probing)", conc), len(pl), 0, pcts(pl))
	return nil
}

// intList is a flag holding comma-separated positive integers.
type intList struct{ v *[]int }

func (l intList) String() string {
	if l.v == nil {
		return ""
	}
	s := make([]string, len(*l.v))
	for i, n := range *l.v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (l intList) Set(v string) error {
	*l.v = nil
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("%q: want positive integers separated by commas", v)
		}
		*l.v = append(*l.v, n)
	}
	return nil
}

func (b *bench) dispatch(ctx context.Context) error {
	cfg := b.cfg
	// Submitting a million builds over SSH would take hours on this path
	// (see the submit rows), so the queue is written into a fresh database
	// with the same Store.CreateBuilds a submission uses, and the
	// coordinator rebuilds its queue from it at start, as after a restart.
	fmt.Fprintf(os.Stderr, "writing %d .drv files\n", cfg.queue)
	drvs, outs, d, err := b.graphOut("q", cfg.queue)
	if err != nil {
		return err
	}
	b.add("write .drv files for the queue", len(drvs), d, "")
	state := filepath.Join(b.dir, "state-dispatch")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	dbURL, err := b.newDatabase(ctx)
	if err != nil {
		return err
	}
	backend := "SQLite"
	if dbURL != "" {
		backend = "PostgreSQL"
	}
	start := time.Now()
	var st db.Store
	if dbURL == "" {
		st, err = sqlite.Open(ctx, filepath.Join(state, "gbc.db"), nil)
	} else {
		st, err = postgres.Open(ctx, dbURL, nil)
	}
	if err != nil {
		return err
	}
	now := time.Now()
	for i := 0; i < len(drvs); i += 10000 {
		nbs := make([]db.NewBuild, 0, 10000)
		for j := i; j < min(i+10000, len(drvs)); j++ {
			nb := db.NewBuild{ID: uuid.Must(uuid.NewV7()).String(), Derivation: drvs[j], System: "x86_64-linux",
				Outputs: []db.DerivationOutput{{Name: "out", Path: outs[j]}}, CreatedAt: now.Add(time.Duration(j))}
			if !cfg.noInputs {
				// As submission records them: graphOut's libraries have
				// no inputs, each package its group's library.
				nb.InputDerivations = []string{}
				if j%100 != 0 {
					nb.InputDerivations = []string{drvs[j/100*100]}
				}
			}
			nbs = append(nbs, nb)
		}
		if err := st.CreateBuilds(ctx, nbs); err != nil {
			st.Close()
			return err
		}
	}
	if err := st.Close(); err != nil {
		return err
	}
	b.add("record the queue in "+backend+" (Store.CreateBuilds, 10,000 per call)", len(drvs), time.Since(start), "in-process, no coordinator")
	fmt.Fprintf(os.Stderr, "starting the coordinator on %d queued builds\n", cfg.queue)
	start = time.Now()
	if err := b.startCoordinator(ctx, state, dbURL); err != nil {
		return err
	}
	note := "inputs recorded"
	if cfg.noInputs {
		note = "no inputs recorded: re-reads every .drv"
	}
	b.add("coordinator start: rebuild the queue from the database", len(drvs), time.Since(start), note)
	rss, hwm := b.rss()
	b.add(fmt.Sprintf("coordinator memory, %d queued, no agents", cfg.queue), cfg.queue, 0, "VmRSS "+rss+", VmHWM "+hwm)

	fmt.Fprintf(os.Stderr, "connecting %d agents\n", cfg.agents)
	start = time.Now()
	agents := make([]*agent, cfg.agents)
	for i := range agents {
		a, err := b.connectAgent(i)
		if err != nil {
			return err
		}
		agents[i] = a
	}
	for _, a := range agents {
		if err := a.waitHeld(); err != nil {
			return err
		}
	}
	b.add(fmt.Sprintf("connect %d agents, each gets a build", cfg.agents), cfg.agents, time.Since(start), "register + SSH + hello + first build")

	for phase, pc := range cfg.probeConc {
		if err := b.probeRounds(phase, min(pc, cfg.agents), agents); err != nil {
			return err
		}
	}
	rss, hwm = b.rss()
	b.add(fmt.Sprintf("coordinator memory, %d queued, %d agents, after the rounds", cfg.queue, cfg.agents), cfg.queue, 0, "VmRSS "+rss+", VmHWM "+hwm)
	b.add("database size after the rounds", cfg.queue, 0, b.databaseSize(ctx, state))
	if st, err := command(b.admin, "status"); err == nil {
		fmt.Fprintln(os.Stderr, firstLines(st, 6))
	}
	for _, a := range agents {
		if n := a.errs.Load(); n > 0 {
			return fmt.Errorf("agent %d got %d error replies", a.i, n)
		}
		a.Close()
	}
	return nil
}

// databaseSize is the coordinator's database on disk: the SQLite file and
// its WAL, or what PostgreSQL reports for the run's database (whose server
// memory is not in the coordinator's VmRSS).
func (b *bench) databaseSize(ctx context.Context, state string) string {
	mb := func(n int64) string { return fmt.Sprintf("%.0f MB", float64(n)/1e6) }
	if b.cfg.database != "" {
		n, err := b.pgDBs[len(b.pgDBs)-1].size(ctx)
		if err != nil {
			return "? (" + err.Error() + ")"
		}
		return "PostgreSQL " + mb(n)
	}
	var n int64
	for _, f := range []string{"gbc.db", "gbc.db-wal"} {
		if fi, err := os.Stat(filepath.Join(state, f)); err == nil {
			n += fi.Size()
		}
	}
	return "SQLite file + WAL " + mb(n)
}

func firstLines(s string, n int) string {
	l := strings.SplitN(s, "\n", n+1)
	return strings.Join(l[:min(n, len(l))], "\n")
}

func pcts(d []time.Duration) string {
	if len(d) == 0 {
		return ""
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	r := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }
	return fmt.Sprintf("p50 %s, p99 %s, max %s", r(q(0.5)), r(q(0.99)), r(s[len(s)-1]))
}
