package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/cache/retention"
	"github.com/gbc-farm/gbc/coordinator"
)

// cacheGCFlags are the retention policy's flags.
type cacheGCFlags struct {
	keep                 *[]string
	keepDefault, keepAcc daysDuration
	maxSize              *string
	interval             *time.Duration
}

func addCacheGCFlags(fs *pflag.FlagSet) *cacheGCFlags {
	f := &cacheGCFlags{keepDefault: daysDuration(30 * 24 * time.Hour), keepAcc: daysDuration(30 * 24 * time.Hour)}
	f.keep = fs.StringArray("cache-keep", nil, "keep the outputs of builds tagged `TAG=VALUE:DURATION` that long after submission (repeatable; VALUE * matches any, DURATION forever, 30d, 12h): branch=master:forever")
	fs.Var(&f.keepDefault, "cache-keep-default", "keep the outputs of any build, and any path published, younger than this (0: none)")
	fs.Var(&f.keepAcc, "cache-keep-accessed", "keep paths fetched (narinfo over HTTP or the tunnel) within this (0: none)")
	f.maxSize = fs.String("cache-max-size", "0", "let paths no rule keeps stay while the cache's files total at most `SIZE` (10GiB), the least recently used going first over it; 0: cache gc deletes every path nothing keeps")
	f.interval = fs.Duration("cache-gc-interval", 0, "run cache gc this often (0: only when asked)")
	return f
}

func (f *cacheGCFlags) policy() (retention.Policy, error) {
	var p retention.Policy
	for _, s := range *f.keep {
		r, err := retention.ParseRule(s)
		if err != nil {
			return p, fmt.Errorf("--cache-keep: %w", err)
		}
		p.Rules = append(p.Rules, r)
	}
	p.KeepDefault, p.KeepAccessed = time.Duration(f.keepDefault), time.Duration(f.keepAcc)
	n, err := retention.ParseSize(*f.maxSize)
	if err != nil {
		return p, fmt.Errorf("--cache-max-size: %w", err)
	}
	p.MaxSize = n
	if *f.interval < 0 {
		return p, fmt.Errorf("--cache-gc-interval must not be negative")
	}
	return p, nil
}

// startCacheGC collects the cache every interval in the background (0:
// never).
func startCacheGC(ctx context.Context, log *slog.Logger, coord *coordinator.Coordinator, every time.Duration) (stop func()) {
	if every <= 0 {
		return func() {}
	}
	log.Info("cache gc runs periodically", "interval", every)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		coord.RunCacheGC(ctx, every)
	}()
	return func() { cancel(); <-done }
}
