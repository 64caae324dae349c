package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"

	"opensan/qa/bench/isal"
	"opensan/raid/parity"
)

// parityData is the number of data members of the parity figures: 8, as in ISA-L's own perf tests and
// md's raid6 benchmark at boot.
const parityData = 8

// parityCase is one parity figure: XOR (RAID5's P) or P+Q (RAID6) over parityData members of size bytes.
type parityCase struct {
	pq   bool
	size int
}

func (c parityCase) name() string {
	what := "XOR (P)"
	if c.pq {
		what = "P+Q"
	}
	return fmt.Sprintf("%s, %d data members x %s, one core", what, parityData, sizeName(c.size))
}

// sizeName prints a power-of-two byte count as KiB or MiB.
func sizeName(n int) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// inProcessSecs is the length of one in-process measurement (parity, array I/O): these run from cache or
// stream memory at a steady rate, so a quarter of the iSCSI figures' time is plenty.
func inProcessSecs(b *Bench) float64 { return max(0.1, b.Secs/4) }

// parityGroup sets raid/parity (klauspost/reedsolomon's GFNI/AVX-512 kernels with md's matrix) against
// Intel ISA-L's xor_gen and pq_gen, both on one pinned core, over the same data buffers.
func parityGroup(ctx context.Context, b *Bench) (*Table, error) {
	t := &Table{
		Title: "RAID parity on one core: raid/parity vs ISA-L",
		Intro: fmt.Sprintf("GB/s = 10^9 bytes of data members per second (parity bytes written are not counted, as in "+
			"ISA-L's figures). Both run on one goroutine locked to an OS thread pinned to one CPU "+
			"(sched_setaffinity), on the same 64-byte aligned buffers of random data: raid/parity's Encode "+
			"(github.com/klauspost/reedsolomon with md's P and Q rows, WithMaxGoroutines(1)) and ISA-L's "+
			"xor_gen / pq_gen called through cgo (qa/bench/isal, build tag isal) in a C loop, so the cgo call is "+
			"paid once per measurement. 64 KiB members stay in L2; 16 MiB members stream from RAM. Each "+
			"measurement lasts about %s s; after the warm-up both results are compared byte for byte.",
			formatValue(inProcessSecs(b))),
		Ours: "raid/parity", Peer: "ISA-L",
	}
	cases := []parityCase{{false, 64 << 10}, {true, 64 << 10}, {false, 16 << 20}, {true, 16 << 20}}
	if !isal.Available {
		t.Notes = append(t.Notes, "ISA-L not measured: "+isal.ErrUnavailable.Error()+".")
	}
	t.Notes = append(t.Notes, cpuFeatures())
	if v := dpkgVersion(ctx, "libisal2"); v != "" && isal.Available {
		t.Notes = append(t.Notes, "ISA-L: Debian's libisal2 "+v+" (xor_gen and pq_gen pick their AVX-512 versions at run time).")
	}

	// Process CPU time over wall time while measuring, per system: about 1.0 means one core did the work
	// (the garbage collector's background work would show up above it).
	var cpuTime, wallTime [2]time.Duration
	var firstErr error
	for _, c := range cases {
		if ctx.Err() != nil {
			return t, ctx.Err()
		}
		row := Row{Figure: c.name(), Unit: "GB/s", Goal: Goal{Ratio: 0.9}}
		err := onOneCore(func() error {
			return measureParity(ctx, b, c, &row, &cpuTime, &wallTime)
		})
		if err != nil && firstErr == nil {
			firstErr = err
		}
		t.Rows = append(t.Rows, row)
	}
	for i, who := range []string{t.Ours, t.Peer} {
		if wallTime[i] > 0 {
			t.Notes = append(t.Notes, fmt.Sprintf("Process CPU time / wall time while %s ran: %.3f.", who,
				cpuTime[i].Seconds()/wallTime[i].Seconds()))
		}
	}
	return t, firstErr
}

// cpuFeatures names the SIMD extensions the parity code can use on this CPU.
func cpuFeatures() string {
	var have []string
	for _, f := range []struct {
		name string
		ok   bool
	}{
		{"AVX2", cpu.X86.HasAVX2}, {"AVX-512F", cpu.X86.HasAVX512F}, {"AVX-512BW", cpu.X86.HasAVX512BW},
		{"AVX-512VL", cpu.X86.HasAVX512VL}, {"GFNI", cpu.X86.HasAVX512GFNI},
	} {
		if f.ok {
			have = append(have, f.name)
		}
	}
	if len(have) == 0 {
		return "CPU SIMD extensions: none of AVX2, AVX-512, GFNI."
	}
	return "CPU SIMD extensions: " + strings.Join(have, ", ") + "."
}

// dpkgVersion returns the installed version of a Debian package, or "".
func dpkgVersion(ctx context.Context, pkg string) string {
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Version}", pkg).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// onOneCore runs f on a new goroutine locked to its OS thread, the thread pinned to one CPU (the last the
// process may use). The goroutine exits still locked, so the pinned thread dies with it.
func onOneCore(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &set); err != nil {
			errc <- fmt.Errorf("sched_getaffinity: %w", err)
			return
		}
		last := -1
		for i := range len(set) * int(unsafe.Sizeof(set[0])) * 8 {
			if set.IsSet(i) {
				last = i
			}
		}
		var one unix.CPUSet
		one.Set(last)
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			errc <- fmt.Errorf("sched_setaffinity to CPU %d: %w", last, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// processCPU returns the CPU time (user and system) the whole process has used.
func processCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// alignedBuf returns n zero bytes starting on a 64-byte boundary.
func alignedBuf(n int) []byte {
	b := make([]byte, n+64)
	off := (64 - int(uintptr(unsafe.Pointer(&b[0]))%64)) % 64
	return b[off : off+n : off+n]
}

// measureParity measures case c on both systems over b.Rounds rounds after a warm-up that sizes the
// iteration counts, filling row. It runs on the pinned thread.
func measureParity(ctx context.Context, b *Bench, c parityCase, row *Row, cpuTime, wallTime *[2]time.Duration) error {
	r := rand.New(rand.NewPCG(uint64(c.size), 1))
	data := make([][]byte, parityData)
	for i := range data {
		data[i] = alignedBuf(c.size)
		fillRandom(r, data[i])
	}
	np := 1
	if c.pq {
		np = 2
	}
	outs := [2][][]byte{} // parity outputs of ours and of ISA-L, compared after the warm-up
	for s := range outs {
		for range np {
			outs[s] = append(outs[s], alignedBuf(c.size))
		}
	}
	var coder *parity.Coder
	var err error
	if c.pq {
		coder, err = parity.NewPQ(parityData)
	} else {
		coder, err = parity.NewP(parityData)
	}
	if err != nil {
		row.Ours.Err = err.Error()
		return err
	}
	shards := append(append([][]byte{}, data...), outs[0]...)
	ours := func(iters int) error {
		for range iters {
			if err := coder.Encode(shards); err != nil {
				return err
			}
		}
		return nil
	}
	peer := func(iters int) error {
		if c.pq {
			return isal.PQGen(data, outs[1][0], outs[1][1], iters)
		}
		return isal.XorGen(data, outs[1][0], iters)
	}
	systems := []struct {
		run    func(int) error
		series *Series
		iters  int
	}{{run: ours, series: &row.Ours}, {run: peer, series: &row.Peer}}
	if !isal.Available {
		row.Peer.Err = isal.ErrUnavailable.Error()
	}
	bytesPer := float64(parityData * c.size)
	secs := inProcessSecs(b)
	for round := 0; round <= b.Rounds; round++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		order := []int{0, 1}
		if round%2 == 1 {
			order = []int{1, 0}
		}
		for _, i := range order {
			s := &systems[i]
			if s.series.Err != "" {
				continue
			}
			if round == 0 {
				// Warm-up: double the count until a run lasts 50 ms, then size the measured runs.
				n := 1
				for {
					begin := time.Now()
					if err := s.run(n); err != nil {
						s.series.Err = err.Error()
						break
					}
					if d := time.Since(begin); d >= 50*time.Millisecond || n >= 1<<30 {
						s.iters = max(1, int(float64(n)*secs/d.Seconds()))
						break
					}
					n *= 2
				}
				continue
			}
			cpu0, begin := processCPU(), time.Now()
			if err := s.run(s.iters); err != nil {
				s.series.Err = err.Error()
				continue
			}
			wall := time.Since(begin)
			cpuTime[i] += processCPU() - cpu0
			wallTime[i] += wall
			s.series.Samples = append(s.series.Samples, bytesPer*float64(s.iters)/wall.Seconds()/1e9)
			if b.Verbose {
				b.Logf("%s, %s: %.1f GB/s", row.Figure, []string{"raid/parity", "ISA-L"}[i], s.series.Samples[len(s.series.Samples)-1])
			}
		}
		if round == 0 && row.Ours.Err == "" && row.Peer.Err == "" {
			for k := range outs[0] {
				if !bytes.Equal(outs[0][k], outs[1][k]) {
					err := fmt.Errorf("%s: raid/parity and ISA-L disagree on parity %d", row.Figure, k)
					row.Peer.Err = err.Error()
					return err
				}
			}
		}
	}
	if row.Ours.Err != "" {
		return errors.New(row.Ours.Err)
	}
	return nil
}
