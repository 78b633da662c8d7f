// Package protocol defines gbc-agent-v1: the line-delimited JSON messages
// that agents and the coordinator exchange over an SSH subsystem channel.
//
// Every message is one JSON object on one line with a "type". Messages that
// expect an answer carry a non-zero "id"; the answer (Ack or Error) echoes it.
// The coordinator acknowledges a result only after it is committed, so an
// agent resends unacknowledged results after a reconnect.
package protocol

// CacheAddress is the reserved host:port of the coordinator's binary cache
// inside the SSH connection: agents open direct-tcpip channels to it and
// speak HTTP; no TCP port is opened on the coordinator. Welcome repeats it.
const CacheAddress = "cache.gbc:80"

// Version is the protocol version carried in Hello and Welcome.
const Version = 1

// Subsystem is the SSH subsystem name agents open.
const Subsystem = "gbc-agent-v1"

// Message types.
const (
	TypeHello        = "hello"
	TypeHeartbeat    = "heartbeat"
	TypeStarted      = "started"
	TypePhase        = "phase"
	TypeLog          = "log"
	TypeSetupFailure = "setup-failure"
	TypeFailed       = "failed"
	TypeSucceeded    = "succeeded"
	TypeUploadURL    = "upload-url"

	TypeWelcome = "welcome"
	TypeBuild   = "build"
	TypeCancel  = "cancel"

	TypeUploadTarget = "upload-target"

	TypeAck   = "ack"
	TypeError = "error"
)

// Failure reasons in Failed.
const (
	ReasonBuild         = "build"
	ReasonTimeout       = "timeout"
	ReasonSilentTimeout = "silent-timeout"
)

// Phases an agent reports in Phase. Building is reported by Started (it
// carries the hardware); the coordinator adds verifying and publishing
// itself once the result arrives.
const (
	PhasePreparing = "preparing" // fetching and importing the .drv closure and inputs
	PhaseUploading = "uploading" // packing and uploading the outputs
)

// Message is implemented by every message type.
type Message interface {
	MessageType() string
}

// Header is embedded in every message.
type Header struct {
	Type string `json:"type"`
	ID   uint64 `json:"id,omitempty"`
}

// Hardware describes the agent's machine at a point in time.
type Hardware struct {
	Cores         int     `json:"cores,omitempty"`
	MemoryBytes   uint64  `json:"memory_bytes,omitempty"`
	FreeDiskBytes uint64  `json:"free_disk_bytes,omitempty"`
	Load1         float64 `json:"load1,omitempty"`
}

// Hello is the first message an agent sends.
type Hello struct {
	Header
	ProtocolVersion   int      `json:"protocol_version"`
	Name              string   `json:"name,omitempty"`
	AgentVersion      string   `json:"agent_version,omitempty"`
	Systems           []string `json:"systems"`
	Features          []string `json:"features,omitempty"`
	RequireTags       []string `json:"require_tags,omitempty"` // "K=V"
	MaxParallelBuilds int      `json:"max_parallel_builds"`
	StoreDir          string   `json:"store_dir"`
	Backend           string   `json:"backend"`
	BackendVersion    string   `json:"backend_version,omitempty"`
	Hardware          Hardware `json:"hardware"`
	// Running lists the builds still running here (not canceled);
	// Results the builds whose result waits for an ack (resent right after
	// welcome). A build the coordinator gives this agent that is in
	// neither list is requeued at once.
	Running []string `json:"running,omitempty"`
	Results []string `json:"results,omitempty"`
}

// Welcome answers Hello.
type Welcome struct {
	Header
	ProtocolVersion  int      `json:"protocol_version"`
	AgentID          string   `json:"agent_id"`
	MaxLineBytes     int      `json:"max_line_bytes"`
	HeartbeatSeconds int      `json:"heartbeat_seconds"`
	CacheAddress     string   `json:"cache_address,omitempty"`
	CachePublicKey   string   `json:"cache_public_key,omitempty"`
	UploadRoot       string   `json:"upload_root"`
	Continue         []string `json:"continue,omitempty"` // builds to keep running
	Abort            []string `json:"abort,omitempty"`    // builds to stop
}

// Heartbeat is sent every HeartbeatSeconds. It carries what the agent
// holds, so that the coordinator can settle any difference with its own
// view: Running and Results as in Hello, as they were once every
// coordinator message up to and including id Handled (the last build or
// cancel the agent had handled) was handled. A build pushed with a higher
// id may be missing from the lists without meaning anything.
type Heartbeat struct {
	Header
	Hardware Hardware `json:"hardware"`
	Handled  uint64   `json:"handled,omitempty"`
	Running  []string `json:"running,omitempty"`
	Results  []string `json:"results,omitempty"`
}

// OutputRef names one output of a build.
type OutputRef struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// Build asks the agent to build a derivation.
type Build struct {
	Header
	Build                string      `json:"build"`
	Derivation           string      `json:"derivation"`
	System               string      `json:"system"`
	Outputs              []OutputRef `json:"outputs"`
	TimeoutSeconds       int         `json:"timeout_seconds,omitempty"`
	MaxSilentTimeSeconds int         `json:"max_silent_time_seconds,omitempty"`
	UploadDir            string      `json:"upload_dir"` // SFTP directory for this build's files
}

// Cancel asks the agent to stop a build.
type Cancel struct {
	Header
	Build string `json:"build"`
}

// Started reports that the backend began building.
type Started struct {
	Header
	Build    string   `json:"build"`
	Hardware Hardware `json:"hardware"`
}

// Phase reports that the agent moved a build it holds to another phase:
// PhasePreparing right after accepting it, PhaseUploading once the build
// succeeded and packing begins. Phases only move forward; the coordinator
// records when it received each. Like Log it needs no id (an answer comes
// only for an id, or to refuse); an agent that sends none still works,
// and a coordinator that does not know the type refuses it harmlessly.
type Phase struct {
	Header
	Build string `json:"build"`
	Phase string `json:"phase"`
}

// Log carries a chunk of a build log at a byte offset; resending a chunk
// after a reconnect is harmless.
type Log struct {
	Header
	Build  string `json:"build"`
	Offset int64  `json:"offset"`
	Data   []byte `json:"data"` // base64 in JSON
}

// SetupFailure reports that the build could not start for reasons that are
// not the derivation's fault; the coordinator may retry it elsewhere.
type SetupFailure struct {
	Header
	Build   string   `json:"build"`
	Reason  string   `json:"reason"`
	Missing []string `json:"missing,omitempty"` // store paths that could not be substituted
}

// Failed reports that the build itself failed.
type Failed struct {
	Header
	Build    string `json:"build"`
	Reason   string `json:"reason"` // ReasonBuild, ReasonTimeout or ReasonSilentTimeout
	ExitCode int    `json:"exit_code"`
	Message  string `json:"message,omitempty"`
}

// OutputResult describes one built output and its uploaded file.
type OutputResult struct {
	Name        string   `json:"name"`
	Path        string   `json:"path"`
	NarHash     string   `json:"nar_hash"` // "sha256:<nix base32>"
	NarSize     int64    `json:"nar_size"`
	FileHash    string   `json:"file_hash"` // of the compressed file, same form
	FileSize    int64    `json:"file_size"`
	Compression string   `json:"compression"` // zstd, xz, gzip, none
	References  []string `json:"references"`  // full store paths
	Upload      string   `json:"upload"`      // file name inside the build's upload dir
	// Direct is the token of an UploadTarget the file was PUT to instead
	// of being uploaded over SFTP; empty for an SFTP upload.
	Direct string `json:"direct,omitempty"`
}

// MaxDirectUpload is the largest file an agent PUTs to an UploadTarget
// (one S3 PUT); larger ones go over SFTP.
const MaxDirectUpload = 5 << 30

// UploadURL asks the coordinator for a URL to PUT one output's file to,
// straight into the cache's object store, instead of uploading it over
// SFTP. The answer is an UploadTarget, or an Error (direct uploads off, a
// build the agent does not hold, a coordinator that does not know the
// type): then the agent uploads over SFTP, as it does when the PUT fails.
type UploadURL struct {
	Header
	Build  string `json:"build"`
	Upload string `json:"upload"` // the file's name, as over SFTP
	Size   int64  `json:"size"`
}

// UploadTarget answers UploadURL: PUT the file's bytes to URL (before
// ExpiresSeconds have passed), then report it with Direct set to the
// token. With Refused set there is no URL for this file (a check side's,
// too many asked, …): upload it over SFTP. An error reply instead means
// the coordinator gives no URLs at all (direct uploads off, or a
// coordinator that does not know upload-url): the agent stops asking
// until it reconnects.
type UploadTarget struct {
	Header
	Build          string `json:"build"`
	Upload         string `json:"upload"`
	URL            string `json:"url,omitempty"`
	Direct         string `json:"direct,omitempty"`
	ExpiresSeconds int    `json:"expires_seconds,omitempty"`
	Refused        string `json:"refused,omitempty"`
}

// Succeeded reports a built and uploaded result.
type Succeeded struct {
	Header
	Build   string         `json:"build"`
	Outputs []OutputResult `json:"outputs"`
}

// Ack answers a message with an id.
type Ack struct {
	Header
}

// Error answers a message that was refused.
type Error struct {
	Header
	Message string `json:"message"`
}

func (Hello) MessageType() string        { return TypeHello }
func (Welcome) MessageType() string      { return TypeWelcome }
func (Heartbeat) MessageType() string    { return TypeHeartbeat }
func (Build) MessageType() string        { return TypeBuild }
func (Cancel) MessageType() string       { return TypeCancel }
func (Started) MessageType() string      { return TypeStarted }
func (Phase) MessageType() string        { return TypePhase }
func (Log) MessageType() string          { return TypeLog }
func (SetupFailure) MessageType() string { return TypeSetupFailure }
func (Failed) MessageType() string       { return TypeFailed }
func (Succeeded) MessageType() string    { return TypeSucceeded }
func (UploadURL) MessageType() string    { return TypeUploadURL }
func (UploadTarget) MessageType() string { return TypeUploadTarget }
func (Ack) MessageType() string          { return TypeAck }
func (Error) MessageType() string        { return TypeError }

// newMessage returns a pointer to an empty message of the given type.
func newMessage(typ string) Message {
	switch typ {
	case TypeHello:
		return &Hello{}
	case TypeWelcome:
		return &Welcome{}
	case TypeHeartbeat:
		return &Heartbeat{}
	case TypeBuild:
		return &Build{}
	case TypeCancel:
		return &Cancel{}
	case TypeStarted:
		return &Started{}
	case TypePhase:
		return &Phase{}
	case TypeLog:
		return &Log{}
	case TypeSetupFailure:
		return &SetupFailure{}
	case TypeFailed:
		return &Failed{}
	case TypeSucceeded:
		return &Succeeded{}
	case TypeUploadURL:
		return &UploadURL{}
	case TypeUploadTarget:
		return &UploadTarget{}
	case TypeAck:
		return &Ack{}
	case TypeError:
		return &Error{}
	}
	return nil
}
