// Command echoserver is the traffic tool of kproxy's end-to-end tests.
//
// In serve mode it answers every TCP connection and every UDP datagram with one line,
// "NAME SEEN_SOURCE_IP:PORT", so a test can tell which backend answered and which
// source address that backend saw (and so whether the proxy masqueraded the packet).
//
// In client mode it sends N requests and prints one JSON line per request, so tests
// can count how requests spread over backends and classify failures (refused vs timeout).
package main

import (
	"fmt"
	"os"
)

func usage() {
	fmt.Fprintf(os.Stderr, `usage:
  echoserver serve --name NAME [--tcp 80,8080] [--udp 53] [--sctp 9000]
  echoserver client --proto tcp|udp --target IP:PORT [--count N] [--timeout 2s]
                    [--interval 0s] [--source-port P] [--source-ip IP]
`)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serveMain(os.Args[2:])
	case "client":
		err = clientMain(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "echoserver %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
