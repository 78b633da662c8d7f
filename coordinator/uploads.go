package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/internal/text"
)

// ErrUploadName: a file name that none of the build's outputs can produce.
var ErrUploadName = errors.New("not an upload name of this build")

// UploadOutput checks that name is a file one of the held build's outputs
// can be uploaded as — <output>.nar plus a known compression suffix, as
// agents name them — and returns that output's name. A build the agent
// does not hold is ErrNotYourBuild.
func (c *Coordinator) UploadOutput(ctx context.Context, agentID, buildID, name string) (string, error) {
	b, err := c.heldBuild(ctx, agentID, buildID)
	if err != nil {
		return "", err
	}
	out, _, err := uploadName(b, name)
	return out, err
}

// heldBuild loads a build the agent holds (allocated or started);
// anything else is ErrNotYourBuild.
func (c *Coordinator) heldBuild(ctx context.Context, agentID, buildID string) (db.Build, error) {
	b, err := c.store.Build(ctx, buildID)
	if err != nil || b.AgentID != agentID || (b.State != db.StateAllocated && b.State != db.StateStarted) {
		return db.Build{}, fmt.Errorf("build %s: %w", buildID, ErrNotYourBuild)
	}
	return b, nil
}

// uploadName splits an upload name into the output it is of and its
// compression, or says which names the build's outputs upload as.
func uploadName(b db.Build, name string) (output, comp string, err error) {
	for _, o := range b.Outputs {
		rest, ok := strings.CutPrefix(name, o.Name+".nar")
		if !ok {
			continue
		}
		for _, n := range compression.Names() {
			if compression.Suffix(n) == rest {
				return o.Name, n, nil
			}
		}
	}
	names := make([]string, 0, len(b.Outputs))
	for _, o := range b.Outputs {
		names = append(names, o.Name+".nar[.zst|.xz|…]")
	}
	return "", "", fmt.Errorf("%q: %w (its outputs upload as %s)", text.Truncate(name, 100), ErrUploadName, strings.Join(names, ", "))
}
