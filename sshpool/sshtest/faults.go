package sshtest

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// AddHungNode adds a host that accepts TCP connections and never speaks, the
// way a wedged sshd or a host in the middle of a kernel panic behaves. Its
// Host block sets ConnectTimeout to Options.HungTimeout.
func (c *Cluster) AddHungNode(name string) (string, error) {
	ip := allocIP()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return "", err
	}
	dials := new(atomic.Int32)
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			dials.Add(1)
		}
	}()
	c.mu.Lock()
	if c.dials == nil {
		c.dials = map[string]*atomic.Int32{}
	}
	c.dials[name] = dials
	c.closers = append(c.closers, func() {
		l.Close()
		mu.Lock()
		for _, x := range conns {
			x.Close()
		}
		mu.Unlock()
	})
	c.mu.Unlock()
	port := l.Addr().(*net.TCPAddr).Port
	timeout := c.opts.HungTimeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return name, c.AddHost(fmt.Sprintf("Host %s\n  HostName %s\n  Port %d\n  ConnectTimeout %d\n", name, ip, port, int(timeout.Round(time.Second).Seconds())))
}

// HungDials is how many connections the hung node called name has
// accepted: a test waits for the first to know a client is dialing it.
func (c *Cluster) HungDials(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.dials[name]; d != nil {
		return int(d.Load())
	}
	return 0
}

// AddDeadNode adds a host whose port has nothing listening.
func (c *Cluster) AddDeadNode(name string) (string, error) {
	ip := allocIP()
	port, err := freePort(ip)
	if err != nil {
		return "", err
	}
	return name, c.AddHost(fmt.Sprintf("Host %s\n  HostName %s\n  Port %d\n", name, ip, port))
}
