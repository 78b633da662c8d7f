package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"

	"golang.org/x/crypto/ssh"
)

// cacheForward is the agent's local end of the cache tunnel: a loopback
// listener whose connections are carried to the coordinator's cache
// address over the live SSH connection (like ssh -L). It outlives
// connections, so the URL handed to the store daemon stays the same; while
// the agent is disconnected, connections are refused.
type cacheForward struct {
	ln net.Listener

	mu     sync.Mutex
	client *ssh.Client
	addr   string // cache address inside the SSH connection
	key    string // the cache's public key, from welcome
}

func newCacheForward(ctx context.Context, a *Agent) (*cacheForward, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cache forward: listen on loopback: %w", err)
	}
	f := &cacheForward{ln: ln}
	context.AfterFunc(ctx, func() { ln.Close() })
	go f.serve(a)
	return f, nil
}

// URL is the substituter URL for the store daemon.
func (f *cacheForward) URL() string { return "http://" + f.ln.Addr().String() }

// set installs the connection to forward over (nil while disconnected).
func (f *cacheForward) set(c *ssh.Client, addr, key string) {
	f.mu.Lock()
	f.client, f.addr = c, addr
	if key != "" {
		f.key = key
	}
	f.mu.Unlock()
}

// current returns the connection, the cache address and the cache key.
func (f *cacheForward) current() (*ssh.Client, string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.client, f.addr, f.key
}

func (f *cacheForward) serve(a *Agent) {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		go f.pipe(a, c)
	}
}

func (f *cacheForward) pipe(a *Agent, local net.Conn) {
	defer local.Close()
	client, addr, _ := f.current()
	if client == nil || addr == "" {
		return
	}
	remote, err := client.Dial("tcp", addr)
	if err != nil {
		a.log.Warn("cache forward: open channel", "addr", addr, "err", err)
		return
	}
	defer remote.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(remote, local) //nolint:errcheck // ends when either side closes
		if cw, ok := remote.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		close(done)
	}()
	io.Copy(local, remote) //nolint:errcheck
	local.Close()
	<-done
}
