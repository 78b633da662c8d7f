package cache_test

import (
	"context"
	"log/slog"
	"net/http"
	"path/filepath"

	"github.com/gbc-farm/gbc/cache"
)

// How the coordinator wires the cache: keys in the state directory, the
// cache in STATE/cache, the handler on --http-listen or the SSH tunnel.
func Example() {
	ctx := context.Background()
	state, storeDir := "/var/lib/gbc", "/nix/store"
	keys, err := cache.LoadOrCreateKeys(state, "gbc-farm-1", storeDir, "" /* or --signing-key FILE */)
	if err != nil {
		panic(err)
	}
	c, err := cache.Open(ctx, filepath.Join(state, "cache"), cache.Options{
		StoreDir: storeDir, NixKey: keys.Nix, GuixKey: keys.Guix, Logger: slog.Default(),
	})
	if err != nil {
		panic(err)
	}
	// On `build X.drv`: make the .drv closure substitutable.
	if _, err := c.PublishDerivationClosure(ctx, "/nix/store/…-x.drv", ""); err != nil {
		panic(err)
	}
	// After an agent's verified upload: c.Publish(ctx, cache.Entry{…}, uploadedFile).
	// After the build: c.WriteLog(ctx, drvPath, logReader).
	http.ListenAndServe("127.0.0.1:8080", c.Handler())
}
