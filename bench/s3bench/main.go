// Command s3bench measures the cache on a directory (file:) against the
// same cache on a bucket of a real S3 server (SeaweedFS, started here) in
// one run: publishing agents' uploads (small NARs, and large ones sent
// multipart) and narinfo fetches through the cache's HTTP handler, plus
// narinfo fetches from the bucket's own endpoint. Run through bench/s3.sh.
package main

import (
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
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gbc-farm/gbc/bench/internal/httpload"
	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/internal/s3test"
	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
	"github.com/gbc-farm/gbc/storepath"
)

func main() {
	n := flag.Int("n", 2000, "small NARs (1-4 KiB) to publish and serve")
	large := flag.Int("large", 4, "large NARs to publish")
	largeMiB := flag.Int("large-mib", 64, "size of each large NAR in MiB (incompressible)")
	conc := flag.Int("c", 32, "concurrent HTTP clients")
	dur := flag.Duration("d", 3*time.Second, "fetch time per server and round")
	rounds := flag.Int("rounds", 2, "alternating rounds per server")
	workers := flag.Int("pw", 4, "concurrent publishers")
	flag.Parse()
	if err := run(*n, *large, *largeMiB, *conc, *dur, *rounds, *workers); err != nil {
		log.Fatal(err)
	}
}

type upload struct {
	e    cache.Entry
	file string
}

type measure struct {
	count int64
	bytes int64
	wall  time.Duration
	lat   []time.Duration
}

func (m measure) rate() float64 { return float64(m.count) / m.wall.Seconds() }

func run(n, large, largeMiB, conc int, dur time.Duration, rounds, workers int) error {
	dir, err := os.MkdirTemp("", "gbc-s3bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	weed, err := s3test.Launch(filepath.Join(dir, "weed"))
	if err != nil {
		return err
	}
	defer weed.Stop()
	if err := weed.MakeBucket(ctx, "bench"); err != nil {
		return err
	}
	key, err := signing.GenerateNixKey("gbc-bench-1")
	if err != nil {
		return err
	}
	fst, err := cache.NewFileStore(filepath.Join(dir, "cache"), nil)
	if err != nil {
		return err
	}
	sst, err := cache.OpenStoreURL(ctx, weed.URL("bench", "cache"),
		cache.Credentials{AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey}, filepath.Join(dir, "spool"), nil)
	if err != nil {
		return err
	}
	type setup struct {
		name  string
		c     *cache.Cache
		small []upload
		big   []upload
		pub   measure
		pubL  measure
		get   measure
	}
	setups := []*setup{{name: "file:"}, {name: "s3:"}}
	for i, st := range []cache.Store{fst, sst} {
		s := setups[i]
		if s.c, err = cache.OpenStore(ctx, st, cache.Options{NixKey: key}); err != nil {
			return err
		}
		up := filepath.Join(dir, fmt.Sprintf("uploads-%d", i))
		if s.small, err = makeUploads(up, "s", n, 1<<10, 4<<10); err != nil {
			return err
		}
		if s.big, err = makeUploads(up, "l", large, largeMiB<<20, largeMiB<<20); err != nil {
			return err
		}
	}
	// Publish, alternating stores per batch so both see the same machine.
	for _, s := range setups {
		m, err := publish(ctx, s.c, s.small, workers)
		if err != nil {
			return fmt.Errorf("%s publish: %w", s.name, err)
		}
		s.pub = m
		if m, err = publish(ctx, s.c, s.big, 1); err != nil {
			return fmt.Errorf("%s publish large: %w", s.name, err)
		}
		s.pubL = m
	}
	narinfoPaths := func(ups []upload) []string {
		paths := make([]string, len(ups))
		for i, u := range ups {
			sp, _ := storepath.Parse(u.e.StorePath)
			paths[i] = "/" + sp.HashPart + ".narinfo"
		}
		return paths
	}
	var direct measure
	for round := range rounds {
		for _, s := range setups {
			m, err := fetch(s.c.Handler(), narinfoPaths(s.small), conc, dur)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", s.name, round, err)
			}
			s.get.count += m.count
			s.get.wall += m.wall
			s.get.lat = append(s.get.lat, m.lat...)
		}
		m, err := fetchURL("http://"+weed.Endpoint+"/bench/cache", narinfoPaths(setups[1].small), conc, dur)
		if err != nil {
			return fmt.Errorf("bucket endpoint round %d: %w", round, err)
		}
		direct.count += m.count
		direct.wall += m.wall
		direct.lat = append(direct.lat, m.lat...)
	}

	fmt.Printf("cache on file: vs s3: (SeaweedFS on 127.0.0.1, one process), GOMAXPROCS=%d\n", runtime.GOMAXPROCS(0))
	fmt.Printf("publish: %d small NARs (1-4 KiB) with %d publishers, %d large NARs of %d MiB one at a time\n", n, workers, large, largeMiB)
	fmt.Printf("(file: renames a verified upload into place, s3: sends it: PUT, multipart above 16 MiB);\n")
	fmt.Printf("narinfo GET: %d clients, %d×%s per server, alternating\n\n", conc, rounds, dur)
	fmt.Printf("%-44s %10s %12s %10s %10s\n", "what", "count", "per s", "p50", "p99")
	pr := func(name string, m measure, unit string) {
		p50, p99 := "-", "-"
		if len(m.lat) > 0 {
			slices.Sort(m.lat)
			p50 = m.lat[len(m.lat)/2].Round(time.Microsecond).String()
			p99 = m.lat[len(m.lat)*99/100].Round(time.Microsecond).String()
		}
		rate := fmt.Sprintf("%.0f", m.rate())
		if unit == "MiB" {
			rate = fmt.Sprintf("%.1f MiB", float64(m.bytes)/(1<<20)/m.wall.Seconds())
		}
		fmt.Printf("%-44s %10d %12s %10s %10s\n", name, m.count, rate, p50, p99)
	}
	for _, s := range setups {
		pr("Publish small, "+s.name, s.pub, "")
	}
	for _, s := range setups {
		pr("Publish large, "+s.name, s.pubL, "MiB")
	}
	for _, s := range setups {
		pr("GET narinfo via cache.Handler, "+s.name, s.get, "")
	}
	pr("GET narinfo from the bucket endpoint", direct, "")
	f, s := setups[0], setups[1]
	fmt.Printf("\nratios s3: / file:  publish small %.3g, publish large (MiB/s) %.3g, GET via handler %.3g; bucket endpoint / file: handler %.3g\n",
		s.pub.rate()/f.pub.rate(),
		(float64(s.pubL.bytes)/s.pubL.wall.Seconds())/(float64(f.pubL.bytes)/f.pubL.wall.Seconds()),
		s.get.rate()/f.get.rate(), direct.rate()/f.get.rate())
	return nil
}

// publish publishes ups with workers goroutines.
func publish(ctx context.Context, c *cache.Cache, ups []upload, workers int) (measure, error) {
	var m measure
	for _, u := range ups {
		m.bytes += u.e.FileSize
	}
	var next atomic.Int64
	var perr atomic.Pointer[error]
	var wg sync.WaitGroup
	t0 := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(ups)) || perr.Load() != nil {
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
	m.wall = time.Since(t0)
	m.count = int64(len(ups))
	if p := perr.Load(); p != nil {
		return m, *p
	}
	return m, nil
}

// makeUploads writes n compressed NARs of random files between lo and hi
// bytes, as an agent uploads them, outside the timed part.
func makeUploads(dir, tag string, n, lo, hi int) ([]upload, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	src := filepath.Join(dir, "src")
	ups := make([]upload, n)
	for i := range ups {
		size := lo
		if hi > lo {
			k, _ := rand.Int(rand.Reader, big.NewInt(int64(hi-lo)))
			size += int(k.Int64())
		}
		data := make([]byte, size)
		rand.Read(data)
		if err := os.WriteFile(src, data, 0o644); err != nil {
			return nil, err
		}
		file := filepath.Join(dir, fmt.Sprintf("%s%d.nar.zst", tag, i))
		f, err := os.Create(file)
		if err != nil {
			return nil, err
		}
		fileHW, narHW := nar.NewHashingWriter(), nar.NewHashingWriter()
		cw, _ := compression.NewWriter(io.MultiWriter(f, fileHW), "zstd")
		if err := nar.Dump(io.MultiWriter(cw, narHW), src); err != nil {
			return nil, err
		}
		if err := cw.Close(); err != nil {
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		var hp [20]byte
		rand.Read(hp[:])
		ups[i] = upload{file: file, e: cache.Entry{
			StorePath: "/nix/store/" + nixhash.Base32(hp[:]) + fmt.Sprintf("-bench-%s%d", tag, i),
			NarHash:   narHW.Sum(), NarSize: narHW.Size(),
			FileHash: fileHW.Sum(), FileSize: fileHW.Size(), Compression: "zstd",
		}}
	}
	return ups, nil
}

// fetch serves h on a fresh loopback listener and GETs paths from it.
func fetch(h http.Handler, paths []string, conc int, dur time.Duration) (measure, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return measure{}, err
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()
	return fetchURL("http://"+ln.Addr().String(), paths, conc, dur)
}

func fetchURL(base string, paths []string, conc int, dur time.Duration) (measure, error) {
	tr := &http.Transport{MaxIdleConns: conc, MaxIdleConnsPerHost: conc, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	r, err := httpload.Run(client, base, paths, conc, dur, 16)
	return measure{count: r.Requests, wall: r.Wall, lat: r.Latencies}, err
}
