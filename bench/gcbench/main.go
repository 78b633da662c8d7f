// Command gcbench measures `cache gc --dry-run` (coordinator.CollectCache
// with DryRun): the time and memory to read every narinfo, every build
// record, the pins and the last accesses, and plan, for caches of
// several sizes; the dry run runs in a fresh process each time so its
// peak RSS is its own. Run through bench/gc.sh.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/cache/retention"
	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/sqlite"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
)

type result struct {
	Narinfos int     `json:"narinfos"`
	Builds   int     `json:"builds"`
	Kept     int     `json:"kept"`
	Delete   int     `json:"delete"`
	Millis   int64   `json:"ms"`
	CPUms    int64   `json:"cpu_ms"`
	PeakRSS  int64   `json:"peak_rss_kib"`
	HeapMiB  float64 `json:"heap_mib"`
}

func main() {
	sizes := flag.String("n", "100000,1000000", "cache sizes in narinfos, comma-separated; the first is the baseline")
	child := flag.String("child", "", "internal: run the dry run on this directory and print JSON")
	dir := flag.String("dir", "", "work directory (default: a temp dir, removed afterwards)")
	flag.Parse()
	if *child != "" {
		if err := dry(*child); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := run(*sizes, *dir); err != nil {
		log.Fatal(err)
	}
}

func run(sizes, dir string) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "gbc-gcbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	var rows []result
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 10 {
			return fmt.Errorf("size %q", s)
		}
		d := filepath.Join(dir, strconv.Itoa(n))
		t0 := time.Now()
		if err := generate(d, n); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "generated %d narinfos and %d builds in %s\n", n, n/10, time.Since(t0).Round(time.Second))
		exe, _ := os.Executable()
		cmd := exec.Command(exe, "-child", d)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("dry run on %d: %w", n, err)
		}
		var r result
		if err := json.Unmarshal(out, &r); err != nil {
			return fmt.Errorf("dry run on %d: %w: %s", n, err, out)
		}
		rows = append(rows, r)
		fmt.Fprintf(os.Stderr, "dry run over %d narinfos: %s", n, out)
		os.RemoveAll(d)
	}
	base := rows[0]
	fmt.Printf("cache gc --dry-run (%d CPUs, %s)\n\n", runtime.NumCPU(), runtime.GOOS)
	fmt.Println("| narinfos | builds | kept | to delete | wall ms | CPU ms | peak RSS MiB | heap after MiB | wall × baseline | RSS × baseline |")
	fmt.Println("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range rows {
		fmt.Printf("| %d | %d | %d | %d | %d | %d | %.0f | %.0f | %.2f | %.2f |\n", r.Narinfos, r.Builds, r.Kept, r.Delete,
			r.Millis, r.CPUms, float64(r.PeakRSS)/1024, r.HeapMiB, float64(r.Millis)/float64(base.Millis), float64(r.PeakRSS)/float64(base.PeakRSS))
	}
	return nil
}

// hashPart is a deterministic base32 hash part for path i.
func hashPart(i int) string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	sum := sha256.Sum256(b[:])
	return nixhash.Base32(sum[:20])
}

func base(i int) string {
	if i%3 == 0 {
		return hashPart(i) + "-pkg-" + strconv.Itoa(i) + ".drv"
	}
	return hashPart(i) + "-pkg-" + strconv.Itoa(i)
}

// generate writes n narinfos (a third of them .drv files; every output
// refers to up to three earlier paths and names the .drv before it as its
// deriver; no NAR files: a dry run never opens them), and n/10 builds, nine in ten finished,
// tagged branch=master or branch=feature-N, in a SQLite database.
func generate(dir string, n int) error {
	ctx := context.Background()
	cdir := filepath.Join(dir, "cache")
	if err := os.MkdirAll(filepath.Join(cdir, "nar"), 0o755); err != nil {
		return err
	}
	key, err := signing.GenerateNixKey("bench-1")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte(key.String()), 0o600); err != nil {
		return err
	}
	sig := "bench-1:" + strings.Repeat("A", 86) + "=="
	old := time.Now().Add(-90 * 24 * time.Hour)
	// Written by a few goroutines: file creation, not the CPU, is the
	// cost. NAR files are not written (a dry run never opens them).
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				if err := writeNarinfo(cdir, i, sig, old); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "gbc.db"), slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer st.Close()
	nb := n / 10
	var batch []db.NewBuild
	flush := func() error {
		err := st.CreateBuilds(ctx, batch)
		batch = batch[:0]
		return err
	}
	for k := range nb {
		drv := 3 * k // a .drv
		tag := "master"
		if k%4 != 0 {
			tag = "feature-" + strconv.Itoa(k%50)
		}
		batch = append(batch, db.NewBuild{ID: fmt.Sprintf("b-%08d", k), Derivation: "/nix/store/" + base(drv), System: "x86_64-linux",
			Tags:      []db.Tag{{Key: "branch", Value: tag}},
			Outputs:   []db.DerivationOutput{{Name: "out", Path: "/nix/store/" + base(drv+1)}},
			CreatedAt: old.Add(time.Duration(k) * time.Second), InputDerivations: []string{}})
		if len(batch) == 1000 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "builds"), []byte(strconv.Itoa(nb)), 0o644); err != nil {
		return err
	}
	// Nine in ten finished: set directly, as a farm's history would be.
	_, err = st.DB().ExecContext(ctx, `UPDATE builds SET state = 'succeeded', ended_at = created_at + 60000 WHERE seq % 10 != 0`)
	return err
}

func dry(dir string) error {
	ctx := context.Background()
	kb, err := os.ReadFile(filepath.Join(dir, "key"))
	if err != nil {
		return err
	}
	key, err := signing.ParseNixSecretKey(strings.TrimSpace(string(kb)))
	if err != nil {
		return err
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "gbc.db"), slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer st.Close()
	cc, err := cache.Open(ctx, filepath.Join(dir, "cache"), cache.Options{NixKey: key})
	if err != nil {
		return err
	}
	rules := []retention.Rule{{Key: "branch", Value: "master", Keep: retention.Forever}, {Key: "branch", Value: "*", Keep: 30 * 24 * time.Hour}}
	c, err := coordinator.New(ctx, coordinator.Config{StateDir: dir, Store: st, Cache: cc,
		CachePolicy: retention.Policy{Rules: rules, KeepDefault: 7 * 24 * time.Hour, KeepAccessed: 7 * 24 * time.Hour}})
	if err != nil {
		return err
	}
	defer c.Close()
	runtime.GC()
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	t0 := time.Now()
	rep, err := c.CollectCache(ctx, coordinator.GCOptions{DryRun: true})
	if err != nil {
		return err
	}
	wall := time.Since(t0)
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	peak := peakRSS()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	nb, _ := os.ReadFile(filepath.Join(dir, "builds"))
	builds, _ := strconv.Atoi(string(nb))
	return json.NewEncoder(os.Stdout).Encode(result{Narinfos: rep.Paths, Builds: builds, Kept: rep.Kept, Delete: len(rep.Delete),
		Millis: wall.Milliseconds(), CPUms: cpu.Milliseconds(), PeakRSS: peak, HeapMiB: float64(ms.HeapInuse) / (1 << 20)})
}

// peakRSS is VmHWM from /proc/self/status, in KiB.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func writeNarinfo(cdir string, i int, sig string, at time.Time) error {
	b := base(i)
	var refs []string
	if i%3 != 0 {
		for _, j := range []int{i - 1, i / 2, i / 3} {
			if j >= 0 && j < i && j%3 != 0 {
				refs = append(refs, base(j))
			}
		}
	}
	var sb strings.Builder
	fileHash := sha256.Sum256([]byte(b))
	url := "nar/" + nixhash.Base32(fileHash[:]) + ".nar.zst"
	fmt.Fprintf(&sb, "StorePath: /nix/store/%s\nURL: %s\nCompression: zstd\nFileHash: sha256:%s\nFileSize: %d\nNarHash: sha256:%s\nNarSize: %d\nReferences: %s\n",
		b, url, nixhash.Base32(fileHash[:]), 1000+i%5000, nixhash.Base32(fileHash[:]), 4000+i%9000, strings.Join(refs, " "))
	if i%3 != 0 {
		fmt.Fprintf(&sb, "Deriver: %s\n", base(i-i%3))
	}
	fmt.Fprintf(&sb, "Sig: %s\n", sig)
	p := filepath.Join(cdir, hashPart(i)+".narinfo")
	if err := os.WriteFile(p, []byte(sb.String()), 0o644); err != nil {
		return err
	}
	return os.Chtimes(p, at, at)
}
