package hooks

import "github.com/prometheus/client_golang/prometheus"

// descs are the hooks' metric descriptions, one set per Runner.
type descs struct{ lag, inflight *prometheus.Desc }

func newDescs() descs {
	return descs{
		lag: prometheus.NewDesc("gbc_hook_lag_events",
			"Event ids between the newest event the hook saw in the log and the position through which it has read every event of its types: 0 once it has read everything; events of other types in between count too, so this bounds its unread events from above.",
			[]string{"hook"}, nil),
		inflight: prometheus.NewDesc("gbc_hook_in_flight_events",
			"Events the hook has read and not finished: running, or waiting for a retry.",
			[]string{"hook"}, nil),
	}
}

// Collector returns the hooks' backlog metrics, read from the runner's
// own positions (no query at scrape time).
func (r *Runner) Collector() prometheus.Collector { return (*collector)(r) }

type collector Runner

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.descs.lag
	ch <- c.descs.inflight
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, p := range c.progress {
		ch <- prometheus.MustNewConstMetric(c.descs.lag, prometheus.GaugeValue, float64(max(0, p.head-p.through)), name)
		ch <- prometheus.MustNewConstMetric(c.descs.inflight, prometheus.GaugeValue, float64(p.inflight), name)
	}
}
