package main

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/agent"
)

// connFlags are the flags gbc agent and gbc submit reach the coordinator
// with: its address, the key to log in with and the file that pins its
// host key.
type connFlags struct {
	coordinator, identity, knownHosts *string
}

// addConnFlags registers the connection flags on fs; keyOwner says whose
// key --identity is ("this agent's", "operator").
func addConnFlags(fs *pflag.FlagSet, keyOwner string) connFlags {
	return connFlags{
		coordinator: fs.String("coordinator", "", "coordinator SSH address `HOST:PORT`"),
		identity:    fs.String("identity", "", keyOwner+" SSH private key `FILE` (OpenSSH format, no passphrase)"),
		knownHosts:  fs.String("known-hosts", "", "OpenSSH known_hosts `FILE` holding the coordinator's host key"),
	}
}

// missing returns the first connection flag that was not given, or "".
func (c connFlags) missing() string {
	for _, req := range []struct{ flag, v string }{{"--coordinator", *c.coordinator}, {"--identity", *c.identity}, {"--known-hosts", *c.knownHosts}} {
		if req.v == "" {
			return req.flag
		}
	}
	return ""
}

// dialer loads the identity and checks that the known_hosts file exists,
// so a wrong path fails at once rather than at every dial.
func (c connFlags) dialer() (*agent.Dialer, error) {
	signer, err := agent.LoadIdentity(*c.identity)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(*c.knownHosts); err != nil {
		return nil, fmt.Errorf("known hosts file: %w", err)
	}
	return &agent.Dialer{Address: *c.coordinator, Identity: signer, KnownHosts: *c.knownHosts}, nil
}
