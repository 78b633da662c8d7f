package coordinator

import (
	"fmt"

	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/protocol"
)

// Bounds of what an agent's hello may say about itself; everything in it
// ends up in logs and in operators' terminals (status, agents).
const (
	// MaxHelloText bounds each string of a hello, as `agent new` bounds names.
	MaxHelloText = MaxAgentName
	// maxHelloList bounds systems, features and require_tags.
	maxHelloList = 256
	// maxHelloBuilds bounds running and results.
	maxHelloBuilds = 4096
)

// checkHello refuses a hello field that is too long, a list that is too
// long, or text with control characters, naming the field.
func checkHello(h *protocol.Hello) error {
	one := func(field, s string) error {
		if len(s) > MaxHelloText {
			return fmt.Errorf("hello: %s is %d bytes, limit %d", field, len(s), MaxHelloText)
		}
		if text.HasControl(s) {
			return fmt.Errorf("hello: %s %q contains control characters or bytes that are not UTF-8", field, text.Truncate(s, 100))
		}
		return nil
	}
	for field, s := range map[string]string{"name": h.Name, "agent_version": h.AgentVersion, "store_dir": h.StoreDir,
		"backend": h.Backend, "backend_version": h.BackendVersion} {
		if err := one(field, s); err != nil {
			return err
		}
	}
	for field, l := range map[string][]string{"systems": h.Systems, "features": h.Features, "require_tags": h.RequireTags,
		"running": h.Running, "results": h.Results} {
		limit := maxHelloList
		if field == "running" || field == "results" {
			limit = maxHelloBuilds
		}
		if len(l) > limit {
			return fmt.Errorf("hello: %s has %d entries, limit %d", field, len(l), limit)
		}
		for i, s := range l {
			if err := one(fmt.Sprintf("%s[%d]", field, i), s); err != nil {
				return err
			}
		}
	}
	return nil
}
