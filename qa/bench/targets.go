package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// benchIQN is the target name both systems serve, so their URLs differ only in port and LUN.
const benchIQN = "iqn.2026-11.org.opensan:bench"

// target is a running iSCSI target exporting one LUN on a loopback portal.
type target struct {
	// Name labels the system in the report: "gatewayd" or "tgt".
	Name string
	// URL is the libiscsi URL of the data LUN: iscsi://127.0.0.1:PORT/IQN/LUN.
	URL string
	// Setup lists the command lines that started and configured it, for the report.
	Setup []string
	// blockSize is the LUN's logical block size in bytes, once a figure has asked for it.
	blockSize int
	d         *daemon
	ctl       string // tgtd's control number, for its socket
}

func (t *target) stop() {
	if t == nil {
		return
	}
	t.d.stop()
	if t.ctl != "" {
		removeTgtSocket(t.ctl)
	}
}

// tgtSocketDir is where tgtd puts its control sockets.
const tgtSocketDir = "/var/run/tgtd"

// tgtControl returns a tgtd control number in [1024, 32767] derived from seed whose socket does not exist.
func tgtControl(seed int) int {
	n := 1024 + seed%(32768-1024)
	for i := 0; i < 32768-1024; i++ {
		if _, err := os.Stat(filepath.Join(tgtSocketDir, fmt.Sprintf("socket.%d", n))); os.IsNotExist(err) {
			return n
		}
		n++
		if n > 32767 {
			n = 1024
		}
	}
	return n
}

// removeTgtSocket removes the control socket and lock file a killed tgtd leaves behind.
func removeTgtSocket(ctl string) {
	os.Remove(filepath.Join(tgtSocketDir, "socket."+ctl))
	os.Remove(filepath.Join(tgtSocketDir, "socket."+ctl+".lock"))
}

// startGatewayd serves file as LUN 0 with `gatewayd serve`.
func startGatewayd(ctx context.Context, bin, file string) (*target, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	d, err := startDaemon("gatewayd", bin, "serve", "--listen", addr, "--iqn", benchIQN, file)
	if err != nil {
		return nil, err
	}
	if err := d.waitTCP(ctx, addr); err != nil {
		d.stop()
		return nil, err
	}
	// gatewayd prints "target IQN" once it serves; a different name means it ignored --iqn.
	for _, line := range strings.Split(d.out.String(), "\n") {
		if iqn, ok := strings.CutPrefix(line, "target "); ok && strings.TrimSpace(iqn) != benchIQN {
			d.stop()
			return nil, fmt.Errorf("gatewayd serves %q, asked for --iqn %s", strings.TrimSpace(iqn), benchIQN)
		}
	}
	return &target{Name: "gatewayd", URL: fmt.Sprintf("iscsi://%s/%s/0", addr, benchIQN), Setup: []string{d.cmdline}, d: d}, nil
}

// startTgt serves file with Debian's tgtd in the foreground as LUN 1 (tgt's LUN 0 is its controller).
// Each tgtd has a control number N (socket /var/run/tgtd/socket.N, at most 32767); the bench picks one
// that no other tgtd on the machine uses, so it can run next to the qa suites.
func startTgt(ctx context.Context, file string) (*target, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var d *daemon
	var ctl string
	for try := 0; ; try++ {
		ctl = fmt.Sprint(tgtControl(port + 7919*try))
		d, err = startDaemon("tgtd", "tgtd", "-f", "--iscsi", "portal="+addr, "-C", ctl)
		if err != nil {
			return nil, err
		}
		if err = d.waitTCP(ctx, addr); err == nil {
			break
		}
		d.stop()
		removeTgtSocket(ctl)
		if try == 3 {
			return nil, err
		}
	}
	t := &target{Name: "tgt", URL: fmt.Sprintf("iscsi://%s/%s/1", addr, benchIQN), Setup: []string{d.cmdline}, d: d, ctl: ctl}
	for _, args := range [][]string{
		{"--op", "new", "--mode", "target", "--tid", "1", "-T", benchIQN},
		{"--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", file},
		{"--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"},
	} {
		r, err := run(ctx, adminTimeout, "", "tgtadm", append([]string{"-C", ctl, "--lld", "iscsi"}, args...)...)
		if err != nil {
			t.stop()
			return nil, err
		}
		t.Setup = append(t.Setup, r.cmdline)
	}
	return t, nil
}
