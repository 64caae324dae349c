//go:build qa

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"opensan/qa/harness"
)

const (
	// sessions is how many initiators write to one LUN at once, each with its own name and LBA range.
	sessions = 64
	// rangeSize is each initiator's share of the LUN, in bytes.
	rangeSize = 4 << 20
	// cycles is how many times each initiator writes and verifies its range (two patterns alternating),
	// so the sessions overlap in time on the 2-core box.
	cycles = 4
	// victimSize is the range the killed initiator writes, after the others' ranges.
	victimSize = 64 << 20
	// maxRSS bounds the target's peak resident set over the whole test (VmHWM), in bytes.
	maxRSS = 512 << 20
)

// pattern is the byte initiator i writes in cycle c: distinct per initiator and per cycle parity, never 0
// (a range that was never written reads as zeros and must not verify).
func pattern(i, c int) int { return 1 + i + (c%2)*0x80 }

// TestConcurrentSessions: 64 initiators with distinct names log in to one LUN at once and each writes
// and verifies its own 4 MiB range several times; meanwhile one more initiator, writing its own range,
// is killed with SIGKILL (its TCP connection resets mid-write). Every other session must finish and
// verify, the target must keep serving, and its resident memory stays bounded.
func TestConcurrentSessions(t *testing.T) {
	harness.NeedCommand(t, "qemu-io")
	forEachKind(t, func(t *testing.T, kind harness.Kind) {
		file := harness.SparseFile(t, sessions*rangeSize+victimSize)
		d := target{kind: kind, files: []string{file}}.start(t)
		lun := d.FirstLUN
		before, err := harness.ProcMemory(d.Pid())
		if err != nil {
			t.Fatal(err)
		}
		stopSampling := sampleMemory(t, d)

		// The victim rewrites its range until it is killed.
		victimOff := int64(sessions * rangeSize)
		vargs := []string{"--image-opts", qemuImage(d, lun, "iqn.2026-11.org.opensan:qa-victim")}
		for range 200 {
			vargs = append(vargs, "-c", fmt.Sprintf("write -P 0xee %d %d", victimOff, victimSize))
		}
		victim := exec.Command("qemu-io", vargs...)
		victim.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		var victimOut strings.Builder
		victim.Stdout, victim.Stderr = &victimOut, &victimOut
		if err := victim.Start(); err != nil {
			t.Fatal(err)
		}
		// Its writes reaching the backing file prove it is logged in and writing.
		waitForByte(t, file, victimOff, 0xee, 30*time.Second)

		outs := make([]*harness.Output, sessions)
		var wg sync.WaitGroup
		for i := range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				off := int64(i) * rangeSize
				var cmds []string
				for c := range cycles {
					p := pattern(i, c)
					cmds = append(cmds, fmt.Sprintf("write -P %d %d %d", p, off, rangeSize), fmt.Sprintf("read -P %d %d %d", p, off, rangeSize))
				}
				outs[i] = qemuIO(5*time.Minute, d, lun, fmt.Sprintf("iqn.2026-11.org.opensan:qa-s%02d", i), cmds...)
			}()
		}
		// Kill the victim while the others are running (they take several seconds on 2 cores).
		time.Sleep(time.Second)
		victim.Process.Signal(syscall.SIGKILL)
		if err := victim.Wait(); err == nil {
			t.Fatalf("the victim finished its 200 writes before it was killed; the test killed nothing:\n%s", victimOut.String())
		}
		killedAt := time.Now()
		wg.Wait()
		t.Logf("%d sessions finished %v after the victim was killed", sessions, time.Since(killedAt).Round(time.Millisecond))

		failed := 0
		for i, o := range outs {
			if ioFailed(o) {
				failed++
				if failed <= 5 {
					t.Errorf("session %d: %v\n%s", i, o.Err, o.Combined())
				}
			}
		}
		if failed > 0 {
			t.Fatalf("%d of %d sessions failed", failed, sessions)
		}
		if d.Exited() {
			t.Fatalf("%s exited", kind)
		}

		// A fresh session reads every range back with its last pattern.
		var cmds []string
		for i := range sessions {
			cmds = append(cmds, fmt.Sprintf("read -P %d %d %d", pattern(i, cycles-1), int64(i)*rangeSize, rangeSize))
		}
		if o := qemuIO(2*time.Minute, d, lun, initiatorA, cmds...); ioFailed(o) {
			t.Fatalf("verifying every range after the run: %v\n%s", o.Err, o.Combined())
		}

		peak := stopSampling()
		after, err := harness.ProcMemory(d.Pid())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s memory: before %v; after %v; peak sampled VmRSS %.1f MiB", kind, before, after, float64(peak)/(1<<20))
		if after.HWM > maxRSS {
			t.Errorf("%s peak resident set %d MiB, want below %d MiB", kind, after.HWM>>20, maxRSS>>20)
		}
	})
}

// waitForByte waits until the byte at off in file reads want.
func waitForByte(t *testing.T, file string, off int64, want byte, timeout time.Duration) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	for deadline := time.Now().Add(timeout); ; {
		if _, err := f.ReadAt(b, off); err == nil && b[0] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: byte %d is not %#x after %v", file, off, want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sampleMemory records d's VmRSS every 200 ms until the returned function is called, which returns
// the highest value seen.
func sampleMemory(t *testing.T, d *harness.Daemon) func() int64 {
	stop := make(chan struct{})
	done := make(chan int64)
	go func() {
		var peak int64
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			if m, err := harness.ProcMemory(d.Pid()); err == nil && m.RSS > peak {
				peak = m.RSS
			}
			select {
			case <-stop:
				done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 { close(stop); return <-done }
}
