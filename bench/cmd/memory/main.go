// Command memory prints the heap kproxy retains per Service and per endpoint (see
// bench/memory). No root needed:
//
//	go run ./bench/cmd/memory                    # 10,000 Services, 10 and 20 endpoints
//	go run ./bench/cmd/memory -services 1000
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/kproxy/kproxy/bench/memory"
)

func main() {
	n := flag.Int("services", 10000, "number of Services")
	m := flag.Int("endpoints", 10, "endpoints per Service; the per-endpoint figure compares with twice as many")
	flag.Parse()
	a, err := memory.Measure(*n, *m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b, err := memory.Measure(*n, 2**m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("Heap kproxy retains after a full sync (Go live heap, %d Services):\n\n", *n)
	fmt.Printf("| part | per Service (%d endpoints) | per Service (%d endpoints) | per endpoint |\n|---|---|---|---|\n", *m, 2**m)
	row := func(name string, x, y int64) {
		perEp := float64(y-x) / float64(*n**m)
		fmt.Printf("| %s | %s | %s | %s |\n", name, size(float64(x)/float64(*n)), size(float64(y)/float64(*n)), size(perEp))
	}
	row("model (objects, ServicePorts, endpoints)", a.Model, b.Model)
	row("iptables builder (cached rule fragments)", a.IPTables, b.IPTables)
	row("nftables state (elements and chains the kernel holds)", a.NFTables, b.NFTables)
	row("iptables-restore input of a full sync (transient)", a.RestoreInput, b.RestoreInput)
	row("allocated by one full nftables sync (transient)", a.NFTablesSyncAlloc, b.NFTablesSyncAlloc)
	fmt.Printf("\nTotal retained, iptables mode: %s (%d x %d); nftables mode: %s.\n",
		size(float64(a.Model+a.IPTables)), *n, *m, size(float64(a.Model+a.NFTables)))
}

func size(b float64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.2f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}
