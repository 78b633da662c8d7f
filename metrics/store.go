package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gbc-farm/gbc/db"
)

// Store is the database's metrics: a db.Observer that the store is opened
// with, and a prometheus.Collector for the registry.
type Store struct {
	tx     *prometheus.HistogramVec
	events *prometheus.CounterVec
}

var _ db.Observer = (*Store)(nil)

// NewStore returns the database's metrics, with every event type's
// counter present (at zero) from the start.
func NewStore() *Store {
	s := &Store{
		tx: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gbc_db_transaction_duration_seconds",
			Help: "One try of a database transaction, from begin to commit, by kind (write, read) and result (ok, error).",
			// From 100 µs (SQLite in-process) to 10 s (a server under load).
			Buckets: prometheus.ExponentialBucketsRange(0.0001, 10, 16),
		}, []string{"kind", "result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gbc_events_written_total",
			Help: "Events committed to the event log since the coordinator started, by type.",
		}, []string{"type"}),
	}
	for _, t := range db.EventTypes {
		s.events.WithLabelValues(string(t))
	}
	return s
}

// Transaction implements db.Observer.
func (s *Store) Transaction(kind db.TxKind, took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	s.tx.WithLabelValues(string(kind), result).Observe(took.Seconds())
}

// EventsCommitted implements db.Observer.
func (s *Store) EventsCommitted(t db.EventType, n int) {
	s.events.WithLabelValues(string(t)).Add(float64(n))
}

// Describe implements prometheus.Collector.
func (s *Store) Describe(ch chan<- *prometheus.Desc) {
	s.tx.Describe(ch)
	s.events.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *Store) Collect(ch chan<- prometheus.Metric) {
	s.tx.Collect(ch)
	s.events.Collect(ch)
}
