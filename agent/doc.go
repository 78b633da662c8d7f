// Package agent is the build agent: it dials the coordinator over SSH,
// speaks gbc-agent-v1 on one channel and SFTP on another
// (docs/agent-protocol.md), runs the builds it is pushed through the local
// store daemon (Nix or Guix) over the daemon's own worker protocol, and
// uploads the outputs.
//
// # Parts
//
// Each part can be tested alone:
//   - Dialer (dial.go): SSH client with the agent's key; the host key is
//     checked against an OpenSSH known_hosts file. An unknown, changed or
//     revoked key is a *HostKeyError, which stops the agent instead of
//     being retried. Keepalive requests detect dead connections.
//   - Agent.Run (agent.go): the reconnect loop, exponential backoff with
//     jitter (1s doubling to 30s by default, reset after a welcome).
//   - session.go: hello/welcome, heartbeats, the read loop (build → ack,
//     cancel, acks for results, error replies for bad lines).
//   - runner.go: one goroutine per build: fetch inputs and build (through
//     the backend), pack, upload, queue the result.
//   - logstream.go: the build log is spooled to the work dir and sent as
//     log messages at byte offsets.
//   - agent/backend: the store, driven through its daemon (package
//     storedaemon): one long-lived connection per build slot, to
//     unix:SOCKET or to a daemon the agent starts itself (gbc agent
//     --daemon 'exec:nix-daemon --stdio'). No nix, nix-store or guix
//     process runs for a build.
//   - agent/upload: NAR → zstd with both hashes, resumable SFTP upload.
//
// # What survives a reconnect
//
// Builds run under the agent's context, not the connection's, so they keep
// going while the agent is disconnected. The next hello lists them in
// running; the welcome's abort list stops any the coordinator gave away.
// Results (succeeded, failed, setup-failure) stay queued until acked and are
// resent, in order and with their original ids, after every welcome. An
// error reply to a result drops it (the coordinator has decided). A build's
// log is replayed from offset 0 on a new connection, since chunks in flight
// on the old one may be lost; the coordinator writes chunks at their
// offsets, so repeats are harmless. An upload cut off by a drop resumes on
// the next connection (agent/upload explains the resume offset).
//
// # Decisions
//
//   - The agent builds only the derivation it was given, and needs nothing
//     but its SSH connection to get everything else. It listens on a
//     loopback port and forwards each connection over SSH (direct-tcpip)
//     to the cache address from welcome (forward.go), so the store sees
//     the agent's own HTTP client sees the coordinator's cache as
//     http://127.0.0.1:PORT. Before a build, over the daemon connection:
//     the .drv and its closure, then the inputs (wanted outputs of the
//     input derivations, and sources) with their closures, are checked for
//     validity; what is missing is fetched from that cache, each narinfo's
//     signature checked against the cache key from welcome and each NAR's
//     hash and size against its narinfo, and imported in reference order
//     (AddToStoreNar with the narinfo's signatures on Nix; ImportPaths on
//     guix-daemon, each record signed with --guix-signing-key, a key in
//     the daemon's /etc/guix/acl). What the cache lacks, the daemon may
//     substitute from --substitute-url caches (it checks their signatures
//     with its own trusted keys). Whatever is still invalid ends the build
//     as setup-failure listing those paths, so the daemon never builds an
//     input behind the coordinator's back. Everything valid is held by
//     temporary roots of the connection, which the protocol cannot drop:
//     a connection serves at most 50 builds and is then closed, and its
//     replacement is dialed in the background. Outputs already present
//     are deleted, and the build runs with substitution off, so the output
//     really is built here; SetOptions carries the build's timeout and
//     max-silent-time.
//   - The daemon's build status decides the outcome (no text is matched):
//     built/already valid → succeeded; builder failure, hash mismatch, not
//     deterministic → failed (build); timed out → failed (timeout, or
//     silent-timeout when the build ended before its timeout); anything
//     else, a refusal or a daemon that died → setup-failure, which the
//     coordinator retries elsewhere. A broken connection is dropped and
//     the next build connects again (starting a new daemon in exec: mode).
//     Canceling a build closes its connection; the daemon then kills the
//     builder. An exec: daemon gets SIGTERM when the agent dies.
//   - An output that is valid and alive before the build cannot be
//     deleted. If the connection served builds before, its own temporary
//     roots may be what holds it: the build runs again on a fresh
//     connection. Otherwise (a GC root, or a valid path referring to it,
//     e.g. in a store shared with other builders) it is a setup-failure
//     (the coordinator retries elsewhere), never an upload of a path this
//     agent did not build.
//   - Outputs are held by an indirect GC root in the build's work directory
//     until uploaded; the directory (root, log spool, NAR files) is removed
//     once the result is acked or the build is canceled.
//   - Nix settings: gbc agent --nix-config LINE (repeatable) appends nix.conf
//     lines to the NIX_CONFIG an exec: daemon is started with.
//   - Outputs come from the build message; if it lists none, from the .drv.
//     Each is uploaded as <upload_dir>/<output>.nar<suffix> and reported with
//     NAR hash and size, file hash and size, and references from the store.
//   - A build id or output name that is not a plain file name, or a
//     derivation outside the store directory, is refused with an error
//     reply; a build beyond max-parallel-builds likewise.
package agent
