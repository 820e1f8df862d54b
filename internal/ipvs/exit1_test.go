package ipvs

import "os/exec"

// exit1 is an *exec.ExitError with status 1, as iptables returns for "no such rule".
func exit1() error {
	err := exec.Command("sh", "-c", "exit 1").Run()
	return err
}
