package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Queue depths and sizes of the iSCSI figures.
const (
	smallIO = 4 << 10 // bytes per random request
	largeIO = 1 << 20 // bytes per sequential request
	// defaultSeqDepth is the queue depth of the 1 MiB sequential figures (-seq-depth): enough requests in
	// flight to keep the one TCP connection busy, as an initiator's readahead or writeback does. tgt does
	// best between 4 and 8 here; at 32 it falls to about half.
	defaultSeqDepth = 8
)

// figure is one measurement that can be run against any iSCSI target.
type figure struct {
	name string
	unit string
	goal Goal
	// warmCount is the request count of the warm-up run for count-driven tools (qemu-img bench), from
	// which the count of the measured runs is derived so that they last about Bench.Secs.
	warmCount int
	// measure runs once against t and returns the figure in unit and the command line it ran. count is
	// the request count for count-driven tools (0 means warm-up: use warmCount).
	measure func(ctx context.Context, b *Bench, t *target, f *figure, count int) (value float64, cmdline string, err error)
}

// iscsiFigures are the figures of every iSCSI target comparison.
func iscsiFigures(lunSize int64, seqDepth int) []*figure {
	return []*figure{
		randFigure("4 KiB random read, QD 1", lunSize, 1, false, Goal{}),
		randFigure("4 KiB random write, QD 1", lunSize, 1, true, Goal{}),
		randFigure("4 KiB random read, QD 32", lunSize, 32, false, Goal{Ratio: 1.5}),
		randFigure("4 KiB random write, QD 32", lunSize, 32, true, Goal{Ratio: 1.5}),
		{name: "4 KiB random read, QD 32 (iscsi-perf)", unit: "IOPS", goal: Goal{Ratio: 1.5}, measure: iscsiPerf(32, smallIO, true)},
		{name: fmt.Sprintf("1 MiB sequential read, QD %d (iscsi-perf)", seqDepth), unit: "MiB/s", goal: Goal{Ratio: 1.3}, measure: iscsiPerf(seqDepth, largeIO, false)},
		// The last two figures stay the qemu-img 1 MiB ones: loopbackGroup sets the read against iperf3.
		seqFigure(fmt.Sprintf("1 MiB sequential read, QD %d", seqDepth), seqDepth, false, Goal{Ratio: 1.3}),
		seqFigure(fmt.Sprintf("1 MiB sequential write, QD %d", seqDepth), seqDepth, true, Goal{Ratio: 1.3}),
	}
}

// randFigure is a 4 KiB scattered read or write figure of `qemu-img bench` at queue depth depth on a LUN of
// lunSize bytes, in IOPS.
func randFigure(name string, lunSize int64, depth int, write bool, goal Goal) *figure {
	warm := 2000 // about 0.1 to 0.5 s at QD 1
	if depth > 1 {
		warm = 10000
	}
	args := []string{"-d", strconv.Itoa(depth), "-s", strconv.Itoa(smallIO), "-S", strconv.FormatInt(scatterStep(lunSize, smallIO), 10)}
	if write {
		args = append(args, "-w")
	}
	return &figure{name: name, unit: "IOPS", goal: goal, warmCount: warm, measure: qemuImgBench(args, smallIO, false)}
}

// seqFigure is a 1 MiB sequential read or write figure of `qemu-img bench` at queue depth depth, in MiB/s.
func seqFigure(name string, depth int, write bool, goal Goal) *figure {
	args := []string{"-d", strconv.Itoa(depth), "-s", strconv.Itoa(largeIO)}
	if write {
		args = append(args, "-w")
	}
	return &figure{name: name, unit: "MiB/s", goal: goal, warmCount: 200, measure: qemuImgBench(args, largeIO, true)}
}

// scatterStep returns the byte step for `qemu-img bench -S` that makes its offsets jump all over a LUN of
// lunSize bytes. qemu-img bench (7.2) has no random mode: request k goes to (k*step) mod size. With step
// = io*P and P coprime to the number of io-sized blocks, that visits every block once per pass in a
// scattered order; P near 0.618 of the block count (the golden ratio) spreads consecutive requests
// furthest apart. The order is fixed, not random, which is enough to defeat sequential-access shortcuts.
func scatterStep(lunSize int64, io int) int64 {
	blocks := lunSize / int64(io)
	if blocks < 2 {
		return int64(io)
	}
	p := int64(float64(blocks) * 0.6180339887)
	for gcd(p, blocks) != 1 {
		p++
	}
	return p * int64(io)
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// qemuImgBench returns a measure func running `qemu-img bench -f raw -c COUNT args URL` (libiscsi through
// qemu's block layer, the initiator of a VM host). The result is requests/s, or MiB/s when mibs is set.
func qemuImgBench(args []string, io int, mibs bool) func(context.Context, *Bench, *target, *figure, int) (float64, string, error) {
	return func(ctx context.Context, b *Bench, t *target, f *figure, count int) (float64, string, error) {
		if count == 0 {
			count = f.warmCount
		}
		argv := append([]string{"bench", "-f", "raw", "-c", strconv.Itoa(count)}, args...)
		argv = append(argv, t.URL)
		r, err := run(ctx, runTimeout(b), "", "qemu-img", argv...)
		if err != nil {
			return 0, r.cmdline, err
		}
		secs, err := parseQemuImgBench(r.stdout)
		if err != nil {
			return 0, r.cmdline, err
		}
		rate := float64(count) / secs
		if mibs {
			rate = rate * float64(io) / (1 << 20)
		}
		return rate, r.cmdline, nil
	}
}

// iscsiPerf returns a measure func running libiscsi's own iscsi-perf for b.Secs (whole seconds) with
// depth requests of io bytes in flight, at random offsets (from random()) or sequential ones; reads only.
// The random one cross-checks the qemu-img figure with a truly random pattern; both cross-check qemu's
// block layer (which, for instance, asks GET LBA STATUS before large reads from a thin LUN).
// The result is requests/s, or MiB/s for sequential runs.
func iscsiPerf(depth, io int, random bool) func(context.Context, *Bench, *target, *figure, int) (float64, string, error) {
	return func(ctx context.Context, b *Bench, t *target, f *figure, count int) (float64, string, error) {
		if t.blockSize == 0 {
			r, err := run(ctx, 20*time.Second, "", "iscsi-readcapacity16", t.URL)
			if err != nil {
				return 0, r.cmdline, err
			}
			if t.blockSize, err = parseReadCapacity16(r.stdout); err != nil {
				return 0, r.cmdline, err
			}
		}
		if io%t.blockSize != 0 {
			return 0, "", fmt.Errorf("logical block size %d does not divide %d", t.blockSize, io)
		}
		secs := max(1, int(math.Round(b.Secs)))
		args := []string{"-m", strconv.Itoa(depth), "-b", strconv.Itoa(io / t.blockSize)}
		if random {
			args = append(args, "-r")
		}
		args = append(args, "-t", strconv.Itoa(secs), t.URL)
		r, err := run(ctx, runTimeout(b), "", "iscsi-perf", args...)
		if err != nil {
			return 0, r.cmdline, err
		}
		iops, err := parseIscsiPerf(r.stdout + r.stderr)
		if err != nil || random {
			return iops, r.cmdline, err
		}
		return iops * float64(io) / (1 << 20), r.cmdline, nil
	}
}

// runTimeout bounds one measurement: generous against a slow system, short against a hung one.
func runTimeout(b *Bench) time.Duration {
	return time.Duration(10*b.Secs*float64(time.Second)) + 20*time.Second
}

// countFor returns the request count that makes a run at rate requests/s last secs, within bounds that
// keep the run long enough to mean something and short enough to end.
func countFor(rate, secs float64) int {
	if math.IsNaN(rate) || rate <= 0 {
		return 100
	}
	return int(min(max(rate*secs, 100), 50e6))
}

// loopbackGroup compares gatewayd with tgt over loopback TCP, each exporting its own 1 GiB file in
// /dev/shm, and measures the loopback TCP ceiling with iperf3 for context.
func loopbackGroup(ctx context.Context, b *Bench) (*Table, error) {
	t := &Table{
		Title: "iSCSI over loopback: gatewayd vs tgt",
		Intro: fmt.Sprintf("One target each, one %d MiB LUN each, backed by a file in %s filled with data beforehand "+
			"(no holes). Initiators: `qemu-img bench` (qemu's libiscsi block driver; its 4 KiB \"random\" pattern is a "+
			"fixed scatter, see -S in the commands: qemu-img bench has no random mode) and libiscsi's `iscsi-perf` "+
			"(truly random reads). Loopback TCP ceiling: `iperf3`, one stream, like the one iSCSI connection, with "+
			"its default 128 KiB writes and with 1 MiB writes.",
			b.LUNSize>>20, b.ShmDir),
		Ours: "gatewayd", Peer: "tgt",
	}
	figs := iscsiFigures(b.LUNSize, b.SeqDepth)

	files := map[string]string{}
	for _, who := range []string{"gatewayd", "tgt"} {
		path := filepath.Join(b.ShmDir, fmt.Sprintf("opensan-bench-%s-%d.img", who, os.Getpid()))
		b.Logf("filling %s (%d MiB)", path, b.LUNSize>>20)
		if err := fillFile(path, b.LUNSize); err != nil {
			return t, err
		}
		defer os.Remove(path)
		files[who] = path
	}

	var ours, peer *target
	oursErr := b.GatewaydErr
	if oursErr == nil {
		ours, oursErr = startGatewayd(ctx, b.Gatewayd, files["gatewayd"])
	}
	defer ours.stop()
	if oursErr != nil {
		b.Logf("gatewayd: %v", oursErr)
	}
	peer, peerErr := startTgt(ctx, files["tgt"])
	defer peer.stop()
	if peerErr != nil {
		b.Logf("tgt: %v", peerErr)
	}
	for _, s := range []*target{ours, peer} {
		if s != nil {
			for _, c := range s.Setup {
				t.addCommand(c, c)
			}
		}
	}

	iperf, iperfErr := startIperf3(ctx)
	defer iperf.stop()

	// Two TCP ceilings: iperf3 as it comes (128 KiB writes), the reference the goals were set against, and
	// iperf3 -l 1M, one write per 1 MiB like a target answering 1 MiB reads, which gets much further.
	ceilings := []struct {
		name string
		args []string
		mibs []float64
		pct  map[string][]float64
		now  float64
	}{
		{name: "iperf3", args: nil},
		{name: "iperf3 -l 1M", args: []string{"-l", "1M"}},
	}
	for i := range ceilings {
		ceilings[i].pct = map[string][]float64{}
	}
	seqRead := figs[len(figs)-2] // 1 MiB sequential read (qemu-img), set against iperf3

	cmp := &comparison{ours: ours, peer: peer, oursErr: oursErr, peerErr: peerErr, figs: figs}
	cmp.beforeRound = func(round int) {
		for i := range ceilings {
			c := &ceilings[i]
			c.now = math.NaN()
			if iperfErr != nil {
				continue
			}
			v, cmdline, err := iperf.measure(ctx, b, c.args...)
			t.addCommand(c.name, cmdline)
			if err != nil {
				iperfErr = err
				continue
			}
			c.now = v
			if round > 0 {
				c.mibs = append(c.mibs, v)
			}
		}
	}
	cmp.onSample = func(f *figure, s *target, v float64) {
		for _, c := range ceilings {
			if f == seqRead && !math.IsNaN(c.now) {
				c.pct[s.Name] = append(c.pct[s.Name], 100*v/c.now)
			}
		}
	}
	rows, err := cmp.run(ctx, b, t) // on error (the -max limit), report the rounds done so far
	readRow := slices.Index(figs, seqRead)
	t.Notes = append(t.Notes, peakMemory(ours, peer)...)
	t.Rows = rows
	for i, c := range ceilings {
		goal := Goal{}
		if i == 0 {
			goal.Ours = 70
		}
		t.Rows = append(t.Rows, Row{
			Figure: fmt.Sprintf("1 MiB sequential read as %% of `%s` (same round)", c.name),
			Unit:   "%",
			Ours:   Series{Samples: c.pct["gatewayd"], Err: rows[readRow].Ours.Err},
			Peer:   Series{Samples: c.pct["tgt"], Err: rows[readRow].Peer.Err},
			Goal:   goal,
		})
	}
	if iperfErr != nil {
		t.Notes = append(t.Notes, "iperf3 failed: "+oneLine(iperfErr.Error(), 300))
	}
	for _, c := range ceilings {
		if s := Summarize(c.mibs); s.N > 0 {
			t.Notes = append(t.Notes, fmt.Sprintf("Loopback TCP ceiling, `%s`, one stream: %s MiB/s (%s–%s) = %.2f GB/s.",
				c.name, formatValue(s.Median), formatValue(s.Min), formatValue(s.Max), s.Median*(1<<20)/1e9))
		}
	}
	t.Notes = append(t.Notes,
		"MiB/s = 2^20 bytes per second. IOPS = requests per second as timed by the initiator, after login.",
		"4 KiB writes are plain WRITE commands with the write cache on (no FUA, no SYNCHRONIZE CACHE).",
	)
	return t, err
}

// comparison measures figs on two targets in turns: a warm-up round that sizes the count-driven runs,
// then b.Rounds measured rounds; within a round each figure runs on both targets back to back, the
// order flipping every round. ours or peer may be nil (with oursErr or peerErr saying why): the other is
// still measured. Groups comparing other targets (RAID arrays over iSCSI, ...) reuse it.
type comparison struct {
	ours, peer       *target
	oursErr, peerErr error
	figs             []*figure
	// beforeRound, if set, runs at the start of each round (round 0 is the warm-up).
	beforeRound func(round int)
	// onSample, if set, sees every measured (non-warm-up) sample.
	onSample func(f *figure, s *target, v float64)
}

// run returns one row per figure.
func (c *comparison) run(ctx context.Context, b *Bench, t *Table) ([]Row, error) {
	rows := make([]Row, len(c.figs))
	counts := map[*figure]map[string]int{}
	for i, f := range c.figs {
		rows[i] = Row{Figure: f.name, Unit: f.unit, Goal: f.goal}
		counts[f] = map[string]int{}
		if c.oursErr != nil {
			rows[i].Ours.Err = c.oursErr.Error()
		}
		if c.peerErr != nil {
			rows[i].Peer.Err = c.peerErr.Error()
		}
	}
	for round := 0; round <= b.Rounds; round++ {
		if ctx.Err() != nil {
			return rows, ctx.Err()
		}
		b.Logf("round %d of %d%s", round, b.Rounds, map[bool]string{true: " (warm-up)"}[round == 0])
		if c.beforeRound != nil {
			c.beforeRound(round)
		}
		for i, f := range c.figs {
			order := []*target{c.ours, c.peer}
			if round%2 == 1 {
				order = []*target{c.peer, c.ours}
			}
			for _, s := range order {
				if s == nil {
					continue
				}
				series := &rows[i].Ours
				if s == c.peer {
					series = &rows[i].Peer
				}
				if series.Err != "" && len(series.Samples) == 0 && round > 0 {
					continue // failed in the warm-up or every round so far: do not wait for it again
				}
				if s.d.exited() {
					series.Err = fmt.Sprintf("%s exited: %v\n%s", s.Name, s.d.err, lastLines(s.d.out.String(), 8))
					continue
				}
				v, cmdline, err := f.measure(ctx, b, s, f, counts[f][s.Name])
				if cmdline != "" {
					t.addCommand(f.name+" on "+s.Name, cmdline)
				}
				if err != nil {
					series.Err = err.Error()
					b.Logf("%s, %s: %v", f.name, s.Name, err)
					continue
				}
				if b.Verbose {
					b.Logf("%s, %s: %s %s", f.name, s.Name, formatValue(v), f.unit)
				}
				if round == 0 {
					counts[f][s.Name] = countFor(perSecond(v, f), b.Secs)
					continue
				}
				series.Samples = append(series.Samples, v)
				if c.onSample != nil {
					c.onSample(f, s, v)
				}
			}
		}
	}
	return rows, nil
}

// peakMemory returns a note on the peak resident set of each running target.
func peakMemory(targets ...*target) []string {
	var parts []string
	for _, t := range targets {
		if p := peakPart(t); p != "" {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return nil
	}
	return []string{"Peak resident set (VmHWM) after the runs: " + strings.Join(parts, ", ") + "."}
}

// peakPart returns "NAME 12.3 MiB", the peak resident set of a running target, or "".
func peakPart(t *target) string {
	if t == nil || t.d.exited() {
		return ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", t.d.cmd.Process.Pid))
	if err != nil {
		return ""
	}
	kb, err := statusKB(string(b), "VmHWM")
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%s %.1f MiB", t.Name, float64(kb)/1024)
}

// perSecond converts a measured figure back to requests per second (the unit of -c counts).
func perSecond(v float64, f *figure) float64 {
	if f.unit == "MiB/s" {
		return v * (1 << 20) / largeIO
	}
	return v
}

// iperf3Server is a persistent `iperf3 -s` on a free loopback port.
type iperf3Server struct {
	port int
	d    *daemon
}

func startIperf3(ctx context.Context) (*iperf3Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	// --forceflush: without it the banner waits in a stdio buffer while stdout is a pipe.
	d, err := startDaemon("iperf3", "iperf3", "-s", "--forceflush", "-B", "127.0.0.1", "-p", strconv.Itoa(port))
	if err != nil {
		return nil, err
	}
	s := &iperf3Server{port: port, d: d}
	// A bare TCP probe would count as a failed test on the server; poll until it prints its banner.
	deadline := time.Now().Add(startTimeout)
	for d.out.String() == "" {
		if d.exited() || time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("iperf3 -s did not start: %v\n%s", d.err, d.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, nil
}

func (s *iperf3Server) stop() {
	if s != nil {
		s.d.stop()
	}
}

// measure runs one iperf3 client with extra args for b.Secs (whole seconds, at least 1) and returns
// MiB/s received.
func (s *iperf3Server) measure(ctx context.Context, b *Bench, extra ...string) (float64, string, error) {
	if s == nil {
		return 0, "", errors.New("no iperf3 server")
	}
	secs := max(1, int(math.Round(b.Secs)))
	args := append([]string{"-c", "127.0.0.1", "-p", strconv.Itoa(s.port), "-t", strconv.Itoa(secs), "-J"}, extra...)
	r, err := run(ctx, runTimeout(b), "", "iperf3", args...)
	if err != nil {
		return 0, r.cmdline, err
	}
	v, err := parseIperf3([]byte(r.stdout))
	return v, r.cmdline, err
}
