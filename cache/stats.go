package cache

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// counts are the narinfos in the cache and the compressed NAR bytes they
// name (FileSize), for metrics: one count of the directory (Count), then
// kept as publications add narinfos and collections remove them.
type counts struct {
	narinfos, bytes atomic.Int64
	counted         atomic.Bool
	descs           struct{ narinfos, bytes *prometheus.Desc }
}

func (c *Cache) stored(narinfos int, bytes int64) {
	c.counts.narinfos.Add(int64(narinfos))
	c.counts.bytes.Add(bytes)
}

// Stats is what the cache holds.
type Stats struct {
	Narinfos int64
	NarBytes int64 // the FileSize of every narinfo, summed
	// Counted is false until Count has finished; until then the figures
	// are only what changed since the cache was opened.
	Counted bool
}

// Stats returns the cache's counts.
func (c *Cache) Stats() Stats {
	return Stats{Narinfos: c.counts.narinfos.Load(), NarBytes: c.counts.bytes.Load(), Counted: c.counts.counted.Load()}
}

// Count reads every narinfo once (as Scan does) and adds them to the
// counts Stats reports; publications and collections change the counts
// as they happen, before, during and after it, so a path published while
// Count runs may be counted twice. The coordinator runs it once in the
// background at start.
func (c *Cache) Count(ctx context.Context) error {
	var n, b int64
	if _, err := c.Scan(ctx, func(s Stored) error {
		n++
		b += s.FileSize
		return nil
	}); err != nil {
		return fmt.Errorf("cache count: %w", err)
	}
	c.stored(int(n), b)
	c.counts.counted.Store(true)
	return nil
}

// Collector returns the cache's metrics; they appear once Count is done.
func (c *Cache) Collector() prometheus.Collector { return (*collector)(c) }

type collector Cache

func (k *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- k.counts.descs.narinfos
	ch <- k.counts.descs.bytes
}

func (k *collector) Collect(ch chan<- prometheus.Metric) {
	st := (*Cache)(k).Stats()
	if !st.Counted {
		return
	}
	ch <- prometheus.MustNewConstMetric(k.counts.descs.narinfos, prometheus.GaugeValue, float64(st.Narinfos))
	ch <- prometheus.MustNewConstMetric(k.counts.descs.bytes, prometheus.GaugeValue, float64(st.NarBytes))
}

func (c *Cache) initCounts() {
	c.counts.descs.narinfos = prometheus.NewDesc("gbc_cache_narinfos", "Narinfos (store paths) in the binary cache.", nil, nil)
	c.counts.descs.bytes = prometheus.NewDesc("gbc_cache_nar_bytes", "Compressed NAR bytes the cache's narinfos name (their FileSize, summed).", nil, nil)
}
