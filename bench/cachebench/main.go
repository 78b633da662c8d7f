// Command cachebench measures the binary cache: Publish rate (signed
// narinfo + NAR move, both fsynced) and narinfo fetch rate over the cache's
// HTTP handler on a real loopback listener, against http.FileServer serving
// the same directory in the same run. Run through bench/cache.sh.
package main

import (
	"github.com/gbc-farm/gbc/bench/internal/httpload"

	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
	"github.com/gbc-farm/gbc/storepath"
)

func main() {
	n := flag.Int("n", 10000, "narinfos to publish and serve")
	conc := flag.Int("c", 64, "concurrent HTTP clients")
	dur := flag.Duration("d", 4*time.Second, "fetch time per server and round")
	rounds := flag.Int("rounds", 2, "alternating rounds per server")
	pubWorkers := flag.Int("pw", 4, "concurrent publishers")
	dir := flag.String("dir", "", "work directory (default: a temp dir, removed afterwards)")
	flag.Parse()
	if err := run(*n, *conc, *dur, *rounds, *pubWorkers, *dir); err != nil {
		log.Fatal(err)
	}
}

type upload struct {
	e    cache.Entry
	file string
}

func run(n, conc int, dur time.Duration, rounds, pubWorkers int, dir string) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "gbc-cachebench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	ctx := context.Background()
	key, err := signing.GenerateNixKey("gbc-bench-1")
	if err != nil {
		return err
	}
	c, err := cache.Open(ctx, filepath.Join(dir, "cache"), cache.Options{NixKey: key})
	if err != nil {
		return err
	}
	ups, err := makeUploads(filepath.Join(dir, "uploads"), n)
	if err != nil {
		return err
	}

	// Publish: half sequentially, half with pubWorkers goroutines.
	half := n / 2
	t0 := time.Now()
	for _, u := range ups[:half] {
		if err := c.Publish(ctx, u.e, u.file); err != nil {
			return err
		}
	}
	seq := time.Since(t0)
	t0 = time.Now()
	var wg sync.WaitGroup
	var perr atomic.Pointer[error]
	next := atomic.Int64{}
	next.Store(int64(half))
	for range pubWorkers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if err := c.Publish(ctx, ups[i].e, ups[i].file); err != nil {
					perr.Store(&err)
					return
				}
			}
		})
	}
	wg.Wait()
	par := time.Since(t0)
	if p := perr.Load(); p != nil {
		return *p
	}
	// Republishing an existing path (same NarHash) is the idempotent path.
	t0 = time.Now()
	for _, u := range ups[:half] {
		if err := c.Publish(ctx, u.e, u.file); err != nil {
			return err
		}
	}
	again := time.Since(t0)

	paths := make([]string, n)
	for i, u := range ups {
		sp, _ := storepath.Parse(u.e.StorePath)
		paths[i] = "/" + sp.HashPart + ".narinfo"
	}
	servers := []struct {
		name string
		h    http.Handler
	}{
		{"cache.Handler", c.Handler()},
		{"http.FileServer", http.FileServer(http.Dir(c.Dir()))},
	}
	type result struct {
		reqs int64
		lat  []time.Duration
		wall time.Duration
	}
	results := make([]result, len(servers))
	for round := range rounds {
		for i, s := range servers {
			r, err := fetch(s.h, paths, conc, dur)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", s.name, round, err)
			}
			results[i].reqs += r.reqs
			results[i].wall += r.wall
			results[i].lat = append(results[i].lat, r.lat...)
		}
	}

	fmt.Printf("binary cache: %d narinfos, %d HTTP clients on 127.0.0.1, %d×%s per server (alternating), GOMAXPROCS=%d\n\n",
		n, conc, rounds, dur, runtimeProcs())
	fmt.Printf("%-34s %12s %10s %10s %10s\n", "what", "count", "per s", "p50", "p99")
	pr := func(name string, count int64, wall time.Duration, lat []time.Duration) {
		p50, p99 := "-", "-"
		if len(lat) > 0 {
			slices.Sort(lat)
			p50 = lat[len(lat)/2].Round(time.Microsecond).String()
			p99 = lat[len(lat)*99/100].Round(time.Microsecond).String()
		}
		fmt.Printf("%-34s %12d %10.0f %10s %10s\n", name, count, float64(count)/wall.Seconds(), p50, p99)
	}
	pr("Publish, 1 writer", int64(half), seq, nil)
	pr(fmt.Sprintf("Publish, %d writers", pubWorkers), int64(n-half), par, nil)
	pr("Publish again (same NarHash)", int64(half), again, nil)
	for i, s := range servers {
		pr("GET narinfo via "+s.name, results[i].reqs, results[i].wall, results[i].lat)
	}
	fmt.Printf("\nratio cache.Handler / http.FileServer: %.2f\n",
		(float64(results[0].reqs)/results[0].wall.Seconds())/(float64(results[1].reqs)/results[1].wall.Seconds()))
	return nil
}

func runtimeProcs() int {
	return int(numCPU())
}

// makeUploads writes n small compressed NARs (random 1–4 KiB files) as an
// agent would upload them, outside the timed part.
func makeUploads(dir string, n int) ([]upload, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	src := filepath.Join(dir, "src")
	ups := make([]upload, n)
	for i := range ups {
		size, _ := rand.Int(rand.Reader, big.NewInt(3<<10))
		data := make([]byte, 1<<10+size.Int64())
		rand.Read(data)
		if err := os.WriteFile(src, data, 0o644); err != nil {
			return nil, err
		}
		file := filepath.Join(dir, fmt.Sprintf("u%d.nar.zst", i))
		f, err := os.Create(file)
		if err != nil {
			return nil, err
		}
		fileHW, narHW := nar.NewHashingWriter(), nar.NewHashingWriter()
		cw, _ := compression.NewWriter(io.MultiWriter(f, fileHW), "zstd")
		if err := nar.Dump(io.MultiWriter(cw, narHW), src); err != nil {
			return nil, err
		}
		cw.Close()
		f.Close()
		var hp [20]byte
		rand.Read(hp[:])
		p := "/nix/store/" + nixhash.Base32(hp[:]) + fmt.Sprintf("-bench-%d", i)
		var refs []string
		if i > 0 {
			refs = []string{ups[i-1].e.StorePath}
		}
		ups[i] = upload{file: file, e: cache.Entry{
			StorePath: p, NarHash: narHW.Sum(), NarSize: narHW.Size(),
			FileHash: fileHW.Sum(), FileSize: fileHW.Size(), Compression: "zstd", References: refs,
		}}
	}
	return ups, nil
}

type fetchResult struct {
	reqs int64
	lat  []time.Duration
	wall time.Duration
}

// fetch runs conc clients against h on a fresh loopback listener for dur,
// each requesting narinfos in a random order; every response is checked.
func fetch(h http.Handler, paths []string, conc int, dur time.Duration) (fetchResult, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fetchResult{}, err
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	tr := &http.Transport{MaxIdleConns: conc, MaxIdleConnsPerHost: conc, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	r, err := httpload.Run(client, base, paths, conc, dur, 16)
	return fetchResult{reqs: r.Requests, lat: r.Latencies, wall: r.Wall}, err
}
