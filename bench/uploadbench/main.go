// Command uploadbench measures, against a real `gbc coordinator` process:
//   - upload throughput of one large output (incompressible and text) with
//     the agent's own code (upload.Pack, then upload.Upload over SFTP with
//     concurrent writes), against piping the same file bytes through one raw
//     SSH session channel to the same server (the admin `probe` command),
//     alternating in the same run; plus SFTP without concurrent writes;
//   - narinfo fetch rate from the coordinator's cache over --http-listen and
//     through the SSH cache tunnel (direct-tcpip, one SSH connection).
//
// Run through bench/upload.sh, which builds gbc first.
package main

import (
	"github.com/gbc-farm/gbc/bench/internal/coordproc"
	"github.com/gbc-farm/gbc/bench/internal/httpload"

	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/agent/upload"
	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/protocol"
)

func main() {
	gbc := flag.String("gbc", "bin/gbc", "gbc binary")
	mib := flag.Int("mib", 512, "size of the output in MiB")
	rounds := flag.Int("rounds", 2, "alternating rounds per method")
	nInfo := flag.Int("narinfos", 5000, "narinfos in the cache for the fetch test")
	conc := flag.Int("c", 32, "concurrent HTTP clients")
	dur := flag.Duration("d", 3*time.Second, "fetch time per transport")
	flag.StringVar(&variants, "variants", "", "extra SFTP settings to compare, e.g. 64x32,16x128 (requests x KiB per write)")
	flag.StringVar(&coordArgs, "coordinator-args", "", "extra `ARGS` for gbc coordinator, space-separated")
	flag.StringVar(&pprofDir, "pprof", "", "after the rounds, upload each output repeatedly for -pprof-time and write CPU and block profiles of both ends into `DIR` (client-*.pprof: this process, the agent's upload code; server-*.pprof: the coordinator)")
	flag.DurationVar(&pprofTime, "pprof-time", 10*time.Second, "profiling time per output with -pprof")
	flag.Parse()
	if err := run(*gbc, *mib, *rounds, *nInfo, *conc, *dur); err != nil {
		log.Fatal(err)
	}
}

var (
	variants, coordArgs, pprofDir string
	pprofTime                     time.Duration
)

func run(gbc string, mib, rounds, nInfo, conc int, dur time.Duration) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "gbc-uploadbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	state := filepath.Join(dir, "state")

	// The cache is filled before the coordinator opens it.
	paths, err := fillCache(ctx, state, nInfo)
	if err != nil {
		return err
	}
	admin, adminPub, err := coordproc.NewKey()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "admin.pub"), adminPub, 0o644); err != nil {
		return err
	}
	args := []string{"coordinator", "--state-dir", state, "--listen", "127.0.0.1:0",
		"--admin-key", filepath.Join(dir, "admin.pub"), "--http-listen", "127.0.0.1:0"}
	args = append(args, strings.Fields(coordArgs)...)
	var pprofAddr string
	if pprofDir != "" {
		if pprofAddr, err = freeAddr(); err != nil {
			return err
		}
		// 10 µs: blocking shorter than a packet's worth of work is noise.
		args = append(args, "--pprof-listen", pprofAddr, "--pprof-block-rate", "10000")
	}
	coord := exec.Command(gbc, args...)
	coord.Env = nixEnv()
	stderr, _ := coord.StderrPipe()
	if err := coord.Start(); err != nil {
		return err
	}
	defer func() { coord.Process.Signal(os.Interrupt); coord.Wait() }()
	addr, httpAddr, err := waitAddrs(stderr)
	if err != nil {
		return err
	}
	dial, err := coordproc.Dialer(state, addr)
	if err != nil {
		return err
	}
	adminC, err := dial(admin)
	if err != nil {
		return err
	}
	defer adminC.Close()

	agentKey, agentPub, err := coordproc.NewKey()
	if err != nil {
		return err
	}
	if _, err := command(adminC, "agent new --name bench --key '"+strings.TrimSpace(string(agentPub))+"'", nil); err != nil {
		return err
	}
	agentC, err := dial(agentKey)
	if err != nil {
		return err
	}
	defer agentC.Close()
	uploadDir, err := allocate(agentC, adminC)
	if err != nil {
		return err
	}
	sc, err := sftp.NewClient(agentC, upload.ClientOptions()...)
	if err != nil {
		return err
	}
	defer sc.Close()
	seqC, err := dial(agentKey)
	if err != nil {
		return err
	}
	defer seqC.Close()
	seq, err := sftp.NewClient(seqC, sftp.MaxPacket(32<<10)) // no concurrent writes
	if err != nil {
		return err
	}
	defer seq.Close()

	fmt.Printf("upload of one %d MiB output: coordinator %s, 127.0.0.1, %d rounds, file bytes/s (MB = 10^6 B)\n\n", mib, addr, rounds)
	fmt.Printf("%-15s %9s %7s %10s %14s %10s %14s %10s %10s\n", "output", "file MiB", "pack s", "SFTP MB/s", "raw→file MB/s", "SFTP/raw", "raw→null MB/s", "SFTP/raw", "SFTP seq")
	for _, kind := range []string{"incompressible", "text"} {
		src := filepath.Join(dir, kind)
		if err := makeOutput(src, kind, int64(mib)<<20); err != nil {
			return err
		}
		t0 := time.Now()
		p, err := upload.Pack(ctx, src, filepath.Join(dir, kind+".nar.zst"), "zstd")
		if err != nil {
			return err
		}
		pack := time.Since(t0)
		os.Remove(src)
		var sf, raw, rawW, sq []float64
		for r := range rounds {
			d, err := timed(func() error {
				_, err := upload.Upload(ctx, sc, p.File, fresh(sc, uploadDir), nil)
				return err
			})
			if err != nil {
				return err
			}
			sf = append(sf, mbps(p.FileSize, d))
			d, err = timed(func() error {
				f, err := os.Open(p.File)
				if err != nil {
					return err
				}
				defer f.Close()
				_, err = command(adminC, "probe", bufio.NewReaderSize(f, 256<<10))
				return err
			})
			if err != nil {
				return err
			}
			raw = append(raw, mbps(p.FileSize, d))
			d, err = timed(func() error {
				f, err := os.Open(p.File)
				if err != nil {
					return err
				}
				defer f.Close()
				_, err = command(adminC, "probe --write", bufio.NewReaderSize(f, 256<<10))
				return err
			})
			if err != nil {
				return err
			}
			rawW = append(rawW, mbps(p.FileSize, d))
			if r == 0 {
				d, err = timed(func() error { return seqUpload(seq, p.File, fresh(sc, uploadDir)) })
				if err != nil {
					return err
				}
				sq = append(sq, mbps(p.FileSize, d))
			}
		}
		for _, v := range strings.Split(variants, ",") {
			var reqs, kib int
			if _, err := fmt.Sscanf(v, "%dx%d", &reqs, &kib); err != nil {
				continue
			}
			vc, err := sftp.NewClient(agentC, sftp.UseConcurrentWrites(true), sftp.MaxConcurrentRequestsPerFile(reqs), sftp.MaxPacketUnchecked(kib<<10))
			if err != nil {
				return err
			}
			d, err := timed(func() error {
				_, err := upload.Upload(ctx, vc, p.File, fresh(sc, uploadDir), nil)
				return err
			})
			vc.Close()
			if err != nil {
				return fmt.Errorf("variant %s: %w", v, err)
			}
			fmt.Printf("  variant %-8s %.1f MB/s\n", v, mbps(p.FileSize, d))
		}
		if pprofDir != "" {
			if err := profileUploads(ctx, sc, p.File, uploadDir, kind, pprofAddr); err != nil {
				return fmt.Errorf("profile %s: %w", kind, err)
			}
		}
		ms, mr, mw := median(sf), median(raw), median(rawW)
		fmt.Printf("%-15s %9.1f %7.2f %10.1f %14.1f %9.0f%% %14.1f %9.0f%% %10.1f\n", kind, float64(p.FileSize)/(1<<20), pack.Seconds(),
			ms, mw, 100*ms/mw, mr, 100*ms/mr, median(sq))
		os.Remove(p.File)
	}

	fmt.Printf("\nnarinfo fetch rate: %d narinfos, %d concurrent clients, %s each\n\n", len(paths), conc, dur)
	fmt.Printf("%-28s %10s %10s %10s\n", "transport", "req/s", "p50 ms", "p99 ms")
	direct := &http.Transport{MaxIdleConnsPerHost: conc, DisableCompression: true}
	tunnel := &http.Transport{MaxIdleConnsPerHost: conc, DisableCompression: true,
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return agentC.Dial("tcp", protocol.CacheAddress)
		}}
	for _, t := range []struct {
		name string
		base string
		tr   *http.Transport
	}{
		{"--http-listen (TCP)", "http://" + httpAddr, direct},
		{"SSH tunnel (1 connection)", "http://" + protocol.CacheAddress, tunnel},
	} {
		n, lat, wall, err := fetch(t.tr, t.base, paths, conc, dur)
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		slices.Sort(lat)
		fmt.Printf("%-28s %10.0f %10.2f %10.2f\n", t.name, float64(n)/wall.Seconds(), ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]))
	}
	return nil
}

func nixEnv() []string {
	return append(os.Environ(), "NIX_CONFIG=build-users-group =\nsubstituters =\nsandbox = false")
}

var (
	addrRE = regexp.MustCompile(`coordinator listening" addr=(127\.0\.0\.1:\d+)`)
	httpRE = regexp.MustCompile(`cache listening" http=(127\.0\.0\.1:\d+)`)
)

func waitAddrs(r io.Reader) (string, string, error) {
	sc := bufio.NewScanner(r)
	var addr, httpAddr string
	for sc.Scan() {
		if m := addrRE.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
		}
		if m := httpRE.FindStringSubmatch(sc.Text()); m != nil {
			httpAddr = m[1]
		}
		if addr != "" && httpAddr != "" {
			go io.Copy(io.Discard, r)
			return addr, httpAddr, nil
		}
	}
	return "", "", fmt.Errorf("coordinator did not report its addresses")
}

// command runs one coordinator command and returns its stdout.
func command(c *ssh.Client, cmd string, stdin io.Reader) (string, error) {
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdin, s.Stdout, s.Stderr = stdin, &out, &errb
	if err := s.Run(cmd); err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Fields(cmd)[0], err, errb.String())
	}
	return strings.TrimSpace(out.String()), nil
}

// fresh removes the build's one upload (the coordinator accepts only the
// file names its outputs produce, one per output) so the next upload is
// sent whole, and returns its path.
func fresh(c *sftp.Client, uploadDir string) string {
	p := uploadDir + "/out.nar.zst"
	c.Remove(p)
	return p
}

// allocate speaks gbc-agent-v1 as an agent, submits a derivation as the
// admin and accepts it, which opens /uploads/<build> in the SFTP tree.
func allocate(agentC, adminC *ssh.Client) (string, error) {
	drv, err := exec.Command("nix-instantiate", "--expr", fmt.Sprintf(
		`derivation { name = "gbc-upload-bench"; system = builtins.currentSystem; builder = "/bin/sh"; nonce = "%d"; }`, time.Now().UnixNano())).Output()
	if err != nil {
		return "", fmt.Errorf("nix-instantiate: %w", err)
	}
	drvPath := strings.TrimSpace(string(drv))
	d, err := derivation.ReadFile(drvPath)
	if err != nil {
		return "", err
	}
	s, err := agentC.NewSession()
	if err != nil {
		return "", err
	}
	in, _ := s.StdinPipe()
	out, _ := s.StdoutPipe()
	if err := s.RequestSubsystem(protocol.Subsystem); err != nil {
		return "", err
	}
	w, r := protocol.NewWriter(in, 0), protocol.NewReader(out, 0)
	if err := w.Write(&protocol.Hello{Header: protocol.Header{ID: 1}, ProtocolVersion: protocol.Version, Name: "bench",
		Systems: []string{d.System}, MaxParallelBuilds: 1, StoreDir: "/nix/store", Backend: "nix"}); err != nil {
		return "", err
	}
	if _, err := r.Read(); err != nil {
		return "", err
	}
	if _, err := command(adminC, "build "+drvPath, nil); err != nil {
		return "", err
	}
	for {
		m, err := r.Read()
		if err != nil {
			return "", err
		}
		if b, ok := m.(*protocol.Build); ok {
			if err := w.Write(&protocol.Ack{Header: protocol.Header{ID: b.ID}}); err != nil {
				return "", err
			}
			go func() { // keep reading (heartbeats are not needed for a few minutes)
				for {
					if _, err := r.Read(); err != nil {
						return
					}
				}
			}()
			return b.UploadDir, nil
		}
	}
}

// makeOutput writes an output of size bytes: random bytes, or text (lines
// of words and numbers, which zstd shrinks about 3x, like logs or sources).
func makeOutput(path, kind string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	if kind == "incompressible" {
		buf := make([]byte, 1<<20)
		for n := int64(0); n < size; n += int64(len(buf)) {
			rand.Read(buf)
			w.Write(buf[:min(int64(len(buf)), size-n)])
		}
		return w.Flush()
	}
	words := strings.Fields("the build coordinator derivation output store path agent cache signed narinfo upload compressed log system feature priority queue scheduler hash reference closure substitute")
	rng := mrand.New(mrand.NewPCG(1, 2))
	var n int64
	for n < size {
		var line []byte
		for range 8 + rng.IntN(8) {
			line = append(line, words[rng.IntN(len(words))]...)
			line = append(line, ' ')
		}
		line = fmt.Appendf(line, "%d %x\n", rng.IntN(100000), rng.Uint32())
		if int64(len(line)) > size-n {
			line = line[:size-n]
		}
		w.Write(line)
		n += int64(len(line))
	}
	return w.Flush()
}

func seqUpload(c *sftp.Client, local, remote string) error {
	lf, err := os.Open(local)
	if err != nil {
		return err
	}
	defer lf.Close()
	rf, err := c.OpenFile(remote, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return err
	}
	if _, err := io.Copy(rf, lf); err != nil {
		return err
	}
	return rf.Close()
}

// profileUploads uploads local again and again for pprofTime while both
// ends record CPU and block profiles, written as DIR/{client,server}-KIND-{cpu,block}.pprof.
func profileUploads(ctx context.Context, sc *sftp.Client, local, uploadDir, kind, pprofAddr string) error {
	if err := os.MkdirAll(pprofDir, 0o755); err != nil {
		return err
	}
	secs := int(pprofTime.Seconds())
	fetched := make(chan error, 2)
	for _, prof := range []string{"profile", "block"} {
		go func() {
			fetched <- fetchProfile(fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", pprofAddr, prof, secs),
				filepath.Join(pprofDir, fmt.Sprintf("server-%s-%s.pprof", kind, map[string]string{"profile": "cpu", "block": "block"}[prof])))
		}()
	}
	cpu, err := os.Create(filepath.Join(pprofDir, "client-"+kind+"-cpu.pprof"))
	if err != nil {
		return err
	}
	defer cpu.Close()
	runtime.SetBlockProfileRate(10000)
	defer runtime.SetBlockProfileRate(0)
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return err
	}
	var n int64
	t0 := time.Now()
	for i := 0; time.Since(t0) < time.Duration(secs)*time.Second; i++ {
		remote := fresh(sc, uploadDir)
		st, err := upload.Upload(ctx, sc, local, remote, nil)
		if err != nil {
			pprof.StopCPUProfile()
			return err
		}
		n += st.Sent
		sc.Remove(remote)
	}
	pprof.StopCPUProfile()
	fmt.Printf("  profiled %s: %.1f MB/s over %s\n", kind, mbps(n, time.Since(t0)), time.Since(t0).Round(time.Millisecond))
	bf, err := os.Create(filepath.Join(pprofDir, "client-"+kind+"-block.pprof"))
	if err != nil {
		return err
	}
	defer bf.Close()
	if err := pprof.Lookup("block").WriteTo(bf, 0); err != nil {
		return err
	}
	return errors.Join(<-fetched, <-fetched)
}

func fetchProfile(url, dst string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func timed(f func() error) (time.Duration, error) {
	t0 := time.Now()
	err := f()
	return time.Since(t0), err
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// fillCache publishes n small signed entries into STATE/cache with the
// coordinator's own key files, and returns their narinfo URL paths.
func fillCache(ctx context.Context, state string, n int) ([]string, error) {
	keys, err := cache.LoadOrCreateKeys(state, "bench-1", "/nix/store", "")
	if err != nil {
		return nil, err
	}
	c, err := cache.Open(ctx, filepath.Join(state, "cache"), cache.Options{NixKey: keys.Nix})
	if err != nil {
		return nil, err
	}
	tmp := filepath.Join(state, "fill")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "src")
	paths := make([]string, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				data := make([]byte, 1<<10)
				rand.Read(data)
				s := fmt.Sprintf("%s-%d", src, i)
				if err := os.WriteFile(s, data, 0o644); err != nil {
					errs <- err
					return
				}
				file := s + ".nar.zst"
				f, err := os.Create(file)
				if err != nil {
					errs <- err
					return
				}
				fileHW, narHW := nar.NewHashingWriter(), nar.NewHashingWriter()
				cw, _ := compression.NewWriter(io.MultiWriter(f, fileHW), "zstd")
				if err := nar.Dump(io.MultiWriter(cw, narHW), s); err != nil {
					errs <- err
					return
				}
				cw.Close()
				f.Close()
				var hp [20]byte
				rand.Read(hp[:])
				hash := nixhash.Base32(hp[:])
				e := cache.Entry{StorePath: "/nix/store/" + hash + fmt.Sprintf("-bench-%d", i), NarHash: narHW.Sum(), NarSize: narHW.Size(),
					FileHash: fileHW.Sum(), FileSize: fileHW.Size(), Compression: "zstd"}
				if err := c.Publish(ctx, e, file); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				paths[i] = "/" + hash + ".narinfo"
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return paths, nil
}

// fetch runs conc clients for dur, each GETting narinfos in a stride;
// every response must be 200.
func fetch(tr *http.Transport, base string, paths []string, conc int, dur time.Duration) (int64, []time.Duration, time.Duration, error) {
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	r, err := httpload.Run(client, base, paths, conc, dur, 1)
	return r.Requests, r.Latencies, r.Wall, err
}
