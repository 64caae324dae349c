//go:build qa

package raidinterop

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"opensan/gateway/block"
	"opensan/raid/array"
	"opensan/raid/disktest"
	"opensan/raid/md"
)

// Part 3 geometry: small members so the random workload covers a good part of each array.
const (
	crashMemberSize  = 16 << 20 // bytes
	crashChunk       = 64 << 10 // bytes
	crashBitmapChunk = 512 << 10
	crashBitmapDelay = 5 * time.Millisecond // bits clear during the workload, not only at Close
)

// crashCases are part 3: RAID5, RAID6 and RAID1, each with and without a bitmap, on both block sizes.
func crashCases() []*hostArray {
	cs := []*hostArray{
		{level: md.LevelRAID5, n: 3, bitmap: true, bs: 512}, {level: md.LevelRAID5, n: 3, bs: 4096},
		{level: md.LevelRAID6, n: 4, bitmap: true, bs: 4096}, {level: md.LevelRAID6, n: 4, bs: 512},
		{level: md.LevelRAID1, n: 2, bitmap: true, bs: 512}, {level: md.LevelRAID1, n: 2, bs: 4096},
	}
	for _, c := range cs {
		c.crash = true
		c.name = caseName("crash", c)
	}
	return cs
}

var errPowerOff = errors.New("raidinterop: power is off")

// power cuts every member of one array at the same instant. Once armed it counts member writes (data,
// parity, superblocks, bitmaps) and switches off after the given number; from then on every member
// operation fails, and Crash waits for the ones in flight (they hold mu shared).
type power struct {
	mu     sync.RWMutex
	off    atomic.Bool
	writes atomic.Int64
	cutAt  atomic.Int64 // 0: not armed
}

func (p *power) arm(after int64) { p.writes.Store(0); p.cutAt.Store(after) }

func (p *power) wrote() {
	if at := p.cutAt.Load(); at > 0 && p.writes.Add(1) >= at {
		p.off.Store(true)
	}
}

// powered is a crashable member behind the power switch. Every method of block.Device and WriteAtFUA is
// overridden, so none reaches the disk around the switch.
type powered struct {
	c *disktest.Crashable
	p *power
}

func (d powered) Size() int64           { return d.c.Size() }
func (d powered) LogicalBlockSize() int { return d.c.LogicalBlockSize() }
func (d powered) Close() error          { return nil }

func (d powered) ReadAt(b []byte, off int64) (int, error) {
	d.p.mu.RLock()
	defer d.p.mu.RUnlock()
	if d.p.off.Load() {
		return 0, errPowerOff
	}
	return d.c.ReadAt(b, off)
}

func (d powered) WriteAt(b []byte, off int64) (int, error) {
	d.p.mu.RLock()
	defer d.p.mu.RUnlock()
	if d.p.off.Load() {
		return 0, errPowerOff
	}
	defer d.p.wrote()
	return d.c.WriteAt(b, off)
}

func (d powered) WriteAtFUA(b []byte, off int64) (int, error) {
	d.p.mu.RLock()
	defer d.p.mu.RUnlock()
	if d.p.off.Load() {
		return 0, errPowerOff
	}
	defer d.p.wrote()
	return d.c.WriteAtFUA(b, off)
}

func (d powered) Flush() error {
	d.p.mu.RLock()
	defer d.p.mu.RUnlock()
	if d.p.off.Load() {
		return errPowerOff
	}
	return d.c.Flush()
}

func (d powered) Discard(off, length int64) error {
	d.p.mu.RLock()
	defer d.p.mu.RUnlock()
	if d.p.off.Load() {
		return errPowerOff
	}
	defer d.p.wrote()
	return d.c.Discard(off, length)
}

// crashReport is what one crash run did, for the log.
type crashReport struct {
	ops, writes, fua, flushes int
	crashOp                   int
	cutAfter                  int64
	uncertain                 int64 // bytes written since the last completed flush (not FUA)
	resynced                  int64 // units the repairing assembly resynced
}

func (r crashReport) String() string {
	return fmt.Sprintf("%d ops (%d writes, %d FUA, %d flushes); power cut at op %d after %d member writes; %d bytes unflushed; reassembly resynced %d units",
		r.ops, r.writes, r.fua, r.flushes, r.crashOp, r.cutAfter, r.uncertain, r.resynced)
}

// prepareCrash runs part 3 for c on the host: create (clean stop and reassembly, so the workload starts on
// a clean array), a random workload of writes, FUA writes and flushes from c.seed, a power cut in the middle
// of an operation after which each member keeps a random subset of its unflushed writes, reassembly of the
// crashed images with array.Assemble, WaitSync, then: every byte whose last write completed before the last
// flush (or was FUA) reads back, and Check finds no mismatch. The repaired array is closed and its members
// saved to files in dir for the guest. Errors are the engine's failures (raid/ bugs), with their details.
func prepareCrash(dir string, c *hostArray) (crashReport, error) {
	var rep crashReport
	r := rand.New(rand.NewPCG(c.seed, 2))
	pw := &power{}
	crash := make([]*disktest.Crashable, c.n)
	devs := make([]block.Device, c.n)
	for i := range devs {
		crash[i] = disktest.NewCrashable(crashMemberSize, c.bs)
		devs[i] = powered{crash[i], pw}
	}
	cfg := array.CreateConfig{Level: c.level, Chunk: crashChunk, Name: homehost + ":" + c.name, Bitmap: c.bitmap,
		BitmapChunk: crashBitmapChunk, BitmapDelay: crashBitmapDelay}
	a, err := array.Create(devs, cfg)
	if err != nil {
		return rep, fmt.Errorf("create: %w", err)
	}
	a.WaitSync()
	if err := a.Close(); err != nil {
		return rep, fmt.Errorf("close after create: %w", err)
	}
	if a, err = array.Assemble(devs, array.AssembleConfig{BitmapDelay: crashBitmapDelay}); err != nil {
		return rep, fmt.Errorf("assemble before the workload: %w", err)
	}
	if !a.InSync() {
		a.Close()
		return rep, errors.New("a cleanly closed array assembled out of sync")
	}

	size := a.Size()
	bs := int64(c.bs)
	current := make([]byte, size)   // as written by completed writes
	durable := make([]byte, size)   // as of the last completed flush, plus completed FUA writes
	uncertain := make([]bool, size) // written (or being written) since the last completed flush, not FUA
	ops := 200 + r.IntN(400)
	rep.crashOp = ops/4 + r.IntN(ops-ops/4)
	rep.cutAfter = 1 + r.Int64N(int64(2*c.n))
	for i := 0; !pw.off.Load(); i++ {
		if i == rep.crashOp {
			pw.arm(rep.cutAfter)
		}
		rep.ops++
		x := r.IntN(10)
		if x == 0 {
			if err := a.Flush(); err != nil {
				break // the power went during the flush: it did not complete
			}
			rep.flushes++
			copy(durable, current)
			clear(uncertain)
			continue
		}
		fua := x == 1
		n := (1 + r.Int64N(3*crashChunk/bs)) * bs
		off := r.Int64N((size-n)/bs+1) * bs
		p := make([]byte, n)
		for k := range p {
			p[k] = byte(r.Uint32())
		}
		for k := off; k < off+n; k++ {
			uncertain[k] = true
		}
		var werr error
		if fua {
			_, werr = a.WriteAtFUA(p, off)
		} else {
			_, werr = a.WriteAt(p, off)
		}
		if werr != nil {
			if !pw.off.Load() {
				a.Close()
				return rep, fmt.Errorf("write of %d bytes at %d before the power cut: %w", n, off, werr)
			}
			break
		}
		rep.writes++
		copy(current[off:], p)
		if fua {
			rep.fua++
			copy(durable[off:], p)
			for k := off; k < off+n; k++ {
				uncertain[k] = false
			}
		}
	}
	pw.mu.Lock()
	after := make([]block.Device, c.n)
	for i, d := range crash {
		keep := rand.New(rand.NewPCG(c.seed, uint64(100+i)))
		after[i] = d.Crash(func(int) bool { return keep.IntN(2) == 0 })
	}
	pw.mu.Unlock()
	a.Close() // fails: its members are gone; this only stops its goroutines
	for _, u := range uncertain {
		if u {
			rep.uncertain++
		}
	}

	b, err := array.Assemble(after, array.AssembleConfig{})
	if err != nil {
		return rep, fmt.Errorf("assemble after the crash: %w", err)
	}
	b.WaitSync()
	rep.resynced = b.Resynced()
	if !b.InSync() {
		b.Close()
		return rep, errors.New("not in sync after WaitSync")
	}
	got := make([]byte, size)
	if _, err := b.ReadAt(got, 0); err != nil {
		b.Close()
		return rep, fmt.Errorf("read after the crash: %w", err)
	}
	var lost []string
	for k := int64(0); k < size; k++ {
		if !uncertain[k] && got[k] != durable[k] {
			end := k
			for end < size && !uncertain[end] && got[end] != durable[end] {
				end++
			}
			lost = append(lost, fmt.Sprintf("bytes [%d,%d)", k, end))
			k = end
		}
	}
	if len(lost) > 0 {
		b.Close()
		return rep, fmt.Errorf("flushed data lost after the crash at %d ranges, first %v", len(lost), lost[:min(len(lost), 5)])
	}
	bad, err := b.Check()
	if err != nil || bad != 0 {
		b.Close()
		return rep, fmt.Errorf("Check after the repair: %d mismatched units, %v", bad, err)
	}
	c.uuid, c.size, c.hash = mdadmUUID(b.UUID()), size, sha256Hex(got)
	if err := b.Close(); err != nil {
		return rep, fmt.Errorf("close after the repair: %w", err)
	}
	buf := make([]byte, crashMemberSize)
	for i, d := range after {
		if _, err := d.ReadAt(buf, 0); err != nil {
			return rep, err
		}
		p := filepath.Join(dir, fmt.Sprintf("%s-m%d", c.name, i))
		if err := writeSparse(p, buf); err != nil {
			return rep, err
		}
		c.paths = append(c.paths, p)
	}
	return rep, nil
}

// writeSparse writes data to a new file at path, leaving holes where whole 64 KiB blocks are zero.
func writeSparse(path string, data []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		f.Close()
		return err
	}
	const blk = 64 << 10
	zero := make([]byte, blk)
	for off := 0; off < len(data); off += blk {
		p := data[off:min(off+blk, len(data))]
		if bytes.Equal(p, zero[:len(p)]) {
			continue
		}
		if _, err := f.WriteAt(p, int64(off)); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
