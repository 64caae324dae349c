// Command bench measures gatewayd side by side with reference peers and writes BENCHMARKS.md.
//
//	go run -tags isal ./qa/bench -out BENCHMARKS.md   # about 7 minutes on 2 cores; -quick for a smoke run
//	go run ./qa/bench -groups raid-parity,raid-array -out /tmp/x.md
//
// It needs, from Debian: tgt (the peer), qemu-utils and qemu-block-extra (qemu-img bench over libiscsi),
// libiscsi-bin (iscsi-perf, iscsi-readcapacity16) and iperf3, and it writes its LUN files to /dev/shm. The
// parity figures' peer, Intel ISA-L, is called through cgo and built in only with the isal build tag
// (libisal-dev and a C compiler; see qa/bench/isal); without it ISA-L's column reads as failed.
// It builds ./cmd/gatewayd itself unless -gatewayd names a binary. The exit status is 1 when a group
// failed or a figure could not be measured on some system; missed goals are in the report, not the status.
//
// The program is a list of figure groups (see groups below). Each group measures its figures for "ours"
// (gatewayd, or a gateway package) and for a peer (Debian's tgt, or a reference library), interleaving the
// two over several rounds so that load from elsewhere on the machine hits both alike, and returns a Table
// of per-round samples. The report gives the median and the min–max spread of each figure and the ratio
// ours/peer next to the goal for it.
//
// Adding a figure group is adding one function to groups. A group comparing two iSCSI targets (a RAID
// array exported by gatewayd against md under tgt, say) starts them and hands them, with a list of
// figures (iscsiFigures or its own), to a comparison; a group comparing code (parity GB/s against ISA-L)
// fills the Rows of its Table with per-round samples itself.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"opensan/qa/bench/isal"
)

// groups lists the figure groups in report order. A group measures everything it needs (it starts and
// stops its own daemons) and returns its table; a failed group is reported as such and the others still run.
var groups = []Group{
	{Name: "iscsi-loopback", Run: loopbackGroup},
	{Name: "raid-parity", Run: parityGroup},
	{Name: "raid-array", Run: arrayGroup},
	{Name: "raid-rebuild", Run: rebuildGroup},
	{Name: "raid-iscsi", Run: raidISCSIGroup},
}

// Group is one set of figures that share a setup.
type Group struct {
	// Name selects the group with -groups.
	Name string
	// Run measures the group's figures. It must bound every external command in time and stop every
	// process it started before it returns.
	Run func(ctx context.Context, b *Bench) (*Table, error)
}

// Bench is what every group gets: the options and a place to log progress.
type Bench struct {
	// Rounds is the number of measured repeats of each figure per system (after one warm-up round).
	Rounds int
	// Secs is the target duration of one measurement, in seconds.
	Secs float64
	// SeqDepth is the queue depth of the 1 MiB sequential figures.
	SeqDepth int
	// LUNSize is the size of each backing file, in bytes.
	LUNSize int64
	// ShmDir holds the backing files (tmpfs, so the disk is out of the picture).
	ShmDir string
	// Gatewayd is the gatewayd binary; empty when it could not be built (GatewaydErr says why).
	Gatewayd    string
	GatewaydErr error
	// Root is the module root (where go.mod is).
	Root string
	// Verbose logs every command and its result to stderr.
	Verbose bool
}

// Logf prints a progress line on stderr.
func (b *Bench) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func main() {
	out := flag.String("out", "BENCHMARKS.md", "`FILE` to write the report to (\"-\" for stdout)")
	rounds := flag.Int("rounds", 5, "measured rounds per figure and system (a warm-up round comes on top)")
	secs := flag.Float64("secs", 2, "target `SECONDS` per measurement")
	size := flag.Int64("size-mib", 1024, "size of each backing file in /dev/shm, `MiB`")
	seqDepth := flag.Int("seq-depth", defaultSeqDepth, "queue `DEPTH` of the 1 MiB sequential figures")
	gw := flag.String("gatewayd", "", "gatewayd binary `PATH` (default: go build ./cmd/gatewayd into a temporary directory)")
	only := flag.String("groups", "", "comma-separated group `NAMES` to run, of "+groupNames()+" (default all)")
	quick := flag.Bool("quick", false, "smoke run: 1 round of 0.5 s per figure, 256 MiB LUNs (numbers are not meaningful)")
	verbose := flag.Bool("v", false, "log every figure as it is measured")
	limit := flag.Duration("max", 15*time.Minute, "stop measuring after `DURATION` and write what was measured, marked incomplete")
	flag.Parse()
	if *quick {
		*rounds, *secs, *size = 1, 0.5, 256
	}
	if *rounds < 1 || *secs <= 0 || *size < 16 || *seqDepth < 1 {
		fmt.Fprintln(os.Stderr, "bench: -rounds must be >= 1, -secs > 0, -size-mib >= 16, -seq-depth >= 1")
		os.Exit(2)
	}

	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(sigCtx, *limit)
	defer cancel()

	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	b := &Bench{Rounds: *rounds, Secs: *secs, SeqDepth: *seqDepth, LUNSize: *size << 20, ShmDir: "/dev/shm", Root: root, Verbose: *verbose}
	tmp, err := os.MkdirTemp("", "opensan-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(tmp)
	if *gw != "" {
		b.Gatewayd, err = filepath.Abs(*gw)
		if err == nil {
			_, err = os.Stat(b.Gatewayd)
		}
		if err != nil {
			b.Gatewayd, b.GatewaydErr = "", fmt.Errorf("-gatewayd: %w", err)
		}
	} else {
		b.Logf("building ./cmd/gatewayd")
		b.Gatewayd, b.GatewaydErr = buildGatewayd(ctx, root, tmp)
	}
	if b.GatewaydErr != nil {
		b.Logf("gatewayd unavailable, measuring the peers only: %v", b.GatewaydErr)
	}

	rep := &Report{Started: time.Now(), Machine: describeMachine(ctx, root), Args: os.Args[1:], Rounds: b.Rounds, Secs: b.Secs}
	if isal.Available {
		rep.Tags = "isal"
	}
	want := map[string]bool{}
	for _, g := range strings.Split(*only, ",") {
		if g != "" {
			want[g] = true
		}
	}
	for g := range want {
		if !slices.ContainsFunc(groups, func(x Group) bool { return x.Name == g }) {
			fmt.Fprintf(os.Stderr, "bench: -groups: no group %q; the groups are %s\n", g, groupNames())
			os.Exit(2)
		}
	}
	failed := false
	for _, g := range groups {
		if len(want) > 0 && !want[g.Name] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		b.Logf("group %s", g.Name)
		t, err := g.Run(ctx, b)
		if err != nil {
			failed = true
			b.Logf("group %s failed: %v", g.Name, err)
			if t == nil {
				t = &Table{Title: g.Name}
			}
			t.Err = err.Error()
		}
		for _, r := range t.Rows {
			if r.Ours.Err != "" || r.Peer.Err != "" {
				failed = true
			}
		}
		rep.Tables = append(rep.Tables, t)
	}
	rep.Finished = time.Now()
	rep.LoadEnd = loadAvg()
	if sigCtx.Err() != nil {
		fmt.Fprintln(os.Stderr, "bench: interrupted; no report written")
		os.Exit(1)
	}
	if ctx.Err() != nil {
		rep.Incomplete = fmt.Sprintf("the bench hit its -max %v limit; figures after that point are missing", *limit)
		failed = true
	}

	text := rep.Markdown()
	if *out == "-" {
		os.Stdout.WriteString(text)
	} else if err := os.WriteFile(*out, []byte(text), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	} else {
		b.Logf("wrote %s", *out)
	}
	if failed {
		os.Exit(1)
	}
}

// groupNames lists the group names for messages.
func groupNames() string {
	names := make([]string, len(groups))
	for i, g := range groups {
		names[i] = g.Name
	}
	return strings.Join(names, ", ")
}

// moduleRoot returns the directory holding go.mod, searched upwards from the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found above the working directory; run the bench from the repository")
		}
		dir = parent
	}
}
