// Package agent is the build agent: it dials the coordinator over SSH,
// speaks gbc-agent-v1 on one channel and SFTP on another
// (docs/agent-protocol.md), runs the builds it is pushed through a backend
// (Nix or Guix), and uploads the outputs.
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
//   - runner.go: one goroutine per build: check inputs, realise, pack,
//     upload, queue the result.
//   - logstream.go: the build log is spooled to the work dir and sent as
//     log messages at byte offsets.
//   - agent/backend: nix-store / guix command lines and exit classification.
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
//     the coordinator's cache as http://127.0.0.1:PORT. Before a build
//     (backend.Substituter, Nix only): nix copy --derivation --from that
//     URL fetches the .drv closure, then nix-store --realise of the input
//     paths themselves with --max-jobs 0 substitutes them (coordinator
//     first, then --substitute-url caches); signatures are required, the
//     coordinator's key from welcome is trusted, negative narinfo caching
//     is off. Whatever is still invalid ends the build as setup-failure
//     listing those paths. Outputs already present are deleted where the
//     store allows it, and the build runs with substitute = false, so the
//     output really is built here. The dry run still guards against
//     building any other derivation. The Guix backend does not substitute
//     yet: a Guix agent needs the inputs in its store.
//   - An output that is valid and alive before the build (e.g. a store
//     shared with the coordinator) cannot be deleted; nix-store --realise
//     returns at once and the existing path is packed and uploaded.
//   - Outputs are held by an indirect GC root in the build's work directory
//     until uploaded; the directory (root, log spool, NAR files) is removed
//     once the result is acked or the build is canceled.
//   - Nix settings: gbc agent --nix-config LINE (repeatable) appends nix.conf
//     lines to the NIX_CONFIG the agent inherited, for every nix-store call.
//   - Outputs come from the build message; if it lists none, from the .drv.
//     Each is uploaded as <upload_dir>/<output>.nar<suffix> and reported with
//     NAR hash and size, file hash and size, and references from the store.
//   - A build id or output name that is not a plain file name, or a
//     derivation outside the store directory, is refused with an error
//     reply; a build beyond max-parallel-builds likewise.
package agent
