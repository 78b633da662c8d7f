package hooks

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gbc-farm/gbc/db"
)

// gauges returns the lag and in-flight gauges of a hook.
func gauges(t *testing.T, c prometheus.Collector, hook string) (lag, inflight float64) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	find := func(name string) float64 {
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == hook {
					return m.GetGauge().GetValue()
				}
			}
		}
		t.Fatalf("no %s{hook=%q}", name, hook)
		return 0
	}
	return find("gbc_hook_lag_events"), find("gbc_hook_in_flight_events")
}

// TestBacklogMetrics: a hook that is behind shows events in flight and a
// lag; other event types do not hold it back; once it has handled
// everything both are zero.
func TestBacklogMetrics(t *testing.T) {
	st := openStore(t)
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	h := Hook{Name: "slow", Types: []db.EventType{db.EventFailed}, Parallel: 2, MaxTries: 1,
		Handler: func(ctx context.Context, e db.Event) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}}
	r, err := New(Config{Store: st, Hooks: []Hook{h}, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if lag, inflight := gauges(t, r.Collector(), "slow"); lag != 0 || inflight != 0 {
		t.Fatalf("before the runner starts: lag %v, in flight %v", lag, inflight)
	}
	appendEvents(t, st, db.EventFailed, 5)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { free(); cancel(); <-done }()

	// Two run (Parallel), three wait unread behind them.
	waitUntil(t, "two events in flight and a lag", func() bool {
		lag, inflight := gauges(t, r.Collector(), "slow")
		return inflight == 2 && lag == 3
	})
	free()
	waitUntil(t, "the hook caught up", func() bool {
		lag, inflight := gauges(t, r.Collector(), "slow")
		return inflight == 0 && lag == 0
	})
	// Events of other types move the log on but the hook has nothing to
	// read: its lag stays zero.
	appendEvents(t, st, db.EventSucceeded, 3)
	last, err := st.LastEventID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the hook read past the other events", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.progress["slow"].head == last
	})
	if lag, inflight := gauges(t, r.Collector(), "slow"); lag != 0 || inflight != 0 {
		t.Fatalf("after events of other types: lag %v, in flight %v; want 0, 0", lag, inflight)
	}
}
