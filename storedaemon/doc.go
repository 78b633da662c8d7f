// Package storedaemon is a client of the store daemon's worker protocol,
// the one nix-daemon and guix-daemon speak on their socket (guix-daemon
// is a fork of the Nix 1.x daemon). The agent does every store operation
// of a build through it, with no nix-store or guix process.
//
// # Connecting
//
// Dial takes an Address: unix:PATH (the daemon's socket: NixSocket,
// GuixSocket) or exec:COMMAND ARGS… (a command speaking the protocol on
// its stdin and stdout, e.g. "exec:nix-daemon --stdio", started in its
// own process group and killed if this process dies). Handshake does the
// greeting on any io.ReadWriteCloser and detects the dialect: a daemon
// minor version ≥ 0x60 is guix-daemon (this client then speaks 0x163),
// anything else Nix (this client speaks 1.34, Nix 2.8's, and accepts
// daemons back to 1.23).
//
// # Operations
//
// A Conn runs one operation at a time: IsValidPath, QueryValidPaths,
// QueryPathInfo, AddTempRoot, AddIndirectRoot, AddTextToStore,
// AddToStoreNar (Nix), ImportPaths with an export stream from
// WriteExport (guix-daemon needs every record signed by a key in its
// /etc/guix/acl), DeletePath, SetOptions (timeout and max-silent-time
// travel positionally or as settings, as each dialect wants), Build and
// BuildDerivation (Nix). During an operation the daemon's messages are
// processed: build output (STDERR_NEXT, and Nix's build-log results of
// its activities) goes to the operation's log writer; STDERR_READ is
// answered from the operation's data; everything else is read and
// dropped.
//
// # Errors
//
// A refusal by the daemon (STDERR_ERROR) is an *Error, with the status
// the daemon attached kept as data (Guix and older Nix); the connection
// stays usable. Anything else (I/O, a daemon that died, a protocol
// violation, a canceled context) is a *ConnError: the connection is closed
// and every later operation fails. Canceling an operation's context
// closes the connection, which makes the daemon stop the work (a running
// builder is killed). A failed build is not an error: Build returns a
// BuildResult whose BuildStatus says how it ended; on guix-daemon (and
// Nix before 1.34) the status is derived from the error status of
// BuildPaths (0x60 | 4 build failed, | 1 timed out, | 2 hash mismatch,
// | 8 not deterministic; 1 could not build), never from message text.
// Every length read off the wire is bounded (MaxString, MaxList,
// MaxListBytes, MaxLogChunk, MaxReadRequest).
//
// A daemon keeps what a connection built or imported as temporary roots
// until the connection closes, so such a path cannot be deleted while the
// connection lives.
//
// # What is tested against what
//
// The Nix dialect is tested against a real nix-daemon 2.8 (protocol 1.34)
// through exec:nix-daemon --stdio on a scratch store (realnix_test.go:
// handshake, queries, build statuses including both timeouts, log
// streaming, AddToStoreNar, ImportPaths, deletion, cancellation killing
// the builder), and against a transcript of its bytes. The guix-daemon
// dialect (0x163) is tested only against byte transcripts written from
// Guix's own sources (nix/nix-daemon/nix-daemon.cc and
// nix/libstore/worker-protocol.hh in Guix's tree), in
// testdata/transcripts; no real guix-daemon was run.
package storedaemon
