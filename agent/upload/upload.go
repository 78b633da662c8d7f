package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"

	"github.com/pkg/sftp"
)

// Stats says what one Upload call moved.
type Stats struct {
	Size    int64 // local file size
	Skipped int64 // bytes the remote side already had
	Sent    int64 // bytes written in this call
}

// ClientOptions are the SFTP client options the uploader expects: concurrent
// writes on, with the request window that Resume's safety margin assumes.
func ClientOptions() []sftp.ClientOption {
	return []sftp.ClientOption{
		sftp.UseConcurrentWrites(true),
		sftp.MaxConcurrentRequestsPerFile(concurrentRequests),
		// Unchecked: more than the 32 KiB every SFTP server must take.
		// The only server an agent talks to is the coordinator's
		// (pkg/sftp, which reads messages up to 256 KiB; the sshd tests
		// upload with these options).
		sftp.MaxPacketUnchecked(packetSize),
	}
}

const (
	concurrentRequests = 16
	// packetSize is the data in one SFTP write: 252 KiB, the largest
	// multiple of 4 KiB whose write message (plus type, id, handle,
	// offset and length) stays within pkg/sftp's 256 KiB message limit.
	// Every write costs a request, a response and an extra SSH packet
	// for its header on both ends; at 32 KiB that per-write cost
	// held uploads to ~70 % of a raw SSH channel (docs/cache.md).
	packetSize = 252 << 10
	// resumeMargin is how far before the remote size a resumed upload
	// starts. With concurrent writes a dropped connection can leave the
	// remote file longer than its contiguous prefix: later packets landed,
	// earlier ones in flight were lost, leaving a hole. No more than one
	// window of requests is ever in flight, so rewriting that window is
	// enough to fill any hole; the bytes are identical, so overlap is
	// harmless.
	resumeMargin = concurrentRequests * packetSize
)

// Upload copies the local file to remote (a path in the coordinator's
// virtual tree) over c, skipping what the remote file already holds.
// A remote file longer than the local one cannot be a prefix of it and is
// rewritten from the start.
func Upload(ctx context.Context, c *sftp.Client, local, remote string, log *slog.Logger) (Stats, error) {
	lf, err := os.Open(local)
	if err != nil {
		return Stats{}, fmt.Errorf("upload %s: %w", local, err)
	}
	defer lf.Close()
	li, err := lf.Stat()
	if err != nil {
		return Stats{}, fmt.Errorf("upload %s: %w", local, err)
	}
	st := Stats{Size: li.Size()}

	var remoteSize int64
	if ri, err := c.Stat(remote); err == nil {
		remoteSize = ri.Size()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return st, fmt.Errorf("upload %s: stat remote %s: %w", local, remote, err)
	}
	start := ResumeOffset(remoteSize, st.Size)

	rf, err := c.OpenFile(remote, os.O_WRONLY|os.O_CREATE)
	if err != nil {
		return st, fmt.Errorf("upload %s: open remote %s: %w", local, remote, err)
	}
	defer rf.Close()
	if remoteSize > st.Size {
		if err := rf.Truncate(0); err != nil {
			return st, fmt.Errorf("upload %s: truncate remote %s (%d bytes, local %d): %w", local, remote, remoteSize, st.Size, err)
		}
	}
	if _, err := lf.Seek(start, io.SeekStart); err != nil {
		return st, fmt.Errorf("upload %s: seek to %d: %w", local, start, err)
	}
	if _, err := rf.Seek(start, io.SeekStart); err != nil {
		return st, fmt.Errorf("upload %s: seek remote %s to %d: %w", local, remote, start, err)
	}
	st.Skipped = start
	// ReadFrom with a LimitedReader knows the length, so pkg/sftp pipelines
	// up to concurrentRequests writes instead of waiting for each one.
	src := &io.LimitedReader{R: ctxReader{ctx, lf}, N: st.Size - start}
	n, err := rf.ReadFrom(src)
	st.Sent = n
	if err != nil {
		return st, fmt.Errorf("upload %s to %s at offset %d: %w", local, remote, start+n, err)
	}
	if err := rf.Close(); err != nil {
		return st, fmt.Errorf("upload %s: close remote %s: %w", local, remote, err)
	}
	ri, err := c.Stat(remote)
	if err != nil {
		return st, fmt.Errorf("upload %s: stat remote %s after writing: %w", local, remote, err)
	}
	if ri.Size() != st.Size {
		return st, fmt.Errorf("upload %s: remote %s has %d bytes after writing, want %d", local, remote, ri.Size(), st.Size)
	}
	if log != nil {
		log.Info("uploaded", "file", path.Base(remote), "size", st.Size, "sent", st.Sent, "skipped", st.Skipped)
	}
	return st, nil
}

// ResumeOffset is where to restart an upload of a local file of size
// local when the remote file has remote bytes.
func ResumeOffset(remote, local int64) int64 {
	if remote > local {
		return 0
	}
	return max(remote-resumeMargin, 0)
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
