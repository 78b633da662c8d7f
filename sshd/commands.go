package sshd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gliderlabs/ssh"
	"github.com/google/shlex"
	"github.com/google/uuid"
	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/keys"
)

// maxCommandBytes bounds the command line a client may send.
const maxCommandBytes = 4 << 20

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
	role    db.Role
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
		{[]string{"help"}, db.RoleReader, "[COMMAND]", "list commands or show one command's usage", setupHelp},
		{[]string{"status"}, db.RoleReader, "", "queue lengths and connected agents", setupStatus},
		{[]string{"agents"}, db.RoleReader, "", "list registered agents", setupAgents},
		{[]string{"agent", "new"}, db.RoleAdmin, "", "register an agent; prints its id", setupAgentNew},
		{[]string{"agent", "*", "deactivate"}, db.RoleAdmin, "", "stop giving builds to an agent (running builds continue)", setupAgentActive(false)},
		{[]string{"agent", "*", "activate"}, db.RoleAdmin, "", "give builds to an agent again", setupAgentActive(true)},
		{[]string{"agent", "*", "key", "add"}, db.RoleAdmin, "'KEY-LINE'", "add a public key for an agent", setupAgentKeyAdd},
		{[]string{"keys"}, db.RoleAdmin, "", "list keys and their roles", setupKeys},
		{[]string{"key", "add"}, db.RoleAdmin, "'KEY-LINE'", "add an operator key with a role", setupKeyAdd},
		{[]string{"key", "remove"}, db.RoleAdmin, "FINGERPRINT", "remove a key", setupKeyRemove},
		{[]string{"builds", "cancel"}, db.RoleOperator, "", "cancel every unfinished build the filters select (as for builds)", setupBuildsCancel},
		{[]string{"builds"}, db.RoleReader, "", "list builds, newest first", setupBuilds},
		{[]string{"build", "show"}, db.RoleReader, "BUILD-ID", "show one build", setupBuildShow},
		{[]string{"log"}, db.RoleReader, "BUILD-ID", "print a build's log (latest attempt); --follow streams it until the attempt ends", setupLog},
		{[]string{"events"}, db.RoleReader, "", "print events as JSON lines, oldest first", setupEvents},
		{[]string{"build", "cancel"}, db.RoleOperator, "BUILD-ID", "cancel a build (a running build is stopped on its agent)", setupBuildCancel},
		{[]string{"build", "priority"}, db.RoleOperator, "BUILD-ID N", "change a build's priority (re-orders everything it waits on)", setupBuildPriority},
		{[]string{"build"}, db.RoleOperator, "DRV...", "submit derivations; prints one build id per line", setupBuild},
		{[]string{"probe"}, db.RoleAdmin, "< DATA", "read stdin to the end and report bytes and MB/s (measures the SSH link; bench/upload.sh)", setupProbe},
		{[]string{"import"}, db.RoleOperator, "< EXPORT-STREAM", "add a nix-store --export (or guix archive --export) stream from stdin to the cache; prints the paths", setupImport},
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
	if who.Role == db.RoleAgent {
		s.log.Warn("agent key tried to run a command", "agent", who.AgentID, "command", truncate(sess.RawCommand(), 200))
		fmt.Fprintln(stderr, "permission denied: agent keys may only open the gbc-agent-v1 and sftp subsystems")
		return 1
	}
	raw := sess.RawCommand()
	if len(raw) > maxCommandBytes {
		fmt.Fprintf(stderr, "command line is %d bytes, limit %d\n", len(raw), maxCommandBytes)
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
		fmt.Fprintf(errOut, "unknown command %q; run 'help'\n", truncate(strings.Join(words, " "), 100))
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
		fmt.Fprintf(errOut, "%s: %v\n", c.name(), err)
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

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func jsonTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func textTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func needArgs(x *call, n int, what string) error {
	if len(x.args) != n {
		return usageErr("want %s, got %d argument(s)", what, len(x.args))
	}
	return nil
}

// ---- help, status ----

func setupHelp(fs *pflag.FlagSet) func(x *call) error {
	return func(x *call) error {
		table := commandTable()
		if len(x.args) > 0 {
			c, _, _, ok := route(table, x.args)
			if !ok {
				return usageErr("unknown command %q", strings.Join(x.args, " "))
			}
			cfs := pflag.NewFlagSet(c.name(), pflag.ContinueOnError)
			c.setup(cfs)
			printUsage(x.out, c, cfs)
			return nil
		}
		fmt.Fprintln(x.out, "commands (run '<command> --help' for flags):")
		tw := tabwriter.NewWriter(x.out, 2, 8, 2, ' ', 0)
		for _, c := range table {
			mark := ""
			if !allowed(x.who.Role, c.role) {
				mark = " (not for your key)"
			}
			fmt.Fprintf(tw, "  %s %s\t%s [%s]%s\n", c.name(), c.args, c.summary, c.role, mark)
		}
		return tw.Flush()
	}
}

func setupStatus(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		st := x.s.coord.Status()
		if *asJSON {
			return writeJSON(x.out, map[string]any{"queued": st.Queued, "blocked": st.Blocked, "deferred": st.Deferred,
				"allocated": st.Allocated, "agents": nonNil(st.Connected)})
		}
		systems := make([]string, 0, len(st.Queued))
		for sys := range st.Queued {
			systems = append(systems, sys)
		}
		sort.Strings(systems)
		fmt.Fprintf(x.out, "queued: %d system(s), %d waiting for inputs, %d deferred, %d allocated\n", len(systems), st.Blocked, st.Deferred, st.Allocated)
		for _, sys := range systems {
			fmt.Fprintf(x.out, "  %s: %d\n", sys, st.Queued[sys])
		}
		fmt.Fprintf(x.out, "connected agents: %d\n", len(st.Connected))
		for _, a := range st.Connected {
			fmt.Fprintf(x.out, "  %s %s systems=%s running=%d/%d active=%v\n", a.ID, a.Name, strings.Join(a.Systems, ","), len(a.Running), a.MaxParallel, a.Active)
		}
		return nil
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// ---- agents ----

type agentJSON struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Active     bool   `json:"active"`
	Connected  bool   `json:"connected"`
	CreatedAt  string `json:"created_at"`
	LastSeenAt string `json:"last_seen_at"`
}

func setupAgents(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		as, err := x.s.store.Agents(x.ctx)
		if err != nil {
			return err
		}
		list := make([]agentJSON, 0, len(as))
		for _, a := range as {
			list = append(list, agentJSON{a.ID, a.Name, a.Active, x.s.coord.Connected(a.ID), jsonTime(a.CreatedAt), jsonTime(a.LastSeenAt)})
		}
		if *asJSON {
			return writeJSON(x.out, list)
		}
		tw := tabwriter.NewWriter(x.out, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tACTIVE\tCONNECTED\tLAST SEEN")
		for _, a := range as {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\n", a.ID, a.Name, a.Active, x.s.coord.Connected(a.ID), textTime(a.LastSeenAt))
		}
		return tw.Flush()
	}
}

func setupAgentNew(fs *pflag.FlagSet) func(x *call) error {
	name := fs.String("name", "", "a name for the agent (default: derived from its id)")
	keyLine := fs.String("key", "", "the agent's public key line ('ssh-ed25519 AAAA…')")
	return func(x *call) error {
		if err := needArgs(x, 0, "no positional arguments"); err != nil {
			return err
		}
		id := uuid.NewString()
		n := *name
		if n == "" {
			n = "agent-" + id[:8]
		}
		if len(n) > 200 {
			return usageErr("--name is %d bytes, limit 200", len(n))
		}
		now := x.s.now()
		var ks []db.Key
		if *keyLine != "" {
			ak, err := keys.ParseAuthorizedKey(*keyLine)
			if err != nil {
				return usageErr("--key: %v", err)
			}
			ks = append(ks, db.Key{Fingerprint: ak.Fingerprint, AuthorizedKey: ak.Line, Role: db.RoleAgent, AgentID: id, Comment: ak.Comment, CreatedAt: now})
		}
		if err := x.s.store.CreateAgent(x.ctx, db.Agent{ID: id, Name: n, Active: true, CreatedAt: now}, ks...); err != nil {
			return fmt.Errorf("create agent: %w", err)
		}
		fmt.Fprintln(x.out, id)
		return nil
	}
}

func setupAgentKeyAdd(fs *pflag.FlagSet) func(x *call) error {
	return func(x *call) error {
		if err := needArgs(x, 1, "one public key line"); err != nil {
			return err
		}
		agentID := x.params[0]
		if _, err := x.s.store.Agent(x.ctx, agentID); err != nil {
			return fmt.Errorf("agent %q: %w", truncate(agentID, 64), err)
		}
		ak, err := keys.ParseAuthorizedKey(x.args[0])
		if err != nil {
			return usageErr("%v", err)
		}
		k := db.Key{Fingerprint: ak.Fingerprint, AuthorizedKey: ak.Line, Role: db.RoleAgent, AgentID: agentID, Comment: ak.Comment, CreatedAt: x.s.now()}
		if err := x.s.store.PutKey(x.ctx, k); err != nil {
			return fmt.Errorf("add key %s: %w", ak.Fingerprint, err)
		}
		fmt.Fprintln(x.out, ak.Fingerprint)
		return nil
	}
}

// ---- keys ----

type keyJSON struct {
	Fingerprint string `json:"fingerprint"`
	Role        string `json:"role"`
	Agent       string `json:"agent,omitempty"`
	Comment     string `json:"comment"`
	Key         string `json:"key"`
	CreatedAt   string `json:"created_at"`
}

func setupKeys(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		ks, err := x.s.store.Keys(x.ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			list := make([]keyJSON, 0, len(ks))
			for _, k := range ks {
				list = append(list, keyJSON{k.Fingerprint, string(k.Role), k.AgentID, k.Comment, k.AuthorizedKey, jsonTime(k.CreatedAt)})
			}
			return writeJSON(x.out, list)
		}
		tw := tabwriter.NewWriter(x.out, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "FINGERPRINT\tROLE\tAGENT\tCOMMENT")
		for _, k := range ks {
			agent := k.AgentID
			if agent == "" {
				agent = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Fingerprint, k.Role, agent, k.Comment)
		}
		return tw.Flush()
	}
}

func setupKeyAdd(fs *pflag.FlagSet) func(x *call) error {
	role := fs.String("role", "", "admin, operator or reader (required)")
	return func(x *call) error {
		if err := needArgs(x, 1, "one public key line"); err != nil {
			return err
		}
		r := db.Role(*role)
		switch r {
		case db.RoleAdmin, db.RoleOperator, db.RoleReader:
		default:
			return usageErr("--role must be admin, operator or reader (agent keys: 'agent ID key add'), got %q", *role)
		}
		ak, err := keys.ParseAuthorizedKey(x.args[0])
		if err != nil {
			return usageErr("%v", err)
		}
		k := db.Key{Fingerprint: ak.Fingerprint, AuthorizedKey: ak.Line, Role: r, Comment: ak.Comment, CreatedAt: x.s.now()}
		if err := x.s.store.PutKey(x.ctx, k); err != nil {
			return fmt.Errorf("add key %s: %w", ak.Fingerprint, err)
		}
		fmt.Fprintln(x.out, ak.Fingerprint)
		return nil
	}
}

func setupKeyRemove(fs *pflag.FlagSet) func(x *call) error {
	return func(x *call) error {
		if err := needArgs(x, 1, "one fingerprint"); err != nil {
			return err
		}
		fp := x.args[0]
		if fp == x.who.Fingerprint {
			return errors.New("refusing to remove the key this session uses")
		}
		if err := x.s.store.DeleteKey(x.ctx, fp); err != nil {
			return fmt.Errorf("remove key %q: %w", truncate(fp, 80), err)
		}
		return nil
	}
}

// ---- builds ----

type outputJSON struct {
	Name        string   `json:"name"`
	Path        string   `json:"path"`
	NarHash     string   `json:"nar_hash"`
	NarSize     int64    `json:"nar_size"`
	FileHash    string   `json:"file_hash"`
	FileSize    int64    `json:"file_size"`
	Compression string   `json:"compression"`
	References  []string `json:"references"`
}

type attemptJSON struct {
	Number      int    `json:"number"`
	Agent       string `json:"agent"`
	AllocatedAt string `json:"allocated_at"`
	StartedAt   string `json:"started_at"`
	EndedAt     string `json:"ended_at"`
	Outcome     string `json:"outcome"`
	Reason      string `json:"reason"`
	ExitCode    int    `json:"exit_code"`
	// Hardware is what the agent reported when the attempt started.
	Hardware *db.Hardware `json:"hardware,omitempty"`
}

type buildJSON struct {
	ID               string        `json:"id"`
	Derivation       string        `json:"derivation"`
	System           string        `json:"system"`
	Priority         int           `json:"priority"`
	State            string        `json:"state"`
	Agent            string        `json:"agent"`
	CreatedAt        string        `json:"created_at"`
	StartedAt        string        `json:"started_at"`
	EndedAt          string        `json:"ended_at"`
	Tags             []string      `json:"tags"`
	RequiredFeatures []string      `json:"required_features"`
	Attempts         []attemptJSON `json:"attempts"`
	FailureReason    string        `json:"failure_reason"`
	FailedInput      string        `json:"failed_input,omitempty"` // failed-dependency: the input derivation that failed
	DeferUntil       string        `json:"defer_until,omitempty"`
	TimeoutSeconds   int           `json:"timeout_seconds,omitempty"`
	MaxSilentSeconds int           `json:"max_silent_time_seconds,omitempty"`
	Queue            *queueJSON    `json:"queue,omitempty"` // only in build show, while queued or running
	Outputs          []outputJSON  `json:"outputs"`
}

// queueJSON is a live build's place in the scheduler.
type queueJSON struct {
	State           string `json:"state"` // waiting, deferred, ready, allocated
	DerivedPriority int    `json:"derived_priority"`
	Dependents      int    `json:"dependents"`
}

func toJSON(b db.Build) buildJSON {
	j := buildJSON{
		ID: b.ID, Derivation: b.Derivation, System: b.System, Priority: b.Priority,
		State: string(b.State), Agent: b.AgentID, CreatedAt: jsonTime(b.CreatedAt),
		StartedAt: jsonTime(b.StartedAt), EndedAt: jsonTime(b.EndedAt),
		Tags: []string{}, RequiredFeatures: nonNil(b.RequiredFeatures), Attempts: []attemptJSON{},
		FailureReason: b.FailureReason, Outputs: []outputJSON{},
		DeferUntil: jsonTime(b.DeferUntil), TimeoutSeconds: b.TimeoutSeconds, MaxSilentSeconds: b.MaxSilentSeconds,
	}
	if b.State == db.StateFailedDependency {
		j.FailedInput = failedInput(b.FailureReason)
	}
	for _, t := range b.Tags {
		j.Tags = append(j.Tags, t.Key+"="+t.Value)
	}
	for _, a := range b.Attempts {
		aj := attemptJSON{a.Number, a.AgentID, jsonTime(a.AllocatedAt), jsonTime(a.StartedAt), jsonTime(a.EndedAt), a.Outcome, a.Reason, a.ExitCode, nil}
		if !a.Hardware.IsZero() {
			hw := a.Hardware
			aj.Hardware = &hw
		}
		j.Attempts = append(j.Attempts, aj)
	}
	for _, r := range b.Results {
		j.Outputs = append(j.Outputs, outputJSON{r.Name, r.Path, r.NarHash, r.NarSize, r.FileHash, r.FileSize, r.Compression, nonNil(r.References)})
	}
	return j
}

// buildFilterFlags registers the filters shared by builds and builds cancel.
func buildFilterFlags(fs *pflag.FlagSet, defaultLimit int) func() (db.BuildFilter, error) {
	state := fs.String("state", "", "only builds in this state (scheduled, allocated, started, succeeded, failed, canceled, failed-dependency)")
	agent := fs.String("agent", "", "only builds whose latest attempt ran on this agent id")
	limit := fs.Int("limit", defaultLimit, "at most this many builds, newest first (0: all)")
	return func() (db.BuildFilter, error) {
		st := db.BuildState(*state)
		switch st {
		case "", db.StateScheduled, db.StateAllocated, db.StateStarted, db.StateSucceeded, db.StateFailed, db.StateCanceled, db.StateFailedDependency:
		default:
			return db.BuildFilter{}, usageErr("--state %q is not a build state", *state)
		}
		if *limit < 0 {
			return db.BuildFilter{}, usageErr("--limit must not be negative")
		}
		return db.BuildFilter{State: st, AgentID: *agent, Limit: *limit}, nil
	}
}

func setupBuilds(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	filter := buildFilterFlags(fs, 100)
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		f, err := filter()
		if err != nil {
			return err
		}
		bs, err := x.s.store.Builds(x.ctx, f)
		if err != nil {
			return err
		}
		if *asJSON {
			list := make([]buildJSON, 0, len(bs))
			for _, b := range bs {
				list = append(list, toJSON(b))
			}
			return writeJSON(x.out, list)
		}
		tw := tabwriter.NewWriter(x.out, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tSYSTEM\tPRIO\tAGENT\tCREATED\tDERIVATION")
		for _, b := range bs {
			agent := b.AgentID
			if agent == "" {
				agent = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", b.ID, b.State, b.System, b.Priority, agent, textTime(b.CreatedAt), b.Derivation)
		}
		return tw.Flush()
	}
}

func setupBuildsCancel(fs *pflag.FlagSet) func(x *call) error {
	filter := buildFilterFlags(fs, 0)
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		f, err := filter()
		if err != nil {
			return err
		}
		if f.State.Terminal() {
			return usageErr("--state %s: those builds have already ended", f.State)
		}
		bs, err := x.s.store.Builds(x.ctx, f)
		if err != nil {
			return err
		}
		n := 0
		for _, b := range bs {
			if b.State.Terminal() {
				continue
			}
			if err := x.s.coord.Cancel(x.ctx, b.ID); err != nil {
				if errors.Is(err, db.ErrConflict) {
					continue // ended meanwhile
				}
				return err
			}
			fmt.Fprintln(x.out, b.ID)
			n++
		}
		fmt.Fprintf(x.errOut, "canceled %d build(s)\n", n)
		return nil
	}
}

func setupBuildPriority(fs *pflag.FlagSet) func(x *call) error {
	return func(x *call) error {
		if err := needArgs(x, 2, "a build id and a priority"); err != nil {
			return err
		}
		p, err := strconv.Atoi(x.args[1])
		if err != nil || p < math.MinInt32 || p > math.MaxInt32 {
			return usageErr("priority %q is not a 32-bit integer", truncate(x.args[1], 40))
		}
		return x.s.coord.SetPriority(x.ctx, x.args[0], p)
	}
}

func setupAgentActive(active bool) func(fs *pflag.FlagSet) func(x *call) error {
	return func(fs *pflag.FlagSet) func(x *call) error {
		return func(x *call) error {
			if err := needArgs(x, 0, "no arguments after the agent id"); err != nil {
				return err
			}
			return x.s.coord.SetAgentActive(x.ctx, x.params[0], active)
		}
	}
}

func setupBuildShow(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(x *call) error {
		if err := needArgs(x, 1, "one build id"); err != nil {
			return err
		}
		b, err := x.s.store.Build(x.ctx, x.args[0])
		if err != nil {
			return fmt.Errorf("build %q: %w", truncate(x.args[0], 64), err)
		}
		j := toJSON(b)
		if st, p, n, ok := x.s.coord.QueueOrder(b.ID); ok {
			j.Queue = &queueJSON{State: st, DerivedPriority: p, Dependents: n}
		}
		if *asJSON {
			return writeJSON(x.out, j)
		}
		tw := tabwriter.NewWriter(x.out, 2, 8, 2, ' ', 0)
		row := func(k, v string) {
			if v == "" {
				v = "-"
			}
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
		row("id", j.ID)
		row("derivation", j.Derivation)
		row("system", j.System)
		row("priority", fmt.Sprint(j.Priority))
		row("state", j.State)
		row("agent", j.Agent)
		row("created_at", j.CreatedAt)
		row("started_at", j.StartedAt)
		row("ended_at", j.EndedAt)
		row("tags", strings.Join(j.Tags, " "))
		row("required_features", strings.Join(j.RequiredFeatures, " "))
		row("attempts", fmt.Sprint(len(j.Attempts)))
		row("failure_reason", j.FailureReason)
		if j.FailedInput != "" {
			row("failed_input", j.FailedInput)
		}
		if j.DeferUntil != "" {
			row("defer_until", j.DeferUntil)
		}
		if j.Queue != nil {
			row("queue", fmt.Sprintf("%s derived_priority=%d dependents=%d", j.Queue.State, j.Queue.DerivedPriority, j.Queue.Dependents))
		}
		for _, a := range j.Attempts {
			row(fmt.Sprintf("attempt %d", a.Number), fmt.Sprintf("agent %s %s %s", a.Agent, a.Outcome, a.Reason))
			if hw := a.Hardware; hw != nil {
				row(fmt.Sprintf("attempt %d hardware", a.Number), fmt.Sprintf("cores=%d memory=%s free_disk=%s load1=%.2f backend=%s %s",
					hw.Cores, humanBytes(hw.MemoryBytes), humanBytes(hw.FreeDiskBytes), hw.Load1, hw.Backend, hw.BackendVersion))
			}
		}
		for _, o := range j.Outputs {
			row("output "+o.Name, fmt.Sprintf("%s %s nar_size=%d file_size=%d %s", o.Path, o.NarHash, o.NarSize, o.FileSize, o.Compression))
		}
		return tw.Flush()
	}
}

// failedInput extracts the input derivation from a failed-dependency
// reason ("dependency failed: input X (build Y)").
func failedInput(reason string) string {
	rest, ok := strings.CutPrefix(reason, "dependency failed: input ")
	if !ok {
		return ""
	}
	drv, _, _ := strings.Cut(rest, " ")
	return drv
}

func setupBuildCancel(fs *pflag.FlagSet) func(x *call) error {
	return func(x *call) error {
		if err := needArgs(x, 1, "one build id"); err != nil {
			return err
		}
		return x.s.coord.Cancel(x.ctx, x.args[0])
	}
}

func setupBuild(fs *pflag.FlagSet) func(x *call) error {
	prio := fs.Int("priority", 0, "higher runs first")
	tags := fs.StringArray("tag", nil, "K=V label (repeatable)")
	wait := fs.Bool("wait", false, "wait for every build to end and print its result; exit 0 only if all succeeded")
	deferUntil := fs.String("defer-until", "", "hold the builds back until `TIME` (RFC 3339, or +DURATION from now, e.g. +10m)")
	ignoreExisting := fs.Bool("ignore-if-build-for-outputs-exists", false, "reuse a queued, running or succeeded build of the same derivation instead of adding one")
	ensureInputs := fs.Bool("ensure-all-related-derivation-outputs-have-successful-builds", false,
		"also submit every derivation in the input closure whose outputs have no successful build and are not in the cache")
	timeout := fs.Duration("timeout", 0, "stop a build running longer than this (default: the coordinator's)")
	maxSilent := fs.Duration("max-silent-time", 0, "stop a build silent for longer than this (default: the coordinator's)")
	return func(x *call) error {
		if len(x.args) == 0 {
			return usageErr("want at least one .drv path")
		}
		var until time.Time
		if v := *deferUntil; v != "" {
			if d, ok := strings.CutPrefix(v, "+"); ok {
				dur, err := time.ParseDuration(d)
				if err != nil || dur < 0 {
					return usageErr("--defer-until %q: not a +DURATION", truncate(v, 40))
				}
				until = x.s.now().Add(dur)
			} else {
				t, err := time.Parse(time.RFC3339, v)
				if err != nil {
					return usageErr("--defer-until %q: want RFC 3339 (2026-01-02T15:04:05Z) or +DURATION", truncate(v, 40))
				}
				until = t
			}
		}
		if *timeout < 0 || *maxSilent < 0 {
			return usageErr("--timeout and --max-silent-time must not be negative")
		}
		var ts []db.Tag
		for _, t := range *tags {
			k, v, ok := strings.Cut(t, "=")
			if !ok || k == "" {
				return usageErr("--tag %q is not K=V", truncate(t, 80))
			}
			ts = append(ts, db.Tag{Key: k, Value: v})
		}
		ids, err := x.s.coord.Submit(x.ctx, coordinator.Submission{Derivations: x.args, Priority: *prio, Tags: ts,
			DeferUntil: until, IgnoreIfExists: *ignoreExisting, EnsureInputs: *ensureInputs,
			Timeout: *timeout, MaxSilentTime: *maxSilent})
		if err != nil {
			return err
		}
		for _, id := range ids {
			fmt.Fprintln(x.out, id)
		}
		if !*wait {
			return nil
		}
		type result struct {
			b   db.Build
			err error
		}
		results := make(chan result, len(ids))
		for _, id := range ids {
			go func() {
				b, err := x.s.coord.Wait(x.ctx, id)
				if err != nil {
					err = fmt.Errorf("wait for build %s: %w", id, err)
				}
				results <- result{b, err}
			}()
		}
		failed := 0
		for range ids {
			r := <-results
			if r.err != nil {
				return r.err
			}
			b := r.b
			switch b.State {
			case db.StateSucceeded:
				fmt.Fprintf(x.out, "build %s succeeded (on agent %s)\n", b.ID, b.AgentID)
				continue
			case db.StateFailed:
				fmt.Fprintf(x.out, "build %s failed (on agent %s)\n", b.ID, b.AgentID)
				fmt.Fprintf(x.errOut, "build %s: %s\n", b.ID, b.FailureReason)
			default:
				fmt.Fprintf(x.out, "build %s %s\n", b.ID, b.State)
				if b.FailureReason != "" {
					fmt.Fprintf(x.errOut, "build %s: %s\n", b.ID, b.FailureReason)
				}
			}
			failed++
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d build(s) did not succeed", failed, len(ids))
		}
		return nil
	}
}

func setupLog(fs *pflag.FlagSet) func(x *call) error {
	attempt := fs.Int("attempt", 0, "the log of this attempt (1, 2, …; default: the latest)")
	follow := fs.BoolP("follow", "f", false, "keep printing the log as it arrives until the attempt ends")
	return func(x *call) error {
		if err := needArgs(x, 1, "one build id"); err != nil {
			return err
		}
		if *attempt < 0 {
			return usageErr("--attempt must be positive")
		}
		return x.s.coord.CopyLog(x.ctx, x.out, x.args[0], *attempt, *follow)
	}
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func setupImport(fs *pflag.FlagSet) func(x *call) error {
	return func(x *call) error {
		if len(x.args) != 0 {
			return usageErr("import takes no arguments; pipe the export stream to stdin")
		}
		paths, err := x.s.coord.Import(x.ctx, x.in)
		for _, p := range paths {
			fmt.Fprintln(x.out, p)
		}
		if err != nil {
			return err
		}
		x.s.log.Info("imported into the cache", "paths", len(paths), "fingerprint", x.who.Fingerprint)
		return nil
	}
}

func setupProbe(fs *pflag.FlagSet) func(x *call) error {
	write := fs.Bool("write", false, "write the bytes to a scratch file beside the uploads (removed afterwards), as an upload would")
	return func(x *call) error {
		if len(x.args) != 0 {
			return usageErr("probe takes no arguments; pipe data to stdin")
		}
		var dst io.Writer = io.Discard
		if *write {
			f, err := os.CreateTemp(x.s.coord.ScratchDir(), ".probe-")
			if err != nil {
				return fmt.Errorf("scratch file: %w", err)
			}
			defer os.Remove(f.Name())
			defer f.Close()
			dst = f
		}
		t0 := time.Now()
		n, err := io.Copy(dst, x.in)
		if err != nil {
			return fmt.Errorf("read stdin after %d bytes: %w", n, err)
		}
		d := time.Since(t0)
		fmt.Fprintf(x.out, "%d bytes in %s (%.1f MB/s)\n", n, d.Round(time.Millisecond), float64(n)/1e6/max(d.Seconds(), 1e-9))
		return nil
	}
}
