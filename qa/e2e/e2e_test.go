//go:build qa

// Package e2e drives gatewayd with real initiators (libiscsi's tools, QEMU's iSCSI block driver) end to
// end: authentication, access control, data integrity, many concurrent sessions, a killed connection.
// Where it is cheap the same checks run against Debian's tgt, which proves each check can pass and
// fail on a target that is not ours.
package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"opensan/qa/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// target is what a test needs from a target implementation.
type target struct {
	kind  harness.Kind
	files []string
	chap  string // "USER:SECRET" or ""
	// mutual is "USER:SECRET" the target answers with, or "".
	mutual string
	allow  []string
}

// start starts the target on a free loopback port.
func (o target) start(t *testing.T) *harness.Daemon {
	t.Helper()
	if o.kind == harness.KindTgt {
		return harness.StartTgt(t, harness.TgtOptions{Files: o.files, CHAP: o.chap, MutualCHAP: o.mutual, Allow: o.allow})
	}
	var args []string
	if o.chap != "" {
		args = append(args, "--chap", o.chap)
	}
	if o.mutual != "" {
		args = append(args, "--mutual-chap", o.mutual)
	}
	for _, a := range o.allow {
		args = append(args, "--allow", a)
	}
	return harness.StartGatewayd(t, append(args, o.files...)...)
}

// kinds are the targets the cheap checks run against: ours, then the reference.
var kinds = []harness.Kind{harness.KindGatewayd, harness.KindTgt}

// forEachKind runs f as a subtest per target kind.
func forEachKind(t *testing.T, f func(t *testing.T, kind harness.Kind)) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) { f(t, k) })
	}
}

// qemuImage returns a qemu --image-opts string for lun of d, logging in as initiator.
func qemuImage(d *harness.Daemon, lun int, initiator string) string {
	return fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=%d,initiator-name=%s", d.Addr, d.IQN, lun, initiator)
}

// qemuIO runs qemu-io on lun of d with the given -c commands and returns its output. qemu-io exits
// non-zero when a command fails, pattern verification included.
func qemuIO(timeout time.Duration, d *harness.Daemon, lun int, initiator string, cmds ...string) *harness.Output {
	args := []string{"--image-opts", qemuImage(d, lun, initiator)}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	return harness.Run(timeout, "qemu-io", args...)
}

// ioFailed reports whether qemu-io output shows a failed command even if the exit status did not.
func ioFailed(o *harness.Output) bool {
	s := o.Combined()
	return o.Err != nil || strings.Contains(s, "Pattern verification failed") || strings.Contains(s, "failed:") ||
		strings.Contains(s, "can't open")
}
