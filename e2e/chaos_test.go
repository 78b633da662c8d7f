//go:build chaos

package e2e

// The fault run (`make chaos`, not part of `make test`): a few hundred
// builds on a coordinator and three agents, once without faults and once
// with kill -9 of the coordinator and the agents at random moments and a
// phase where the coordinator's state directory (a tmpfs in a mount
// namespace of its own) is short of space. After each run every build
// must have succeeded exactly once (one succeeded attempt, one succeeded
// event), none may be left queued or running, and every output's narinfo
// must be in the cache with the NarHash Nix recorded for it. It prints the
// counts and the time of the fault run against the run without faults,
// on SQLite and (with GBC_TEST_POSTGRES) on PostgreSQL.
//
// GBC_CHAOS_BUILDS sets the number of builds (300); GBC_CHAOS_SEED the
// random seed (the time).

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db/postgres/pgtest"
)

const (
	chaosAgents   = 3
	chaosParallel = 4
	chaosTmpfs    = "256m"
	chaosReserve  = 32 << 20
	// chaosDeadline bounds one run; a build not done by then is stuck.
	chaosDeadline = 12 * time.Minute
	// chaosMaxKills bounds the kills of one run.
	chaosMaxKills = 40
)

type chaosFigures struct {
	builds, attempts, requeued    int
	coordKills, agentKills, disks int
	elapsed                       time.Duration
}

func TestChaos(t *testing.T) {
	n := 300
	if v := os.Getenv("GBC_CHAOS_BUILDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 5000 {
			t.Fatalf("GBC_CHAOS_BUILDS=%q: want 1..5000", v)
		}
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("GBC_CHAOS_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("GBC_CHAOS_SEED=%q: %v", v, err)
		}
	}
	t.Logf("chaos: %d builds, seed %d", n, seed)
	dbs := []string{"sqlite"}
	if os.Getenv("GBC_TEST_POSTGRES") != "" {
		dbs = append(dbs, "postgres")
	} else {
		t.Log("chaos: GBC_TEST_POSTGRES not set; PostgreSQL skipped")
	}
	var table []string
	for _, dbName := range dbs {
		t.Run(dbName, func(t *testing.T) {
			base := chaosRun(t, dbName, n, false, seed)
			faults := chaosRun(t, dbName, n, true, seed)
			row := func(name string, f chaosFigures) string {
				return fmt.Sprintf("%-9s %-10s %7d %9d %9d %11d %11d %5d %9.1fs %6.2fx",
					dbName, name, f.builds, f.attempts, f.requeued, f.coordKills, f.agentKills, f.disks,
					f.elapsed.Seconds(), f.elapsed.Seconds()/base.elapsed.Seconds())
			}
			table = append(table, row("no-faults", base), row("faults", faults))
		})
	}
	fmt.Printf("\nchaos: %d builds, %d agents x %d slots, seed %d\n", n, chaosAgents, chaosParallel, seed)
	fmt.Printf("%-9s %-10s %7s %9s %9s %11s %11s %5s %10s %7s\n",
		"database", "run", "builds", "attempts", "requeued", "coord-kills", "agent-kills", "disk", "time", "ratio")
	for _, r := range table {
		fmt.Println(r)
	}
}

// chaosFarm is a farm whose coordinator's state directory is a tmpfs in a
// mount namespace held by a sleeping process, so it survives the
// coordinator's kills.
type chaosFarm struct {
	*farm
	holder *proc
	view   string // the state directory as the test sees it
	dbArgs []string
	agents []*proc
	keys   []sshKey
}

func newChaosFarm(t *testing.T, dbName string) *chaosFarm {
	t.Helper()
	f := &farm{t: t, dir: t.TempDir()}
	f.state = filepath.Join(f.dir, "state")
	f.admin = newKey(t, f.dir, "admin")
	if err := os.MkdirAll(f.state, 0o755); err != nil {
		t.Fatal(err)
	}
	cf := &chaosFarm{farm: f}
	if dbName == "postgres" {
		cf.dbArgs = []string{"--database", pgtest.Schema(t)}
	}
	cf.holder = start(t, "unshare", "-m", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o size="$1" tmpfs "$0" && echo mounted && exec sleep 3600`, f.state, chaosTmpfs)
	cf.holder.log.waitFor(t, mustRE(`mounted`), 30*time.Second)
	cf.view = filepath.Join(fmt.Sprintf("/proc/%d/root", cf.holder.cmd.Process.Pid), f.state)
	cf.startCoord("127.0.0.1:0")
	hostPub, err := os.ReadFile(filepath.Join(cf.view, "ssh_host_ed25519_key.pub"))
	if err != nil {
		t.Fatalf("host key: %v", err)
	}
	f.knownHosts = filepath.Join(f.dir, "known_hosts")
	line := fmt.Sprintf("[127.0.0.1]:%s %s\n", f.port, strings.TrimSpace(string(hostPub)))
	if err := os.WriteFile(f.knownHosts, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range chaosAgents {
		name := fmt.Sprintf("chaos-%d", i)
		key := newKey(t, f.dir, name)
		f.mustSSH(fmt.Sprintf("agent new --name %s --key '%s'", name, key.Pub))
		cf.keys = append(cf.keys, key)
		cf.agents = append(cf.agents, cf.startChaosAgent(i))
	}
	return cf
}

func (cf *chaosFarm) startCoord(listen string) {
	f := cf.farm
	args := append([]string{"-t", strconv.Itoa(cf.holder.cmd.Process.Pid), "-m", gbcBin, "coordinator",
		"--state-dir", f.state, "--listen", listen, "--admin-key", f.admin.Path + ".pub",
		"--heartbeat", "1s", "--disconnect-grace", "3s", "--min-free-space", strconv.Itoa(chaosReserve)}, cf.dbArgs...)
	f.coord = start(f.t, "nsenter", args...)
	m := f.coord.log.waitFor(f.t, addrRE, 60*time.Second)
	f.addr, f.port = m[1], m[2]
}

func (cf *chaosFarm) startChaosAgent(i int) *proc {
	return cf.startAgent(cf.keys[i], fmt.Sprintf("chaos-%d", i), "--max-parallel-builds", strconv.Itoa(chaosParallel))
}

// chaosDrvs instantiates n derivations: build i reads the output of build
// i-10 when there is one, so the queue has dependencies to respect.
func chaosDrvs(t *testing.T, n int, nonce string) []string {
	t.Helper()
	expr := fmt.Sprintf(`let
  mk = i: derivation {
    name = "gbc-chaos-${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    nonce = %q;
    dep = if i >= 10 then mk (i - 10) else "";
    args = [ "-c" "if [ -n \"$dep\" ]; then read x < $dep/v; else x=0; fi; /bin/mkdir $out; echo $((x+1)) > $out/v; i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done" ];
  };
in builtins.genList mk %d`, nonce, n)
	p := filepath.Join(t.TempDir(), "chaos.nix")
	if err := os.WriteFile(p, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	drvs := lines(run(t, "nix-instantiate", p))
	if len(drvs) != n {
		t.Fatalf("nix-instantiate gave %d derivations, want %d", len(drvs), n)
	}
	return drvs
}

// chaosStates counts the builds by state (one `builds` call, its table).
func (cf *chaosFarm) chaosStates() (map[string]int, error) {
	r := cf.ssh(cf.admin, "builds --limit 0")
	if r.Code != 0 {
		return nil, fmt.Errorf("builds: exit %d: %s", r.Code, r.Stderr)
	}
	m := map[string]int{}
	for i, l := range lines(r.Stdout) {
		if f := strings.Fields(l); i > 0 && len(f) > 1 {
			m[f[1]]++
		}
	}
	return m, nil
}

func chaosRun(t *testing.T, dbName string, n int, faults bool, seed uint64) chaosFigures {
	t.Helper()
	name := "no-faults"
	if faults {
		name = "faults"
	}
	cf := newChaosFarm(t, dbName)
	drvs := chaosDrvs(t, n, fmt.Sprintf("%s-%s-%d", dbName, name, time.Now().UnixNano()))
	rng := rand.New(rand.NewPCG(seed, 17))
	fig := chaosFigures{builds: n}
	start := time.Now()
	out := cf.mustSSH("build " + strings.Join(drvs, " "))
	ids := lines(out)
	if len(ids) != n {
		t.Fatalf("build printed %d ids, want %d", len(ids), n)
	}

	deadline := start.Add(chaosDeadline)
	nextFault := time.Now().Add(time.Duration(1000+rng.IntN(2000)) * time.Millisecond)
	diskDone := false
	var filler string
	for {
		// The coordinator may be down for a moment: ssh failing is fine.
		st, err := cf.chaosStates()
		if err == nil && st["succeeded"] == n {
			break
		}
		if err == nil && st["failed"]+st["canceled"]+st["failed-dependency"] > 0 {
			t.Fatalf("%s: builds ended badly: %v", name, st)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not done after %v: %v (%v)", name, chaosDeadline, st, err)
		}
		if faults && filler != "" && time.Now().After(nextFault) {
			os.Remove(filler)
			filler = ""
			t.Logf("%s: disk space back", name)
		}
		if faults && filler == "" && time.Now().After(nextFault) && fig.coordKills+fig.agentKills < chaosMaxKills {
			switch {
			case !diskDone && err == nil && st["succeeded"] > n/3:
				diskDone = true
				filler = cf.fillDisk(t)
				fig.disks++
				t.Logf("%s: disk filled past the reserve at %d succeeded", name, st["succeeded"])
				nextFault = time.Now().Add(5 * time.Second)
				continue
			case fig.coordKills == 0 || rng.IntN(10) < 3:
				fig.coordKills++
				t.Logf("%s: kill -9 coordinator", name)
				_ = cf.coord.cmd.Process.Signal(syscall.SIGKILL)
				cf.coord.exited(10 * time.Second)
				time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
				cf.startCoord(cf.addr)
			default:
				i := rng.IntN(len(cf.agents))
				fig.agentKills++
				t.Logf("%s: kill -9 agent %d", name, i)
				_ = cf.agents[i].cmd.Process.Signal(syscall.SIGKILL)
				cf.agents[i].exited(10 * time.Second)
				time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
				cf.agents[i] = cf.startChaosAgent(i)
			}
			nextFault = time.Now().Add(time.Duration(1500+rng.IntN(3000)) * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
	}
	fig.elapsed = time.Since(start)
	if filler != "" {
		os.Remove(filler)
	}
	cf.checkExactlyOnce(t, name, ids, drvs, &fig)
	return fig
}

// fillDisk leaves half the reserve free on the state tmpfs and returns
// the filler's path.
func (cf *chaosFarm) fillDisk(t *testing.T) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(cf.view, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	size := free - chaosReserve/2
	if size <= 0 {
		t.Fatalf("tmpfs has only %d bytes free", free)
	}
	p := filepath.Join(cf.view, "filler")
	run(t, "dd", "if=/dev/zero", "of="+p, "bs=1M", fmt.Sprintf("count=%d", size>>20), "status=none")
	return p
}

// checkExactlyOnce: one succeeded attempt and one succeeded event per
// build, and every output's narinfo in the cache with Nix's NarHash.
func (cf *chaosFarm) checkExactlyOnce(t *testing.T, name string, ids, drvs []string, fig *chaosFigures) {
	t.Helper()
	r := cf.ssh(cf.admin, "events --type succeeded")
	if r.Code != 0 {
		t.Fatalf("events: exit %d: %s", r.Code, r.Stderr)
	}
	events := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(r.Stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e struct {
			Build string `json:"build"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("event line %q: %v", sc.Text(), err)
		}
		events[e.Build]++
	}
	bad := 0
	for i, id := range ids {
		b := cf.showSched(id)
		succeeded := 0
		for _, a := range b.Attempts {
			fig.attempts++
			switch a.Outcome {
			case "succeeded":
				succeeded++
			case "requeued":
				fig.requeued++
			}
		}
		if b.State != "succeeded" || succeeded != 1 || events[id] != 1 || b.Derivation != drvs[i] {
			t.Errorf("%s: build %s (%s): state %s, %d succeeded attempts, %d succeeded events: %+v", name, id, drvs[i], b.State, succeeded, events[id], b.Attempts)
			bad++
		}
		for _, o := range b.Outputs {
			want := run(t, "nix-store", "--query", "--hash", o.Path)
			hashPart := strings.SplitN(filepath.Base(o.Path), "-", 2)[0]
			ni, err := os.ReadFile(filepath.Join(cf.view, "cache", hashPart+".narinfo"))
			if err != nil {
				t.Errorf("%s: build %s: narinfo of %s: %v", name, id, o.Path, err)
				bad++
				continue
			}
			if got := narinfoField(string(ni), "NarHash"); got != want {
				t.Errorf("%s: build %s: narinfo NarHash %q, Nix has %q", name, id, got, want)
				bad++
			}
		}
		if bad > 20 {
			t.Fatalf("%s: too many bad builds", name)
		}
	}
	if len(events) != len(ids) {
		t.Errorf("%s: succeeded events for %d builds, want %d", name, len(events), len(ids))
	}
}

func narinfoField(ni, key string) string {
	for _, l := range strings.Split(ni, "\n") {
		if v, ok := strings.CutPrefix(l, key+": "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
