package backend

import (
	"context"
	"fmt"

	"github.com/gbc-farm/gbc/storedaemon"
)

// get returns an idle connection, else waits for a background dial in
// flight (it started earlier than a new one would), else dials.
func (d *Daemon) get(ctx context.Context) (*storedaemon.Conn, error) {
	for {
		d.mu.Lock()
		for len(d.idle) > 0 {
			c := d.idle[len(d.idle)-1]
			d.idle = d.idle[:len(d.idle)-1]
			if c.Err() == nil {
				d.mu.Unlock()
				return c, nil
			}
			delete(d.uses, c)
			go c.Close()
		}
		if d.inFlight == 0 || d.closed {
			d.mu.Unlock()
			return d.dial(ctx)
		}
		refilled := d.refilled
		d.mu.Unlock()
		select {
		case <-refilled:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (d *Daemon) dial(ctx context.Context) (*storedaemon.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := storedaemon.Dial(dctx, d.cfg.Address, d.cfg.Log)
	if err != nil {
		return nil, err
	}
	d.cfg.Log.Debug("connected to the store daemon", "daemon", d.cfg.Address.String(),
		"dialect", c.Dialect().String(), "protocol", fmt.Sprintf("%#x", c.ProtocolVersion()))
	return c, nil
}

// put returns c after use; build says whether a build ran on it. A
// connection that broke or served ConnBuilds builds is retired, and a
// build's connection retired is replaced in the background.
func (d *Daemon) put(c *storedaemon.Conn, build bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if build {
		d.uses[c]++
	}
	if d.closed || c.Err() != nil || d.uses[c] >= d.cfg.ConnBuilds {
		d.retireLocked(c, build)
		return
	}
	d.idle = append(d.idle, c)
}

// retireLocked closes c and, if refill, dials its replacement in the
// background. The caller holds d.mu.
func (d *Daemon) retireLocked(c *storedaemon.Conn, refill bool) {
	delete(d.uses, c)
	go c.Close() // an exec: daemon may take a moment to exit
	if refill && !d.closed {
		d.inFlight++
		d.dials.Add(1)
		go d.refill()
	}
}

// refill dials a connection for the next build.
func (d *Daemon) refill() {
	defer d.refillDone()
	c, err := d.dial(d.bg)
	if err != nil {
		if d.bg.Err() == nil {
			d.cfg.Log.Warn("store daemon: connection for the next build not dialed; the build dials itself", "daemon", d.cfg.Address.String(), "err", err)
		}
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		go c.Close()
		return
	}
	d.idle = append(d.idle, c)
}

// refillDone wakes the builds waiting in get.
func (d *Daemon) refillDone() {
	d.mu.Lock()
	d.inFlight--
	close(d.refilled)
	d.refilled = make(chan struct{})
	d.mu.Unlock()
	d.dials.Done()
}

// Close closes the idle connections and stops dialing; connections in use
// close when their build ends.
func (d *Daemon) Close() error {
	d.mu.Lock()
	d.closed = true
	idle := d.idle
	d.idle = nil
	d.mu.Unlock()
	d.stopBg()
	d.dials.Wait()
	for _, c := range idle {
		c.Close()
		d.mu.Lock()
		delete(d.uses, c)
		d.mu.Unlock()
	}
	return nil
}
