package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/agent"
	"github.com/gbc-farm/gbc/agent/backend"
	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/signing"
	"github.com/gbc-farm/gbc/storedaemon"
	"github.com/gbc-farm/gbc/storepath"
)

const agentUsage = `usage: gbc agent --coordinator HOST:PORT --identity KEYFILE --known-hosts FILE [flags]

Dials the coordinator over SSH, takes the builds it pushes, builds them with
the local Nix or Guix daemon and uploads the outputs. Reconnects with backoff
when the connection drops; stops (exit 1) if the coordinator's host key is
unknown or has changed.

flags:
`

func runAgent(ctx context.Context, e env, args []string) error {
	fs := pflag.NewFlagSet("gbc agent", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	conn := addConnFlags(fs, "this agent's")
	backendName := fs.String("backend", "nix", "store `BACKEND`: nix or guix")
	maxParallel := fs.Int("max-parallel-builds", 1, "`N` builds to run at the same time")
	systems := fs.StringArray("system", nil, "`SYSTEM` to build for, repeatable (default: this machine's, e.g. x86_64-linux)")
	features := fs.StringArray("feature", nil, "`FEATURE`: a system feature this agent offers (requiredSystemFeatures), repeatable")
	requireTags := fs.StringArray("require-tag", nil, "`K=V`: take only builds carrying this tag, repeatable")
	workDir := fs.String("work-dir", "", "`DIR` for build logs and compressed NARs before upload (default /var/lib/gbc-agent for root, else TMPDIR/gbc-agent-UID)")
	name := fs.String("name", "", "`NAME` shown to operators (default: host name)")
	daemon := fs.String("daemon", "", "store daemon `ADDR`: unix:SOCKET, or exec:COMMAND ARGS… (started by the agent, speaking the protocol on its stdin and stdout, e.g. exec:'nix-daemon --stdio') (default unix:/nix/var/nix/daemon-socket/socket, or unix:/var/guix/daemon-socket/socket for guix)")
	storeDir := fs.String("store-dir", "", "the daemon's store `DIR` (default /nix/store, or /gnu/store for guix)")
	nixConfig := fs.StringArray("nix-config", nil, "nix.conf `LINE` (\"key = value\") added to NIX_CONFIG of an exec: daemon, repeatable")
	guixKey := fs.String("guix-signing-key", "", "Guix secret key `FILE` that signs what the agent imports into a guix-daemon; its public key must be in the daemon's /etc/guix/acl (default /etc/guix/signing-key.sec when it exists)")
	substituteURLs := fs.StringArray("substitute-url", nil, "binary cache `URL` the daemon may substitute inputs from when the coordinator's cache lacks them, repeatable (its key must be trusted by the daemon)")
	comp := fs.String("compression", "zstd", "`METHOD` for compressing uploaded NARs: zstd, xz, gzip or none")
	direct := fs.Bool("direct-upload", true, "PUT outputs straight into the cache's object store when the coordinator hands out upload URLs (coordinator --cache-direct-upload); an output whose PUT fails goes over SFTP")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(e.stdout, agentUsage+fs.FlagUsages())
			return nil
		}
		return usageError{fmt.Sprintf("%v\n%s%s", err, agentUsage, fs.FlagUsages())}
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Sprintf("unexpected arguments %q\n%s%s", fs.Args(), agentUsage, fs.FlagUsages())}
	}
	if f := conn.missing(); f != "" {
		return usageError{fmt.Sprintf("%s is required\n%s%s", f, agentUsage, fs.FlagUsages())}
	}
	if *maxParallel < 1 {
		return usageError{fmt.Sprintf("--max-parallel-builds must be at least 1, got %d", *maxParallel)}
	}
	if !compression.Writable(*comp) {
		return usageError{fmt.Sprintf("--compression %q: want zstd, xz, gzip or none", *comp)}
	}
	if *backendName != "nix" && *backendName != "guix" {
		return usageError{fmt.Sprintf("--backend %q: want nix or guix", *backendName)}
	}
	addr := backend.DefaultAddress(*backendName)
	if *daemon != "" {
		var err error
		if addr, err = storedaemon.ParseAddress(*daemon); err != nil {
			return usageError{fmt.Sprintf("--daemon: %v", err)}
		}
	}
	if len(*nixConfig) > 0 {
		if len(addr.Command) == 0 {
			return usageError{"--nix-config only applies to an exec: daemon; a daemon behind a socket reads its own nix.conf"}
		}
		cur := os.Getenv("NIX_CONFIG")
		if cur != "" {
			cur += "\n"
		}
		addr.Env = append(addr.Env, "NIX_CONFIG="+cur+strings.Join(*nixConfig, "\n"))
	}
	if *storeDir == "" {
		*storeDir = backend.DefaultStoreDir(*backendName)
	}
	if err := storepath.ValidateStoreDir(*storeDir); err != nil {
		return usageError{fmt.Sprintf("--store-dir: %v", err)}
	}
	cfg := backend.DaemonConfig{Kind: *backendName, StoreDir: *storeDir, Address: addr, Log: e.log}
	keyFile := *guixKey
	if keyFile == "" && *backendName == "guix" {
		if _, err := os.Stat("/etc/guix/signing-key.sec"); err == nil {
			keyFile = "/etc/guix/signing-key.sec"
		}
	}
	if keyFile != "" {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return fmt.Errorf("--guix-signing-key: %w", err)
		}
		k, err := signing.ParseGuixSecretKey(b)
		if err != nil {
			return fmt.Errorf("--guix-signing-key %s: %w", keyFile, err)
		}
		cfg.GuixKey = &k
	}
	be := backend.NewDaemon(cfg)
	if len(*systems) == 0 {
		s, err := agent.DefaultSystem()
		if err != nil {
			return err
		}
		*systems = []string{s}
	}
	if *name == "" {
		*name, _ = os.Hostname()
	}
	if *workDir == "" {
		*workDir = defaultWorkDir()
	}
	for _, t := range *requireTags {
		if k, _, ok := strings.Cut(t, "="); !ok || k == "" {
			return usageError{fmt.Sprintf("--require-tag %q is not K=V", t)}
		}
	}
	dialer, err := conn.dialer()
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Config{
		Dialer:            dialer,
		Backend:           be,
		Name:              *name,
		Systems:           *systems,
		Features:          *features,
		RequireTags:       *requireTags,
		SubstituteURLs:    *substituteURLs,
		MaxParallelBuilds: *maxParallel,
		WorkDir:           *workDir,
		Compression:       *comp,
		DirectUpload:      *direct,
		Log:               e.log,
	})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// defaultWorkDir is /var/lib/gbc-agent for root (a system service) and a
// per-user directory under the temp dir otherwise.
func defaultWorkDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/gbc-agent"
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("gbc-agent-%d", os.Geteuid()))
}
