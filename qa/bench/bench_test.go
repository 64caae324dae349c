package main

import (
	"math"
	"strings"
	"testing"
)

// Outputs captured from the tools on Debian 12 (qemu-img 7.2, libiscsi-bin 1.19, iperf 3.12).
const (
	qemuImgOut = "Sending 20000 read requests, 4096 bytes each, 32 in parallel (starting at offset 0, step size 663580672)\n" +
		"Run completed in 1.323 seconds.\n"
	iscsiPerfOut = "iscsi-perf version 0.1 - (c) 2014-2015 by Peter Lieven <pl@kamp.de>\n\n" +
		"connected to iscsi://127.0.0.1:23260/iqn.2026-11.org.opensan:bench/1\n" +
		"capacity is 2097152 blocks or 1073741824 byte (1024 MB)\n" +
		"performing RANDOM READ with 32 parallel requests\nFIXED transfer size of 8 blocks (4096 byte)\n" +
		"will run for 3 seconds.\n\n\n" +
		"00:00:01 - lba 946832, iops current 24007 (93 MB/s), iops average 22210 (86 MB/s), in_flight 32, busy 0        \r" +
		"iops average 23059 (90 MB/s)                                                        \n\nfinished.\n"
	readCapOut = "RETURNED LOGICAL BLOCK ADDRESS:2097151\nLOGICAL BLOCK LENGTH IN BYTES:512\n" +
		"P_TYPE:0 PROT_EN:0\nP_I_EXPONENT:0 LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT:0\n" +
		"LBPME:0 LBPRZ:0\nLOWEST ALIGNED LOGICAL BLOCK ADDRESS:0\nTotal size:1073741824\n"
	iperf3Out = `{"start":{"connected":[]},"intervals":[],"end":{"sum_sent":{"seconds":2.0,"bytes":3640655872,` +
		`"bits_per_second":14562623488},"sum_received":{"seconds":2.0001,"bytes":3640655872,"bits_per_second":14561895260.7}}}`
)

func TestParseQemuImgBench(t *testing.T) {
	s, err := parseQemuImgBench(qemuImgOut)
	if err != nil || s != 1.323 {
		t.Fatalf("parseQemuImgBench = %v, %v; want 1.323", s, err)
	}
	for _, bad := range []string{
		"",
		"Sending 20000 read requests\n",     // killed before the end
		"Run completed in 0.000 seconds.\n", // too short to give a rate
		qemuImgOut + "Run completed in 2.000 seconds.\n", // two runs: ambiguous
	} {
		if _, err := parseQemuImgBench(bad); err == nil {
			t.Errorf("parseQemuImgBench(%q) succeeded", bad)
		}
	}
}

func TestParseIscsiPerf(t *testing.T) {
	iops, err := parseIscsiPerf(iscsiPerfOut)
	if err != nil || iops != 23059 {
		t.Fatalf("parseIscsiPerf = %v, %v; want the final average 23059", iops, err)
	}
	// Interrupted runs have progress averages but no summary: not a figure.
	cut := iscsiPerfOut[:strings.Index(iscsiPerfOut, "\r")]
	if _, err := parseIscsiPerf(cut); err == nil {
		t.Errorf("parseIscsiPerf accepted a run without \"finished.\"")
	}
	if _, err := parseIscsiPerf("finished.\n"); err == nil {
		t.Errorf("parseIscsiPerf accepted output without an average")
	}
}

func TestParseReadCapacity16(t *testing.T) {
	n, err := parseReadCapacity16(readCapOut)
	if err != nil || n != 512 {
		t.Fatalf("parseReadCapacity16 = %v, %v; want 512", n, err)
	}
	for _, bad := range []string{"", "LOGICAL BLOCK LENGTH IN BYTES:0\n", "LOGICAL BLOCK LENGTH IN BYTES:520\n", "LOGICAL BLOCK LENGTH IN BYTES:131072\n"} {
		if _, err := parseReadCapacity16(bad); err == nil {
			t.Errorf("parseReadCapacity16(%q) succeeded", bad)
		}
	}
}

func TestParseIperf3(t *testing.T) {
	v, err := parseIperf3([]byte(iperf3Out))
	want := 14561895260.7 / 8 / (1 << 20)
	if err != nil || math.Abs(v-want) > 1e-6 {
		t.Fatalf("parseIperf3 = %v, %v; want %v MiB/s", v, err, want)
	}
	for _, bad := range []string{"", "{}", `{"error":"unable to connect to server: Connection refused"}`, "not json"} {
		if _, err := parseIperf3([]byte(bad)); err == nil {
			t.Errorf("parseIperf3(%q) succeeded", bad)
		}
	}
}

func TestSummarize(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want Summary
	}{
		{nil, Summary{}},
		{[]float64{5}, Summary{1, 5, 5, 5}},
		{[]float64{3, 1, 2}, Summary{3, 2, 1, 3}},
		{[]float64{4, 1, 3, 2}, Summary{4, 2.5, 1, 4}},
		{[]float64{10, 1, 7, 7, 100}, Summary{5, 7, 1, 100}},
	} {
		in := append([]float64(nil), c.in...)
		if got := Summarize(c.in); got != c.want {
			t.Errorf("Summarize(%v) = %+v, want %+v", c.in, got, c.want)
		}
		for i := range in {
			if in[i] != c.in[i] {
				t.Errorf("Summarize reordered its input: %v, was %v", c.in, in)
			}
		}
	}
}

// scatterStep must make qemu-img bench's (k*step) mod size visit every 4 KiB block once per pass, and
// consecutive requests must land far apart.
func TestScatterStep(t *testing.T) {
	for _, size := range []int64{1 << 30, 256 << 20, 3 * 5 * 7 * 4096, 4096 * 1000} {
		step := scatterStep(size, 4096)
		if step%4096 != 0 {
			t.Fatalf("size %d: step %d is not a multiple of 4096", size, step)
		}
		blocks := size / 4096
		seen := make([]bool, blocks)
		off := int64(0)
		for k := int64(0); k < blocks; k++ {
			if seen[off/4096] {
				t.Fatalf("size %d, step %d: block %d visited twice within one pass (request %d)", size, step, off/4096, k)
			}
			seen[off/4096] = true
			next := (off + step) % size
			if d := min((next-off+size)%size, (off-next+size)%size); k < 100 && d < size/8 {
				t.Fatalf("size %d, step %d: requests %d and %d only %d bytes apart", size, step, k, k+1, d)
			}
			off = next
		}
	}
}

func TestCountFor(t *testing.T) {
	for _, c := range []struct {
		rate, secs float64
		want       int
	}{
		{20000, 2, 40000},
		{10, 2, 100},         // floor: a run of a few requests means nothing
		{math.NaN(), 2, 100}, // failed warm-up
		{1e9, 2, 50e6},       // ceiling
	} {
		if got := countFor(c.rate, c.secs); got != c.want {
			t.Errorf("countFor(%v, %v) = %d, want %d", c.rate, c.secs, got, c.want)
		}
	}
}

func TestGoalCells(t *testing.T) {
	row := func(ours, peer []float64, g Goal) Row {
		return Row{Figure: "f", Unit: "IOPS", Ours: Series{Samples: ours}, Peer: Series{Samples: peer}, Goal: g}
	}
	for _, c := range []struct {
		r         Row
		goal, met string
	}{
		{row([]float64{30, 31, 29}, []float64{20, 19, 21}, Goal{Ratio: 1.5}), "≥ 1.5x", "yes"},
		{row([]float64{29, 29, 29}, []float64{20, 20, 20}, Goal{Ratio: 1.5}), "≥ 1.5x", "**no**"},
		{row(nil, []float64{20}, Goal{Ratio: 1.5}), "≥ 1.5x", "?"},
		{row([]float64{71}, []float64{50}, Goal{Ours: 70}), "gatewayd ≥ 70.0 IOPS", "yes"},
		{row([]float64{69}, []float64{90}, Goal{Ours: 70}), "gatewayd ≥ 70.0 IOPS", "**no**"},
		{row([]float64{1}, []float64{2}, Goal{}), "—", ""},
		{row([]float64{65}, []float64{100}, Goal{Ratio: 0.8 * 4 / 5}), "≥ 0.64x", "yes"},
		{row([]float64{2}, []float64{1}, Goal{Ratio: 2}), "≥ 2x", "yes"},
	} {
		goal, met := c.r.goalCells("gatewayd")
		if goal != c.goal || met != c.met {
			t.Errorf("goalCells(%+v) = %q, %q; want %q, %q", c.r, goal, met, c.goal, c.met)
		}
	}
}

func TestMarkdown(t *testing.T) {
	tab := &Table{Title: "T", Ours: "gatewayd", Peer: "tgt", Rows: []Row{
		{Figure: "4 KiB random read, QD 32", Unit: "IOPS", Ours: Series{Samples: []float64{30000, 32000, 31000}},
			Peer: Series{Samples: []float64{20000, 19000, 21000}}, Goal: Goal{Ratio: 1.5}},
		{Figure: "1 MiB sequential write", Unit: "MiB/s", Ours: Series{Err: "gatewayd exited: signal: killed\npanic: x"},
			Peer: Series{Samples: []float64{420}}},
	}}
	tab.addCommand("a", "qemu-img bench -c 10")
	tab.addCommand("a", "qemu-img bench -c 20")
	rep := &Report{Rounds: 3, Secs: 2, Tables: []*Table{tab}}
	md := rep.Markdown()
	for _, want := range []string{
		"| 4 KiB random read, QD 32 | 31000 IOPS (30000–32000) | 20000 IOPS (19000–21000) | 1.55x (1.48–1.68) | ≥ 1.5x | yes |",
		"| 1 MiB sequential write | failed (see Failures) | 420 MiB/s | — | — |  |",
		"  gatewayd exited: signal: killed\n  panic: x\n",
		"qemu-img bench -c 20\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "-c 10") {
		t.Errorf("report keeps the superseded command line:\n%s", md)
	}
}

func TestCPUModel(t *testing.T) {
	info := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n"
	if got := cpuModel(info); got != "AMD EPYC 7B13" {
		t.Errorf("cpuModel = %q", got)
	}
	if got := cpuModel("processor : 0\n"); got != "unknown" {
		t.Errorf("cpuModel without model name = %q", got)
	}
}

func TestShellLine(t *testing.T) {
	got := shellLine("qemu-img", []string{"bench", "-c", "10", "iscsi://h/iqn.x:y/1", "a b", "it's"})
	want := `qemu-img bench -c 10 iscsi://h/iqn.x:y/1 'a b' 'it'\''s'`
	if got != want {
		t.Errorf("shellLine = %s, want %s", got, want)
	}
}

// The parsers read the output of external programs: they must not panic on anything and must only ever
// return usable figures.
func FuzzParseQemuImgBench(f *testing.F) {
	f.Add(qemuImgOut)
	f.Add("Run completed in 0.000 seconds.\n")
	f.Fuzz(func(t *testing.T, s string) {
		if v, err := parseQemuImgBench(s); err == nil && !(v > 0) {
			t.Fatalf("parseQemuImgBench(%q) = %v without error", s, v)
		}
	})
}

func FuzzParseIscsiPerf(f *testing.F) {
	f.Add(iscsiPerfOut)
	f.Add("iops average 99999999999999999999999 (1 MB/s)\nfinished.")
	f.Fuzz(func(t *testing.T, s string) {
		if v, err := parseIscsiPerf(s); err == nil && (math.IsNaN(v) || math.IsInf(v, 0) || v < 0) {
			t.Fatalf("parseIscsiPerf(%q) = %v without error", s, v)
		}
	})
}

func FuzzParseReadCapacity16(f *testing.F) {
	f.Add(readCapOut)
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := parseReadCapacity16(s); err == nil && (n < 512 || n&(n-1) != 0) {
			t.Fatalf("parseReadCapacity16(%q) = %d without error", s, n)
		}
	})
}

func FuzzParseIperf3(f *testing.F) {
	f.Add([]byte(iperf3Out))
	f.Add([]byte(`{"end":{"sum_received":{"seconds":1,"bits_per_second":1e400}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, err := parseIperf3(b); err == nil && !(v > 0 && !math.IsInf(v, 0)) {
			t.Fatalf("parseIperf3(%q) = %v without error", b, v)
		}
	})
}

func TestStatusKB(t *testing.T) {
	status := "Name:\tgatewayd\nVmHWM:\t   52340 kB\nVmRSS:\t   40000 kB\n"
	if n, err := statusKB(status, "VmHWM"); err != nil || n != 52340 {
		t.Errorf("statusKB VmHWM = %d, %v; want 52340", n, err)
	}
	for _, bad := range []string{"", "VmHWM:\t52340\n", "VmHWM:\t-1 kB\n", "VmHWM:\tx kB\n"} {
		if _, err := statusKB(bad, "VmHWM"); err == nil {
			t.Errorf("statusKB(%q) succeeded", bad)
		}
	}
}

func FuzzStatusKB(f *testing.F) {
	f.Add("VmHWM:\t   52340 kB\n")
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := statusKB(s, "VmHWM"); err == nil && n < 0 {
			t.Fatalf("statusKB(%q) = %d without error", s, n)
		}
	})
}
