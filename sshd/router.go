package sshd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/gliderlabs/ssh"
	"github.com/google/shlex"
	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/internal/text"
)

// MaxCommandBytes bounds the command line a client may send. The SSH layer
// itself closes the connection, without a word to the client, on a request
// over 256 KiB (OpenSSH prints "Broken pipe"); this bound sits below that so
// a long command line gets an answer that says what to do instead.
const MaxCommandBytes = 192 << 10

// tooLongHint is what to do about a command line over MaxCommandBytes.
const tooLongHint = "pass the derivations on stdin instead (printf '%s\\n' DRV... | ssh COORDINATOR build --stdin), " +
	"use gbc submit (which does that), or send fewer paths per command"

// exitError carries an exit status other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, a...)}
}

// call is one command invocation.
type call struct {
	ctx    context.Context
	s      *Server
	who    principal
	in     io.Reader // the session's stdin (import)
	out    io.Writer
	errOut io.Writer
	params []string // words matched by "*" in the command path
	args   []string // positional arguments after the path and flags
}

// command is one row of the router table. path words match literally, "*"
// matches any one argument. role is the minimum role: the single place
// where command authorisation is decided.
type command struct {
	path    []string
	role    coordinator.Role
	args    string // synopsis of the positional arguments
	summary string
	// setup registers flags and returns the runner bound to them.
	setup func(fs *pflag.FlagSet) func(x *call) error
}

func (c command) name() string {
	return strings.ReplaceAll(strings.Join(c.path, " "), "*", "AGENT-ID")
}

// commandTable lists every command with its minimum role. More specific
// paths come before their prefixes.
func commandTable() []command {
	return []command{
		{[]string{"help"}, coordinator.RoleReader, "[COMMAND]", "list commands or show one command's usage", setupHelp},
		{[]string{"status"}, coordinator.RoleReader, "", "queue lengths and connected agents", setupStatus},
		{[]string{"agents"}, coordinator.RoleReader, "", "list registered agents", setupAgents},
		{[]string{"agent", "new"}, coordinator.RoleAdmin, "", "register an agent; prints its id", setupAgentNew},
		{[]string{"agent", "*", "deactivate"}, coordinator.RoleAdmin, "", "revoke an agent: close its connections, refuse its results in flight, requeue its builds, refuse it until activate", setupAgentActive(false)},
		{[]string{"agent", "*", "activate"}, coordinator.RoleAdmin, "", "give builds to an agent again", setupAgentActive(true)},
		{[]string{"agent", "*", "archive"}, coordinator.RoleAdmin, "", "retire an agent: revoke it at once, remove its keys, hide it from agents (unless --all); its history stays", setupAgentArchive},
		{[]string{"agent", "*", "delete"}, coordinator.RoleAdmin, "", "remove an agent that never held a build, with its keys", setupAgentDelete},
		{[]string{"agent", "*", "key", "add"}, coordinator.RoleAdmin, "'KEY-LINE'", "add a public key for an agent", setupAgentKeyAdd},
		{[]string{"keys"}, coordinator.RoleAdmin, "", "list keys and their roles", setupKeys},
		{[]string{"key", "add"}, coordinator.RoleAdmin, "'KEY-LINE'", "add an operator key with a role", setupKeyAdd},
		{[]string{"key", "remove"}, coordinator.RoleAdmin, "FINGERPRINT", "remove a key and close every connection that uses it", setupKeyRemove},
		{[]string{"builds", "prune"}, coordinator.RoleAdmin, "", "remove finished builds' records, attempts and logs (not those whose outputs the cache keeps, unless --force)", setupBuildsPrune},
		{[]string{"builds", "cancel"}, coordinator.RoleOperator, "", "cancel every unfinished build the filters select (as for builds)", setupBuildsCancel},
		{[]string{"builds"}, coordinator.RoleReader, "", "list builds, newest first", setupBuilds},
		{[]string{"build", "show"}, coordinator.RoleReader, "BUILD-ID", "show one build", setupBuildShow},
		{[]string{"log"}, coordinator.RoleReader, "BUILD-ID", "print a build's log (latest attempt); --follow streams it until the attempt ends", setupLog},
		{[]string{"events"}, coordinator.RoleReader, "", "print events as JSON lines, oldest first", setupEvents},
		{[]string{"build", "cancel"}, coordinator.RoleOperator, "BUILD-ID", "cancel a build (a running build is stopped on its agent)", setupBuildCancel},
		{[]string{"build", "priority"}, coordinator.RoleOperator, "BUILD-ID N", "change a build's priority (re-orders everything it waits on)", setupBuildPriority},
		{[]string{"build"}, coordinator.RoleOperator, "DRV...", "submit derivations; prints one build id per line", setupBuild},
		{[]string{"check", "show"}, coordinator.RoleReader, "CHECK-ID", "show a reproducibility check: per output and side the NAR hash and size, who built it, and how unreproducible NARs differ", setupCheckShow},
		{[]string{"check", "fetch"}, coordinator.RoleReader, "CHECK-ID OUTPUT SIDE", "stream one side's NAR of an output (SIDE: a side number, an agent id or name, or cache)", setupCheckFetch},
		{[]string{"check"}, coordinator.RoleOperator, "DRV...", "build each derivation on N distinct agents and compare the outputs' NARs; prints one check id per line", setupCheck},
		{[]string{"checks", "summary"}, coordinator.RoleReader, "", "per system: how many derivations' latest check is in each state, and the unreproducible ones", setupChecksSummary},
		{[]string{"checks"}, coordinator.RoleReader, "", "list reproducibility checks, newest first", setupChecks},
		{[]string{"probe"}, coordinator.RoleAdmin, "< DATA", "read stdin to the end and report bytes and MB/s (measures the SSH link; bench/upload.sh)", setupProbe},
		{[]string{"cache", "pin"}, coordinator.RoleOperator, "PATH...", "keep cached store paths and their closures until unpinned", setupCachePin},
		{[]string{"cache", "unpin"}, coordinator.RoleOperator, "PATH...", "remove pins", setupCacheUnpin},
		{[]string{"cache", "pins"}, coordinator.RoleReader, "", "list pinned paths", setupCachePins},
		{[]string{"cache", "why"}, coordinator.RoleOperator, "PATH...", "say why the cache keeps each path (or that gc deletes it)", setupCacheWhy},
		{[]string{"cache", "gc"}, coordinator.RoleAdmin, "", "delete what the retention policy does not keep (--dry-run: only print it)", setupCacheGC},
		{[]string{"import"}, coordinator.RoleOperator, "< EXPORT-STREAM", "add a nix-store --export (or guix archive --export) stream from stdin to the cache; prints the paths", setupImport},
	}
}

// route finds the command for the words of a command line and returns
// the words matched by "*" and the rest.
func route(table []command, words []string) (command, []string, []string, bool) {
	for _, c := range table {
		if len(words) < len(c.path) {
			continue
		}
		var params []string
		ok := true
		for i, p := range c.path {
			switch {
			case p == "*" && !strings.HasPrefix(words[i], "-"):
				params = append(params, words[i])
			case p != words[i]:
				ok = false
			}
			if !ok {
				break
			}
		}
		if ok {
			return c, params, words[len(c.path):], true
		}
	}
	return command{}, nil, nil, false
}

// handleExec serves exec requests (and refuses shells).
func (s *Server) handleExec(sess ssh.Session) {
	ctx := sess.Context()
	code := s.exec(ctx, sess)
	if err := sess.Exit(code); err != nil {
		s.log.Debug("send exit status", "err", err)
	}
}

func (s *Server) exec(ctx context.Context, sess ssh.Session) int {
	stderr := sess.Stderr()
	who, err := s.whoami(ctx, sess)
	if err != nil {
		s.log.Warn("session refused", "err", err)
		fmt.Fprintln(stderr, "permission denied")
		return 1
	}
	if who.Role == coordinator.RoleAgent {
		s.log.Warn("agent key tried to run a command", "agent", who.AgentID, "command", text.Truncate(sess.RawCommand(), 200))
		fmt.Fprintln(stderr, "permission denied: agent keys may only open the gbc-agent-v1 and sftp subsystems")
		return 1
	}
	raw := sess.RawCommand()
	if len(raw) > MaxCommandBytes {
		s.log.Info("command line too long", "bytes", len(raw), "limit", MaxCommandBytes, "fingerprint", who.Fingerprint)
		fmt.Fprintf(stderr, "command line is %d bytes, limit %d (the SSH layer drops requests over 256 KiB): %s\n",
			len(raw), MaxCommandBytes, tooLongHint)
		return 2
	}
	if strings.TrimSpace(raw) == "" {
		fmt.Fprintln(stderr, "no interactive shell here; run 'ssh … help' for the commands")
		return 2
	}
	words, err := splitCommand(raw)
	if err != nil {
		fmt.Fprintf(stderr, "cannot split command line: %v\n", err)
		return 2
	}
	if len(words) == 0 {
		fmt.Fprintln(stderr, "empty command; run 'help'")
		return 2
	}
	return s.run(ctx, who, words, sess, sess, stderr)
}

// run routes, authorises, parses flags and runs one command line.
func (s *Server) run(ctx context.Context, who principal, words []string, in io.Reader, out, errOut io.Writer) int {
	table := commandTable()
	c, params, rest, ok := route(table, words)
	if !ok {
		fmt.Fprintf(errOut, "unknown command %q; run 'help'\n", text.Truncate(strings.Join(words, " "), 100))
		return 2
	}
	if !allowed(who.Role, c.role) {
		s.log.Warn("command refused", "command", c.name(), "fingerprint", who.Fingerprint, "role", who.Role)
		fmt.Fprintf(errOut, "permission denied: %q needs role %s or higher\n", c.name(), c.role)
		return 1
	}
	fs := pflag.NewFlagSet(c.name(), pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	runner := c.setup(fs)
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			printUsage(out, c, fs)
			return 0
		}
		fmt.Fprintf(errOut, "%s: %v\n", c.name(), err)
		printUsage(errOut, c, fs)
		return 2
	}
	x := &call{ctx: ctx, s: s, who: who, in: in, out: out, errOut: errOut, params: params, args: fs.Args()}
	s.log.Info("command", "command", c.name(), "fingerprint", who.Fingerprint, "role", who.Role)
	if err := runner(x); err != nil {
		fmt.Fprintf(errOut, "%s: %s\n", c.name(), text.Escape(err.Error()))
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.code == 2 {
				printUsage(errOut, c, fs)
			}
			return ee.code
		}
		return 1
	}
	return 0
}

// splitCommand splits a command line as a POSIX shell would (quotes and
// backslashes; no expansions), since OpenSSH sends the command as one string.
func splitCommand(raw string) ([]string, error) {
	return shlex.Split(raw)
}

func printUsage(w io.Writer, c command, fs *pflag.FlagSet) {
	syn := c.name()
	if fs.HasFlags() {
		syn += " [flags]"
	}
	if c.args != "" {
		syn += " " + c.args
	}
	fmt.Fprintf(w, "usage: %s\n  %s (role: %s)\n", syn, c.summary, c.role)
	if fs.HasFlags() {
		fmt.Fprintf(w, "\nflags:\n%s", fs.FlagUsages())
	}
}

func needArgs(x *call, n int, what string) error {
	if len(x.args) != n {
		return usageErr("want %s, got %d argument(s)", what, len(x.args))
	}
	return nil
}
