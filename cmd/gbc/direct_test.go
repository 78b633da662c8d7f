package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDirectUploadNeedsS3 refuses --cache-direct-upload without an s3://
// cache store, before anything is opened.
func TestDirectUploadNeedsS3(t *testing.T) {
	for _, extra := range [][]string{nil, {"--cache-store", "file:" + t.TempDir()}} {
		state := filepath.Join(t.TempDir(), "state")
		e, _ := narEnv(nil)
		err := runCoordinator(context.Background(), e, append([]string{"--state-dir", state, "--cache-direct-upload"}, extra...))
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "needs an s3:// --cache-store") {
			t.Errorf("coordinator --cache-direct-upload %q = %v, want a usage error", extra, err)
		}
		if _, err := os.Stat(state); err == nil {
			t.Errorf("%q: state directory created", extra)
		}
	}
}
