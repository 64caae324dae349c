package conformance

import (
	"strings"
	"testing"
	"time"
)

func TestWriteMarkdown(t *testing.T) {
	gw := &Run{Target: "gatewayd", Report: ParseVerbose(sample), Elapsed: 3 * time.Second}
	ref := &Run{Target: "tgt", Report: ParseVerbose("Suite: GetLBAStatus\n  Test: Simple ...passed\n")}
	listed := []string{"CompareAndWrite.Simple", "GetLBAStatus.Simple", "GetLBAStatus.BeyondEol"}
	var b strings.Builder
	if err := WriteMarkdown(&b, &Doc{Listed: listed, Runs: []*Run{gw, ref}, Libiscsi: "1.19"}); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| gatewayd |  | 1 | 1 | 1 | 0 | 3s |",
		"| tgt |  | 1 | 0 | 0 | 2 | 0s |",
		"| GetLBAStatus.BeyondEol | **FAIL** | not run | gatewayd: GET_LBA_STATUS successful but should have failed |",
		"| CompareAndWrite.Simple | skip | not run | gatewayd: COMPAREANDWRITE is not implemented. |",
		"## Failures on gatewayd",
		"test_get_lba_status_beyond_eol.c:38",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}
