package conformance

import (
	"os"
	"strings"
	"testing"
)

const sample = `found matching LU device identifier for all (2) paths


     CUnit - A unit testing framework for C - Version 2.1-3

Suite: CompareAndWrite
  Test: Simple ...    [SKIPPED] COMPAREANDWRITE is not implemented.
    [SKIPPED] COMPAREANDWRITE is not implemented.
passed
Suite: GetLBAStatus
  Test: Simple ...passed
  Test: BeyondEol ...    [FAILED] GET_LBA_STATUS successful but should have failed
FAILED
    1. test_get_lba_status_beyond_eol.c:38  - CU_ASSERT_EQUAL(_r,0)
  Test: Logout ...    Take out a RESERVE6 from the first initiator
    Try to take out a RESERVE6 from the second initiator
passed
  Test: Residuals ...passed    [FAILED] PRIN command: failed with sense. UNIT_ATTENTION

Suite: MultipathIO
  Test: CompareAndWriteAsync ...FAILED
    1. test_multipathio_async_caw.c:45  - CU_ASSERT_EQUAL(atask->sense.key,SCSI_SENSE_MISCOMPARE)

Run Summary:    Type  Total    Ran Passed Failed Inactive
              suites      3      3    n/a      0        0
               tests      6      6      4      2        0
             asserts     10     10      8      2      n/a
`

func TestParseVerbose(t *testing.T) {
	r := ParseVerbose(sample)
	want := []struct {
		name    string
		outcome Outcome
		reason  string
		lines   int
	}{
		{"CompareAndWrite.Simple", Skipped, "COMPAREANDWRITE is not implemented.", 2},
		{"GetLBAStatus.Simple", Passed, "", 0},
		{"GetLBAStatus.BeyondEol", Failed, "GET_LBA_STATUS successful but should have failed", 2},
		{"GetLBAStatus.Logout", Passed, "", 2},
		// Cleanup output after the verdict stays with the test but does not change its outcome.
		{"GetLBAStatus.Residuals", Passed, "", 1},
		{"MultipathIO.CompareAndWriteAsync", Failed, "1. test_multipathio_async_caw.c:45  - CU_ASSERT_EQUAL(atask->sense.key,SCSI_SENSE_MISCOMPARE)", 1},
	}
	if len(r.Tests) != len(want) {
		t.Fatalf("parsed %d tests, want %d: %+v", len(r.Tests), len(want), r.Tests)
	}
	for i, w := range want {
		g := r.Tests[i]
		if g.Name != w.name || g.Outcome != w.outcome || g.Reason != w.reason || len(g.Output) != w.lines {
			t.Errorf("test %d: got %q %s reason %q with %d lines %q; want %q %s reason %q with %d lines",
				i, g.Name, g.Outcome, g.Reason, len(g.Output), g.Output, w.name, w.outcome, w.reason, w.lines)
		}
	}
	if r.Summary == nil || *r.Summary != (Summary{Ran: 6, Passed: 4, Failed: 2}) {
		t.Fatalf("summary %+v", r.Summary)
	}
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestParseTruncated: a run that died mid-test reports that test failed and fails Check.
func TestParseTruncated(t *testing.T) {
	r := ParseVerbose("Suite: Read10\n  Test: Simple ...passed\n  Test: BeyondEol ...    doing things\n")
	if len(r.Tests) != 2 || r.Tests[1].Outcome != Failed || !strings.Contains(r.Tests[1].Reason, "doing things") {
		t.Fatalf("got %+v", r.Tests)
	}
	if r.Check() == nil {
		t.Fatal("Check accepted output without a summary")
	}
}

// TestCheckCatchesMismatch: a summary that disagrees with the parsed verdicts is reported.
func TestCheckCatchesMismatch(t *testing.T) {
	r := ParseVerbose(strings.Replace(sample, "tests      6      6      4      2", "tests      6      6      5      1", 1))
	if r.Check() == nil {
		t.Fatal("Check accepted a summary with a different failure count")
	}
}

// TestParseRecordedTgt parses a full recorded run against tgt 1.0.85 with libiscsi 1.19: 230 tests,
// and the parse agrees with CUnit's summary (221 "passed" of which 87 printed [SKIPPED], 9 failed).
func TestParseRecordedTgt(t *testing.T) {
	b, err := os.ReadFile("testdata/tgt-1.0.85-libiscsi-1.19.txt")
	if err != nil {
		t.Fatal(err)
	}
	r := ParseVerbose(string(b))
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	c := r.Counts()
	if len(r.Tests) != 230 || c[Failed] != 9 || c[Skipped] == 0 || c[Passed]+c[Skipped] != 221 {
		t.Fatalf("got %d tests, counts %v", len(r.Tests), c)
	}
	seen := map[string]bool{}
	for _, tr := range r.Tests {
		if seen[tr.Name] {
			t.Errorf("test %s parsed twice", tr.Name)
		}
		seen[tr.Name] = true
	}
}

func TestParseList(t *testing.T) {
	got := ParseList("ALL\nALL.Read10\nALL.Read10.Simple\nSCSI.Read10.Simple\nALL.iSCSITMF.LUNResetSimpleAsync\n", "ALL")
	if strings.Join(got, ",") != "Read10.Simple,iSCSITMF.LUNResetSimpleAsync" {
		t.Fatalf("got %q", got)
	}
}

func FuzzParseVerbose(f *testing.F) {
	f.Add(sample)
	f.Add("Suite: X\n  Test: Y ...FAILED\n    1. a.c:1  - x\n")
	f.Add("  Test: Y ...\npassed\n")
	f.Fuzz(func(t *testing.T, out string) {
		r := ParseVerbose(out)
		for _, tr := range r.Tests {
			switch tr.Outcome {
			case Passed, Failed, Skipped:
			default:
				t.Fatalf("test %q has outcome %q", tr.Name, tr.Outcome)
			}
			if len(tr.Output) > maxOutput+1 {
				t.Fatalf("test %q kept %d output lines", tr.Name, len(tr.Output))
			}
		}
		_ = r.Check()
	})
}

func TestOverlay(t *testing.T) {
	r := &Report{Tests: []TestResult{{Name: "Read10.Simple", Outcome: Passed}, {Name: "MultipathIO.Simple", Outcome: Skipped}}}
	r.Overlay(&Report{Tests: []TestResult{{Name: "MultipathIO.Simple", Outcome: Passed}, {Name: "MultipathIO.Reset", Outcome: Failed}}})
	want := []TestResult{{Name: "Read10.Simple", Outcome: Passed}, {Name: "MultipathIO.Simple", Outcome: Passed}, {Name: "MultipathIO.Reset", Outcome: Failed}}
	if len(r.Tests) != len(want) {
		t.Fatalf("got %d tests, want %d", len(r.Tests), len(want))
	}
	for i := range want {
		if r.Tests[i].Name != want[i].Name || r.Tests[i].Outcome != want[i].Outcome {
			t.Errorf("test %d = %s %s, want %s %s", i, r.Tests[i].Name, r.Tests[i].Outcome, want[i].Name, want[i].Outcome)
		}
	}
}
