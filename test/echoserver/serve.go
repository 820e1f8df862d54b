package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

// parsePorts reads a comma-separated port list such as "80,8080"; "" is no ports.
func parsePorts(s string) ([]int, error) {
	var ports []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("bad port %q in %q", f, s)
		}
		ports = append(ports, p)
	}
	return ports, nil
}

// answer is the line a backend sends: its name and the source address it saw.
func answer(name string, seen net.Addr) []byte {
	return []byte(name + " " + seen.String() + "\n")
}

func serveMain(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	name := fs.String("name", "", "backend name reported in every answer")
	tcp := fs.String("tcp", "80", "comma-separated TCP ports")
	udp := fs.String("udp", "", "comma-separated UDP ports")
	sctp := fs.String("sctp", "", "comma-separated SCTP ports, served over raw sockets (see sctp.go)")
	_ = fs.Parse(args)
	if *name == "" {
		return errors.New("--name is required")
	}
	tcpPorts, err := parsePorts(*tcp)
	if err != nil {
		return fmt.Errorf("--tcp: %w", err)
	}
	udpPorts, err := parsePorts(*udp)
	if err != nil {
		return fmt.Errorf("--udp: %w", err)
	}
	sctpPorts, err := parsePorts(*sctp)
	if err != nil {
		return fmt.Errorf("--sctp: %w", err)
	}
	logger := log.New(os.Stderr, *name+" ", log.LstdFlags|log.Lmicroseconds)
	if len(sctpPorts) > 0 {
		// Best effort: without raw sockets the TCP and UDP ports still serve.
		if err := startSCTP(sctpPorts, *name, logger); err != nil {
			logger.Printf("no SCTP: %v", err)
			sctpPorts = nil
		}
	}
	// Bind every socket before reporting readiness so a test that waits for the
	// "ready" line can send at once.
	for _, p := range tcpPorts {
		l, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			return fmt.Errorf("listen tcp port %d: %w", p, err)
		}
		go serveTCP(l, *name, logger)
	}
	for _, p := range udpPorts {
		c, err := net.ListenPacket("udp", ":"+strconv.Itoa(p))
		if err != nil {
			return fmt.Errorf("listen udp port %d: %w", p, err)
		}
		go serveUDP(c, *name, logger)
	}
	fmt.Printf("ready %s tcp=%v udp=%v sctp=%v\n", *name, tcpPorts, udpPorts, sctpPorts)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}

func serveTCP(l net.Listener, name string, logger *log.Logger) {
	for {
		conn, err := l.Accept()
		if err != nil {
			logger.Printf("accept on %s: %v", l.Addr(), err)
			return
		}
		go func() {
			defer func() { _ = conn.Close() }()
			if _, err := conn.Write(answer(name, conn.RemoteAddr())); err != nil {
				logger.Printf("write to %s: %v", conn.RemoteAddr(), err)
			}
		}()
	}
}

func serveUDP(c net.PacketConn, name string, logger *log.Logger) {
	buf := make([]byte, 64*1024)
	for {
		_, from, err := c.ReadFrom(buf)
		if err != nil {
			logger.Printf("read on %s: %v", c.LocalAddr(), err)
			return
		}
		if _, err := c.WriteTo(answer(name, from), from); err != nil {
			logger.Printf("write to %s: %v", from, err)
		}
	}
}
