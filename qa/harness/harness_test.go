//go:build qa

package harness

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStatus(t *testing.T) {
	m, err := parseStatus("Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\nThreads:\t3\n")
	if err != nil || m.RSS != 1<<20 || m.HWM != 2<<20 {
		t.Fatalf("got %+v, %v; want RSS 1 MiB, HWM 2 MiB", m, err)
	}
	if _, err := parseStatus("VmRSS:\t1 kB\n"); err == nil {
		t.Fatal("status without VmHWM parsed")
	}
	if _, err := ProcMemory(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

func TestRunTimeout(t *testing.T) {
	o := Run(200*time.Millisecond, "sleep", "5")
	if !o.TimedOut || o.Err == nil || o.Elapsed > 4*time.Second {
		t.Fatalf("sleep 5 with a 200ms limit: %+v", o)
	}
	o = Run(5*time.Second, "sh", "-c", "echo out; echo err >&2; exit 3")
	if o.ExitCode != 3 || o.Stdout != "out\n" || o.Stderr != "err\n" || o.Err == nil {
		t.Fatalf("got %+v", o)
	}
}

// TestTgt proves StartTgt serves a LUN that libiscsi can see, and that the harness's discovery works.
func TestTgt(t *testing.T) {
	NeedCommand(t, "iscsi-ls")
	d := StartTgt(t, TgtOptions{Files: []string{SparseFile(t, 64<<20)}})
	o := MustRun(t, 30*time.Second, "iscsi-ls", "-s", d.PortalURL())
	if !strings.Contains(o.Stdout, d.IQN) || !strings.Contains(o.Stdout, "Lun:1") {
		t.Fatalf("iscsi-ls does not list %s LUN 1:\n%s", d.IQN, o.Stdout)
	}
}

// TestGatewayd proves StartGatewayd serves a LUN that libiscsi can see and stops cleanly.
func TestGatewayd(t *testing.T) {
	NeedCommand(t, "iscsi-ls")
	d := StartGatewayd(t, SparseFile(t, 64<<20))
	o := MustRun(t, 30*time.Second, "iscsi-ls", "-s", d.PortalURL())
	if !strings.Contains(o.Stdout, d.IQN) || !strings.Contains(o.Stdout, "Lun:0") {
		t.Fatalf("iscsi-ls does not list %s LUN 0:\n%s", d.IQN, o.Stdout)
	}
}
