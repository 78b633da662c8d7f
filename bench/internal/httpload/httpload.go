// Package httpload is the bounded GET load generator the cache benchmarks
// share: conc clients stride through a fixed list of paths for a fixed time,
// and every response must be 200.
package httpload

import (
	"crypto/rand"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what one run measured.
type Result struct {
	Requests  int64
	Latencies []time.Duration // a sample: every sampleEvery-th request per client
	Wall      time.Duration
}

// Run GETs base+paths[i] from conc clients until dur has passed. Each client
// starts at a random path and strides by a prime, so all paths are fetched.
// It stops at the first failed request and returns its error.
func Run(client *http.Client, base string, paths []string, conc int, dur time.Duration, sampleEvery int) (Result, error) {
	if len(paths) == 0 || conc <= 0 {
		return Result{}, fmt.Errorf("httpload: %d paths, %d clients", len(paths), conc)
	}
	if sampleEvery <= 0 {
		sampleEvery = 1
	}
	var total atomic.Int64
	var firstErr atomic.Pointer[error]
	lats := make([][]time.Duration, conc)
	deadline := time.Now().Add(dur)
	t0 := time.Now()
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			k, _ := rand.Int(rand.Reader, big.NewInt(int64(len(paths))))
			i := int(k.Int64())
			for n := 0; time.Now().Before(deadline); n++ {
				i = (i + 7919) % len(paths)
				s := time.Now()
				resp, err := client.Get(base + paths[i])
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("GET %s: %s", paths[i], resp.Status)
					}
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				if n%sampleEvery == 0 {
					lats[w] = append(lats[w], time.Since(s))
				}
				total.Add(1)
			}
		})
	}
	wg.Wait()
	r := Result{Requests: total.Load(), Wall: time.Since(t0)}
	for _, l := range lats {
		r.Latencies = append(r.Latencies, l...)
	}
	if p := firstErr.Load(); p != nil {
		return r, *p
	}
	return r, nil
}
