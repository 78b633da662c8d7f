// Command streambench measures, in one run, what an agent's upload costs
// end to end with and without streamed uploads (--stream-uploads), on a
// file: cache store and on an s3:// one (a bucket of a SeaweedFS `weed
// server -s3` on loopback, started here). Four real `gbc coordinator`
// processes (SQLite) run side by side:
//
//   - file/off: file: store, each upload written to STATE/uploads, read
//     back to verify at the report, then moved into the cache (baseline);
//   - file/on:  file: store, the SFTP writes stream through verification
//     into the cache's spool;
//   - s3/off:   s3: store, written to STATE/uploads, verified, then PUT;
//   - s3/on:    s3: store, streamed through verification into the bucket.
//
// Each has one agent (internal/testagent on a real SSH connection) that
// uploads with the agent's own code (upload.Upload with
// upload.ClientOptions over SFTP) and then sends `succeeded`. Per output
// the time is from the upload's start to the coordinator's ack of
// `succeeded` (verified, narinfo published); the builds are dispatched and
// the compressed NARs (zstd, as agents send) are on disk before the clock
// starts. Per set-up and batch the coordinator process's CPU (utime +
// stime) and the bytes it caused to be written to its disk
// (/proc/PID/io write_bytes) are read around the batch. Set-ups alternate
// within every round, small outputs then large ones.
//
// Run through bench/stream.sh, which builds gbc first.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/agent/upload"
	"github.com/gbc-farm/gbc/bench/internal/coordproc"
	"github.com/gbc-farm/gbc/internal/testagent"
	"github.com/gbc-farm/gbc/protocol"
)

type config struct {
	gbc             string
	small, smallKiB int
	large, largeMiB int
	rounds          int
}

func main() {
	var c config
	flag.StringVar(&c.gbc, "gbc", "bin/gbc", "gbc binary")
	flag.IntVar(&c.small, "small", 200, "small outputs per set-up and round (at most 1024)")
	flag.IntVar(&c.smallKiB, "small-kib", 4, "size of each small output's file in KiB (random text, compressible)")
	flag.IntVar(&c.large, "large", 4, "large outputs per set-up and round")
	flag.IntVar(&c.largeMiB, "large-mib", 16, "size of each large output in MiB (random bytes; the test server holds about 1 GiB and each s3 set-up writes every large output twice, a temp object then its copy: keep large × large-mib × rounds at 128 or under)")
	flag.IntVar(&c.rounds, "rounds", 2, "alternating rounds")
	flag.Parse()
	if c.small > 1024 || c.small < 0 || c.large > 1024 || c.large < 0 || c.rounds < 1 {
		log.Fatal("-small and -large must be 0..1024, -rounds at least 1")
	}
	if err := run(c); err != nil {
		log.Fatal(err)
	}
}

// setup is one coordinator with its agent.
type setup struct {
	name     string
	coord    *exec.Cmd
	adminC   *ssh.Client
	agent    *testagent.Agent
	sc       *sftp.Client
	msgs     chan protocol.Message
	stateDir string
}

// totals is one set-up's figures for one output size.
type totals struct {
	per     []time.Duration
	bytes   int64
	cpu     float64
	written int64
}

func run(c config) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "gbc-streambench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	const bucket = "bench"
	weed, creds, err := coordproc.Bucket(ctx, dir, bucket)
	if err != nil {
		return err
	}
	defer weed.Stop()
	storeDir := filepath.Join(dir, "store")
	if err := os.MkdirAll(storeDir, 0o755); err != nil {
		return err
	}
	names := []string{"file/off", "file/on", "s3/off", "s3/on"}
	var setups []*setup
	defer func() {
		for _, s := range setups {
			s.close()
		}
	}()
	for i, name := range names {
		store, stream, _ := strings.Cut(name, "/")
		var extra []string
		if store == "s3" {
			extra = append(extra, "--cache-store", weed.URL(bucket, fmt.Sprintf("farm%d", i)), "--cache-store-credentials", creds)
		}
		extra = append(extra, "--stream-uploads", stream)
		s, err := start(c.gbc, filepath.Join(dir, fmt.Sprintf("coord%d", i)), storeDir, name, extra)
		if s != nil {
			setups = append(setups, s)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	res := map[string]map[string]*totals{}
	for _, n := range names {
		res[n] = map[string]*totals{"small": {}, "large": {}}
	}
	seq := 0
	rng := mrand.New(mrand.NewPCG(1, 2))
	for r := 0; r < c.rounds; r++ {
		for _, size := range []string{"small", "large"} {
			count, bytes := c.small, c.smallKiB<<10
			if size == "large" {
				count, bytes = c.large, c.largeMiB<<20
			}
			if count == 0 {
				continue
			}
			// Rotate the order per round so no set-up always runs first.
			for k := range setups {
				s := setups[(k+r)%len(setups)]
				seq++
				if err := s.batch(ctx, dir, storeDir, fmt.Sprintf("%d-%s", seq, size), count, bytes, size == "small", rng, res[s.name][size]); err != nil {
					return fmt.Errorf("%s, %s outputs, round %d: %w", s.name, size, r+1, err)
				}
			}
		}
	}
	fmt.Printf("%d rounds; per set-up and round %d small outputs (%d KiB files) and %d large (%d MiB of random bytes); zstd; one agent per coordinator, outputs one after another; SeaweedFS on loopback\n\n",
		c.rounds, c.small, c.smallKiB, c.large, c.largeMiB)
	base := res[names[0]]
	for _, size := range []string{"small", "large"} {
		if base[size].bytes == 0 {
			continue
		}
		fmt.Printf("%s outputs (%d per set-up, %.1f KiB compressed on average)\n\n", size, len(base[size].per), float64(base[size].bytes)/float64(len(base[size].per))/1024)
		fmt.Printf("| set-up | p50 ms | mean ms | mean / baseline | MiB/s (large) | coordinator disk writes per output | coordinator CPU ms per output | CPU / baseline |\n|---|--:|--:|--:|--:|--:|--:|--:|\n")
		b := base[size]
		for _, n := range names {
			t := res[n][size]
			rate := "—"
			if size == "large" {
				rate = fmt.Sprintf("%.1f", t.mibps())
			}
			fmt.Printf("| %s | %.1f | %.1f | %.2f× | %s | %s | %.1f | %.2f× |\n", n, ms(t.p50()), ms(t.mean()), ms(t.mean())/ms(b.mean()),
				rate, kib(float64(t.written)/float64(len(t.per))), 1000*t.cpu/float64(len(t.per)), t.cpu/b.cpu)
		}
		fmt.Println()
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func kib(b float64) string {
	if b >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", b/1024)
}

func (t *totals) p50() time.Duration {
	s := slices.Clone(t.per)
	slices.Sort(s)
	return s[len(s)/2]
}

func (t *totals) mean() time.Duration {
	var sum time.Duration
	for _, d := range t.per {
		sum += d
	}
	return sum / time.Duration(len(t.per))
}

func (t *totals) mibps() float64 {
	var sum time.Duration
	for _, d := range t.per {
		sum += d
	}
	return float64(t.bytes) / (1 << 20) / sum.Seconds()
}

// start runs a coordinator in state and connects an admin and an agent.
func start(gbc, state, storeDir, name string, extra []string) (*setup, error) {
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, err
	}
	admin, adminPub, err := coordproc.NewKey()
	if err != nil {
		return nil, err
	}
	pubFile := state + ".admin.pub"
	if err := os.WriteFile(pubFile, adminPub, 0o644); err != nil {
		return nil, err
	}
	args := append([]string{"coordinator", "--state-dir", state, "--listen", "127.0.0.1:0",
		"--admin-key", pubFile, "--store-dir", storeDir, "--heartbeat", "10m"}, extra...)
	s := &setup{name: name, stateDir: state, coord: exec.Command(gbc, args...)}
	stderr, _ := s.coord.StderrPipe()
	if err := s.coord.Start(); err != nil {
		return nil, err
	}
	addr, err := coordproc.WaitAddr(stderr)
	if err != nil {
		return s, err
	}
	hostPub, err := os.ReadFile(filepath.Join(state, "ssh_host_ed25519_key.pub"))
	if err != nil {
		return s, err
	}
	hk, _, _, _, err := ssh.ParseAuthorizedKey(hostPub)
	if err != nil {
		return s, err
	}
	dial := func(k ssh.Signer) (*ssh.Client, error) {
		return ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "bench", Auth: []ssh.AuthMethod{ssh.PublicKeys(k)}, HostKeyCallback: ssh.FixedHostKey(hk)})
	}
	if s.adminC, err = dial(admin); err != nil {
		return s, err
	}
	agentKey, agentPub, err := coordproc.NewKey()
	if err != nil {
		return s, err
	}
	if _, err := coordproc.Command(s.adminC, "agent new --name bench --key '"+strings.TrimSpace(string(agentPub))+"'"); err != nil {
		return s, err
	}
	agentC, err := dial(agentKey)
	if err != nil {
		return s, err
	}
	if s.agent, err = testagent.Open(agentC); err != nil {
		return s, err
	}
	if _, err := s.agent.Hello(protocol.Hello{Header: s.agent.Header(), ProtocolVersion: protocol.Version, Name: "bench",
		Systems: []string{"x86_64-linux"}, MaxParallelBuilds: 1024, StoreDir: storeDir, Backend: "nix"}); err != nil {
		return s, err
	}
	if s.sc, err = sftp.NewClient(agentC, upload.ClientOptions()...); err != nil {
		return s, err
	}
	s.msgs = make(chan protocol.Message, 1100)
	go func() {
		defer close(s.msgs)
		for {
			m, err := s.agent.Read()
			if err != nil {
				return
			}
			s.msgs <- m
		}
	}()
	return s, nil
}

func (s *setup) close() {
	if s.sc != nil {
		s.sc.Close()
	}
	if s.agent != nil {
		s.agent.Close()
	}
	if s.adminC != nil {
		s.adminC.Close()
	}
	s.coord.Process.Signal(os.Interrupt)
	s.coord.Wait()
}

func (s *setup) next(want func(protocol.Message) bool) (protocol.Message, error) {
	t := time.After(5 * time.Minute)
	for {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				return nil, errors.New("agent session ended")
			}
			if e, isErr := m.(*protocol.Error); isErr {
				return nil, fmt.Errorf("coordinator: %s", e.Message)
			}
			if want(m) {
				return m, nil
			}
		case <-t:
			return nil, errors.New("no answer from the coordinator")
		}
	}
}

// batch submits count fresh derivations, takes their builds, writes their
// outputs' files, then times each output's upload to the ack of its
// `succeeded`, one after another.
func (s *setup) batch(ctx context.Context, dir, storeDir, tag string, count, size int, text bool, rng *mrand.Rand, t *totals) error {
	var drvs []string
	for i := 0; i < count; i++ {
		d, err := coordproc.WriteDrv(storeDir, fmt.Sprintf("stream-bench-%s-%d-%s", tag, i, strings.ReplaceAll(s.name, "/", "-")))
		if err != nil {
			return err
		}
		drvs = append(drvs, d)
	}
	if _, err := coordproc.Command(s.adminC, "build "+strings.Join(drvs, " ")); err != nil {
		return err
	}
	type job struct {
		b     *protocol.Build
		local string
		res   protocol.OutputResult
	}
	var jobs []job
	for range drvs {
		m, err := s.next(func(m protocol.Message) bool { _, ok := m.(*protocol.Build); return ok })
		if err != nil {
			return err
		}
		b := m.(*protocol.Build)
		if err := s.agent.Send(&protocol.Ack{Header: protocol.Header{ID: b.ID}}); err != nil {
			return err
		}
		content := make([]byte, size)
		if text {
			const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 \n"
			for i := range content {
				content[i] = alphabet[rng.IntN(len(alphabet))]
			}
		} else {
			for i := 0; i+8 <= len(content); i += 8 {
				v := rng.Uint64()
				for j := 0; j < 8; j++ {
					content[i+j] = byte(v >> (8 * j))
				}
			}
		}
		file, res, err := testagent.Output(b.Outputs[0], string(content))
		if err != nil {
			return err
		}
		local := filepath.Join(dir, fmt.Sprintf("upload-%d-%s", b.ID, res.Upload))
		if err := os.WriteFile(local, file, 0o644); err != nil {
			return err
		}
		jobs = append(jobs, job{b, local, res})
	}
	defer func() {
		for _, j := range jobs {
			os.Remove(j.local)
		}
	}()
	syscall.Sync() // the agent's files on disk before the clock starts
	pid := s.coord.Process.Pid
	cpu0, err := coordproc.CPUSeconds(pid)
	if err != nil {
		return err
	}
	w0, err := coordproc.WriteBytes(pid)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		start := time.Now()
		if _, err := upload.Upload(ctx, s.sc, j.local, j.b.UploadDir+"/"+j.res.Upload, nil); err != nil {
			return err
		}
		h := s.agent.Header()
		if err := s.agent.Send(&protocol.Succeeded{Header: h, Build: j.b.Build, Outputs: []protocol.OutputResult{j.res}}); err != nil {
			return err
		}
		if _, err := s.next(func(m protocol.Message) bool { _, ok := m.(*protocol.Ack); return ok && protocol.IDOf(m) == h.ID }); err != nil {
			return err
		}
		t.per = append(t.per, time.Since(start))
		t.bytes += j.res.FileSize
	}
	cpu1, err := coordproc.CPUSeconds(pid)
	if err != nil {
		return err
	}
	w1, err := coordproc.WriteBytes(pid)
	if err != nil {
		return err
	}
	t.cpu += cpu1 - cpu0
	t.written += w1 - w0
	return nil
}
