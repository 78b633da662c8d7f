//go:build !linux

package cache

import "errors"

var errNoSyncfs = errors.New("syncfs not available")

// syncFS is Linux-only; elsewhere the barrier fsyncs each file.
func syncFS(string) error { return errNoSyncfs }
