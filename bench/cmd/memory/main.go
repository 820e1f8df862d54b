// Command memory prints the heap kproxy retains per Service and per endpoint (see
// bench/memory), and the memory of a cold start in each mode. No root needed:
//
//	go run ./bench/cmd/memory                    # 10,000 Services, 10 and 20 endpoints
//	go run ./bench/cmd/memory -services 1000
//	go run ./bench/cmd/memory -profile /tmp/prof # heap profiles of each cold-start phase
//
// Each cold start runs in a process of its own (this command, started again), so
// that its peak RSS (VmHWM) is that of one cold start only.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"

	"github.com/kproxy/kproxy/bench/memory"
)

func main() {
	n := flag.Int("services", 10000, "number of Services")
	m := flag.Int("endpoints", 10, "endpoints per Service; the per-endpoint figure compares with twice as many")
	peak := flag.Bool("peak", true, "also measure a cold start in each mode, each in a process of its own")
	profile := flag.String("profile", "", "directory for heap profiles of each cold-start phase")
	child := flag.String("child", "", "internal: run one cold start in this mode and print it as JSON")
	flag.Parse()
	if *child != "" {
		p, err := memory.MeasurePeak(*child, *n, *m, *profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := json.NewEncoder(os.Stdout).Encode(p); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if err := retained(*n, *m); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if !*peak {
		return
	}
	if err := coldStarts(*n, *m, *profile); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func retained(n, m int) error {
	a, err := memory.Measure(n, m)
	if err != nil {
		return err
	}
	b, err := memory.Measure(n, 2*m)
	if err != nil {
		return err
	}
	fmt.Printf("Heap kproxy retains after a full sync (Go live heap, %d Services):\n\n", n)
	fmt.Printf("| part | per Service (%d endpoints) | per Service (%d endpoints) | per endpoint |\n|---|---|---|---|\n", m, 2*m)
	row := func(name string, x, y int64) {
		perEp := float64(y-x) / float64(n*m)
		fmt.Printf("| %s | %s | %s | %s |\n", name, size(float64(x)/float64(n)), size(float64(y)/float64(n)), size(perEp))
	}
	row("model (objects, ServicePorts, endpoints)", a.Model, b.Model)
	row("iptables builder (cached rule fragments)", a.IPTables, b.IPTables)
	row("nftables state (elements and chains the kernel holds)", a.NFTables, b.NFTables)
	row("iptables-restore input of a full sync (transient)", a.RestoreInput, b.RestoreInput)
	row("allocated by one full nftables sync (transient)", a.NFTablesSyncAlloc, b.NFTablesSyncAlloc)
	fmt.Printf("\nTotal retained, iptables mode: %s (%d x %d); nftables mode: %s.\n",
		size(float64(a.Model+a.IPTables)), n, m, size(float64(a.Model+a.NFTables)))
	return nil
}

// coldStarts runs one cold start per mode, each in a new process, and prints them.
func coldStarts(n, m int, profile string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	fmt.Printf("\nCold start, %d Services x %d endpoints: informers (fake clientset, kproxy's transform), first snapshot, first full sync into a sink (GOGC=%q):\n\n",
		n, m, os.Getenv("GOGC"))
	fmt.Println("| mode | phase | live after | peak heap | peak mapped | allocated |\n|---|---|---|---|---|---|")
	var peaks []memory.Peak
	for _, mode := range []string{"iptables", "nftables"} {
		cmd := exec.Command(self, "-child", mode, "-services", strconv.Itoa(n), "-endpoints", strconv.Itoa(m), "-profile", profile)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("memory: cold start in %s mode: %w", mode, err)
		}
		var p memory.Peak
		if err := json.Unmarshal(out, &p); err != nil {
			return fmt.Errorf("memory: cold start in %s mode: %w", mode, err)
		}
		for _, ph := range p.Phases {
			fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", mode, ph.Name, size(float64(ph.Live)), size(float64(ph.PeakHeap)),
				size(float64(ph.PeakMapped)), size(float64(ph.Allocated)))
		}
		peaks = append(peaks, p)
	}
	fmt.Println()
	for _, p := range peaks {
		fmt.Printf("%s: peak RSS (VmHWM) %s; largest transaction text %s, netlink batch %s.\n", p.Mode,
			size(float64(p.PeakRSS)), size(float64(p.TxBytes)), size(float64(p.NetlinkBytes)))
	}
	return nil
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
