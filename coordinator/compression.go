package coordinator

import (
	"fmt"

	"github.com/gbc-farm/gbc/compression"
)

// compressionSuffix maps a reported compression name to the cache file suffix.
func compressionSuffix(name string) (string, error) {
	if !compression.Supported(name) {
		return "", fmt.Errorf("compression %q is not supported", name)
	}
	return compression.Suffix(name), nil
}
