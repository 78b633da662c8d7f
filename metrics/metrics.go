// Package metrics holds what the coordinator process needs to serve
// Prometheus metrics: a registry of its own (never the library's global
// one) with the Go runtime and process collectors, the /metrics handler,
// and the database's collector (Store). Each part of gbc that has metrics
// exposes a prometheus.Collector (coordinator.Collector, …); the process
// registers them here. docs/metrics.md lists every metric.
package metrics

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Path is where Handler is mounted.
const Path = "/metrics"

// NewRegistry returns a registry with the Go runtime and process
// collectors and the given collectors.
func NewRegistry(cs ...prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	cs = append([]prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}, cs...)
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

// maxScrapes bounds concurrent scrapes: each one walks the coordinator's
// state under its lock.
const maxScrapes = 4

// Handler serves the registry at Path (and nothing else) in the
// Prometheus text format (or the protobuf one a client asks for).
func Handler(reg prometheus.Gatherer, log *slog.Logger) http.Handler {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: maxScrapes,
		Timeout:             30 * time.Second,
	})
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, h)
	return mux
}
