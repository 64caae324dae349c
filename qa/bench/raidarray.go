package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"opensan/gateway/block"
	"opensan/raid/array"
	"opensan/raid/md"
)

// arrayDepth is how many full-stripe requests the array figures keep in flight, and the raw figures the
// same number of member-wide requests. On the 2-core machine the engine did best at 2 (at 1 about a quarter
// less; 4 and 8 no better, RAID6 worse), and so did the raw members.
const arrayDepth = 2

// arrayGeometry is a RAID level and member count of the in-process figures.
type arrayGeometry struct {
	level, n int
}

func (g arrayGeometry) String() string { return fmt.Sprintf("RAID%d, %d members", g.level, g.n) }

// parity is the number of parity chunks per stripe.
func (g arrayGeometry) parity() int {
	if g.level == md.LevelRAID6 {
		return 2
	}
	return 1
}

// arrayGeometries are the arrays of the in-process figures: both with four data chunks per stripe.
var arrayGeometries = []arrayGeometry{{md.LevelRAID5, 5}, {md.LevelRAID6, 6}}

// arrayMemberData is the data area of each in-process member, in bytes: 1/8 of a LUN (128 MiB by default).
func arrayMemberData(b *Bench) int64 { return max(16<<20, b.LUNSize/8) }

// memMembers returns n memory devices of data bytes past the data offset, every page written (random
// bytes, each MiB stamped with its device and offset) so that no figure pays for first-touch allocation.
func memMembers(n int, data int64, seed uint64) []block.Device {
	devs := make([]block.Device, n)
	buf := make([]byte, 1<<20)
	fillRandom(rand.New(rand.NewPCG(seed, 3)), buf)
	for i := range devs {
		m := block.NewMemory(array.DefaultDataOffset+data, 512)
		for off := int64(0); off < m.Size(); off += int64(len(buf)) {
			binary.LittleEndian.PutUint64(buf, uint64(i)<<48|uint64(off))
			m.WriteAt(buf[:min(int64(len(buf)), m.Size()-off)], off)
		}
		devs[i] = m
	}
	return devs
}

// fillRandom fills p with pseudo-random bytes from r.
func fillRandom(r *rand.Rand, p []byte) {
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, r.Uint64())
		p = p[8:]
	}
	for i := range p {
		p[i] = byte(r.Uint32())
	}
}

// ioRate runs op from depth goroutines for about secs seconds, worker w doing requests w, w+depth,
// w+2*depth, ... modulo count, and returns requests per second.
func ioRate(ctx context.Context, depth int, count int64, secs float64, op func(w int, k int64) error) (float64, error) {
	var done atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	begin := time.Now()
	deadline := begin.Add(time.Duration(secs * float64(time.Second)))
	for w := range depth {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := int64(w); ctx.Err() == nil && time.Now().Before(deadline); k += int64(depth) {
				if err := op(w, k%count); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return float64(done.Load()) / time.Since(begin).Seconds(), nil
}

// parallel runs f(i) for i in [0, n) on n goroutines, as the array engine issues member I/O, and returns
// the first error.
func parallel(n int, f func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// arrayFigure is one row of the in-process array group: ours on the array, the peer on raw members.
type arrayFigure struct {
	name string
	goal Goal
	// ours and peer do one request (k is the stripe/row number); oursBytes and peerBytes are what one
	// request counts: array bytes for ours, member bytes for the peer.
	ours, peer           func(w int, k int64) error
	oursBytes, peerBytes int64
	count                int64
}

// arrayGroup measures RAID5 and RAID6 full-stripe writes and degraded reads on memory members against
// the same bytes moved to and from the raw member devices.
func arrayGroup(ctx context.Context, b *Bench) (*Table, error) {
	data := arrayMemberData(b)
	t := &Table{
		Title: "RAID5 and RAID6 in-process on memory members: raid/array vs the raw members",
		Intro: fmt.Sprintf("raid/array (md v1.2, %d KiB chunks, left-symmetric, no bitmap, created with AssumeClean and "+
			"written over once) on `block.NewMemory` members of %d MiB of data each, against the raw members: "+
			"a second set of as many memory devices, each request moving one chunk to or from every member in "+
			"parallel (one goroutine per member, as the engine does). A request is one full stripe (4 data "+
			"chunks, %d MiB of array data); %d are in flight on both sides. The array's MiB/s count array data, "+
			"the raw members' MiB/s count member bytes, so a perfect engine reaches (n-1)/n of the raw figure on "+
			"RAID5 and (n-2)/n on RAID6; the goal is 80%% of that. Degraded reads run on an array assembled "+
			"without its first member (one missing on both levels), reading whole stripes: the data chunks "+
			"of the missing member are rebuilt from the rest.",
			array.DefaultChunk>>10, data>>20, 4*array.DefaultChunk>>20, arrayDepth),
		Ours: "raid/array", Peer: "raw members",
	}
	var firstErr error
	for _, g := range arrayGeometries {
		if ctx.Err() != nil {
			break
		}
		b.Logf("%s: preparing members", g)
		rows, err := measureGeometry(ctx, b, g, data)
		t.Rows = append(t.Rows, rows...)
		if err != nil {
			b.Logf("%s: %v", g, err)
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", g, err)
			}
		}
	}
	t.Notes = append(t.Notes, "MiB/s = 2^20 bytes per second, timed in-process around the requests.")
	return t, firstErr
}

// measureGeometry sets up one geometry (a healthy array, a degraded one, raw members) and measures its
// two figures.
func measureGeometry(ctx context.Context, b *Bench, g arrayGeometry, data int64) ([]Row, error) {
	chunk := int64(array.DefaultChunk)
	dataDisks := g.n - g.parity()
	stripe := chunk * int64(dataDisks)
	cfg := array.CreateConfig{Level: g.level, Name: "bench", AssumeClean: true}

	healthy, err := array.Create(memMembers(g.n, data, 1), cfg)
	if err != nil {
		return nil, err
	}
	defer healthy.Close()
	stripes := healthy.Size() / stripe

	// The degraded array: created whole, written over, then assembled without its first member.
	devs := memMembers(g.n, data, 2)
	whole, err := array.Create(devs, cfg)
	if err != nil {
		return nil, err
	}
	check := make([]byte, stripe)
	r := rand.New(rand.NewPCG(uint64(g.n), 4))
	for k := range stripes {
		fillRandom(r, check)
		if _, err := whole.WriteAt(check, k*stripe); err != nil {
			whole.Close()
			return nil, err
		}
	}
	if err := whole.Close(); err != nil {
		return nil, err
	}
	degraded, err := array.Assemble(devs[1:], array.AssembleConfig{})
	if err != nil {
		return nil, fmt.Errorf("assembling without member 0: %w", err)
	}
	defer degraded.Close()
	if degraded.Degraded() != 1 {
		return nil, fmt.Errorf("array assembled without member 0 has %d members missing, want 1", degraded.Degraded())
	}
	// The last stripe written must read back through reconstruction: the figure is of a working array.
	got := make([]byte, stripe)
	if _, err := degraded.ReadAt(got, (stripes-1)*stripe); err != nil || !bytes.Equal(got, check) {
		return nil, fmt.Errorf("degraded read of stripe %d does not return what was written (err %v)", stripes-1, err)
	}

	raw := memMembers(g.n, data, 5)
	bufs := make([][]byte, arrayDepth)
	for w := range bufs {
		bufs[w] = make([]byte, stripe)
		fillRandom(r, bufs[w])
	}
	rawBufs := make([][]byte, arrayDepth)
	for w := range rawBufs {
		rawBufs[w] = make([]byte, chunk*int64(g.n))
		fillRandom(r, rawBufs[w])
	}
	rawIO := func(write bool) func(w int, k int64) error {
		return func(w int, k int64) error {
			return parallel(g.n, func(i int) error {
				p := rawBufs[w][int64(i)*chunk:][:chunk]
				off := array.DefaultDataOffset + k*chunk
				var err error
				if write {
					_, err = raw[i].WriteAt(p, off)
				} else {
					_, err = raw[i].ReadAt(p, off)
				}
				return err
			})
		}
	}
	goal := Goal{Ratio: 0.8 * float64(dataDisks) / float64(g.n)}
	figs := []arrayFigure{
		{
			name: fmt.Sprintf("%s: full-stripe write", g), goal: goal, count: stripes,
			ours: func(w int, k int64) error {
				_, err := healthy.WriteAt(bufs[w], k*stripe)
				return err
			},
			peer: rawIO(true), oursBytes: stripe, peerBytes: chunk * int64(g.n),
		},
		{
			name: fmt.Sprintf("%s: degraded read (1 missing)", g), goal: goal, count: stripes,
			ours: func(w int, k int64) error {
				_, err := degraded.ReadAt(bufs[w], k*stripe)
				return err
			},
			peer: rawIO(false), oursBytes: stripe, peerBytes: chunk * int64(g.n),
		},
	}
	return runArrayFigures(ctx, b, figs), nil
}

// runArrayFigures measures figs over a warm-up and b.Rounds rounds, ours and the peer back to back, the
// order flipping every round.
func runArrayFigures(ctx context.Context, b *Bench, figs []arrayFigure) []Row {
	rows := make([]Row, len(figs))
	for i, f := range figs {
		rows[i] = Row{Figure: f.name, Unit: "MiB/s", Goal: f.goal}
	}
	secs := inProcessSecs(b)
	for round := 0; round <= b.Rounds && ctx.Err() == nil; round++ {
		for i, f := range figs {
			sides := []struct {
				op     func(int, int64) error
				bytes  int64
				series *Series
				who    string
			}{{f.ours, f.oursBytes, &rows[i].Ours, "raid/array"}, {f.peer, f.peerBytes, &rows[i].Peer, "raw members"}}
			if round%2 == 1 {
				sides[0], sides[1] = sides[1], sides[0]
			}
			for _, s := range sides {
				if s.series.Err != "" {
					continue
				}
				rate, err := ioRate(ctx, arrayDepth, f.count, secs, s.op)
				if err != nil {
					s.series.Err = err.Error()
					continue
				}
				v := rate * float64(s.bytes) / (1 << 20)
				if b.Verbose {
					b.Logf("%s, %s: %s MiB/s", f.name, s.who, formatValue(v))
				}
				if round > 0 {
					s.series.Samples = append(s.series.Samples, v)
				}
			}
		}
	}
	return rows
}
