package storedaemon

import (
	"fmt"
)

// Operation numbers (worker-protocol.hh of both daemons; 36, 39 and 46 are
// Nix's only).
const (
	opIsValidPath           = 1
	opAddTextToStore        = 8
	opBuildPaths            = 9
	opAddTempRoot           = 11
	opAddIndirectRoot       = 12
	opSetOptions            = 19
	opCollectGarbage        = 20
	opQueryPathInfo         = 26
	opImportPaths           = 27
	opQueryValidPaths       = 31
	opBuildDerivation       = 36
	opAddToStoreNar         = 39
	opBuildPathsWithResults = 46
)

// gcDeleteSpecific is CollectGarbage's action for deleting given paths.
const gcDeleteSpecific = 3

func readAck(r *reader) error {
	v, err := r.int("acknowledgement")
	if err == nil && v != 1 {
		err = fmt.Errorf("acknowledgement is %d, want 1", v)
	}
	return err
}
