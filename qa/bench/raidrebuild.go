package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"time"

	"opensan/raid/array"
)

// rebuildGroup times the rebuild of one missing member onto a hot spare, RAID5 and RAID6 on memory
// members, against the raw I/O a rebuild cannot avoid: reading the other members and writing one.
func rebuildGroup(ctx context.Context, b *Bench) (*Table, error) {
	data := rebuildMemberData(b)
	t := &Table{
		Title: "RAID rebuild onto a hot spare, in-process on memory members",
		Intro: fmt.Sprintf("An array on `block.NewMemory` members of %d MiB of data each (%d KiB chunks, no bitmap), "+
			"written over in full stripes and stopped, is assembled without its first member; the timer runs "+
			"from `AddSpare` of a memory device (every page touched beforehand) until `WaitSync` returns with "+
			"no member missing. Sync rate unlimited (SyncRate.Min -1; no foreground I/O runs). MiB/s = member "+
			"bytes rebuilt per second. The raw copy is the I/O of a rebuild without the parity arithmetic: for "+
			"each chunk row, read the chunk of every other member in parallel, then write one chunk to a "+
			"separate memory device, one row at a time as the rebuild goes. After the warm-up rebuild the "+
			"spare's data area is compared with the member it replaced, byte for byte.",
			data>>20, array.DefaultChunk>>10),
		Ours: "raid/array rebuild", Peer: "raw copy",
	}
	var firstErr error
	for _, g := range arrayGeometries {
		if ctx.Err() != nil {
			break
		}
		b.Logf("%s: preparing members", g)
		row, err := measureRebuild(ctx, b, g, data)
		t.Rows = append(t.Rows, row)
		if err != nil {
			b.Logf("%s rebuild: %v", g, err)
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", g, err)
			}
		}
	}
	t.Notes = append(t.Notes, "MiB/s = 2^20 bytes per second.")
	return t, firstErr
}

// rebuildMemberData is the data area of each member of the rebuild figures, in bytes: 1/4 of a LUN.
func rebuildMemberData(b *Bench) int64 { return max(16<<20, b.LUNSize/4) }

func measureRebuild(ctx context.Context, b *Bench, g arrayGeometry, data int64) (Row, error) {
	row := Row{Figure: fmt.Sprintf("%s: rebuild of one member", g), Unit: "MiB/s"}
	fail := func(err error) (Row, error) {
		if row.Ours.Err == "" {
			row.Ours.Err = err.Error()
		}
		return row, err
	}
	chunk := int64(array.DefaultChunk)
	devs := memMembers(g.n, data, 7)
	spares := memMembers(2, data, 8) // the array's spare and the raw copy's target
	spare, rawTarget := spares[0], spares[1]

	a, err := array.Create(devs, array.CreateConfig{Level: g.level, Name: "rebuild", AssumeClean: true})
	if err != nil {
		return fail(err)
	}
	stripe := chunk * int64(g.n-g.parity())
	buf := make([]byte, stripe)
	fillRandom(rand.New(rand.NewPCG(uint64(g.n), 9)), buf)
	for off := int64(0); off+stripe <= a.Size(); off += stripe {
		for k := int64(0); k < stripe; k += chunk {
			binary.LittleEndian.PutUint64(buf[k:], uint64(off+k)) // every chunk distinct
		}
		if _, err := a.WriteAt(buf, off); err != nil {
			a.Close()
			return fail(err)
		}
	}
	rows := (a.Size() / stripe)
	if err := a.Close(); err != nil {
		return fail(err)
	}
	rebuilt := rows * chunk // member bytes a rebuild writes

	rebuild := func(verify bool) (time.Duration, error) {
		d, err := array.Assemble(devs[1:], array.AssembleConfig{SyncRate: array.SyncRate{Min: -1}})
		if err != nil {
			return 0, fmt.Errorf("assembling without member 0: %w", err)
		}
		defer d.Close()
		if n := d.Degraded(); n != 1 {
			return 0, fmt.Errorf("assembled without member 0, %d members missing, want 1", n)
		}
		begin := time.Now()
		if err := d.AddSpare(spare); err != nil {
			return 0, err
		}
		d.WaitSync()
		elapsed := time.Since(begin)
		if n := d.Degraded(); n != 0 {
			return 0, fmt.Errorf("rebuild ended with %d members missing (status %+v)", n, d.Status())
		}
		if verify {
			x, y := make([]byte, chunk), make([]byte, chunk)
			for r := range rows {
				off := array.DefaultDataOffset + r*chunk
				if _, err := devs[0].ReadAt(x, off); err != nil {
					return 0, err
				}
				if _, err := spare.ReadAt(y, off); err != nil {
					return 0, err
				}
				if !bytes.Equal(x, y) {
					return 0, fmt.Errorf("rebuilt member differs from the one it replaced in chunk row %d", r)
				}
			}
		}
		return elapsed, nil
	}
	bufs := make([][]byte, g.n-1)
	for i := range bufs {
		bufs[i] = make([]byte, chunk)
	}
	rawCopy := func() (time.Duration, error) {
		begin := time.Now()
		for r := range rows {
			off := array.DefaultDataOffset + r*chunk
			err := parallel(g.n-1, func(i int) error {
				_, err := devs[1+i].ReadAt(bufs[i], off)
				return err
			})
			if err != nil {
				return 0, err
			}
			if _, err := rawTarget.WriteAt(bufs[0], off); err != nil {
				return 0, err
			}
		}
		return time.Since(begin), nil
	}

	for round := 0; round <= b.Rounds && ctx.Err() == nil; round++ {
		order := []bool{true, false} // ours first
		if round%2 == 1 {
			order = []bool{false, true}
		}
		for _, ours := range order {
			series, who := &row.Peer, "raw copy"
			var elapsed time.Duration
			var err error
			if ours {
				series, who = &row.Ours, "raid/array rebuild"
				if series.Err != "" {
					continue
				}
				elapsed, err = rebuild(round == 0)
			} else {
				if series.Err != "" {
					continue
				}
				elapsed, err = rawCopy()
			}
			if err != nil {
				series.Err = err.Error()
				continue
			}
			v := float64(rebuilt) / (1 << 20) / elapsed.Seconds()
			if b.Verbose {
				b.Logf("%s, %s: %s MiB/s", row.Figure, who, formatValue(v))
			}
			if round > 0 {
				series.Samples = append(series.Samples, v)
			}
		}
	}
	if row.Ours.Err != "" {
		return row, fmt.Errorf("%s", row.Ours.Err)
	}
	return row, ctx.Err()
}
