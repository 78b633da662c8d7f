//go:build !linux

package agent

import "errors"

func freeDisk(dir string) (uint64, error) {
	return 0, errors.New("free disk space: not implemented on this OS")
}
