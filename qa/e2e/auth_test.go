//go:build qa

package e2e

import (
	"strings"
	"testing"
	"time"

	"opensan/qa/harness"
)

const (
	initiatorA = "iqn.2026-11.org.opensan:qa-a"
	initiatorB = "iqn.2026-11.org.opensan:qa-b"
)

// inq runs iscsi-inq (a login plus INQUIRY) on url as initiator.
func inq(url, initiator string) *harness.Output {
	return harness.Run(30*time.Second, "iscsi-inq", "-i", initiator, url)
}

func wantLogin(t *testing.T, what string, o *harness.Output) {
	t.Helper()
	if o.Err != nil || !strings.Contains(o.Stdout, "Peripheral Device Type:DIRECT_ACCESS") {
		t.Errorf("%s: want a login and INQUIRY data; %v\n%s", what, o.Err, o.Combined())
	}
}

func wantRefused(t *testing.T, what string, o *harness.Output) {
	t.Helper()
	if o.Err == nil || strings.Contains(o.Stdout, "DIRECT_ACCESS") {
		t.Errorf("%s: want the login refused; it succeeded:\n%s", what, o.Combined())
	}
}

// TestCHAP: with one-way CHAP the right secret logs in, a wrong secret, a wrong user and no credentials
// are refused.
func TestCHAP(t *testing.T) {
	harness.NeedCommand(t, "iscsi-inq")
	forEachKind(t, func(t *testing.T, kind harness.Kind) {
		d := target{kind: kind, files: []string{harness.SparseFile(t, 64<<20)}, chap: "qauser:qa-secret-1234"}.start(t)
		lun := d.FirstLUN
		wantLogin(t, "right secret", inq(d.CHAPURL(lun, "qauser", "qa-secret-1234", "", ""), initiatorA))
		wantRefused(t, "wrong secret", inq(d.CHAPURL(lun, "qauser", "qa-secret-9999", "", ""), initiatorA))
		wantRefused(t, "wrong user", inq(d.CHAPURL(lun, "someone", "qa-secret-1234", "", ""), initiatorA))
		wantRefused(t, "no credentials", inq(d.URL(lun), initiatorA))
		if d.Exited() {
			t.Errorf("%s exited", kind)
		}
	})
}

// TestMutualCHAP: the target proves it knows its own secret; an initiator expecting another target
// secret refuses the login.
func TestMutualCHAP(t *testing.T) {
	harness.NeedCommand(t, "iscsi-inq")
	forEachKind(t, func(t *testing.T, kind harness.Kind) {
		d := target{kind: kind, files: []string{harness.SparseFile(t, 64<<20)},
			chap: "qauser:qa-secret-1234", mutual: "qatarget:qa-target-5678"}.start(t)
		lun := d.FirstLUN
		wantLogin(t, "both secrets right", inq(d.CHAPURL(lun, "qauser", "qa-secret-1234", "qatarget", "qa-target-5678"), initiatorA))
		wantRefused(t, "initiator expects another target secret",
			inq(d.CHAPURL(lun, "qauser", "qa-secret-1234", "qatarget", "qa-target-0000"), initiatorA))
		wantRefused(t, "wrong initiator secret",
			inq(d.CHAPURL(lun, "qauser", "qa-secret-9999", "qatarget", "qa-target-5678"), initiatorA))
	})
}

// TestACL: with only initiator A allowed, B's discovery lists no target and B's login fails, while A
// sees and logs in to the target.
func TestACL(t *testing.T) {
	harness.NeedCommand(t, "iscsi-ls")
	harness.NeedCommand(t, "iscsi-inq")
	forEachKind(t, func(t *testing.T, kind harness.Kind) {
		d := target{kind: kind, files: []string{harness.SparseFile(t, 64<<20)}, allow: []string{initiatorA}}.start(t)
		lsA := harness.Run(30*time.Second, "iscsi-ls", "-i", initiatorA, d.PortalURL())
		if lsA.Err != nil || !strings.Contains(lsA.Stdout, d.IQN) {
			t.Errorf("allowed initiator's discovery does not list %s: %v\n%s", d.IQN, lsA.Err, lsA.Combined())
		}
		lsB := harness.Run(30*time.Second, "iscsi-ls", "-i", initiatorB, d.PortalURL())
		if strings.Contains(lsB.Stdout, d.IQN) {
			t.Errorf("refused initiator's discovery lists %s:\n%s", d.IQN, lsB.Combined())
		}
		t.Logf("discovery by the refused initiator: exit %d, %q", lsB.ExitCode, strings.TrimSpace(lsB.Combined()))
		wantLogin(t, "allowed initiator", inq(d.URL(d.FirstLUN), initiatorA))
		wantRefused(t, "refused initiator", inq(d.URL(d.FirstLUN), initiatorB))
	})
}
